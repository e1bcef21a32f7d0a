//! The actix-web integration (`tenants_core::actix`) over real HTTP against a real database:
//! a handler's writes are committed after a 2xx or 3xx response and nowhere else (error
//! responses, panics, a client that went away), refusals are JSON problem details, and
//! the retrofit path (synchronous Diesel code on a `SyncTenantPool` through `web::block`)
//! writes one transaction per request.

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::{Payload, ServerHandle, Service as _};
use actix_web::{App, FromRequest, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::json;
use tenants_core::actix::{DbError, TenantDb, TenantMiddleware};
use tenants_core::{Config, Error, SyncTenantPool, Tenant, TenantPool};
use tenants_tests::http::send;
use tenants_tests::{TestDb, count};

use crate::common::{HeaderTenant, Hooks, items_text_under_contract, pool, row, rows, settled};
use crate::isolation::items_text::items_text;

impl FromRequest for HeaderTenant {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, actix_web::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            request
                .headers()
                .get("x-tenant")
                .and_then(|value| value.to_str().ok())
                .map(|value| HeaderTenant(value.to_string()))
                .ok_or_else(|| actix_web::error::ErrorUnauthorized("send x-tenant")),
        )
    }
}

type Db = TenantDb<HeaderTenant>;

async fn insert(db: &mut Db, name: &str) -> Result<(), DbError> {
    // The tenant column fills itself.
    diesel::insert_into(items_text::table)
        .values(items_text::name.eq(name))
        .execute(db.conn().await?)
        .await?;
    Ok(())
}

/// Inserts a row named `outcome`, then answers as `outcome` says.
async fn write(
    hooks: web::Data<Hooks>,
    mut db: Db,
    outcome: web::Path<String>,
) -> Result<HttpResponse, DbError> {
    insert(&mut db, &outcome).await?;
    match outcome.as_str() {
        "created" => Ok(HttpResponse::Created().finish()),
        "redirect" => Ok(HttpResponse::SeeOther()
            .insert_header(("location", "/"))
            .finish()),
        "conflict" => Ok(HttpResponse::Conflict().finish()),
        "query-error" => {
            diesel::sql_query("SELECT * FROM no_such_table")
                .execute(db.conn().await?)
                .await?;
            Ok(HttpResponse::Ok().finish())
        }
        "swallowed-error" => {
            // A failed statement whose error the handler ignores: PostgreSQL then answers
            // the COMMIT with a rollback, and the client must not be told 201.
            let _ = diesel::sql_query("SELECT * FROM no_such_table")
                .execute(db.conn().await?)
                .await;
            Ok(HttpResponse::Created().finish())
        }
        "panic" => panic!("the handler panics after its insert"),
        "hang" => {
            hooks.written.notify_one();
            std::future::pending().await
        }
        _ => Ok(HttpResponse::NotFound().finish()),
    }
}

/// Two extractors of one request share its transaction, one after the other.
async fn twice(mut first: Db, mut second: Db) -> Result<HttpResponse, DbError> {
    insert(&mut first, "first").await?;
    drop(first);
    insert(&mut second, "second").await?;
    Ok(HttpResponse::Created().finish())
}

/// `TenantDb` with its default tenant source: a `Tenant` in the request's extensions.
async fn from_extension(mut db: TenantDb) -> Result<String, DbError> {
    let seen: i64 = items_text::table
        .count()
        .get_result(db.conn().await?)
        .await?;
    Ok(seen.to_string())
}

/// The retrofit path: repository functions of synchronous Diesel code, called from an
/// actix handler through `web::block`, inside one closure transaction for the request.
mod repository {
    use diesel::prelude::*;

    use super::items_text;

    pub fn add(conn: &mut PgConnection, name: &str) -> QueryResult<usize> {
        diesel::insert_into(items_text::table)
            .values(items_text::name.eq(name))
            .execute(conn)
    }

    pub fn fail(conn: &mut PgConnection) -> QueryResult<usize> {
        diesel::sql_query("SELECT * FROM no_such_table").execute(conn)
    }
}

async fn sync_write(
    pool: web::Data<SyncTenantPool>,
    tenant: HeaderTenant,
    outcome: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let outcome = outcome.into_inner();
    let pool = pool.into_inner();
    let written = web::block(move || {
        pool.transaction(&tenant, |conn| {
            repository::add(conn, "one")?;
            repository::add(conn, "two")?;
            if outcome == "fail" {
                repository::fail(conn)?;
            }
            Ok::<_, Error>(())
        })
    })
    .await?;
    match written {
        Ok(()) => Ok(HttpResponse::Created().finish()),
        Err(error) => Err(DbError::from(error).into()),
    }
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/write/{outcome}", web::post().to(write))
        .route("/twice", web::post().to(twice))
        .service(
            web::resource("/extension")
                .wrap_fn(|request, service| {
                    // The application's authentication middleware: `x-user` names the tenant.
                    let tenant = request
                        .headers()
                        .get("x-user")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| Tenant::new(value).ok());
                    if let Some(tenant) = tenant {
                        request.extensions_mut().insert(tenant);
                    }
                    service.call(request)
                })
                .route(web::get().to(from_extension)),
        );
}

/// A running server on a free port of 127.0.0.1.
struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
}

