//! Everything holds behind PgBouncer in transaction mode (Debian's 1.18: no prepared
//! statements across transactions, hence `Config::with_statement_cache(false)`).

use tenants_core::Config;
use tenants_tests::{PgBouncer, TestDb};

use crate::common::{APP, Login, OWNER};
use crate::isolation::{items_int8, items_text, items_uuid, run_via};
use crate::soak::{assert_clean, seed, soak};

#[tokio::test]
async fn isolation_suite_through_pgbouncer() {
    let bouncer = PgBouncer::start(2, &["postgres", OWNER, APP]);
    for login in [Login::Superuser, Login::Owner, Login::App] {
        run_via(items_text::kind(), login, Some(&bouncer)).await;
    }
    run_via(items_int8::kind(), Login::App, Some(&bouncer)).await;
    run_via(items_uuid::kind(), Login::App, Some(&bouncer)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shortened_soak_through_pgbouncer() {
    let bouncer = PgBouncer::start(2, &["postgres", APP]);
    let db = TestDb::new();
    seed(&db, "soak", Login::App);
    let config = Config::default().with_statement_cache(false);
    let pool = tenants_core::TenantPool::connect_with(
        &bouncer.url(APP, db.name()),
        config,
        bb8::Pool::builder().max_size(2),
    )
    .await
    .expect("pool through pgbouncer");
    let (violations, errors) = soak(&pool, "soak", 2_000, 32).await;
    assert_clean(&violations, errors);
}
