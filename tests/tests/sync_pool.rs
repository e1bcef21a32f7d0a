//! The synchronous side: `tenants_core::SyncTenantPool` on r2d2 and the catalog read on a
//! `diesel::PgConnection`, held to what the async side does (pool_hygiene.rs, connect.rs,
//! soak.rs). The isolation suite and `verify` run through both pools (isolation.rs,
//! verify.rs).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::Pool;
use diesel::sql_types::Text;
use diesel::{PgConnection, QueryResult, QueryableByName, RunQueryDsl};
use tenants_core::catalog::{self, MarkedTable, ProbeKey};
use tenants_core::policy::{self, QualifiedName};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, Error, SyncTenantPool};
use tenants_tests::{TestDb, batch_locked, database_url, url_with};

use crate::common::{Login, SESSION_SQL, Session, items_text_under_contract};
use crate::soak::{self, Outcome, Rng, Violations};

/// The sync reader sends the async reader's statements: both see the same catalog.
#[tokio::test]
async fn the_catalog_read_on_a_sync_connection_is_the_async_one() {
    let (db, mut sync) = items_text_under_contract();
    let config = Config::default();
    let tables = [MarkedTable {
        table: QualifiedName::new("public", "items_text"),
        key: ProbeKey {
            column: "tenant".into(),
            sql_type: TenantSqlType::Text,
        },
    }];
    let shared = [QualifiedName::new("public", "no_such_table")];
    let from_sync =
        catalog::read_sync(&mut sync, &config, &tables, &shared, &[]).expect("sync read");
    let mut conn = tenants_core::establish(&db.url()).await.expect("connect");
    let from_async = catalog::read(&mut conn, &config, &tables, &shared, &[])
        .await
        .expect("async read");
    assert_eq!(from_sync, from_async);
    assert_eq!(from_sync.tables.len(), 1, "{from_sync:#?}");
    assert_eq!(from_sync.policies.len(), 2, "{from_sync:#?}");
    assert_eq!(from_sync.expected.isolation.len(), 1, "{from_sync:#?}");
    assert!(!from_sync.table_privileges.is_empty(), "{from_sync:#?}");
}

/// A sync pool of `size` on `url`; a checkout waits at most 5 s.
fn sync_pool(url: &str, config: Config, size: u32) -> SyncTenantPool {
    SyncTenantPool::connect_with(
        url,
        config,
        Pool::builder()
            .max_size(size)
            .connection_timeout(Duration::from_secs(5)),
    )
    .unwrap_or_else(|e| panic!("cannot build a sync pool for {url}: {e}"))
}

