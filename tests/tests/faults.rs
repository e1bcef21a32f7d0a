//! Faults: a backend killed mid-transaction, a statement timeout. (A server restart is in
//! its own test binary, `tests/restart.rs`, so that it disturbs no other test.)

use diesel_async::RunQueryDsl;
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, TenantPool};
use tenants_tests::TestDb;

use crate::common::{Login, assert_db_error, create_marked_table, session_of};

async fn prepared() -> (TestDb, TenantPool) {
    let db = TestDb::new();
    let mut conn = db.connect();
    create_marked_table(
        &mut conn,
        &Config::default(),
        Login::App,
        "faults",
        "text",
        TenantSqlType::Text,
    );
    diesel::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO faults (name, tenant) VALUES ('a', 'acme'), ('g', 'globex')",
        ),
        &mut conn,
    )
    .expect("seed");
    let pool = crate::common::pool(&Login::App.url(&db), 1).await;
    (db, pool)
}

#[tokio::test]
async fn a_backend_terminated_mid_transaction_is_an_error_then_the_pool_recovers() {
    let (db, pool) = prepared().await;
    let mut conn = pool.tenant("acme").await.expect("tenant");
    let inside = session_of(&mut conn).await.expect("session");
    assert_eq!(
        (inside.role.as_str(), inside.tenant.as_str()),
        ("tenants_user", "acme")
    );
    tenants_tests::count(
        &mut db.connect(),
        &format!(
            "SELECT count(*) AS n FROM (SELECT pg_terminate_backend({})) t",
            inside.pid
        ),
    );
    let after_kill = session_of(&mut conn).await;
    assert!(
        after_kill.is_err(),
        "the caller gets an error: {after_kill:?}"
    );
    assert!(conn.commit().await.is_err(), "and so does its commit");

    // The next checkout gets a new, clean connection, scoped as asked.
    let mut conn = pool.tenant("globex").await.expect("tenant after the kill");
    let next = session_of(&mut conn).await.expect("session");
    assert_ne!(next.pid, inside.pid);
    assert_eq!(
        (next.role.as_str(), next.tenant.as_str()),
        ("tenants_user", "globex")
    );
    conn.commit().await.expect("commit");
    let mut plain = pool.pool().get().await.expect("checkout");
    let idle = session_of(&mut plain).await.expect("session");
    assert_eq!(
        (idle.role.as_str(), idle.tenant.as_str()),
        (Login::App.role().expect("app"), "")
    );
}

#[tokio::test]
async fn a_statement_timeout_is_an_error_and_the_connection_stays_usable_and_clean() {
    let (_db, pool) = prepared().await;
    let mut conn = pool.tenant("acme").await.expect("tenant");
    let pid = session_of(&mut conn).await.expect("session").pid;
    diesel::sql_query("SET LOCAL statement_timeout = '100ms'")
        .execute(&mut conn)
        .await
        .expect("timeout");
    let slow = diesel::sql_query("SELECT pg_sleep(5)")
        .execute(&mut conn)
        .await;
    assert_db_error(&slow, "statement timeout", "a slow statement");
    conn.rollback().await.expect("rollback after the timeout");

    // Same backend, back to the login role, no tenant, and the timeout was local too.
    let mut plain = pool.pool().get().await.expect("checkout");
    let idle = session_of(&mut plain).await.expect("session");
    assert_eq!(
        (idle.pid, idle.role.as_str(), idle.tenant.as_str()),
        (pid, Login::App.role().expect("app"), "")
    );
    drop(plain);
    let mut conn = pool.tenant("acme").await.expect("tenant");
    diesel::sql_query("SELECT pg_sleep(0.3)")
        .execute(&mut conn)
        .await
        .expect("no timeout left over");
    conn.commit().await.expect("commit");
}

/// Tenant checkouts run no liveness check: an idle pooled connection whose backend is gone
/// (terminated here; after a server restart every idle one is) fails its begin batch, is
/// discarded, and the begin is retried on a new connection: the caller never sees it.
/// (Fails if a begin that lost its connection is not retried.)
#[tokio::test]
async fn a_dead_idle_connection_is_replaced_without_the_caller_noticing() {
    let (db, pool) = prepared().await;
    let mut conn = pool.tenant("acme").await.expect("tenant");
    let before = session_of(&mut conn).await.expect("session").pid;
    conn.commit().await.expect("commit");
    tenants_tests::count(
        &mut db.connect(),
        &format!("SELECT count(*) AS n FROM (SELECT pg_terminate_backend({before}, 5000)) t"),
    );
    for scope in ["tenant", "admin"] {
        let mut conn = match scope {
            "tenant" => pool.tenant("globex").await,
            _ => pool.admin().await,
        }
        .unwrap_or_else(|e| panic!("{scope} after the backend died: {e}"));
        let after = session_of(&mut conn).await.expect("session");
        assert_ne!(after.pid, before, "{scope}: a new backend");
        conn.commit().await.expect("commit");
    }
}
