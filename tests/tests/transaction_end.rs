//! What the end of a tenant transaction guarantees, through the async pool and the sync
//! pool alike, logged in as the hardened serving login (not a superuser, not the owner):
//!
//! - nothing the transaction made on the session outlives it: temporary tables, held
//!   cursors, `LISTEN`, session advisory locks, session-level settings, SQL prepared
//!   statements (the connection is discarded), session authorization;
//! - a commit is a commit: an aborted transaction is [`Error::RolledBack`], a scope ended
//!   by a raw `COMMIT` or `ROLLBACK` is [`Error::ScopeEnded`] and its connection discarded;
//! - the begin batch means the same whatever encoding and string settings the session was
//!   left with (the SJIS attack of issue 15);
//! - a tenant connection is a diesel connection (`load(&mut conn)`), and one dropped after
//!   it wrote is a WARN.
//!
//! Each test fails without its protection (checked by running it against the code before).

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{PgConnection, QueryResult, QueryableByName};
use diesel_async::RunQueryDsl as _;
use tenants_core::registry::TenantSqlType;
use tenants_core::{
    AsyncTenantTransactionExt, Config, Error, SyncTenantConnection, SyncTenantPool,
    TenantConnection, TenantPool, TenantTransactionExt,
};
use tenants_tests::TestDb;
use tenants_tests::capture::Capture;

use crate::common::{Login, SESSION_SQL, Session, create_marked_table};

/// The pool a test runs through.
#[derive(Clone)]
enum Side {
    Async(TenantPool),
    Sync(SyncTenantPool),
}

/// A transaction of either pool.
enum Tx {
    Async(Box<TenantConnection>),
    Sync(Box<SyncTenantConnection>),
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

impl Tx {
    /// Runs `sql` (one statement, extended protocol as diesel sends it).
    async fn run(&mut self, sql: &str) -> QueryResult<usize> {
        match self {
            Tx::Async(conn) => diesel::sql_query(sql).execute(&mut **conn).await,
            Tx::Sync(conn) => diesel::RunQueryDsl::execute(diesel::sql_query(sql), &mut **conn),
        }
    }

    /// Runs `sql` as a simple-protocol batch.
    async fn batch(&mut self, sql: &str) -> QueryResult<()> {
        match self {
            Tx::Async(conn) => {
                diesel_async::SimpleAsyncConnection::batch_execute(&mut **conn, sql).await
            }
            Tx::Sync(conn) => conn.batch_execute(sql),
        }
    }

    /// The `value` column of `sql`'s one row, loaded with `load(&mut conn)` on the tenant
    /// connection itself.
    async fn value(&mut self, sql: &str) -> QueryResult<String> {
        let rows: Vec<Value> = match self {
            Tx::Async(conn) => diesel::sql_query(sql).load(&mut **conn).await?,
            Tx::Sync(conn) => diesel::RunQueryDsl::load(diesel::sql_query(sql), &mut **conn)?,
        };
        Ok(rows.into_iter().next().map(|r| r.value).unwrap_or_default())
    }

    async fn session(&mut self) -> Session {
        match self {
            Tx::Async(conn) => diesel::sql_query(SESSION_SQL)
                .get_result::<Session>(&mut **conn)
                .await
                .expect("session"),
            Tx::Sync(conn) => diesel::RunQueryDsl::get_result::<Session>(
                diesel::sql_query(SESSION_SQL),
                &mut **conn,
            )
            .expect("session"),
        }
    }

    async fn commit(self) -> Result<(), Error> {
        match self {
            Tx::Async(conn) => conn.commit().await,
            Tx::Sync(conn) => conn.commit(),
        }
    }

    async fn rollback(self) -> Result<(), Error> {
        match self {
            Tx::Async(conn) => conn.rollback().await,
            Tx::Sync(conn) => conn.rollback(),
        }
    }
}

impl Side {
    async fn tenant(&self, tenant: &str) -> Tx {
        match self {
            Side::Async(pool) => Tx::Async(Box::new(pool.tenant(tenant).await.expect("tenant"))),
            Side::Sync(pool) => Tx::Sync(Box::new(pool.tenant(tenant).expect("tenant"))),
        }
    }

