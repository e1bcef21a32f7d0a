//! Nothing survives a transaction on a pooled connection.

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use tenants_core::{Config, Error, TenantPool, policy};
use tenants_tests::{TestDb, batch_locked};

use crate::common::{checkout_session, pool, session_of};

async fn prepared() -> (TestDb, TenantPool) {
    let db = TestDb::new();
    let config = Config::default();
    batch_locked(
        &mut db.connect(),
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    let pool = pool(&db.url(), 1).await;
    (db, pool)
}

#[tokio::test]
async fn dropped_tenant_connection_is_rolled_back_and_kept() {
    let (_db, pool) = prepared().await;
    let home = checkout_session(&pool).await;
    {
        let mut conn = pool.tenant("acme").await.expect("tenant");
        let inside = session_of(&mut conn).await.expect("inside");
        assert_eq!(
            (inside.role.as_str(), inside.tenant.as_str()),
            ("tenants_user", "acme")
        );
        // dropped without commit
    }
    let after = checkout_session(&pool).await;
    assert_eq!(after, home, "same backend, login role, no tenant");
}

#[tokio::test]
async fn transaction_commits_on_ok_and_rolls_back_on_err() {
    let (db, pool) = prepared().await;
    diesel::connection::SimpleConnection::batch_execute(
        &mut db.connect(),
        "CREATE TABLE log (v text); GRANT ALL ON log TO tenants_user, tenants_admin",
    )
    .expect("table");
    let home = checkout_session(&pool).await;
    pool.transaction("acme", async |conn| {
        diesel::sql_query("INSERT INTO log VALUES ('kept')")
            .execute(conn)
            .await
            .map_err(Error::from)
    })
    .await
    .expect("ok commits");
    let failed: Result<(), Error> = pool
        .transaction("acme", async |conn| {
            diesel::sql_query("INSERT INTO log VALUES ('lost')")
                .execute(conn)
                .await?;
            Err(Error::Database(diesel::result::Error::RollbackTransaction))
        })
        .await;
    assert!(failed.is_err());
    let kept = pool
        .admin_transaction(async |conn| {
            diesel::sql_query("SELECT string_agg(v, ',') AS v FROM log")
                .get_result::<Log>(conn)
                .await
                .map_err(Error::from)
        })
        .await
        .expect("read back");
    assert_eq!(kept.v, "kept");
    assert_eq!(checkout_session(&pool).await, home);
}

#[derive(QueryableByName)]
struct Log {
    #[diesel(sql_type = Text)]
    v: String,
}

#[tokio::test]
async fn a_dirty_connection_is_discarded_by_the_recycle_check() {
    let (_db, pool) = prepared().await;
    let home = checkout_session(&pool).await;
    {
        // User code that switches role for the session, behind the library's back.
        let mut conn = pool.pool().get().await.expect("checkout");
        diesel::sql_query("SET ROLE tenants_user")
            .execute(&mut conn)
            .await
            .expect("set role");
    }
    let after = checkout_session(&pool).await;
    assert_ne!(after.pid, home.pid, "the dirty connection was replaced");
    assert_eq!(
        (after.role, after.tenant),
        (home.role.clone(), String::new())
    );
    {
        let mut conn = pool.pool().get().await.expect("checkout");
        diesel::sql_query("SELECT set_config('tenants.current_tenant', 'acme', false)")
            .execute(&mut conn)
            .await
            .expect("session-level set_config");
    }
    let last = checkout_session(&pool).await;
    assert_ne!(
        last.pid, after.pid,
        "the connection with a session tenant was replaced"
    );
    assert_eq!(last.tenant, "");
}

#[tokio::test]
async fn invalid_tenant_id_is_rejected_before_checkout() {
    let (_db, pool) = prepared().await;
    let held = pool.pool().get().await.expect("hold the only connection");
    // With the only connection held, a checkout would wait; the id is refused first.
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), pool.tenant("")).await;
    match result {
        Ok(Err(Error::InvalidTenantId(_))) => {}
        other => panic!("expected an immediate InvalidTenantId, got {other:?}"),
    }
    drop(held);
}

#[tokio::test]
async fn without_the_statement_cache_a_raw_transaction_left_open_is_discarded() {
    // The simple-protocol check (statement cache off, as behind PgBouncer < 1.21) also sees
    // a transaction opened with raw SQL behind diesel's transaction manager; the cached
    // prepared check cannot (see `TenantPool::manager_config`).
    let db = TestDb::new();
    let config = Config::default();
    batch_locked(
        &mut db.connect(),
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    let pool = TenantPool::connect_with(
        &db.url(),
        config.with_statement_cache(false),
        bb8::Pool::builder().max_size(1),
    )
    .await
    .expect("pool");
    let before = checkout_session(&pool).await;
    {
        let mut conn = pool.pool().get().await.expect("checkout");
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, "BEGIN")
            .await
            .expect("raw begin");
    }
    let fresh = checkout_session(&pool).await;
    assert_ne!(
        fresh.pid, before.pid,
        "the connection left in a transaction was replaced"
    );
    let mut conn = pool.pool().get().await.expect("checkout");
    assert!(
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, "SAVEPOINT probe")
            .await
            .is_err(),
        "no transaction is open on the new connection"
    );
}
