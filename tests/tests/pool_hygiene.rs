//! Nothing survives a transaction on a pooled connection: on PostgreSQL, and on the Citus
//! coordinator `TENANTS_CITUS_URL` names (`citus::*`, ignored without one), where the log
//! table the tests write is a reference table, on every node.

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use tenants_core::{Error, TenantPool, policy};
use tenants_tests::{TestDb, batch_locked};

use crate::common::{Login, Server, Session, checkout_session, session_of};

async fn prepared(server: Server<'_>) -> (TestDb, TenantPool) {
    let db = server.db();
    let config = server.config();
    batch_locked(
        &mut db.connect(),
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    let pool = server.pool(&db, Login::Superuser, 1).await;
    (db, pool)
}

async fn dropped_tenant_connection_is_rolled_back_and_kept(server: Server<'_>) {
    let (_db, pool) = prepared(server).await;
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

async fn transaction_commits_on_ok_and_rolls_back_on_err(server: Server<'_>) {
    let (db, pool) = prepared(server).await;
    with_log(&db).await;
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

async fn a_dirty_connection_is_discarded_by_the_recycle_check(server: Server<'_>) {
    let (_db, pool) = prepared(server).await;
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

async fn invalid_tenant_id_is_rejected_before_checkout(server: Server<'_>) {
    let (_db, pool) = prepared(server).await;
    let held = pool.pool().get().await.expect("hold the only connection");
    // With the only connection held, a checkout would wait; the id is refused first.
    let result = tokio::time::timeout(std::time::Duration::from_secs(5), pool.tenant("")).await;
    match result {
        Ok(Err(Error::InvalidTenantId(_))) => {}
        other => panic!("expected an immediate InvalidTenantId, got {other:?}"),
    }
    drop(held);
}

async fn without_the_statement_cache_a_raw_transaction_left_open_is_discarded(server: Server<'_>) {
    // The simple-protocol check (statement cache off, as behind PgBouncer < 1.21) also sees
    // a transaction opened with raw SQL behind diesel's transaction manager; the cached
    // prepared check cannot (see `TenantPool::manager_config`).
    let db = server.db();
    let config = server.config();
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

/// A plain checkout of the pool's only connection, to leave dirt on it.
async fn on_a_plain_checkout(pool: &TenantPool, sql: &str) -> i32 {
    let mut conn = pool.unscoped().await.expect("checkout");
    let pid = session_of(&mut conn).await.expect("session").pid;
    let _ = diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, sql).await;
    pid
}

/// The session of a scoped transaction, committed.
async fn scoped_session(pool: &TenantPool, tenant: Option<&str>) -> Session {
    let mut conn = match tenant {
        Some(tenant) => pool.tenant(tenant).await.expect("tenant"),
        None => pool.admin().await.expect("admin"),
    };
    let session = session_of(&mut conn).await.expect("session");
    conn.commit().await.expect("commit");
    session
}

/// Tenant and admin checkouts run no recycle check: their begin batch sets role and tenant
/// itself, overriding a session-level `SET ROLE` left behind, and their end resets the
/// session's role. (Fails if the batch's `SET LOCAL ROLE` goes, or the end's reset.)
async fn a_session_role_left_behind_is_overridden_in_scopes_and_reset_at_their_end(
    server: Server<'_>,
) {
    let (_db, pool) = prepared(server).await;
    let home = checkout_session(&pool).await;
    let dirty = on_a_plain_checkout(&pool, "SET ROLE tenants_admin").await;
    let tenant = scoped_session(&pool, Some("acme")).await;
    assert_eq!(
        (tenant.pid, tenant.role.as_str(), tenant.tenant.as_str()),
        (dirty, "tenants_user", "acme"),
        "the same connection, scoped as asked"
    );
    let admin = scoped_session(&pool, None).await;
    assert_eq!(
        (admin.pid, admin.role.as_str(), admin.tenant.as_str()),
        (dirty, "tenants_admin", "")
    );
    // The end of the scoped transaction reset the session's role: clean, so kept.
    let plain = checkout_session(&pool).await;
    assert_eq!(
        (plain.pid, plain.role, plain.tenant),
        (dirty, home.role, String::new())
    );
}

/// A session-level tenant (`set_config(.., false)`), here left by code inside a tenant
/// transaction, does not outlive it: the commit resets it. (Fails without the reset.)
async fn a_session_tenant_left_behind_is_overridden_in_scopes_and_reset_at_their_end(
    server: Server<'_>,
) {
    let (_db, pool) = prepared(server).await;
    let mut conn = pool.tenant("acme").await.expect("tenant");
    let dirty = session_of(&mut conn).await.expect("session").pid;
    diesel::sql_query("SELECT set_config('tenants.current_tenant', 'acme', false)")
        .execute(&mut conn)
        .await
        .expect("session-level set_config");
    conn.commit().await.expect("commit");

    let admin = scoped_session(&pool, None).await;
    assert_eq!((admin.pid, admin.tenant.as_str()), (dirty, ""));
    let globex = scoped_session(&pool, Some("globex")).await;
    assert_eq!((globex.pid, globex.tenant.as_str()), (dirty, "globex"));
    // The commit reset the session-level setting: clean, so kept.
    let plain = checkout_session(&pool).await;
    assert_eq!((plain.pid, plain.tenant.as_str()), (dirty, ""));
}

/// A `log` table our roles may write; on Citus a reference table, so that writing it
/// reaches every node as the transaction's role.
async fn with_log(db: &TestDb) {
    let mut conn = db.connect();
    let mut sql = String::from("CREATE TABLE log (v text);");
    if db.is_citus() {
        sql.push_str("SELECT create_reference_table('log');");
    }
    sql.push_str("GRANT ALL ON log TO tenants_user, tenants_admin");
    diesel::connection::SimpleConnection::batch_execute(&mut conn, &sql).expect("table");
}

async fn logged(pool: &TenantPool) -> String {
    pool.admin_transaction(async |conn| {
        diesel::sql_query("SELECT coalesce(string_agg(v, ',' ORDER BY v), '') AS v FROM log")
            .get_result::<Log>(conn)
            .await
            .map_err(Error::from)
    })
    .await
    .expect("read the log")
    .v
}

/// A raw `BEGIN` left open by a plain checkout, with a write: the next plain checkout
/// refuses the connection (the check sees the transaction id), and the write is lost with
/// it. (Fails if the check's `pg_current_xact_id_if_assigned() IS NULL` goes.)
async fn a_raw_transaction_that_wrote_is_refused_by_a_plain_checkout(server: Server<'_>) {
    let (db, pool) = prepared(server).await;
    with_log(&db).await;
    let dirty = on_a_plain_checkout(&pool, "BEGIN; INSERT INTO log VALUES ('left open')").await;
    let plain = checkout_session(&pool).await;
    assert_ne!(
        plain.pid, dirty,
        "the connection left in a transaction was replaced"
    );
    assert_eq!(
        logged(&pool).await,
        "",
        "its uncommitted write went with it"
    );
}

/// What a raw `BEGIN` left open means for the next tenant transaction, which checks
/// nothing first: PostgreSQL only warns about our `BEGIN`, our `SET LOCAL`s apply inside
/// the left-over transaction and our `COMMIT` ends it, with whatever it wrote (the
/// documented price of checking nothing; see benches/PERFORMANCE.md). Nothing survives the
/// commit: the connection is clean and outside any transaction again.
async fn a_raw_transaction_left_open_is_ended_by_the_next_scoped_one(server: Server<'_>) {
    let (db, pool) = prepared(server).await;
    with_log(&db).await;
    let dirty = on_a_plain_checkout(&pool, "BEGIN; INSERT INTO log VALUES ('left open')").await;
    let tenant = scoped_session(&pool, Some("acme")).await;
    assert_eq!(
        (tenant.pid, tenant.role.as_str(), tenant.tenant.as_str()),
        (dirty, "tenants_user", "acme")
    );
    let mut conn = pool.unscoped().await.expect("checkout");
    let after = session_of(&mut conn).await.expect("session");
    assert_eq!(after.pid, dirty, "clean again, so the plain check kept it");
    assert!(
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, "SAVEPOINT probe")
            .await
            .is_err(),
        "no transaction is open any more"
    );
    drop(conn);
    assert_eq!(
        logged(&pool).await,
        "left open",
        "committed by the tenant's COMMIT"
    );
}

/// A transaction left aborted by raw SQL makes the next begin batch fail ("current
/// transaction is aborted"): the connection does not go back to fail forever; a ROLLBACK
/// ends the left-over block (and its write) and the begin succeeds on it. (Fails without
/// that ROLLBACK: the connection would be taken for lost, discarded and replaced.)
async fn a_transaction_left_aborted_is_rolled_back_and_the_begin_retried(server: Server<'_>) {
    let (db, pool) = prepared(server).await;
    with_log(&db).await;
    let dirty = on_a_plain_checkout(
        &pool,
        "BEGIN; INSERT INTO log VALUES ('left aborted'); SELECT 1/0",
    )
    .await;
    let tenant = scoped_session(&pool, Some("acme")).await;
    assert_eq!(
        (tenant.pid, tenant.role.as_str(), tenant.tenant.as_str()),
        (dirty, "tenants_user", "acme")
    );
    assert_eq!(
        logged(&pool).await,
        "",
        "the left-over write was rolled back"
    );
    assert_eq!(checkout_session(&pool).await.pid, dirty, "clean: kept");
}

/// A begin batch that is itself wrong (here: a tenant role that does not exist) is an
/// error naming it, and leaves the pooled connection clean, outside any transaction.
async fn a_begin_batch_that_fails_leaves_the_pooled_connection_clean(server: Server<'_>) {
    let (db, _pool) = prepared(server).await;
    let config = server
        .config()
        .with_tenant_role("tenants_no_such_role")
        .expect("config");
    let pool = TenantPool::connect_with(&db.url(), config, bb8::Pool::builder().max_size(1))
        .await
        .expect("pool");
    let before = checkout_session(&pool).await.pid;
    match pool.tenant("acme").await {
        Err(e) => assert!(e.to_string().contains("tenants_no_such_role"), "{e}"),
        Ok(_) => panic!("a missing role cannot begin"),
    }
    let mut conn = pool.unscoped().await.expect("checkout");
    assert_eq!(session_of(&mut conn).await.expect("session").pid, before);
    assert!(
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, "SAVEPOINT probe")
            .await
            .is_err(),
        "no transaction is open"
    );
}

/// A begin batch that fails on a connection of your own (here: a role that does not exist)
/// leaves it usable, outside any transaction. (Fails without the ROLLBACK after a failed
/// begin: the server keeps the aborted block the batch opened.)
async fn a_failed_begin_leaves_your_own_connection_usable(server: Server<'_>) {
    use diesel_async::{AsyncConnection, AsyncPgConnection};
    use tenants_core::{AsyncTenantTransactionExt, Scope, Tenant, TenantTransactionExt};

    let (db, _pool) = prepared(server).await;
    let config = server
        .config()
        .with_tenant_role("tenants_no_such_role")
        .expect("config");
    let acme = || Scope::Tenant(Tenant::new("acme").expect("id"));

    let mut sync = db.connect();
    let failed: Result<(), Error> = sync.scoped_transaction(&config, acme(), |_| Ok(()));
    assert!(
        failed.is_err_and(|e| e.to_string().contains("tenants_no_such_role")),
        "the missing role is the error"
    );
    assert_eq!(tenants_tests::count(&mut sync, "SELECT 1::int8 AS n"), 1);

    let mut conn = AsyncPgConnection::establish(&db.url())
        .await
        .expect("connect");
    let failed: Result<(), Error> = conn
        .scoped_transaction(&config, acme(), async |_| Ok(()))
        .await;
    assert!(failed.is_err());
    assert!(session_of(&mut conn).await.is_ok(), "usable again");
}

/// Each test, on PostgreSQL (`direct`) and on the Citus coordinator (`citus`).
macro_rules! on_every_server {
    ($($test:ident),* $(,)?) => {
        mod direct {
            use crate::common::Server;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(Server::Direct).await;
                }
            )*
        }
        mod citus {
            use crate::common::Server;
            $(
                #[tokio::test]
                #[ignore = "needs TENANTS_CITUS_URL"]
                async fn $test() {
                    super::$test(Server::Citus).await;
                }
            )*
        }
    };
}

on_every_server!(
    dropped_tenant_connection_is_rolled_back_and_kept,
    transaction_commits_on_ok_and_rolls_back_on_err,
    a_dirty_connection_is_discarded_by_the_recycle_check,
    invalid_tenant_id_is_rejected_before_checkout,
    without_the_statement_cache_a_raw_transaction_left_open_is_discarded,
    a_session_role_left_behind_is_overridden_in_scopes_and_reset_at_their_end,
    a_session_tenant_left_behind_is_overridden_in_scopes_and_reset_at_their_end,
    a_raw_transaction_that_wrote_is_refused_by_a_plain_checkout,
    a_raw_transaction_left_open_is_ended_by_the_next_scoped_one,
    a_transaction_left_aborted_is_rolled_back_and_the_begin_retried,
    a_begin_batch_that_fails_leaves_the_pooled_connection_clean,
    a_failed_begin_leaves_your_own_connection_usable,
);
