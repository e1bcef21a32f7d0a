//! The per-test-database harness of the integration tests.
//!
//! Every database test gets its own freshly created database, named after the test's path
//! (libtest names each test's thread after it) and the run, as `#[sqlx::test]` does: two
//! runs against one server never share one. Creation is
//! serialised with an advisory lock. The database is dropped when the test passes and kept
//! for inspection when it fails. A test that cannot reach the server fails with a hint; it
//! never skips itself.

pub mod capture;
pub mod citus;
pub mod http;
mod pgbouncer;

pub use pgbouncer::PgBouncer;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::{Host, Url};

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

/// Characters left as they are in a URL's user, password or database: the unreserved ones
/// (RFC 3986). (`url`'s setters leave `%` alone, taking it for an escape already made.)
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn parse(url: &str) -> Url {
    let parsed = Url::parse(url).unwrap_or_else(|e| {
        panic!(
            "{url:?} is not a URL ({e}); DATABASE_URL must be postgres://user@host:port/database"
        )
    });
    // libpq and tokio-postgres let these parameters override the URL's own parts.
    if let Some((key, _)) = parsed
        .query_pairs()
        .find(|(key, _)| key == "user" || key == "dbname")
    {
        panic!("{url:?}: give the {key} in the URL itself, not as a `?{key}=` parameter");
    }
    parsed
}

/// `url` with its user and database replaced (either may be `None` to keep it); the
/// password, host, port and query parameters are kept.
pub fn url_with(url: &str, user: Option<&str>, database: Option<&str>) -> String {
    let mut parsed = parse(url);
    if let Some(user) = user {
        parsed
            .set_username(&utf8_percent_encode(user, COMPONENT).to_string())
            .unwrap_or_else(|()| panic!("{url:?} cannot carry a user"));
    }
    if let Some(database) = database {
        parsed.set_path(&format!("/{}", utf8_percent_encode(database, COMPONENT)));
    }
    parsed.into()
}

/// `url` with its password replaced.
pub fn url_with_password(url: &str, password: &str) -> String {
    let mut parsed = parse(url);
    parsed
        .set_password(Some(&utf8_percent_encode(password, COMPONENT).to_string()))
        .unwrap_or_else(|()| panic!("{url:?} cannot carry a password"));
    parsed.into()
}

/// The TCP host (an IPv6 address without brackets) and port of `url` (5432 when it gives
/// none); a Unix socket directory is given as the host, decoded.
pub fn host_and_port(url: &str) -> (String, u16) {
    let parsed = parse(url);
    let host = match parsed.host() {
        Some(Host::Ipv6(address)) => address.to_string(),
        Some(Host::Ipv4(address)) => address.to_string(),
        Some(Host::Domain(name)) => percent_decode_str(name).decode_utf8_lossy().into_owned(),
        None => panic!("{url:?} names no host"),
    };
    (host, parsed.port().unwrap_or(5432))
}

/// A database created for one test.
pub struct TestDb {
    name: String,
    /// The server: its maintenance database's URL.
    server: String,
    /// Whether this is a Citus database on the coordinator `server`.
    citus: bool,
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
            diesel::sql_query(format!("CREATE DATABASE \"{name}\"")).execute(admin)?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        Self {
            name,
            server: database_url(),
            citus: false,
        }
    }

    /// A fresh Citus database named after the running test, on the coordinator
    /// `TENANTS_CITUS_URL` names and its workers (see [`citus`]).
    pub fn citus() -> Self {
        let thread = std::thread::current();
        Self::citus_named(thread.name().unwrap_or("unnamed"))
    }

    /// A fresh Citus database named after `test`, as [`TestDb::citus`].
    pub fn citus_named(test: &str) -> Self {
        let name = database_name(test);
        let server = citus::citus_url().unwrap_or_else(|e| panic!("{e}"));
        citus::create(&server, &name).unwrap_or_else(|e| panic!("{e}"));
        Self {
            name,
            server,
            citus: true,
        }
    }

    /// Whether this is a Citus database.
    pub fn is_citus(&self) -> bool {
        self.citus
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database, as the server URL's user.
    pub fn url(&self) -> String {
        url_with(&self.server, None, Some(&self.name))
    }

    /// The URL of this database, logged in as `user`.
    pub fn url_as(&self, user: &str) -> String {
        url_with(&self.server, Some(user), Some(&self.name))
    }

    /// A connection to this database as the server URL's user (a superuser here).
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
        if self.citus {
            if let Err(e) = citus::drop(&self.server, &self.name) {
                eprintln!("could not drop test database {}: {e}", self.name);
            }
            return;
        }
        let mut admin = connect(&self.server);
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

/// Runs `f` under the creation lock the test kit uses (one lock for every test binary).
fn with_create_lock<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    tenants_core::testing::with_create_lock(conn, f)?
}