    /// The session of a plain checkout: `(pid, current_user, session_user)`.
    async fn plain(&self) -> (i32, String, String) {
        const SQL: &str = "SELECT pg_backend_pid() AS pid, current_user::text AS role, session_user::text AS tenant";
        let session = match self {
            Side::Async(pool) => diesel::sql_query(SQL)
                .get_result::<Session>(&mut pool.unscoped().await.expect("checkout"))
                .await
                .expect("session"),
            Side::Sync(pool) => diesel::RunQueryDsl::get_result::<Session>(
                diesel::sql_query(SQL),
                &mut pool.unscoped().expect("checkout"),
            )
            .expect("session"),
        };
        (session.pid, session.role, session.tenant)
    }

    /// `f` in the pool's closure form, as `tenant`.
    async fn closure(&self, tenant: &str, sql: &'static [&'static str]) -> Result<(), Error> {
        match self {
            Side::Async(pool) => {
                pool.transaction(tenant, async move |conn| {
                    for statement in sql {
                        let _ = diesel::sql_query(*statement).execute(conn).await;
                    }
                    Ok(())
                })
                .await
            }
            Side::Sync(pool) => pool.transaction(tenant, |conn| {
                for statement in sql {
                    let _ = diesel::RunQueryDsl::execute(diesel::sql_query(*statement), conn);
                }
                Ok(())
            }),
        }
    }
}

/// A database with `items` under the contract, seeded with one row of acme's, and a pool
/// of one connection through `side` logged in as `login`.
async fn setup(async_side: bool, login: Login) -> (TestDb, Side) {
    let db = TestDb::new();
    let mut owner = db.connect();
    let config = Config::default();
    create_marked_table(
        &mut owner,
        &config,
        login,
        "items",
        "text",
        TenantSqlType::Text,
    );
    owner
        .batch_execute("INSERT INTO items (name, tenant) VALUES ('acme secret', 'acme')")
        .expect("seed");
    let url = login.url(&db);
    let side = if async_side {
        Side::Async(
            TenantPool::connect_with(&url, config, bb8::Pool::builder().max_size(1))
                .await
                .expect("pool"),
        )
    } else {
        Side::Sync(
            SyncTenantPool::connect_with(
                &url,
                config,
                diesel::r2d2::Pool::builder()
                    .max_size(1)
                    .connection_timeout(Duration::from_secs(10)),
            )
            .expect("sync pool"),
        )
    };
    (db, side)
}

/// The rows of `items` named `name`, read as the superuser.
fn named(db: &TestDb, name: &str) -> i64 {
    tenants_tests::count(
        &mut db.connect(),
        &format!("SELECT count(*) AS n FROM items WHERE name = '{name}'"),
    )
}

// --- Nothing outlives a transaction -------------------------------------------------------

async fn a_temporary_table_does_not_outlive_its_transaction(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    let mut acme = side.tenant("acme").await;
    acme.run("CREATE TEMP TABLE scratch AS SELECT name FROM items")
        .await
        .expect("temp table");
    let pid = acme.session().await.pid;
    acme.commit().await.expect("commit");
    let mut globex = side.tenant("globex").await;
    assert_eq!(globex.session().await.pid, pid, "the same connection, kept");
    let read = globex.value("SELECT name AS value FROM scratch").await;
    assert!(read.is_err(), "acme's temp table is gone: {:?}", read.ok());
    drop(globex);
}

async fn a_held_cursor_does_not_outlive_its_transaction(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    let mut acme = side.tenant("acme").await;
    acme.batch("DECLARE c CURSOR WITH HOLD FOR SELECT name FROM items")
        .await
        .expect("cursor");
    acme.commit().await.expect("commit");
    let mut globex = side.tenant("globex").await;
    let fetched = globex.batch("FETCH ALL FROM c").await;
    assert!(fetched.is_err(), "acme's cursor is closed");
    drop(globex);
}

async fn listen_does_not_outlive_its_transaction(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    let mut acme = side.tenant("acme").await;
    acme.batch("LISTEN acme_news").await.expect("listen");
    acme.commit().await.expect("commit");
    let mut globex = side.tenant("globex").await;
    let channels = globex
        .value("SELECT count(*)::text AS value FROM pg_listening_channels()")
        .await
        .expect("channels");
    assert_eq!(channels, "0");
    globex.commit().await.expect("commit");
}

