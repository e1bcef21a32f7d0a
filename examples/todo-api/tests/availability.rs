//! An exhausted pool, a database that is down and a blocked statement are answered 503
//! within a bound, never a hang; the service recovers by itself.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use reqwest::{Method, StatusCode};

use crate::common::{Launch, bring_up, send, take_down, test_db, token, wait_for_lock_waiters};

/// Well above each test's configured bound, well below a hang.
const BOUND: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_503_within_the_bound() {
    let db = test_db();
    let service = Launch::db(&db)
        .env("POOL_MAX_SIZE", "1")
        .env("POOL_TIMEOUT_SECONDS", "1")
        .start();
    let acme = token("acme");
    service.create(&acme, "first").await;

    // Hold the pool's only connection: its query waits for a table lock held here.
    let mut locker = db.connect();
    locker
        .batch_execute("BEGIN; LOCK TABLE todo_item IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let blocked = tokio::spawn(send(service.req(Method::GET, "/todos", Some(&acme))));
    tokio::task::spawn_blocking({
        let name = db.name().to_string();
        move || wait_for_lock_waiters(&name, 1)
    })
    .await
    .expect("wait for the lock");

    let started = Instant::now();
    let reply = service
        .call(Method::GET, "/todos", Some(&token("globex")), None)
        .await;
    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.error(), "unavailable");
    assert_eq!(
        reply
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(
        waited >= Duration::from_millis(900),
        "waited the pool's bound: {waited:?}"
    );
    assert!(waited < BOUND, "answered within the bound: {waited:?}");

    // Released, the held request completes and the service serves again.
    locker.batch_execute("ROLLBACK").expect("unlock");
    let first = blocked.await.expect("blocked request");
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(service.names(&acme).await, ["first"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_down_is_503_and_the_service_recovers() {
    let db = test_db();
    let service = Launch::db(&db).env("POOL_TIMEOUT_SECONDS", "1").start();
    let acme = token("acme");
    service.create(&acme, "before the outage").await;

    take_down(&db);
    for (method, body) in [
        (Method::GET, None),
        (
            Method::POST,
            Some(serde_json::json!({ "name": "during the outage" })),
        ),
    ] {
        let started = Instant::now();
        let reply = service
            .call(method.clone(), "/todos", Some(&acme), body)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method}: {reply:?}"
        );
        assert_eq!(reply.error(), "unavailable");
        assert!(
            started.elapsed() < BOUND,
            "{method}: {:?}",
            started.elapsed()
        );
    }
    let health = service.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "liveness does not need the database"
    );

    bring_up(&db);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = service.call(Method::GET, "/todos", Some(&acme), None).await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body[0]["name"], "before the outage");
            assert_eq!(reply.body.as_array().map(Vec::len), Some(1));
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {reply:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_bounds_a_blocked_query() {
    let db = test_db();
    let service = Launch::db(&db)
        .env("POSTGRES_STATEMENT_TIMEOUT_SECONDS", "1")
        .start();
    let acme = token("acme");
    service.create(&acme, "first").await;

    let mut locker = db.connect();
    locker
        .batch_execute("BEGIN; LOCK TABLE todo_item IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let started = Instant::now();
    let reply = service.call(Method::GET, "/todos", Some(&acme), None).await;
    let waited = started.elapsed();
    locker.batch_execute("ROLLBACK").expect("unlock");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "the statement ran 1 s: {waited:?}"
    );
    assert!(waited < BOUND, "{waited:?}");
    assert!(service.prints("statement timeout"), "the cause is logged");
    // The cancelled transaction was rolled back; its connection serves again.
    assert_eq!(service.names(&acme).await, ["first"]);
}