/// A database with our roles and a sync pool of one connection to it.
fn prepared_with(config: Config) -> (TestDb, SyncTenantPool) {
    let db = TestDb::new();
    batch_locked(
        &mut db.connect(),
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    let pool = sync_pool(&db.url(), config, 1);
    (db, pool)
}

fn prepared() -> (TestDb, SyncTenantPool) {
    prepared_with(Config::default())
}

fn session_of(conn: &mut PgConnection) -> Session {
    diesel::sql_query(SESSION_SQL)
        .get_result::<Session>(conn)
        .expect("session state")
}

/// The session of a plain (checked) checkout.
fn checkout_session(pool: &SyncTenantPool) -> Session {
    session_of(&mut pool.unscoped().expect("checkout"))
}

/// The session of a scoped transaction, committed.
fn scoped_session(pool: &SyncTenantPool, tenant: Option<&str>) -> Session {
    let mut conn = match tenant {
        Some(tenant) => pool.tenant(tenant).expect("tenant"),
        None => pool.admin().expect("admin"),
    };
    let session = session_of(&mut conn);
    conn.commit().expect("commit");
    session
}

/// A plain checkout of the pool's only connection, to leave dirt on it: its backend.
fn on_a_plain_checkout(pool: &SyncTenantPool, sql: &str) -> i32 {
    let mut conn = pool.unscoped().expect("checkout");
    let pid = session_of(&mut conn).pid;
    let _ = conn.batch_execute(sql);
    pid
}

/// A dirty plain checkout is logged once, as the manager's WARN, not a second time by r2d2
/// at ERROR (issue 18.7). (Fails with r2d2's default error handler.)
#[test]
fn a_dirty_checkout_is_logged_once() {
    // r2d2 logs through `log`: forward its records to the capturing subscriber (the
    // process's one logger; another test may have installed it already).
    let _ = tracing_log::LogTracer::init();
    let (_db, pool) = prepared();
    let capture = tenants_tests::capture::Capture::new();
    let _guard = capture.install();
    on_a_plain_checkout(&pool, "SET ROLE tenants_admin");
    drop(pool.unscoped().expect("a clean connection"));
    let events = capture.events();
    let warnings = events
        .iter()
        .filter(|e| e.target == "tenants::checkout" && e.level == tracing::Level::WARN)
        .count();
    let errors: Vec<_> = events
        .iter()
        .filter(|e| e.level == tracing::Level::ERROR)
        .collect();
    assert_eq!(warnings, 1, "{events:?}");
    assert!(errors.is_empty(), "{errors:?}");
}

/// Whether a transaction is open on `conn` (a savepoint needs one).
fn in_transaction(conn: &mut PgConnection) -> bool {
    conn.batch_execute("SAVEPOINT probe").is_ok()
}

#[derive(QueryableByName)]
struct Log {
    #[diesel(sql_type = Text)]
    v: String,
}

fn with_log(db: &TestDb) {
    db.connect()
        .batch_execute("CREATE TABLE log (v text); GRANT ALL ON log TO tenants_user, tenants_admin")
        .expect("table");
}

fn logged(pool: &SyncTenantPool) -> String {
    pool.admin_transaction(|conn| {
        Ok::<_, Error>(
            diesel::sql_query("SELECT coalesce(string_agg(v, ',' ORDER BY v), '') AS v FROM log")
                .get_result::<Log>(conn)?,
        )
    })
    .expect("read the log")
    .v
}

#[test]
fn a_tenant_connection_runs_as_its_tenant_and_dropped_is_rolled_back_and_kept() {
    let (db, pool) = prepared();
    with_log(&db);
    let home = checkout_session(&pool);
    {
        let mut conn = pool.tenant("acme").expect("tenant");
        let inside = session_of(&mut conn);
        assert_eq!(
            (inside.pid, inside.role.as_str(), inside.tenant.as_str()),
            (home.pid, "tenants_user", "acme")
        );
        diesel::sql_query("INSERT INTO log VALUES ('dropped')")
            .execute(&mut *conn)
            .expect("insert");
        // dropped without commit
    }
    assert_eq!(
        checkout_session(&pool),
        home,
        "same backend, login role, no tenant"
    );
    assert_eq!(logged(&pool), "", "rolled back");
    let admin = scoped_session(&pool, None);
    assert_eq!(
        (admin.pid, admin.role.as_str(), admin.tenant.as_str()),
        (home.pid, "tenants_admin", "")
    );
}

#[test]
fn commit_keeps_and_rollback_drops_the_writes() {
    let (db, pool) = prepared();
    with_log(&db);
    let mut conn = pool.tenant("acme").expect("tenant");
    diesel::sql_query("INSERT INTO log VALUES ('committed')")
        .execute(&mut *conn)
        .expect("insert");
    conn.commit().expect("commit");
    let mut conn = pool.tenant("acme").expect("tenant");
    diesel::sql_query("INSERT INTO log VALUES ('rolled back')")
        .execute(&mut *conn)
        .expect("insert");
    conn.rollback().expect("rollback");
    assert_eq!(logged(&pool), "committed");
}

#[test]
fn transaction_commits_on_ok_and_rolls_back_on_err() {
    let (db, pool) = prepared();
    with_log(&db);
    let home = checkout_session(&pool);
    pool.transaction("acme", |conn| {
        Ok::<_, Error>(diesel::sql_query("INSERT INTO log VALUES ('kept')").execute(conn)?)
    })
    .expect("ok commits");
    let failed: Result<(), Error> = pool.transaction("acme", |conn| {
        diesel::sql_query("INSERT INTO log VALUES ('lost')").execute(conn)?;
        Err(Error::Database(diesel::result::Error::RollbackTransaction))
    });
    assert!(failed.is_err());
    assert_eq!(logged(&pool), "kept");
    assert_eq!(checkout_session(&pool), home);
}

/// A panic inside the closure: nothing is committed, and the connection, in a transaction
/// of unknown state, is closed rather than reused. (Fails if the pool's `has_broken` stops deferring to
/// diesel's, which discards a connection returned during a panic.)
#[test]
fn a_panic_in_a_transaction_writes_nothing_and_the_connection_is_replaced() {
    let (db, pool) = prepared();
    with_log(&db);
    let mut backend = checkout_session(&pool).pid;
    for sql in ["SELECT 1", "INSERT INTO log VALUES ('panicked')"] {
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _: Result<(), Error> = pool.transaction("acme", |conn| {
                diesel::sql_query(sql).execute(conn)?;
                panic!("intended panic inside a tenant transaction");
            });
        }));
        assert!(panicked.is_err());
        // A scoped checkout, which runs no clean check, gets a new connection.
        let after = scoped_session(&pool, Some("globex"));
        assert_ne!(after.pid, backend, "{sql}: the connection was closed");
        assert_eq!(after.tenant, "globex", "{sql}");
        backend = after.pid;
    }
    assert_eq!(logged(&pool), "");
}