async fn a_session_advisory_lock_does_not_outlive_its_transaction(side: bool) {
    let (db, side) = setup(side, Login::App).await;
    let try_lock = || {
        tenants_tests::text(
            &mut db.connect(),
            "SELECT pg_try_advisory_lock(4242)::text AS value",
        )
    };
    for commit in [true, false] {
        let mut acme = side.tenant("acme").await;
        acme.run("SELECT pg_advisory_lock(4242)")
            .await
            .expect("lock");
        if commit {
            acme.commit().await.expect("commit");
        } else {
            acme.rollback().await.expect("rollback");
        }
        // Another session gets it (and releases it when its connection closes).
        assert_eq!(try_lock(), "true", "released after commit: {commit}");
    }
}

async fn session_settings_do_not_outlive_their_transaction(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    let mut acme = side.tenant("acme").await;
    acme.batch("SET statement_timeout = '5s'; SET search_path = pg_catalog; SET work_mem = '64kB'; SET TIME ZONE 'Asia/Tokyo'")
        .await
        .expect("set");
    acme.commit().await.expect("commit");
    let mut globex = side.tenant("globex").await;
    let settings = globex
        .value(
            "SELECT concat_ws(' | ', current_setting('statement_timeout'), current_setting('search_path'),
                    current_setting('TimeZone'), current_setting('client_encoding')) AS value",
        )
        .await
        .expect("settings");
    // The server's defaults, and what diesel sets on every new connection.
    assert_eq!(settings, "0 | \"$user\", public | UTC | UTF8");
    globex.commit().await.expect("commit");
}

async fn an_sql_prepared_statement_discards_the_connection(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    for commit in [true, false] {
        let mut acme = side.tenant("acme").await;
        let pid = acme.session().await.pid;
        acme.batch("PREPARE acme_names AS SELECT name FROM items")
            .await
            .expect("prepare");
        if commit {
            acme.commit().await.expect("committed all the same");
        } else {
            acme.rollback().await.expect("rolled back all the same");
        }
        let mut globex = side.tenant("globex").await;
        assert_ne!(
            globex.session().await.pid,
            pid,
            "discarded (commit: {commit})"
        );
        assert!(globex.batch("EXECUTE acme_names").await.is_err());
        drop(globex);
    }
}

/// `SET SESSION AUTHORIZATION` needs a superuser login: the scope's role is gone with it,
/// so the commit refuses, and the connection is closed, never handed out as another user.
async fn a_session_authorization_does_not_outlive_its_transaction(side: bool) {
    let (_db, side) = setup(side, Login::Superuser).await;
    let (_, login, _) = side.plain().await;
    let mut acme = side.tenant("acme").await;
    acme.batch(&format!("SET SESSION AUTHORIZATION {}", crate::common::APP))
        .await
        .expect("set session authorization");
    let ended = acme.commit().await;
    assert!(matches!(ended, Err(Error::ScopeEnded)), "{ended:?}");
    let (_, current, session) = side.plain().await;
    assert_eq!(
        (current.as_str(), session.as_str()),
        (login.as_str(), login.as_str())
    );
}

// --- What the pools' watch vouches for ------------------------------------------------------
//
// A transaction whose statements read as the query builder's (a `SELECT`, `INSERT`, `UPDATE`
// or `DELETE` calling only functions that keep no session state, none failed) ends with
// `COMMIT` alone. Each test below is a way around that reading.

/// The settings of a session that the statements below try to change.
const SETTINGS_SQL: &str = "SELECT concat_ws(' | ', current_setting('application_name'),
    current_setting('statement_timeout'), current_setting('work_mem'),
    current_setting('search_path')) AS value";

diesel::define_sql_function! {
    /// PostgreSQL's `set_config`, through the query builder.
    fn set_config(name: Text, value: Text, local: diesel::sql_types::Bool) -> Text;
}

