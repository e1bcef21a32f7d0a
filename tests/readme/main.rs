//! An axum service and an actix-web service written from the README alone (its "Use it in
//! an axum service" and "Use it in an actix-web service"), over real HTTP, on a table whose
//! tenant column is a `uuid`: inserts leave the tenant out (the column fills itself), a
//! tenant that is not a UUID is a 401 before any query (the tenant type follows from the
//! registry: no `Config::with_tenant_type`), and each request is one transaction.
//!
//! A binary of its own: the tenant type is inferred only when every marked table of the
//! binary agrees, and the integration binary marks tables of every type.

use std::net::SocketAddr;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tenants_core::policy::{self, Grantee, QualifiedName, RoleGrant, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, Tenant, TenantPool};
use tenants_tests::http::send;
use tenants_tests::{TestDb, batch_locked, count, ensure_login_role};

mod schema {
    #[tenants_core::with_rls]
    diesel::table! {
        note (id) {
            id -> Int4,
            body -> Text,
            tenant -> Uuid,
        }
    }
}

use schema::note;

/// The serving login: a member of the tenant role only (it serves tenant transactions),
/// owning nothing.
const SERVING_LOGIN: &str = "tenants_test_readme_app";
const ACME: &str = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
const GLOBEX: &str = "b1ffcd88-8d1a-4de7-aa5c-5aa8ac270b22";

/// `note` under the contract, and a pool logging in as [`SERVING_LOGIN`].
async fn setup() -> (TestDb, TenantPool) {
    let db = TestDb::new();
    let mut conn = db.connect();
    ensure_login_role(&mut conn, SERVING_LOGIN);
    conn.batch_execute_checked(
        "CREATE TABLE note (id serial PRIMARY KEY, body text NOT NULL, tenant uuid NOT NULL)",
    );
    let config = Config::default();
    let spec = TableSpec {
        table: QualifiedName::new("public", "note"),
        tenant_column: "tenant".into(),
        sql_type: TenantSqlType::Uuid,
        sequences: vec![QualifiedName::new("public", "note_id_seq")],
    };
    let grantees = [RoleGrant::tenant(Grantee::Role(SERVING_LOGIN.into()))];
    batch_locked(
        &mut conn,
        &policy::render_up(&config, &policy::setup(&config, &[spec], &grantees)),
    );
    let pool = TenantPool::connect(&db.url_as(SERVING_LOGIN))
        .await
        .expect("pool");
    pool.verify()
        .await
        .expect("the database is under the contract");
    (db, pool)
}

trait CheckedBatch {
    fn batch_execute_checked(&mut self, sql: &str);
}

impl CheckedBatch for PgConnection {
    fn batch_execute_checked(&mut self, sql: &str) {
        diesel::connection::SimpleConnection::batch_execute(self, sql).expect(sql);
    }
}

/// `(tenant, body)` of every note, as the superuser sees them.
fn notes(db: &TestDb) -> Vec<(String, String)> {
    diesel::RunQueryDsl::load(
        diesel::sql_query("SELECT tenant::text AS tenant, body FROM note ORDER BY id"),
        &mut db.connect(),
    )
    .map(|rows: Vec<Note>| rows.into_iter().map(|n| (n.tenant, n.body)).collect())
    .expect("read notes")
}

#[derive(QueryableByName)]
struct Note {
    #[diesel(sql_type = diesel::sql_types::Text)]
    tenant: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
}

/// How many transactions wrote the notes (distinct `xmin`).
fn writing_transactions(db: &TestDb) -> i64 {
    count(
        &mut db.connect(),
        "SELECT count(DISTINCT xmin::text) AS n FROM note",
    )
}

/// The applications' authentication: the `x-user` header names the tenant (a verified
/// token's claim in a real service).
fn authenticated(x_user: Option<&[u8]>) -> Option<Tenant> {
    let claim = std::str::from_utf8(x_user?).ok()?;
    Tenant::new(claim).ok()
}

/// Both services' handler body: two notes without naming the tenant (one the README's
/// way, one more to show they share the request's transaction); the tenant back typed.
async fn add_twice(
    db: &mut tenants_core::axum::TenantDb,
    body: &str,
) -> Result<uuid::Uuid, tenants_core::axum::DbError> {
    for body in [body.to_string(), format!("{body}, again")] {
        diesel::insert_into(note::table)
            .values(note::body.eq(body))
            .execute(db.conn().await?)
            .await?;
    }
    Ok(db.tenant().parse().expect("a tenant checked as a uuid"))
}