impl Server {
    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn serve(pool: TenantPool, sync: Option<SyncTenantPool>, hooks: Hooks) -> Server {
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(web::Data::new(hooks.clone()))
            // Outside the middleware: `TenantDb` there is a 500, `NoLayer`.
            .route("/unwrapped", web::get().to(from_extension));
        let app = match &sync {
            Some(sync) => app
                .app_data(web::Data::new(sync.clone()))
                .route("/sync/{outcome}", web::post().to(sync_write)),
            None => app,
        };
        app.service(
            web::scope("")
                .wrap(TenantMiddleware::new(pool.clone()))
                .configure(routes),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("bind a free port");
    let addr = server.addrs()[0];
    let running = server.run();
    let handle = running.handle();
    tokio::spawn(running);
    Server { addr, handle }
}

async fn setup(size: u32) -> (TestDb, TenantPool) {
    let (db, _) = items_text_under_contract();
    let pool = pool(&db.url(), size).await;
    (db, pool)
}

/// How many transactions wrote the rows: distinct `xmin`s.
fn writing_transactions(db: &TestDb) -> i64 {
    count(
        &mut db.connect(),
        "SELECT count(DISTINCT xmin::text) AS n FROM items_text",
    )
}

async fn post_as(server: &Server, path: &str, tenant: &str) -> tenants_tests::http::Reply {
    send(server.addr, "POST", path, &[("x-tenant", tenant)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_after_2xx_and_3xx_and_rolls_back_after_any_other_status() {
    let (db, pool) = setup(2).await;
    let server = serve(pool, None, Hooks::default());
    for (outcome, status) in [
        ("created", 201),
        ("redirect", 303),
        ("conflict", 409),
        ("unknown", 404),
        ("query-error", 500),
        ("swallowed-error", 500),
    ] {
        let reply = post_as(&server, &format!("/write/{outcome}"), "acme").await;
        assert_eq!(reply.status, status, "{outcome}: {}", reply.body);
    }
    settled(&db).await;
    assert_eq!(
        rows(&db),
        [row("acme", "created"), row("acme", "redirect")],
        "only the 2xx and 3xx requests' writes stay"
    );
    // Two extractors of one request, one transaction.
    let reply = post_as(&server, "/twice", "globex").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        rows(&db)[2..],
        [row("globex", "first"), row("globex", "second")]
    );
    assert_eq!(writing_transactions(&db), 3, "one transaction per request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_or_a_cancelled_request_writes_nothing() {
    let (db, pool) = setup(2).await;
    let cancel_pool = pool.clone();
    let hooks = Hooks::default();
    let server = serve(pool, None, hooks.clone());
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::spawn(send(
            server.addr,
            "POST",
            "/write/panic",
            &[("x-tenant", "acme")],
            "",
        )),
    )
    .await
    .expect("the panicking request ends");
    // actix-web closes the connection of a request whose handler panicked.
    assert!(
        reply.as_ref().map_or(true, |r| r.status == 500),
        "{reply:?}"
    );
    settled(&db).await;
    assert!(
        rows(&db).is_empty(),
        "the panicking handler's insert is gone"
    );

    // A request whose future is dropped while its handler hangs after writing (a timeout
    // middleware, a server shutting down). actix-web does not cancel a handler whose
    // client went away: it runs it to its end, whose status decides as always.
    let app = actix_web::test::init_service(
        App::new().app_data(web::Data::new(hooks.clone())).service(
            web::scope("")
                .wrap(TenantMiddleware::new(cancel_pool))
                .configure(routes),
        ),
    )
    .await;
    let request = actix_web::test::TestRequest::post()
        .uri("/write/hang")
        .insert_header(("x-tenant", "acme"))
        .to_request();
    tokio::select! {
        _ = app.call(request) => panic!("the hanging handler answered"),
        () = hooks.written.notified() => {}
    }
    settled(&db).await;
    assert!(
        rows(&db).is_empty(),
        "the cancelled request's insert is gone"
    );

    // The server still serves, and commits.
    let reply = post_as(&server, "/write/created", "acme").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(rows(&db), [row("acme", "created")]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_problem_details() {
    let (_db, pool) = setup(1).await;
    let server = serve(pool, None, Hooks::default());
    let problem = |status: u16, title: &str, detail: &str| json!({"type": "about:blank", "title": title, "status": status, "detail": detail});

    let reply = post_as(&server, "/write/created", &"x".repeat(2000)).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        reply.json(),
        problem(
            401,
            "Unauthorized",
            "invalid tenant: tenant id is 2000 bytes long; the limit is 1024 bytes"
        )
    );

    // The default source, a `Tenant` put in the extensions by the application's middleware.
    let reply = send(server.addr, "GET", "/extension", &[("x-user", "acme")], "").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "0"));
    let reply = send(server.addr, "GET", "/extension", &[], "").await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        problem(401, "Unauthorized", "the request names no tenant")
    );

    // A route the middleware does not wrap.
    let reply = send(server.addr, "GET", "/unwrapped", &[("x-user", "acme")], "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.json(),
        problem(500, "Internal Server Error", "internal server error")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_diesel_code_through_web_block_writes_one_transaction_per_request() {
    let (db, pool) = setup(1).await;
    let sync = SyncTenantPool::connect_with(
        &db.url(),
        Config::default(),
        diesel::r2d2::Pool::builder().max_size(1),
    )
    .expect("sync pool");
    let server = serve(pool, Some(sync), Hooks::default());

    let reply = post_as(&server, "/sync/ok", "acme").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(rows(&db), [row("acme", "one"), row("acme", "two")]);
    assert_eq!(
        writing_transactions(&db),
        1,
        "both inserts in one transaction"
    );

    // The third repository call fails: the request's earlier writes go with it.
    let reply = post_as(&server, "/sync/fail", "globex").await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(rows(&db).len(), 2, "nothing of the failed request stays");
    server.stop().await;
}