async fn session_state_made_by_a_select_does_not_outlive_its_transaction(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    let mut before = side.tenant("acme").await;
    let defaults = before.value(SETTINGS_SQL).await.expect("settings");
    before.commit().await.expect("commit");
    let statements = [
        "SELECT set_config('application_name', 'evil', false)",
        r#"SELECT "set_config"('statement_timeout', '4321', false)"#,
        "SELECT pg_catalog.set_config('work_mem', '7777kB', false)",
        "SELECT /* a comment */ set_config/**/('search_path', 'evil', false)",
        "select SET_CONFIG('application_name', 'evil', false)",
        r#"SELECT "items"."name" FROM "items" WHERE "items"."name" <> set_config('work_mem', '7777kB', false)"#,
        r#"UPDATE "items" SET "name" = "items"."name" WHERE set_config('application_name', 'evil', false) <> ''"#,
        "SELECT 'it''s' AS x, set_config('search_path', 'evil', false)",
        "SELECT 1 -- a comment\n, set_config('search_path', 'evil', false)",
        "SELECT query builder", // not SQL at all: rejected, and still nothing is left
        "",                     // diesel's query builder through the function below
    ];
    for statement in statements {
        let mut acme = side.tenant("acme").await;
        if statement.is_empty() {
            let query = diesel::select(set_config("application_name", "evil", false));
            match &mut acme {
                Tx::Async(conn) => {
                    query
                        .get_result::<String>(&mut ***conn)
                        .await
                        .expect("set_config");
                }
                Tx::Sync(conn) => {
                    diesel::RunQueryDsl::get_result::<String>(query, &mut ***conn)
                        .expect("set_config");
                }
            }
        } else {
            let _ = acme.run(statement).await;
        }
        let _ = acme.commit().await;
        let mut globex = side.tenant("globex").await;
        let settings = globex.value(SETTINGS_SQL).await.expect("settings");
        assert_eq!(settings, defaults, "after {statement:?}");
        globex.commit().await.expect("commit");
    }
}

async fn a_connection_whose_watch_was_replaced_is_reset_in_full(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    let mut acme = side.tenant("acme").await;
    let nothing = |_: diesel::connection::InstrumentationEvent<'_>| {};
    match &mut acme {
        Tx::Async(conn) => {
            diesel_async::AsyncConnection::set_instrumentation(&mut ***conn, nothing)
        }
        Tx::Sync(conn) => diesel::Connection::set_instrumentation(&mut ***conn, nothing),
    }
    acme.run("CREATE TEMP TABLE scratch AS SELECT 'acme secret' AS value")
        .await
        .expect("temp table");
    acme.commit().await.expect("commit");
    let mut globex = side.tenant("globex").await;
    let read = globex.value("SELECT value FROM scratch").await;
    assert!(read.is_err(), "acme's temp table is gone: {:?}", read.ok());
    drop(globex);
}

/// What a session carries from one transaction to the next, as far as SQL can see it:
/// session-level settings, held cursors, `LISTEN`s, temporary tables, session advisory
/// locks and SQL prepared statements.
const FINGERPRINT_SQL: &str = "SELECT concat_ws(' | ',
    (SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings
      WHERE source = 'session'),
    (SELECT count(*) FROM pg_cursors), (SELECT count(*) FROM pg_listening_channels()),
    (SELECT count(*) FROM pg_class WHERE relpersistence = 't'),
    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
    (SELECT count(*) FROM pg_prepared_statements WHERE from_sql)) AS value";

