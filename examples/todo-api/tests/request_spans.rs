//! The service's request span is the parent of each request's `transaction` span: the
//! service's own router, served in this process under a capturing subscriber
//! (`tenants_tests::capture`), on a database migrated by the kit.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tenants_core::testing::TestDatabase;
use tenants_tests::capture::{Capture, CapturedSpan};
use todo_api::AppState;
use todo_api::auth::JwtAuth;
use todo_api::db::MIGRATIONS;
use todo_api::settings::TenantFilter;

/// The `transaction` span whose parent is the `request` span of `method path`.
fn transaction_of(capture: &Capture, method: &str, path: &str) -> CapturedSpan {
    let spans = capture.spans();
    let request = spans
        .iter()
        .position(|span| {
            span.name == "request"
                && span.fields.get("method").map(String::as_str) == Some(method)
                && span.fields.get("path").map(String::as_str) == Some(path)
        })
        .unwrap_or_else(|| panic!("no request span for {method} {path} in {spans:#?}"));
    let children: Vec<_> = spans
        .iter()
        .filter(|span| span.name == "transaction" && span.parent == Some(request))
        .collect();
    assert_eq!(
        children.len(),
        1,
        "one transaction inside {method} {path}: {spans:#?}"
    );
    children[0].clone()
}

#[tokio::test]
async fn each_requests_transaction_span_is_a_child_of_its_request_span() {
    let db = TestDatabase::new(MIGRATIONS).expect("a migrated test database");
    let pool = db.pool().await.expect("a pool");
    let auth = JwtAuth::new(b"request-spans-test-secret-0123456789abcdef", None);
    let token = auth
        .issue("acme", Duration::from_secs(600))
        .expect("a token");
    let state = AppState {
        pool,
        auth: Arc::new(auth),
        tenant_filter: TenantFilter::Explicit,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("an ephemeral port");
    let base = format!("http://{}", listener.local_addr().expect("address"));

    let capture = Capture::new();
    // A current-thread runtime: the server's tasks run on this thread, under this subscriber.
    let _guard = capture.install();
    let server = tokio::spawn(async move {
        axum::serve(listener, todo_api::routes::router(state))
            .await
            .expect("serve");
    });
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/todos"))
        .bearer_auth(&token)
        .json(&json!({ "name": "trace me" }))
        .send()
        .await
        .expect("POST /todos");
    assert_eq!(created.status(), StatusCode::CREATED);
    let missing = client
        .get(format!("{base}/todos/999999"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET a missing todo");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.abort();

    let committed = transaction_of(&capture, "POST", "/todos");
    let fields = |span: &CapturedSpan, name: &str| span.fields.get(name).cloned();
    assert_eq!(fields(&committed, "scope").as_deref(), Some("tenant"));
    assert_eq!(fields(&committed, "tenant").as_deref(), Some("acme"));
    assert_eq!(fields(&committed, "outcome").as_deref(), Some("commit"));
    let rolled_back = transaction_of(&capture, "GET", "/todos/999999");
    assert_eq!(fields(&rolled_back, "outcome").as_deref(), Some("rollback"));
}
