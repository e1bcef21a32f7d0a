//! The axum integration (`tenants_core::axum`) against a real database: a handler's writes
//! are committed after a 2xx or 3xx response and nowhere else (error responses, panics,
//! cancelled requests, failed commits), and the database side's refusals are JSON problem
//! details with the right status.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use tenants_core::axum::{DbError, TenantDb, TenantLayer};
use tenants_core::{Config, Tenant, TenantPool};
use tenants_tests::TestDb;
use tower_service::Service;

use crate::common::{
    HeaderTenant, Hooks, items_text_under_contract, open_transactions, pool, row, rows, settled,
};
use crate::isolation::items_text::items_text;

impl<S: Send + Sync> FromRequestParts<S> for HeaderTenant {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get("x-tenant")
            .and_then(|value| value.to_str().ok())
            .map(|value| HeaderTenant(value.to_string()))
            .ok_or((StatusCode::UNAUTHORIZED, "send x-tenant"))
    }
}

type Db = TenantDb<HeaderTenant>;

async fn insert(db: &mut Db, name: &str) -> Result<(), DbError> {
    let tenant = db.tenant().clone();
    diesel::insert_into(items_text::table)
        .values((
            items_text::name.eq(name),
            items_text::tenant.eq(tenant.as_str()),
        ))
        .execute(db.conn().await?)
        .await?;
    Ok(())
}

/// Inserts a row named `outcome`, then answers as `outcome` says.
async fn write(
    State(hooks): State<Hooks>,
    mut db: Db,
    Path(outcome): Path<String>,
) -> Result<Response, DbError> {
    insert(&mut db, &outcome).await?;
    match outcome.as_str() {
        "created" => Ok(StatusCode::CREATED.into_response()),
        "redirect" => Ok((StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()),
        "conflict" => Ok(StatusCode::CONFLICT.into_response()),
        "query-error" => {
            diesel::sql_query("SELECT * FROM no_such_table")
                .execute(db.conn().await?)
                .await?;
            Ok(StatusCode::OK.into_response())
        }
        "swallowed-error" => {
            // A failed statement whose error the handler ignores: PostgreSQL then answers
            // the COMMIT with a rollback.
            let _ = diesel::sql_query("SELECT * FROM no_such_table")
                .execute(db.conn().await?)
                .await;
            Ok(StatusCode::CREATED.into_response())
        }
        "panic" => panic!("the handler panics after its insert"),
        "hang" => {
            hooks.written.notify_one();
            std::future::pending().await
        }
        "escape" => {
            // Keeps the TenantDb beyond the request.
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(db);
            });
            Ok(StatusCode::CREATED.into_response())
        }
        _ => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

/// Two extractors of one request share its transaction, one after the other.
async fn shared(mut first: Db, mut second: Db) -> Result<String, DbError> {
    insert(&mut first, "shared").await?;
    drop(first);
    let seen: i64 = items_text::table
        .count()
        .get_result(second.conn().await?)
        .await?;
    Ok(seen.to_string())
}

/// Two extractors used at the same time.
async fn overlapping(mut first: Db, mut second: Db) -> Result<StatusCode, DbError> {
    let _held = first.conn().await?;
    second.conn().await?;
    Ok(StatusCode::OK)
}

/// `TenantDb` with its default tenant source: a `Tenant` in the request's extensions.
async fn from_extension(mut db: TenantDb) -> Result<String, DbError> {
    let seen: i64 = items_text::table
        .count()
        .get_result(db.conn().await?)
        .await?;
    Ok(seen.to_string())
}

/// The application's authentication middleware: `x-user` names the tenant.
async fn authenticate(mut request: Request, next: Next) -> Response {
    let tenant = request
        .headers()
        .get("x-user")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Tenant::new(value).ok());
    if let Some(tenant) = tenant {
        request.extensions_mut().insert(tenant);
    }
    next.run(request).await
}

fn routes() -> Router<Hooks> {
    Router::new()
        .route("/write/{outcome}", post(write))
        .route("/shared", post(shared))
        .route("/overlapping", post(overlapping))
        .route(
            "/extension",
            get(from_extension).layer(middleware::from_fn(authenticate)),
        )
}

fn app(pool: TenantPool, hooks: Hooks) -> Router {
    routes().layer(TenantLayer::new(pool)).with_state(hooks)
}

/// A table `items_text` under the contract, and a pool of `size` to it.
async fn setup(size: u32) -> (TestDb, TenantPool) {
    let (db, _) = items_text_under_contract();
    let pool = pool(&db.url(), size).await;
    (db, pool)
}