/// Statements that change the session, each written the ways a reader of SQL text could
/// be fooled (case, quotes, schema, comments, line breaks, literals, placement), in each
/// kind of statement the pools may end with `COMMIT` alone: whatever the pools make of
/// each, the next transaction on the connection finds the session as it was.
async fn no_way_of_writing_a_statement_leaves_session_state(side: bool) {
    let (db, side) = setup(side, Login::App).await;
    // The owner's function of a built-in name, reachable only qualified.
    db.connect()
        .batch_execute(
            "CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql
               AS $$ SELECT set_config('application_name', $1, false) $$",
        )
        .expect("function");
    let fingerprint = async |side: &Side| {
        let mut tx = side.tenant("globex").await;
        let value = tx.value(FINGERPRINT_SQL).await.expect("fingerprint");
        tx.commit().await.expect("commit");
        value
    };
    let baseline = fingerprint(&side).await;
    let calls = [
        "set_config('application_name', 'evil', false)",
        "set_config('search_path', 'pg_catalog', false)",
        "pg_advisory_lock(42)",
        "pg_try_advisory_lock(43)::text",
        r#""public".lower('evil')"#,
    ];
    let disguises: [fn(&str) -> String; 9] = [
        |call| call.to_string(),
        |call| {
            call.to_uppercase()
                .replace("'EVIL'", "'evil'")
                .replace("'PG_CATALOG'", "'pg_catalog'")
        },
        |call| call.replacen("(", " (", 1),
        |call| call.replacen("(", "/* c */(", 1),
        |call| call.replacen("(", "\n(", 1),
        |call| format!("pg_catalog.{call}"),
        |call| {
            let (name, rest) = call.split_at(call.find('(').unwrap_or(0));
            format!("\"{name}\"{rest}")
        },
        |call| format!("'it''s', {call}"),
        |call| format!("1 -- c\n, {call}"),
    ];
    let statements: [fn(&str) -> String; 6] = [
        |expr| format!("select name from items where ({expr}) is not null"),
        |expr| format!("WITH x AS (SELECT {expr} AS v) SELECT v FROM x"),
        |expr| format!("SELECT {expr}"),
        |expr| format!(r#"SELECT "items"."name" FROM "items" WHERE ({expr}) IS NOT NULL"#),
        |expr| format!(r#"UPDATE "items" SET "name" = "items"."name" WHERE ({expr}) IS NOT NULL"#),
        |expr| format!(r#"INSERT INTO "items" ("name", "tenant") SELECT ({expr})::text, 'acme'"#),
    ];
    for call in calls {
        for disguise in disguises {
            for statement in statements {
                let sql = statement(&disguise(call));
                let mut acme = side.tenant("acme").await;
                // Refused or not, the statement is the transaction's only one.
                let _ = acme.run(&sql).await;
                let _ = acme.commit().await;
                assert_eq!(fingerprint(&side).await, baseline, "after {sql}");
            }
        }
    }
}

/// A statement whose future was dropped after it was sent: its error never reached the
/// caller (nor the pool's watch), the server aborted the transaction all the same.
#[tokio::test]
async fn a_statement_dropped_in_flight_still_fails_the_commit() {
    use diesel::IntoSql;
    use diesel::sql_types::Integer;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let (db, side) = setup(true, Login::App).await;
    let Side::Async(pool) = side else {
        unreachable!("the async pool")
    };
    let mut acme = pool.tenant("acme").await.expect("tenant");
    diesel::sql_query(r#"INSERT INTO "items" ("name", "tenant") VALUES ('lost', 'acme')"#)
        .execute(&mut *acme)
        .await
        .expect("insert");
    let divide = |by: i32| diesel::select(1_i32.into_sql::<Integer>() / by.into_sql::<Integer>());
    // Prepared and cached: executing it again sends Bind and Execute on the first poll.
    assert_eq!(divide(1).get_result::<i32>(&mut *acme).await, Ok(1));
    {
        let query = divide(0).get_result::<i32>(&mut *acme);
        let mut query = std::pin::pin!(query);
        let polled = query.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(polled, Poll::Pending), "sent, not yet answered");
    }
    let ended = acme.commit().await;
    assert!(matches!(ended, Err(Error::RolledBack)), "{ended:?}");
    assert_eq!(named(&db, "lost"), 0);
}

// --- A commit is a commit ----------------------------------------------------------------

async fn an_aborted_transaction_is_not_reported_committed(side: bool) {
    let (db, side) = setup(side, Login::App).await;
    let mut acme = side.tenant("acme").await;
    let pid = acme.session().await.pid;
    acme.commit().await.expect("commit");
    // Statements as diesel's query builder writes them (quoted names, no function the
    // pool's watch does not know): only the swallowed error tells this commit apart.
    let mut acme = side.tenant("acme").await;
    acme.run(r#"INSERT INTO "items" ("name", "tenant") VALUES ('lost', 'acme')"#)
        .await
        .expect("insert");
    // An error the caller swallowed.
    let _ = acme.run("SELECT 1/0").await;
    let ended = acme.commit().await;
    assert!(matches!(ended, Err(Error::RolledBack)), "{ended:?}");
    assert_eq!(named(&db, "lost"), 0);
    // Rolled back and kept: the same connection, clean.
    let mut next = side.tenant("globex").await;
    assert_eq!(next.session().await.pid, pid);
    next.commit().await.expect("commit");

    // The closure form.
    let ended = side
        .closure(
            "acme",
            &[
                r#"INSERT INTO "items" ("name", "tenant") VALUES ('lost', 'acme')"#,
                "SELECT 1/0",
            ],
        )
        .await;
    assert!(matches!(ended, Err(Error::RolledBack)), "{ended:?}");
    assert_eq!(named(&db, "lost"), 0);
}

async fn a_scope_ended_by_a_raw_commit_or_rollback_is_an_error(side: bool) {
    let (db, side) = setup(side, Login::App).await;
    for raw in ["COMMIT", "ROLLBACK"] {
        let mut acme = side.tenant("acme").await;
        let pid = acme.session().await.pid;
        acme.run("INSERT INTO items (name, tenant) VALUES ('before', 'acme')")
            .await
            .expect("insert");
        acme.batch(raw).await.expect("raw end");
        // Outside the scope now: as the login role, in a transaction of its own.
        let _ = acme.run("SELECT 1").await;
        let ended = acme.commit().await;
        assert!(matches!(ended, Err(Error::ScopeEnded)), "{raw}: {ended:?}");
        let mut next = side.tenant("globex").await;
        assert_ne!(next.session().await.pid, pid, "{raw}: discarded");
        next.commit().await.expect("commit");
    }
    assert_eq!(
        named(&db, "before"),
        1,
        "the raw COMMIT committed; ROLLBACK did not"
    );
}

/// The extension traits on connections of your own report an aborted transaction too.
#[tokio::test]
async fn the_extension_traits_do_not_report_an_aborted_transaction_committed() {
    let (db, _side) = setup(false, Login::App).await;
    let url = Login::App.url(&db);
    let mut sync = tenants_tests::connect(&url);
    let ended = sync.tenant_transaction("acme", |conn| {
        let _ = diesel::RunQueryDsl::execute(
            diesel::sql_query("INSERT INTO items (name, tenant) VALUES ('lost', 'acme')"),
            conn,
        );
        let _ = diesel::RunQueryDsl::execute(diesel::sql_query("SELECT 1/0"), conn);
        Ok(())
    });
    assert!(matches!(ended, Err(Error::RolledBack)), "{ended:?}");
    let mut conn = tenants_core::establish(&url).await.expect("connect");
    let ended = conn
        .tenant_transaction("acme", async |conn| {
            let _ = diesel::sql_query("INSERT INTO items (name, tenant) VALUES ('lost', 'acme')")
                .execute(conn)
                .await;
            let _ = diesel::sql_query("SELECT 1/0").execute(conn).await;
            Ok(())
        })
        .await;
    assert!(matches!(ended, Err(Error::RolledBack)), "{ended:?}");
    assert_eq!(named(&db, "lost"), 0);
    // Both connections are usable again.
    sync.tenant_transaction("acme", |_| Ok(()))
        .expect("sync again");
    conn.tenant_transaction("acme", async |_| Ok(()))
        .await
        .expect("async again");
}

// --- The begin batch means the same in every session ------------------------------------

/// The tenant id of issue 15, built for a session left with `client_encoding = SJIS` and
/// `backslash_quote = on`: with an escaping that is only safe in UTF-8, the `SET` inside
/// runs and the transaction is acme's.
const SJIS_ATTACK: &str = "\u{c1}\\'; SET LOCAL \"tenants.current_tenant\" = $$acme$$; --";

/// What a session left with hostile string settings sees as the attacker's tenant:
/// acme's rows and whether the tenant setting is the id itself.
const SEEN_SQL: &str = "SELECT (SELECT count(*) FROM items)::text || ' ' || (current_setting('tenants.current_tenant') = E'\\u00c1\\\\''; SET LOCAL \"tenants.current_tenant\" = $$acme$$; --')::text AS value";

const HOSTILE_SESSION: [&str; 2] = [
    "SET client_encoding = 'SJIS'; SET standard_conforming_strings = off; SET backslash_quote = on",
    "SET client_encoding = 'SJIS'; SET standard_conforming_strings = on; SET backslash_quote = on",
];

async fn the_sjis_attack_is_only_a_tenant_id(side: bool) {
    let (_db, side) = setup(side, Login::App).await;
    for hostile in HOSTILE_SESSION {
        // Left on the pool's only connection by a plain checkout.
        match &side {
            Side::Async(pool) => {
                let mut conn = pool.unscoped().await.expect("checkout");
                diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, hostile)
                    .await
                    .expect("hostile settings");
            }
            Side::Sync(pool) => pool
                .unscoped()
                .expect("checkout")
                .batch_execute(hostile)
                .expect("hostile settings"),
        }
        let mut attacker = side.tenant(SJIS_ATTACK).await;
        let seen = attacker.value(SEEN_SQL).await.expect("seen");
        assert_eq!(
            seen, "0 true",
            "{hostile}: no acme row, the id is the tenant"
        );
        attacker.commit().await.expect("commit");
    }
}

#[test]
fn the_sjis_attack_is_only_a_tenant_id_on_a_plain_connection() {
    let (db, _side) = futures_lite_block_on(setup(false, Login::App));
    let mut conn: PgConnection = tenants_tests::connect(&Login::App.url(&db));
    for hostile in HOSTILE_SESSION {
        conn.batch_execute(hostile).expect("hostile settings");
        let seen = conn
            .tenant_transaction(SJIS_ATTACK, |conn| {
                Ok(
                    diesel::RunQueryDsl::get_result::<Value>(diesel::sql_query(SEEN_SQL), conn)?
                        .value,
                )
            })
            .expect("seen");
        assert_eq!(seen, "0 true", "{hostile}");
    }
}

/// Runs `future` to completion on a runtime of its own.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

// --- Connections that behave like diesel's own ------------------------------------------

async fn a_transaction_dropped_after_it_wrote_is_a_warning(side: bool) {
    let (db, side) = setup(side, Login::App).await;
    let capture = Capture::new();
    let _guard = capture.install();
    let warnings = || {
        capture
            .events()
            .into_iter()
            .filter(|e| {
                e.level == tracing::Level::WARN
                    && e.fields
                        .get("message")
                        .is_some_and(|m| m.contains("dropped without commit()"))
            })
            .count()
    };
    let mut reader = side.tenant("acme").await;
    reader
        .value("SELECT name AS value FROM items")
        .await
        .expect("read");
    drop(reader);
    let mut writer = side.tenant("acme").await;
    writer
        .run("INSERT INTO items (name, tenant) VALUES ('dropped', 'acme')")
        .await
        .expect("insert");
    drop(writer);
    // The async pool rolls a dropped transaction back on a task of its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    while warnings() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = side.tenant("acme").await;
    next.commit().await.expect("commit");
    assert_eq!(
        warnings(),
        1,
        "only the transaction that wrote: {:?}",
        capture.events()
    );
    assert_eq!(named(&db, "dropped"), 0);
}

/// Each test through the async pool and the sync pool.
macro_rules! through_both_pools {
    ($($test:ident),* $(,)?) => {
        mod async_pool {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(true).await;
                }
            )*
        }
        mod sync_pool {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(false).await;
                }
            )*
        }
    };
}

through_both_pools!(
    a_temporary_table_does_not_outlive_its_transaction,
    a_held_cursor_does_not_outlive_its_transaction,
    listen_does_not_outlive_its_transaction,
    a_session_advisory_lock_does_not_outlive_its_transaction,
    session_settings_do_not_outlive_their_transaction,
    an_sql_prepared_statement_discards_the_connection,
    a_session_authorization_does_not_outlive_its_transaction,
    an_aborted_transaction_is_not_reported_committed,
    a_scope_ended_by_a_raw_commit_or_rollback_is_an_error,
    the_sjis_attack_is_only_a_tenant_id,
    a_transaction_dropped_after_it_wrote_is_a_warning,
    session_state_made_by_a_select_does_not_outlive_its_transaction,
    a_connection_whose_watch_was_replaced_is_reset_in_full,
    no_way_of_writing_a_statement_leaves_session_state,
);
