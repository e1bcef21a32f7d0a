//! Fixtures shared by the integration tests.

use diesel::sql_types::{Integer, Text};
use diesel::{PgConnection, QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::{Duration, Instant};
use tenants_core::policy::{self, Grantee, QualifiedName, RoleGrant, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, Purpose, TenantPool};

use diesel::QueryDsl;
use tenants_tests::{PgBouncer, TestDb, batch_locked, count, ensure_login_role};

use crate::isolation::items_text::items_text;

/// A login role that owns the fixture tables in the owner scenario.
pub const OWNER: &str = "tenants_test_owner";
/// A login role that owns nothing and is only granted our roles.
pub const APP: &str = "tenants_test_app";
/// The hardened serving login: a member of the tenant role only, not inheriting it
/// (`policy::serving_login`), owning nothing.
pub const HARDENED: &str = "tenants_test_hardened";
/// The hardened deployment's admin login: a member of the admin role only, not inheriting.
pub const HARDENED_ADMIN: &str = "tenants_test_hardened_admin";

/// How the application logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// The `DATABASE_URL` superuser.
    Superuser,
    /// The owner of the tables.
    Owner,
    /// A login role owning nothing.
    App,
    /// The hardened serving login ([`HARDENED`]): tenant transactions only; its admin work
    /// goes through [`Login::HardenedAdmin`].
    Hardened,
    /// The hardened deployment's admin login ([`HARDENED_ADMIN`]).
    HardenedAdmin,
}

impl Login {
    /// The role name to log in as; `None` keeps `DATABASE_URL`'s user.
    pub fn role(self) -> Option<&'static str> {
        match self {
            Login::Superuser => None,
            Login::Owner => Some(OWNER),
            Login::App => Some(APP),
            Login::Hardened => Some(HARDENED),
            Login::HardenedAdmin => Some(HARDENED_ADMIN),
        }
    }

    /// The URL of `db` for this login.
    pub fn url(self, db: &TestDb) -> String {
        match self.role() {
            Some(role) => db.url_as(role),
            None => db.url(),
        }
    }
}

/// Where a suite runs: the same suite, parameterised on the server.
#[derive(Clone, Copy)]
pub enum Server<'a> {
    /// `DATABASE_URL`'s server, directly.
    Direct,
    /// `DATABASE_URL`'s server through PgBouncer in transaction mode (Debian's 1.18: no
    /// prepared statements across transactions, hence no statement cache).
    PgBouncer(&'a PgBouncer),
    /// The Citus coordinator `TENANTS_CITUS_URL` names, in Citus mode.
    Citus,
}

impl Server<'_> {
    /// A fresh database for the running test on this server.
    pub fn db(self) -> TestDb {
        match self {
            Server::Citus => TestDb::citus(),
            Server::Direct | Server::PgBouncer(_) => TestDb::new(),
        }
    }

    /// The configuration the library needs there.
    pub fn config(self) -> Config {
        match self {
            Server::Direct => Config::default(),
            Server::PgBouncer(_) => Config::default().with_statement_cache(false),
            Server::Citus => Config::default().with_citus(true),
        }
    }

    /// A pool of `size` connections to `db` as `login`, with [`Server::config`].
    pub async fn pool(self, db: &TestDb, login: Login, size: u32) -> TenantPool {
        let url = match self {
            Server::PgBouncer(bouncer) => {
                bouncer.url(login.role().unwrap_or("postgres"), db.name())
            }
            Server::Direct | Server::Citus => login.url(db),
        };
        TenantPool::connect_with(&url, self.config(), bb8::Pool::builder().max_size(size))
            .await
            .unwrap_or_else(|e| panic!("cannot build pool for {url}: {e}"))
    }

    /// Whether each pooled connection keeps its server backend across transactions (not
    /// behind PgBouncer).
    pub fn keeps_backend(self) -> bool {
        !matches!(self, Server::PgBouncer(_))
    }
}

/// Creates `table` with a serial id, an identity column, a name and a NOT NULL tenant column of `pg_type`,
/// owned by `login`'s role in the owner scenario, and puts it under the contract with the
/// renderer's SQL, granting our roles to the login role. On a Citus database the primary
/// key is `(tenant, id)` (Citus wants the distribution column in every unique key) and the
/// table is distributed by `tenant`, before the contract is applied: pass a Citus-mode
/// `config` there.
pub fn create_marked_table(
    conn: &mut PgConnection,
    config: &Config,
    login: Login,
    table: &str,
    pg_type: &str,
    sql_type: TenantSqlType,
) {
    use diesel::connection::SimpleConnection;
    ensure_login_role(conn, OWNER);
    ensure_login_role(conn, APP);
    let ddl = if tenants_tests::citus::is_citus(conn) {
        format!(
            "CREATE TABLE \"{table}\" (
               id serial,
               seq bigint GENERATED ALWAYS AS IDENTITY,
               name text NOT NULL,
               tenant {pg_type} NOT NULL,
               PRIMARY KEY (tenant, id)
             );
             SELECT create_distributed_table('\"{table}\"', 'tenant');"
        )
    } else {
        format!(
            "CREATE TABLE \"{table}\" (
               id serial PRIMARY KEY,
               seq bigint GENERATED ALWAYS AS IDENTITY,
               name text NOT NULL,
               tenant {pg_type} NOT NULL
             );
             CREATE INDEX ON \"{table}\" (tenant, id);"
        )
    };
    conn.batch_execute(&ddl).expect("create table");
    if login == Login::Owner {
        conn.batch_execute(&format!("ALTER TABLE \"{table}\" OWNER TO {OWNER}"))
            .expect("change owner");
    }
    let spec = TableSpec {
        table: QualifiedName::new("public", table),
        tenant_column: "tenant".into(),
        sql_type,
        sequences: vec![
            QualifiedName::new("public", format!("{table}_id_seq")),
            QualifiedName::new("public", format!("{table}_seq_seq")),
        ],
    };
    let grant_to: Vec<RoleGrant> = Some(login)
        .filter(|l| !matches!(l, Login::Hardened | Login::HardenedAdmin))
        .and_then(Login::role)
        .map(|r| RoleGrant::both(Grantee::Role(r.into())))
        .into_iter()
        .collect();
    let up = policy::render_up(config, &policy::setup(config, &[spec], &grant_to));
    batch_locked(conn, &up);
    if matches!(login, Login::Hardened | Login::HardenedAdmin) {
        batch_locked(
            conn,
            &(policy::serving_login(config, HARDENED, Purpose::Tenant)
                + &policy::serving_login(config, HARDENED_ADMIN, Purpose::Admin)),
        );
    }
}