fn request(method: Method, uri: &str, tenant: Option<&str>) -> Request {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(tenant) = tenant {
        builder = builder.header("x-tenant", tenant);
    }
    builder.body(Body::empty()).expect("request")
}

/// A response's status, headers and body.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(app: &Router, request: Request) -> Reply {
    let mut service = app.clone();
    std::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut service, cx))
        .await
        .expect("ready");
    let response = service.call(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("utf-8"),
    }
}

async fn post_as(app: &Router, uri: &str, tenant: &str) -> Reply {
    send(app, request(Method::POST, uri, Some(tenant))).await
}

#[tokio::test]
async fn commits_after_2xx_and_3xx_and_rolls_back_after_any_other_status() {
    let (db, pool) = setup(2).await;
    let app = app(pool, Hooks::default());

    for (outcome, status) in [
        ("created", StatusCode::CREATED),
        ("redirect", StatusCode::SEE_OTHER),
        ("conflict", StatusCode::CONFLICT),
        ("unknown", StatusCode::NOT_FOUND),
        ("query-error", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let reply = post_as(&app, &format!("/write/{outcome}"), "acme").await;
        assert_eq!(reply.status, status, "{outcome}: {}", reply.body);
    }
    settled(&db).await;
    assert_eq!(
        rows(&db),
        [row("acme", "created"), row("acme", "redirect")],
        "only the 2xx and 3xx requests' writes are there"
    );

    // Two extractors of one request: one transaction, committed once.
    let reply = post_as(&app, "/shared", "globex").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body, "1",
        "the second sees the first's uncommitted row"
    );
    assert_eq!(rows(&db).last(), Some(&row("globex", "shared")));
}

#[tokio::test]
async fn a_panicking_handler_writes_nothing() {
    let (db, pool) = setup(1).await;
    let app = app(pool, Hooks::default());
    let handler = tokio::spawn({
        let app = app.clone();
        async move { post_as(&app, "/write/panic", "acme").await }
    });
    let joined = handler.await;
    assert!(joined.is_err_and(|e| e.is_panic()), "the request panicked");
    settled(&db).await;
    assert!(rows(&db).is_empty());
    // The pool's only connection came back clean.
    let reply = post_as(&app, "/write/created", "acme").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(rows(&db), [row("acme", "created")]);
}

#[tokio::test]
async fn a_cancelled_request_writes_nothing() {
    let (db, pool) = setup(1).await;
    let hooks = Hooks::default();
    let app = app(pool, hooks.clone());
    let mut service = app.clone();
    std::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut service, cx))
        .await
        .expect("ready");
    let mut call = Box::pin(service.call(request(Method::POST, "/write/hang", Some("acme"))));
    tokio::select! {
        () = hooks.written.notified() => {}
        answered = &mut call => panic!("the hanging handler answered: {:?}", answered.map(|r| r.status())),
    }
    assert_eq!(
        open_transactions(&db),
        1,
        "the handler's insert is in an open transaction"
    );
    // The client goes away: the server drops the request's future.
    drop(call);
    settled(&db).await;
    assert!(rows(&db).is_empty());
    let reply = post_as(&app, "/write/created", "acme").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn a_commit_that_fails_is_an_error_response() {
    let (db, pool) = setup(2).await;
    // A deferred unique constraint is checked at COMMIT, after the handler answered 201.
    db.connect()
        .batch_execute(
            "ALTER TABLE items_text ADD CONSTRAINT one_name UNIQUE (name) DEFERRABLE INITIALLY DEFERRED",
        )
        .expect("deferred constraint");
    let app = app(pool, Hooks::default());
    let first = post_as(&app, "/write/created", "acme").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = post_as(&app, "/write/created", "globex").await;
    assert_eq!(second.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        second.json(),
        json!({"type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": "internal server error"})
    );
    assert!(
        !second.body.contains("one_name"),
        "no internals: {}",
        second.body
    );
    assert_eq!(rows(&db), [row("acme", "created")]);
}