/// `tenants_test_` + the test path + the run, made a valid name of at most 63 bytes, and
/// unique within the process (the kit's naming, with this harness's prefix).
fn database_name(test: &str) -> String {
    tenants_core::testing::fresh_database_name("tenants_test", test)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_user_and_database_and_keeps_the_rest() {
        for (url, user, database, expected) in [
            (
                "postgres://postgres@localhost:5432/postgres",
                None,
                Some("tenants_test_x"),
                "postgres://postgres@localhost:5432/tenants_test_x",
            ),
            (
                "postgres://u:p%40ss%2Fw%25rd@h:6543/db?sslmode=disable&application_name=t",
                Some("app"),
                Some("my db"),
                "postgres://app:p%40ss%2Fw%25rd@h:6543/my%20db?sslmode=disable&application_name=t",
            ),
            (
                "postgres://u@[::1]:5432/db",
                Some("tenants_test_owner"),
                None,
                "postgres://tenants_test_owner@[::1]:5432/db",
            ),
            (
                "postgres://u@%2Frun%2Fpostgresql/db",
                None,
                Some("other"),
                "postgres://u@%2Frun%2Fpostgresql/other",
            ),
            (
                "postgres://u@localhost/db?host=/run/postgresql",
                Some("v"),
                Some("other"),
                "postgres://v@localhost/other?host=/run/postgresql",
            ),
            ("postgresql://h", Some("u"), Some("d"), "postgresql://u@h/d"),
        ] {
            assert_eq!(url_with(url, user, database), expected, "{url}");
        }
    }

    #[test]
    fn any_password_survives() {
        let url = url_with_password("postgres://u@h/d?sslmode=disable", "p@ss:w/rd?#%20 ü");
        assert_eq!(
            url,
            "postgres://u:p%40ss%3Aw%2Frd%3F%23%2520%20%C3%BC@h/d?sslmode=disable"
        );
        let password = parse(&url)
            .password()
            .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned());
        assert_eq!(password.as_deref(), Some("p@ss:w/rd?#%20 ü"));
    }

    #[test]
    fn host_and_port_of_every_host_form() {
        assert_eq!(
            host_and_port("postgres://u@localhost:6543/d"),
            ("localhost".to_string(), 6543)
        );
        assert_eq!(
            host_and_port("postgres://u@[::1]/d"),
            ("::1".to_string(), 5432)
        );
        assert_eq!(
            host_and_port("postgres://u@127.0.0.1:5433/d"),
            ("127.0.0.1".to_string(), 5433)
        );
        assert_eq!(
            host_and_port("postgres://u@%2Frun%2Fpostgresql/d"),
            ("/run/postgresql".to_string(), 5432)
        );
    }

    #[test]
    #[should_panic(expected = "give the dbname in the URL itself")]
    fn a_dbname_parameter_is_refused() {
        url_with("postgres://u@h/d?dbname=other", None, Some("x"));
    }
}