/// `POST /notes` with a JSON `body` as `tenant` (the `x-user` header).
async fn post_note(addr: SocketAddr, tenant: &str, body: &str) -> tenants_tests::http::Reply {
    let headers = [("x-user", tenant), ("content-type", "application/json")];
    send(addr, "POST", "/notes", &headers, body).await
}

/// What both services must do: two notes per request, in one transaction, without naming
/// the tenant; a 401 problem for a tenant that is not a UUID, with nothing written.
async fn check_the_service(db: &TestDb, addr: SocketAddr) {
    let send = |tenant, body| post_note(addr, tenant, body);
    let reply = send(ACME, "\"hello\"").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        reply.body, ACME,
        "the extractor gives the tenant back typed"
    );
    let reply = send(GLOBEX, "\"hi\"").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let expected = [
        (ACME.to_string(), "hello".to_string()),
        (ACME.to_string(), "hello, again".to_string()),
        (GLOBEX.to_string(), "hi".to_string()),
        (GLOBEX.to_string(), "hi, again".to_string()),
    ];
    assert_eq!(notes(db), expected);
    assert_eq!(writing_transactions(db), 2, "one transaction per request");

    let reply = send("acme", "\"x\"").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        reply.json()["detail"],
        "invalid tenant: tenant id is not a valid uuid"
    );
    assert_eq!(
        notes(db).len(),
        4,
        "nothing written for the wrong-typed tenant"
    );
}

mod axum_service {
    use axum::extract::Request;
    use axum::middleware::{self, Next};
    use axum::response::Response;
    use axum::routing::post;
    use axum::{Json, Router, http::StatusCode};
    use tenants_core::axum::{DbError, TenantDb, TenantLayer};

    use super::*;

    /// The application's authentication: here the `x-user` header names the tenant.
    async fn authenticate(mut request: Request, next: Next) -> Response {
        if let Some(tenant) = authenticated(request.headers().get("x-user").map(|v| v.as_bytes())) {
            request.extensions_mut().insert(tenant);
        }
        next.run(request).await
    }

    async fn add(
        mut db: TenantDb,
        Json(body): Json<String>,
    ) -> Result<(StatusCode, String), DbError> {
        let tenant = add_twice(&mut db, &body).await?;
        Ok((StatusCode::CREATED, tenant.to_string()))
    }

    pub fn app(pool: TenantPool) -> Router {
        Router::new()
            .route("/notes", post(add))
            .layer(TenantLayer::new(pool))
            .layer(middleware::from_fn(authenticate))
    }
}

mod actix_service {
    use actix_web::dev::Service as _;
    use actix_web::{App, HttpMessage, HttpResponse, HttpServer, web};
    use tenants_core::actix::{DbError, TenantDb, TenantMiddleware};

    use super::*;

    async fn add(mut db: TenantDb, body: web::Json<String>) -> Result<HttpResponse, DbError> {
        let tenant = add_twice(&mut db, &body).await?;
        Ok(HttpResponse::Created().body(tenant.to_string()))
    }

    /// Serves on a free port; returns its address and the handle that stops it.
    pub fn serve(pool: TenantPool) -> (SocketAddr, actix_web::dev::ServerHandle) {
        let server = HttpServer::new(move || {
            App::new()
                .wrap(TenantMiddleware::new(pool.clone()))
                // The application's authentication, outermost: `x-user` names the tenant.
                .wrap_fn(|request, service| {
                    let user = request.headers().get("x-user").map(|v| v.as_bytes());
                    if let Some(tenant) = authenticated(user) {
                        request.extensions_mut().insert(tenant);
                    }
                    service.call(request)
                })
                .route("/notes", web::post().to(add))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind a free port");
        let addr = server.addrs()[0];
        let running = server.run();
        let handle = running.handle();
        tokio::spawn(running);
        (addr, handle)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_service_from_the_readme() {
    assert_eq!(
        tenants_core::registry::tenant_type(),
        Some(TenantSqlType::Uuid)
    );
    let (db, pool) = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        axum::serve(listener, axum_service::app(pool))
            .await
            .expect("serve")
    });
    check_the_service(&db, addr).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actix_service_from_the_readme() {
    let (db, pool) = setup().await;
    let (addr, handle) = actix_service::serve(pool);
    check_the_service(&db, addr).await;
    handle.stop(false).await;
}