/// A handler that ignored a failed statement and answers 201: the transaction was aborted,
/// PostgreSQL would roll the COMMIT back, so the response is a 500 and nothing is stored.
/// (Before the commit guard: 201 with the row lost.)
#[tokio::test]
async fn an_aborted_transaction_is_an_error_response_not_a_2xx() {
    let (db, pool) = setup(1).await;
    let app = app(pool, Hooks::default());
    let reply = post_as(&app, "/write/swallowed-error", "acme").await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.body
    );
    assert_eq!(rows(&db), Vec::<(String, String)>::new());
    // The connection was rolled back and kept: the next request commits.
    assert_eq!(
        post_as(&app, "/write/created", "acme").await.status,
        StatusCode::CREATED
    );
    assert_eq!(rows(&db), [row("acme", "created")]);
}

#[tokio::test]
async fn refusals_are_problem_details() {
    let (db, _) = setup(1).await;
    // One connection, waited for 300 ms.
    let pool = TenantPool::connect_with(
        &db.url(),
        Config::default(),
        bb8::Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("pool");
    let app = app(pool.clone(), Hooks::default());
    let problem = |status: StatusCode, detail: &str| {
        json!({
            "type": "about:blank",
            "title": status.canonical_reason(),
            "status": status.as_u16(),
            "detail": detail,
        })
    };

    // The pool has no connection within its timeout: 503, come back in a second.
    let held = pool
        .tenant("someone")
        .await
        .expect("hold the only connection");
    let started = Instant::now();
    let reply = post_as(&app, "/write/created", "acme").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(held);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(
        reply
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..])
    );
    assert_eq!(
        reply.json(),
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; try again shortly"
        )
    );

    // An invalid tenant: 401, before any database work.
    let reply = post_as(&app, "/write/created", "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json(),
        problem(
            StatusCode::UNAUTHORIZED,
            "invalid tenant: tenant id is empty"
        )
    );

    // No tenant from the application's own extractor: its own rejection.
    let reply = send(&app, request(Method::POST, "/write/created", None)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::UNAUTHORIZED, "send x-tenant")
    );

    // No tenant in the extensions (the middleware did not authenticate): 401.
    let reply = send(&app, request(Method::GET, "/extension", None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json(),
        problem(StatusCode::UNAUTHORIZED, "the request names no tenant")
    );
    let authenticated = Request::builder()
        .uri("/extension")
        .header("x-user", "acme")
        .body(Body::empty())
        .expect("request");
    let reply = send(&app, authenticated).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "0"));

    // A database error: 500, and the body says nothing of it.
    let reply = post_as(&app, "/write/query-error", "acme").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.json(),
        problem(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    );

    // A route the layer does not wrap: 500 (and the log says to add the layer).
    let unwrapped = routes().with_state(Hooks::default());
    let reply = post_as(&unwrapped, "/write/created", "acme").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    settled(&db).await;
    assert!(rows(&db).is_empty());
}

#[tokio::test]
async fn misuse_writes_nothing() {
    let (db, pool) = setup(2).await;
    let app = app(pool, Hooks::default());
    // Two extractors holding the connection at once.
    let reply = post_as(&app, "/overlapping", "acme").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    // A TenantDb kept beyond its request: its writes cannot commit, so no 201.
    let reply = post_as(&app, "/write/escape", "acme").await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.body
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    settled(&db).await;
    assert!(rows(&db).is_empty());
}

/// What the operator sees of a refusal: a request without a tenant is a WARN (most likely a
/// route without the authenticating middleware, not only the client's mistake), a failed
/// query an ERROR whose text says "database error" once (issue 18.7).
#[tokio::test]
async fn refusals_are_logged_for_the_operator() {
    let (_db, pool) = setup(1).await;
    let app = app(pool, Hooks::default());
    let capture = tenants_tests::capture::Capture::new();
    let _guard = capture.install();

    let reply = send(&app, request(Method::GET, "/extension", None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = post_as(&app, "/write/query-error", "acme").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);

    let events = capture.events();
    let logged = |level: tracing::Level, message: &str| {
        events
            .iter()
            .find(|e| {
                e.level == level
                    && e.fields
                        .get("message")
                        .is_some_and(|m| m.starts_with(message))
            })
            .unwrap_or_else(|| panic!("no {level} {message:?} in {events:#?}"))
            .fields
            .get("error")
            .cloned()
            .unwrap_or_default()
    };
    let refused = logged(tracing::Level::WARN, "request refused: no tenant");
    assert!(
        refused.starts_with("the request names no tenant"),
        "{refused}"
    );
    let failed = logged(tracing::Level::ERROR, "request failed");
    assert!(failed.starts_with("database error: "), "{failed}");
    assert_eq!(failed.matches("database error").count(), 1, "{failed}");
    assert!(failed.contains("no_such_table"), "{failed}");
}
