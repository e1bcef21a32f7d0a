//! Everything holds behind PgBouncer in transaction mode (Debian's 1.18: no prepared
//! statements across transactions, hence `Config::with_statement_cache(false)`).

use diesel_async::pooled_connection::{AsyncDieselConnectionManager, RecyclingMethod};
use tenants_core::Config;
use tenants_tests::{PgBouncer, TestDb};

use crate::common::{APP, HARDENED, HARDENED_ADMIN, Login, OWNER, Server};
use crate::isolation::{items_int8, items_text, items_uuid, run_on};
use crate::soak::{assert_clean, seed, soak_tolerating};

#[tokio::test]
async fn isolation_suite_through_pgbouncer() {
    let bouncer = PgBouncer::start(2, &["postgres", OWNER, APP, HARDENED, HARDENED_ADMIN]);
    for login in [Login::Superuser, Login::Owner, Login::App, Login::Hardened] {
        run_on(items_text::kind(), login, Server::PgBouncer(&bouncer)).await;
    }
    run_on(items_int8::kind(), Login::App, Server::PgBouncer(&bouncer)).await;
    run_on(items_uuid::kind(), Login::App, Server::PgBouncer(&bouncer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortened_soak_through_pgbouncer() {
    let bouncer = PgBouncer::start(2, &["postgres", APP]);
    let db = TestDb::new();
    seed(Server::PgBouncer(&bouncer), &db, "soak", Login::App);
    let config = Config::default().with_statement_cache(false);
    let pool = tenants_core::TenantPool::connect_with(
        &bouncer.url(APP, db.name()),
        config,
        bb8::Pool::builder().max_size(2),
    )
    .await
    .expect("pool through pgbouncer");
    // Behind PgBouncer < 1.21 a query cancelled mid-flight can leave its prepared
    // statement's Close to reach another server, which answers with an error the client
    // does not expect: that connection fails and is replaced. An error, never a leak.
    let protocol_error = |e: &tenants_core::Error| {
        let text = e.to_string();
        text.contains("unexpected message from server") || text.contains("prepared statement")
    };
    let outcome = soak_tolerating(&pool, &pool, "soak", 2_000, 32, protocol_error).await;
    eprintln!(
        "pgbouncer soak: {} tolerated protocol errors",
        outcome.tolerated
    );
    assert_clean(&outcome);
    assert!(
        outcome.tolerated < 2_000 / 50,
        "{} protocol errors",
        outcome.tolerated
    );
    // The pool still serves.
    let conn = pool.tenant("t3").await.expect("tenant after the soak");
    conn.commit().await.expect("commit");
}

/// Two transactions of one client connection on two different server connections: the
/// second finds no prepared statement there unless the cache is off.
#[tokio::test]
async fn the_statement_cache_must_be_off_behind_pgbouncer_before_1_21() {
    let bouncer = PgBouncer::start(2, &["postgres"]);
    let (db, _) = crate::common::items_text_under_contract();
    let url = bouncer.url("postgres", db.name());
    let mut outcomes = Vec::new();
    for cache in [true, false] {
        let config = Config::default().with_statement_cache(cache);
        // Only the statement cache differs: no checkout query, whose own prepared
        // statement would get in the way of the demonstration.
        let pool = |config: Config| {
            let url = url.clone();
            async move {
                let mut manager_config = tenants_core::TenantPool::manager_config(&config);
                manager_config.recycling_method = RecyclingMethod::Fast;
                let manager = AsyncDieselConnectionManager::new_with_config(url, manager_config);
                let pool = bb8::Pool::builder().max_size(1).build(manager).await;
                tenants_core::TenantPool::new(pool.expect("pool through pgbouncer"), config)
            }
        };
        let (first, second) = (pool(config.clone()).await, pool(config).await);
        let names = items_text::kind().names;
        // 1. The first client prepares (and, with the cache, keeps) a statement on server A.
        let mut conn = first.tenant("acme").await.expect("tenant");
        names(&mut conn).await.expect("first query");
        conn.commit().await.expect("commit");
        // 2. The second client takes server A (PgBouncer reuses servers LIFO) and holds it.
        let mut holder = second.tenant("acme").await.expect("tenant");
        names(&mut holder).await.expect("holder query");
        // 3. The first client's next transaction runs on server B.
        let mut conn = first.tenant("acme").await.expect("tenant");
        outcomes.push((
            cache,
            names(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ));
        drop(conn);
        holder.rollback().await.expect("rollback");
    }
    assert!(
        matches!(&outcomes[0], (true, Err(e)) if e.contains("does not exist")),
        "with the cache, the statement is missing on the other server: {outcomes:?}"
    );
    assert_eq!(
        outcomes[1],
        (false, Ok(())),
        "without it, every transaction prepares anew"
    );
}