/// A fresh database with `items_text` under the contract (default names, superuser login),
/// and a connection to it.
pub fn items_text_under_contract() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.connect();
    create_marked_table(
        &mut conn,
        &Config::default(),
        Login::Superuser,
        "items_text",
        "text",
        TenantSqlType::Text,
    );
    (db, conn)
}

/// A pool of `size` connections to `url` with the recycle check.
pub async fn pool(url: &str, size: u32) -> TenantPool {
    TenantPool::connect_with(url, Config::default(), bb8::Pool::builder().max_size(size))
        .await
        .unwrap_or_else(|e| panic!("cannot build pool for {url}: {e}"))
}

/// Which backend a connection is on, whom it runs as, and its tenant setting.
#[derive(QueryableByName, Debug, PartialEq)]
pub struct Session {
    /// `pg_backend_pid()`.
    #[diesel(sql_type = Integer)]
    pub pid: i32,
    /// `current_user`.
    #[diesel(sql_type = Text)]
    pub role: String,
    /// The tenant setting, `''` when unset.
    #[diesel(sql_type = Text)]
    pub tenant: String,
}

/// Selects a connection's [`Session`].
pub const SESSION_SQL: &str = "SELECT pg_backend_pid() AS pid, current_user::text AS role,
    coalesce(current_setting('tenants.current_tenant', true), '') AS tenant";

/// The session of `conn`.
pub async fn session_of(conn: &mut AsyncPgConnection) -> QueryResult<Session> {
    diesel::sql_query(SESSION_SQL)
        .get_result::<Session>(conn)
        .await
}

/// The session of a plain checkout from `pool`.
pub async fn checkout_session(pool: &TenantPool) -> Session {
    let mut conn = pool.pool().get().await.expect("checkout");
    session_of(&mut conn).await.expect("session state")
}

/// Tenant ids built to break quoting, escaping or comparisons: every test of hostile input
/// uses this one list.
pub const HOSTILE_IDS: [&str; 20] = [
    "'",
    "''",
    "\\",
    "\\'",
    "$$",
    "';--",
    "' OR '1'='1",
    "acme' OR tenant <> 'acme",
    "globex\\",
    "E'\\x41'",
    "acme\u{0301}",
    " acme",
    "acme ",
    "\u{202E}emca",
    "1; SET ROLE tenants_admin",
    "\u{1F600} ünïcødé",
    " leading and trailing ",
    "\t\n\r",
    "%s%n",
    "\"quoted\"",
];

/// Asserts `result` is a database error whose message contains `needle`.
pub fn assert_db_error<T: std::fmt::Debug>(result: &QueryResult<T>, needle: &str, what: &str) {
    match result {
        Err(diesel::result::Error::DatabaseError(_, info)) => assert!(
            info.message().contains(needle),
            "{what}: expected an error containing {needle:?}, got: {}",
            info.message()
        ),
        other => panic!("{what}: expected an error containing {needle:?}, got {other:?}"),
    }
}

/// `(tenant, name)` of every row of `items_text`, read as the superuser (whom RLS does not apply to).
pub fn rows(db: &TestDb) -> Vec<(String, String)> {
    diesel::RunQueryDsl::load(
        items_text::table
            .select((items_text::tenant, items_text::name))
            .order(items_text::id),
        &mut db.connect(),
    )
    .expect("read items_text")
}

pub fn row(tenant: &str, name: &str) -> (String, String) {
    (tenant.to_string(), name.to_string())
}

/// Sessions of `db` inside a transaction.
pub fn open_transactions(db: &TestDb) -> i64 {
    count(
        &mut db.connect(),
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
}

/// Waits until no session of `db` is inside a transaction: a dropped connection's
/// rollback runs on a task of its own.
pub async fn settled(db: &TestDb) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_transactions(db) > 0 {
        assert!(Instant::now() < deadline, "a transaction stays open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The application's own tenant extractor in the web layers' tests: the `x-tenant` header
/// (each test module implements its framework's extractor trait for it).
pub struct HeaderTenant(pub String);

impl tenants_core::TenantId for HeaderTenant {
    fn tenant_text(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(&self.0)
    }
}

/// Lets a web layer test wait until its `hang` handler has written.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Notified once the handler's insert is done.
    pub written: std::sync::Arc<tokio::sync::Notify>,
}
