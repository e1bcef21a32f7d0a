//! The per-test-database harness of the integration tests.
//!
//! Every database test gets its own freshly created database, named after the test's path
//! (libtest names each test's thread after it), as `#[sqlx::test]` does. Creation is
//! serialised with an advisory lock. The database is dropped when the test passes and kept
//! for inspection when it fails. A test that cannot reach the server fails with a hint; it
//! never skips itself.

mod pgbouncer;

pub use pgbouncer::PgBouncer;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};

/// The server every test talks to.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@localhost:5432/postgres".to_string())
}

/// Connects to `url`, panicking with a hint when the server is not there.
pub fn connect(url: &str) -> PgConnection {
    PgConnection::establish(url).unwrap_or_else(|e| {
        panic!(
            "cannot connect to {url}: {e}\nhint: start PostgreSQL (`pg_ctlcluster --skip-systemctl-redirect 15 main start`) or set DATABASE_URL to a server where this role may create databases"
        )
    })
}

/// `url` with its user and database replaced (either may be `None` to keep it).
pub fn url_with(url: &str, user: Option<&str>, database: Option<&str>) -> String {
    let (scheme, rest) = url.split_once("://").expect("DATABASE_URL has a scheme");
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let userinfo = match (user, userinfo) {
        (Some(user), _) => Some(user.to_string()),
        (None, userinfo) => userinfo.map(str::to_string),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        out.push_str(&userinfo);
        out.push('@');
    }
    out.push_str(host);
    out.push('/');
    out.push_str(database.unwrap_or(path));
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Serialises database and role creation across concurrently running tests and binaries.
const CREATE_LOCK: i64 = 0x7465_6e61_6e74;

/// A database created for one test.
pub struct TestDb {
    name: String,
}

impl TestDb {
    /// A fresh, empty database named after the running test.
    pub fn new() -> Self {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("unnamed");
        Self::named(test)
    }

    /// A fresh, empty database named after `test`.
    pub fn named(test: &str) -> Self {
        let name = database_name(test);
        let mut admin = connect(&database_url());
        with_create_lock(&mut admin, |admin| {
            diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(admin)?;
            diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(admin)?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        Self { name }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database, as the `DATABASE_URL` user.
    pub fn url(&self) -> String {
        url_with(&database_url(), None, Some(&self.name))
    }

    /// The URL of this database, logged in as `user`.
    pub fn url_as(&self, user: &str) -> String {
        url_with(&database_url(), Some(user), Some(&self.name))
    }

    /// A connection to this database as the `DATABASE_URL` user (a superuser here).
    pub fn connect(&self) -> PgConnection {
        connect(&self.url())
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: database {} is kept for inspection ({})",
                self.name,
                self.url()
            );
            return;
        }
        let mut admin = connect(&database_url());
        if let Err(e) = diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

fn with_create_lock<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    diesel::sql_query(format!("SELECT pg_advisory_lock({CREATE_LOCK})")).execute(conn)?;
    let result = f(conn);
    diesel::sql_query(format!("SELECT pg_advisory_unlock({CREATE_LOCK})")).execute(conn)?;
    result
}

/// `tenants_test_` + the test path, made a valid name of at most 63 bytes.
fn database_name(test: &str) -> String {
    let cleaned: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("tenants_test_{cleaned}");
    if name.len() <= 63 {
        return name;
    }
    // Keep the end (the most specific part) and a hash of the whole to stay unique.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let tail = &name[name.len() - 40..];
    format!("tenants_test_{:08x}_{tail}", hash as u32)
}

/// Creates a `LOGIN` role if missing (roles are cluster-wide and shared by all tests).
pub fn ensure_login_role(conn: &mut PgConnection, role: &str) {
    with_create_lock(conn, |conn| {
        diesel::sql_query(format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE \"{role}\" LOGIN; END IF; END $$"
        ))
        .execute(conn)
    })
    .unwrap_or_else(|e| panic!("cannot create role {role}: {e}"));
}

/// Runs `sql` (several statements) under the creation lock: `CREATE ROLE` and `GRANT` on
/// cluster-wide roles race when tests run in parallel.
pub fn batch_locked(conn: &mut PgConnection, sql: &str) {
    with_create_lock(conn, |conn| conn.batch_execute(sql))
        .unwrap_or_else(|e| panic!("cannot run SQL: {e}\n{sql}"));
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The single `bigint` a query returns as column `n`.
pub fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// The single `text` a query returns as column `value`.
pub fn text(conn: &mut PgConnection, sql: &str) -> String {
    diesel::sql_query(sql)
        .get_result::<One>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .value
}