#[test]
fn an_invalid_tenant_id_is_rejected_before_checkout() {
    let (_db, pool) = prepared();
    let held = pool.unscoped().expect("hold the only connection");
    // With the only connection held, a checkout would wait 5 s; the id is refused first.
    let started = Instant::now();
    match pool.tenant("") {
        Err(Error::InvalidTenantId(_)) => {}
        other => panic!("expected InvalidTenantId, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(held);
}

/// Tenant and admin checkouts run no check: their begin batch sets role and tenant
/// itself, overriding a session-level `SET ROLE` left behind, and their end resets the
/// session's role. (Fails if the end's reset goes.)
#[test]
fn a_session_role_left_behind_is_overridden_in_scopes_and_reset_at_their_end() {
    let (_db, pool) = prepared();
    let home = checkout_session(&pool);
    let dirty = on_a_plain_checkout(&pool, "SET ROLE tenants_admin");
    let tenant = scoped_session(&pool, Some("acme"));
    assert_eq!(
        (tenant.pid, tenant.role.as_str(), tenant.tenant.as_str()),
        (dirty, "tenants_user", "acme"),
        "the same connection, scoped as asked"
    );
    let admin = scoped_session(&pool, None);
    assert_eq!(
        (admin.pid, admin.role.as_str(), admin.tenant.as_str()),
        (dirty, "tenants_admin", "")
    );
    // The end of the scoped transaction reset the session's role: clean, so kept.
    let plain = checkout_session(&pool);
    assert_eq!(
        (plain.pid, plain.role, plain.tenant),
        (dirty, home.role, String::new())
    );
}

/// A session-level tenant (`set_config(.., false)`), here left by code inside a tenant
/// transaction, does not outlive it: the commit resets it. (Fails without the reset.)
#[test]
fn a_session_tenant_left_behind_is_overridden_in_scopes_and_reset_at_their_end() {
    let (_db, pool) = prepared();
    let mut conn = pool.tenant("acme").expect("tenant");
    let dirty = session_of(&mut conn).pid;
    diesel::sql_query("SELECT set_config('tenants.current_tenant', 'acme', false)")
        .execute(&mut *conn)
        .expect("session-level set_config");
    conn.commit().expect("commit");

    let admin = scoped_session(&pool, None);
    assert_eq!((admin.pid, admin.tenant.as_str()), (dirty, ""));
    let globex = scoped_session(&pool, Some("globex"));
    assert_eq!((globex.pid, globex.tenant.as_str()), (dirty, "globex"));
    // The commit reset the session-level setting: clean, so kept.
    let plain = checkout_session(&pool);
    assert_eq!((plain.pid, plain.tenant.as_str()), (dirty, ""));
}

/// A raw `BEGIN` left open by a plain checkout, with a write: the next plain checkout
/// refuses the connection (the prepared check sees the transaction id), and the write is
/// lost with it. (Fails if the check's `pg_current_xact_id_if_assigned() IS NULL` goes.)
#[test]
fn a_raw_transaction_that_wrote_is_refused_by_a_plain_checkout() {
    let (db, pool) = prepared();
    with_log(&db);
    let dirty = on_a_plain_checkout(&pool, "BEGIN; INSERT INTO log VALUES ('left open')");
    let plain = checkout_session(&pool);
    assert_ne!(
        plain.pid, dirty,
        "the connection left in a transaction was replaced"
    );
    assert_eq!(logged(&pool), "", "its uncommitted write went with it");
}

/// With the statement cache off (as behind PgBouncer < 1.21) the check is the
/// simple-protocol statement, which sees any transaction left open, even one that only
/// read. (Fails if the pool runs the prepared check with the cache off.)
#[test]
fn without_the_statement_cache_a_raw_transaction_left_open_is_refused() {
    let (_db, pool) = prepared_with(Config::default().with_statement_cache(false));
    let dirty = on_a_plain_checkout(&pool, "BEGIN; SELECT 1");
    let mut conn = pool.unscoped().expect("checkout");
    assert_ne!(session_of(&mut conn).pid, dirty, "replaced");
    assert!(
        !in_transaction(&mut conn),
        "no transaction is open on the new connection"
    );
}

/// A raw `BEGIN` left open meets the next tenant transaction, which checks nothing first:
/// our `SET LOCAL`s apply inside it and our `COMMIT` ends it, with whatever it wrote (the
/// async pool's documented price of checking nothing). Nothing survives the commit.
#[test]
fn a_raw_transaction_left_open_is_ended_by_the_next_scoped_one() {
    let (db, pool) = prepared();
    with_log(&db);
    let dirty = on_a_plain_checkout(&pool, "BEGIN; INSERT INTO log VALUES ('left open')");
    let tenant = scoped_session(&pool, Some("acme"));
    assert_eq!(
        (tenant.pid, tenant.role.as_str(), tenant.tenant.as_str()),
        (dirty, "tenants_user", "acme")
    );
    let mut conn = pool.unscoped().expect("checkout");
    assert_eq!(
        session_of(&mut conn).pid,
        dirty,
        "clean again, so the check kept it"
    );
    assert!(
        !in_transaction(&mut conn),
        "no transaction is open any more"
    );
    drop(conn);
    assert_eq!(
        logged(&pool),
        "left open",
        "committed by the tenant's COMMIT"
    );
}

/// A transaction left aborted by raw SQL makes the next begin batch fail: a ROLLBACK ends
/// the left-over block (and its write) and the begin succeeds on the same connection.
/// (Fails without that ROLLBACK and retry.)
#[test]
fn a_transaction_left_aborted_is_rolled_back_and_the_begin_retried() {
    let (db, pool) = prepared();
    with_log(&db);
    let dirty = on_a_plain_checkout(
        &pool,
        "BEGIN; INSERT INTO log VALUES ('left aborted'); SELECT 1/0",
    );
    let tenant = scoped_session(&pool, Some("acme"));
    assert_eq!(
        (tenant.pid, tenant.role.as_str(), tenant.tenant.as_str()),
        (dirty, "tenants_user", "acme")
    );
    assert_eq!(logged(&pool), "", "the left-over write was rolled back");
    assert_eq!(checkout_session(&pool).pid, dirty, "clean: kept");
}

/// A begin batch that is itself wrong (a tenant role that does not exist) is an error
/// naming it, and leaves the pooled connection clean, outside any transaction.
#[test]
fn a_begin_batch_that_fails_leaves_the_pooled_connection_clean() {
    let (db, _pool) = prepared();
    let config = Config::default()
        .with_tenant_role("tenants_no_such_role")
        .expect("config");
    let pool = sync_pool(&db.url(), config, 1);
    let before = checkout_session(&pool).pid;
    match pool.tenant("acme") {
        Err(e) => assert!(e.to_string().contains("tenants_no_such_role"), "{e}"),
        Ok(_) => panic!("a missing role cannot begin"),
    }
    let mut conn = pool.unscoped().expect("checkout");
    assert_eq!(session_of(&mut conn).pid, before);
    assert!(!in_transaction(&mut conn), "no transaction is open");
}

/// A pooled connection whose backend was terminated while idle: the begin finds it lost,
/// discards it and begins on a new one; the caller sees no error. (Fails if a lost
/// connection's error is returned instead of retried.)
#[test]
fn a_connection_lost_while_idle_is_replaced_by_the_begin() {
    let (db, pool) = prepared();
    let lost = checkout_session(&pool).pid;
    tenants_tests::count(
        &mut db.connect(),
        &format!("SELECT count(*) AS n FROM (SELECT pg_terminate_backend({lost})) t"),
    );
    let tenant = scoped_session(&pool, Some("acme"));
    assert_ne!(tenant.pid, lost);
    assert_eq!(tenant.tenant, "acme");
}

#[test]
fn a_server_that_is_not_there_is_refused_at_once() {
    let started = Instant::now();
    match SyncTenantPool::connect("postgres://app:s3cret@127.0.0.1:1/shop") {
        Err(error @ Error::Connect { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("127.0.0.1") && text.contains("port 1"),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
            // Names the database and the user, on one line (issue 18.7).
            assert!(
                text.contains(r#"the database "shop" on 127.0.0.1:1 as user "app""#),
                "{text}"
            );
            assert!(!text.contains('\n') && !text.contains('\t'), "{text:?}");
        }
        other => panic!("expected Error::Connect, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    let url = url_with(&database_url(), None, Some("tenants_no_such_database"));
    match SyncTenantPool::connect(&url) {
        Err(Error::Connect { reason, .. }) => assert!(
            reason.contains(r#"database "tenants_no_such_database" does not exist"#),
            "{reason}"
        ),
        other => panic!("expected Error::Connect, got {other:?}"),
    }
}

/// A checkout that times out because the database went away names the last connection
/// error, as the async pool does.
#[test]
fn a_checkout_timeout_carries_the_last_connection_error() {
    let (db, _pool) = prepared();
    let pool = SyncTenantPool::connect_with(
        &db.url(),
        Config::default(),
        Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_secs(1)),
    )
    .expect("pool");
    tenants_tests::connect(&database_url())
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name()))
        .expect("drop the database under the pool");
    for (what, error) in [
        ("tenant", pool.tenant("acme").map(drop)),
        ("unscoped", pool.unscoped().map(drop)),
    ] {
        match error {
            Err(Error::PoolTimedOut {
                waited,
                last_connect_error: Some(last),
            }) => {
                assert_eq!(waited, Duration::from_secs(1), "{what}");
                assert!(
                    last.contains(&format!("database \"{}\" does not exist", db.name())),
                    "{what}: {last}"
                );
            }
            other => panic!("{what}: expected PoolTimedOut with a cause, got {other:?}"),
        }
    }
}

/// Reads `table` as `tenant`: every row and the session must be the tenant's.
fn check_rows(
    conn: &mut PgConnection,
    table: &str,
    tenant: &str,
    v: &Violations,
) -> QueryResult<()> {
    let rows = diesel::sql_query(format!("SELECT name, tenant FROM \"{table}\""))
        .load::<soak::Row>(conn)?;
    for row in rows {
        if row.tenant != tenant || !row.name.starts_with(&format!("{tenant}-")) {
            v.record(format!("as {tenant} saw {}/{}", row.tenant, row.name));
        }
    }
    let session = diesel::sql_query(soak::SESSION).get_result::<soak::Session>(conn)?;
    if session.role != "tenants_user" || session.tenant != tenant {
        v.record(format!(
            "as {tenant} ran as {}/{}",
            session.role, session.tenant
        ));
    }
    Ok(())
}

/// One operation of kind `kind` for `tenant`, as soak.rs's async one.
fn operation(
    pool: &SyncTenantPool,
    table: &str,
    kind: u64,
    tenant: &str,
    n: u64,
    v: &Violations,
) -> Result<(), Error> {
    let insert = |suffix: &str| {
        diesel::sql_query(format!(
            "INSERT INTO \"{table}\" (name, tenant) VALUES ('{tenant}-{suffix}', '{tenant}')"
        ))
    };
    match kind {
        // read, commit
        0 | 1 => {
            let mut conn = pool.tenant(tenant)?;
            check_rows(&mut conn, table, tenant, v)?;
            conn.commit()
        }
        // insert, commit
        2 => {
            let mut conn = pool.tenant(tenant)?;
            insert(&n.to_string()).execute(&mut *conn)?;
            conn.commit()
        }
        // insert, roll back
        3 => {
            let mut conn = pool.tenant(tenant)?;
            insert("lost").execute(&mut *conn)?;
            conn.rollback()
        }
        // insert, then dropped
        4 => {
            let mut conn = pool.tenant(tenant)?;
            insert("dropped").execute(&mut *conn)?;
            drop(conn);
            Ok(())
        }
        // the closure form, whose closure fails after checking
        5 => {
            let result: Result<(), Error> = pool.transaction(tenant, |conn| {
                check_rows(conn, table, tenant, v)?;
                Err(Error::Database(diesel::result::Error::RollbackTransaction))
            });
            match result {
                Err(Error::Database(diesel::result::Error::RollbackTransaction)) => Ok(()),
                other => other,
            }
        }
        // the closure panics inside the transaction
        6 => {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let _: Result<(), Error> = pool.transaction(tenant, |conn| {
                    insert("panicked").execute(conn)?;
                    panic!("{}", soak::PANIC_MARKER);
                });
            }));
            Ok(())
        }
        // admin: sees every tenant
        7 => {
            let mut conn = pool.admin()?;
            let session =
                diesel::sql_query(soak::SESSION).get_result::<soak::Session>(&mut *conn)?;
            if session.role != "tenants_admin" || !session.tenant.is_empty() {
                v.record(format!("admin ran as {}/{}", session.role, session.tenant));
            }
            let rows = diesel::sql_query(format!("SELECT name, tenant FROM \"{table}\""))
                .load::<soak::Row>(&mut *conn)?;
            if rows
                .iter()
                .any(|r| !r.name.starts_with(&format!("{}-", r.tenant)))
            {
                v.record("admin saw a row written under the wrong tenant".into());
            }
            conn.commit()
        }
        // a plain checkout: must be clean
        _ => {
            let mut conn = pool.unscoped()?;
            let session =
                diesel::sql_query(soak::SESSION).get_result::<soak::Session>(&mut *conn)?;
            if session.role != session.login || !session.tenant.is_empty() {
                v.record(format!(
                    "checkout was dirty: {}/{}",
                    session.role, session.tenant
                ));
            }
            Ok(())
        }
    }
}

/// Pool hygiene under load, the sync way: 8 threads share a pool of 2 for 4000 operations
/// mixing commits, rollbacks, drops, failing closures, panics, admin transactions and plain
/// checkouts over 50 tenants; every read checks that rows and session are the tenant's.
#[test]
fn a_sync_pool_of_two_stays_clean_through_4000_mixed_operations_on_8_threads() {
    const OPS: u64 = 4000;
    const THREADS: u64 = 8;
    soak::silence_intended_panics();
    let db = TestDb::new();
    soak::seed(crate::common::Server::Direct, &db, "soak", Login::App);
    let pool = sync_pool(&Login::App.url(&db), Config::default(), 2);
    let violations = Arc::new(Violations::default());
    let errors = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|threads| {
        for thread in 0..THREADS {
            let (pool, v, errors) = (&pool, &violations, &errors);
            threads.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (thread + 1));
                for i in 0..OPS / THREADS {
                    let tenant = format!("t{}", rng.next(50));
                    let kind = rng.next(10);
                    if let Err(e) =
                        operation(pool, "soak", kind, &tenant, thread * 1_000_000 + i, v)
                    {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("sync soak: unexpected error: {e}");
                        break;
                    }
                }
            });
        }
    });
    eprintln!("sync soak: {OPS} operations in {:?}", started.elapsed());
    soak::assert_clean(&Outcome {
        violations,
        errors: errors.load(Ordering::Relaxed),
        tolerated: 0,
    });
    // The pool still serves, and the data holds only rows written under their tenant.
    let mut conn = pool.tenant("t7").expect("tenant after soak");
    let rows = diesel::sql_query("SELECT name, tenant FROM soak")
        .load::<soak::Row>(&mut *conn)
        .expect("rows");
    soak::assert_after_soak("t7", &rows);
}
