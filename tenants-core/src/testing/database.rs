//! A fresh database per test, with the application's migrations applied.

use std::fmt;

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::{Connection, PgConnection, RunQueryDsl};
use diesel_migrations::MigrationHarness;

use crate::config::{Config, Purpose};
use crate::error::Error;
use crate::pool::TenantPool;
use crate::tenant::quote_ident;

/// The login [`TestDatabase::pool`] serves tenant transactions through: neither superuser
/// nor owner nor `BYPASSRLS`, a member of the tenant role only, not inheriting it (see
/// [`crate::policy::serving_login`]). Cluster-wide, shared by every test database.
pub const SERVING_LOGIN: &str = "tenants_test_serving";

/// The login [`TestDatabase::admin_pool`] does admin work through: a member of the admin
/// role only, not inheriting it.
pub const ADMIN_LOGIN: &str = "tenants_test_admin";

/// The server [`TestDatabase`] uses when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/postgres";

/// Serialises creating a database and migrating it across the tests of every test binary
/// on one server: migrations create and grant cluster-wide roles, and two such statements
/// racing fail ("tuple concurrently updated"). The project's own harness
/// (`tests/src/lib.rs`) takes it through [`with_create_lock`], so both wait for each other.
const CREATE_LOCK: i64 = 0x7465_6e61_6e74;

/// The longest database name PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_NAME_BYTES: usize = 63;

/// Why a [`TestDatabase`] could not be made.
///
/// `{:?}` prints the same readable text as `{}`, as [`crate::Error`] does, so that
/// `.expect(..)` shows the hint, not a struct; `{:#?}` prints the structure.
#[derive(thiserror::Error)]
pub enum TestDatabaseError {
    /// `DATABASE_URL` is not a `postgres://` URL.
    #[error(
        "DATABASE_URL is not a postgres:// URL ({reason}); set it to e.g. {DEFAULT_DATABASE_URL}"
    )]
    Url {
        /// What is wrong with it.
        reason: String,
    },
    /// The server did not accept a connection.
    #[error(
        "cannot connect to {url}: {reason}\nhint: start PostgreSQL, or set DATABASE_URL to a server where this role may create databases and roles"
    )]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The driver's message.
        reason: String,
    },
    /// `CREATE DATABASE` failed.
    #[error("cannot create the test database {name}: {reason}")]
    Create {
        /// The database's name.
        name: String,
        /// The server's message.
        reason: String,
    },
    /// A migration failed; the database is kept for inspection.
    #[error("cannot apply the migrations to the test database {name}: {reason}")]
    Migrate {
        /// The database's name.
        name: String,
        /// The migration harness's message.
        reason: String,
    },
}

impl std::fmt::Debug for TestDatabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !f.alternate() {
            return std::fmt::Display::fmt(self, f);
        }
        match self {
            TestDatabaseError::Url { reason } => {
                f.debug_struct("Url").field("reason", reason).finish()
            }
            TestDatabaseError::Connect { url, reason } => f
                .debug_struct("Connect")
                .field("url", url)
                .field("reason", reason)
                .finish(),
            TestDatabaseError::Create { name, reason } => f
                .debug_struct("Create")
                .field("name", name)
                .field("reason", reason)
                .finish(),
            TestDatabaseError::Migrate { name, reason } => f
                .debug_struct("Migrate")
                .field("name", name)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// A database created for one test from `DATABASE_URL`'s server (default
/// [`DEFAULT_DATABASE_URL`]), with the application's migrations applied.
///
/// Named after the running test (libtest names each test's thread after its path), the
/// package and the run (see [`database_name`]), as `#[sqlx::test]` does, so parallel tests
/// and concurrent runs never share one. Dropped when the test passes; kept for inspection
/// when it fails by panicking (its name is printed).
///
/// The application is served as in the hardened deployment: [`TestDatabase::pool`] logs in
/// as [`SERVING_LOGIN`] (tenant transactions only; a statement outside a scope fails with
/// `permission denied`), [`TestDatabase::admin_pool`] as [`ADMIN_LOGIN`]; the migrations
/// run as `DATABASE_URL`'s user, the owner. That user must be a superuser (as the
/// `postgres` user of a local server is): it creates the database and both logins (with
/// the roles of the default [`Config`], which the migrations create), and the
/// [`IsolationCheck`](super::IsolationCheck) counts rows through it
/// ([`IsolationCheck::privileged_url`](super::IsolationCheck::privileged_url) with
/// [`TestDatabase::url`]).
pub struct TestDatabase {
    name: String,
    url: url::Url,
    server: url::Url,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("url", &redacted(&self.url))
            .finish()
    }
}

impl TestDatabase {
    /// A fresh database named after the running test, with `migrations` applied
    /// (typically `diesel_migrations::embed_migrations!()`'s constant).
    pub fn new(migrations: impl MigrationSource<Pg>) -> Result<Self, TestDatabaseError> {
        let thread = std::thread::current();
        Self::named(thread.name().unwrap_or("unnamed"), migrations)
    }

    /// A fresh database named after `test`, with `migrations` applied.
    pub fn named(
        test: &str,
        migrations: impl MigrationSource<Pg>,
    ) -> Result<Self, TestDatabaseError> {
        let server = server_url()?;
        let package = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
        let name = fresh_database_name(&package, test);
        let mut url = server.clone();
        url.set_path(&name);
        let mut admin = establish(&server)?;
        let locked = with_create_lock(&mut admin, |admin| {
            let create = |sql: String, admin: &mut PgConnection| {
                diesel::sql_query(sql)
                    .execute(admin)
                    .map_err(|e| TestDatabaseError::Create {
                        name: name.clone(),
                        reason: e.to_string(),
                    })
            };
            create(format!("CREATE DATABASE {}", quote_ident(&name)), admin)?;
            let mut owner = establish(&url)?;
            owner
                .run_pending_migrations(migrations)
                .map_err(|e| TestDatabaseError::Migrate {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            let config = Config::default();
            for (login, purpose) in [
                (SERVING_LOGIN, Purpose::Tenant),
                (ADMIN_LOGIN, Purpose::Admin),
            ] {
                diesel::connection::SimpleConnection::batch_execute(
                    &mut owner,
                    &crate::policy::serving_login(&config, login, purpose),
                )
                .map_err(|e| TestDatabaseError::Create {
                    name: name.clone(),
                    reason: format!("cannot make the login {login}: {e}"),
                })?;
            }
            Ok(())
        });
        locked.map_err(|e| TestDatabaseError::Create {
            name: name.clone(),
            reason: format!("advisory lock: {e}"),
        })??;
        Ok(Self { name, url, server })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL, as `DATABASE_URL`'s user (the owner and migrator, a superuser).
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The database's URL as `login` (the password of `DATABASE_URL` dropped: the kit's
    /// logins have none, so the server must trust local connections, as a test server's
    /// default `postgres` login needs anyway).
    pub fn url_as(&self, login: &str) -> String {
        let mut url = self.url.clone();
        // Only fails for URLs that cannot carry a user, which a postgres:// URL can.
        let _ = url.set_username(login);
        let _ = url.set_password(None);
        url.into()
    }

    /// A blocking connection to the database as `DATABASE_URL`'s user.
    pub fn connect(&self) -> Result<PgConnection, TestDatabaseError> {
        establish(&self.url)
    }

    /// A pool of tenant transactions on the database through [`SERVING_LOGIN`], with the
    /// default [`Config`] (for another, use [`TenantPool::connect_with`] with
    /// [`TestDatabase::url_as`]).
    pub async fn pool(&self) -> Result<TenantPool, Error> {
        TenantPool::connect(&self.url_as(SERVING_LOGIN)).await
    }

    /// A pool of admin transactions on the database through [`ADMIN_LOGIN`]
    /// ([`Purpose::Admin`]).
    pub async fn admin_pool(&self) -> Result<TenantPool, Error> {
        TenantPool::connect_with(
            &self.url_as(ADMIN_LOGIN),
            Config::default().with_purpose(Purpose::Admin),
            bb8::Pool::builder(),
        )
        .await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: database {} is kept for inspection ({})",
                self.name,
                redacted(&self.url)
            );
            return;
        }
        let dropped = establish(&self.server).and_then(|mut admin| {
            diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ))
            .execute(&mut admin)
            .map_err(|e| TestDatabaseError::Create {
                name: self.name.clone(),
                reason: e.to_string(),
            })
        });
        if let Err(error) = dropped {
            eprintln!("could not drop the test database {}: {error}", self.name);
        }
    }
}

/// `DATABASE_URL`, or the default.
fn server_url() -> Result<url::Url, TestDatabaseError> {
    let raw = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
    let url = url::Url::parse(&raw).map_err(|e| TestDatabaseError::Url {
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(TestDatabaseError::Url {
            reason: format!("scheme `{}`", url.scheme()),
        });
    }
    Ok(url)
}

fn establish(url: &url::Url) -> Result<PgConnection, TestDatabaseError> {
    PgConnection::establish(url.as_str()).map_err(|e| TestDatabaseError::Connect {
        url: redacted(url),
        reason: e.to_string().trim().to_string(),
    })
}

/// `url` with its password replaced by `***`.
fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Runs `f` holding the advisory lock that serialises creating databases and cluster-wide
/// roles across every test binary on one server (the project's own harness uses it too).
/// The outer error is the lock's; the inner one `f`'s.
pub fn with_create_lock<T, E>(
    admin: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<Result<T, E>, diesel::result::Error> {
    diesel::sql_query(format!("SELECT pg_advisory_lock({CREATE_LOCK})")).execute(admin)?;
    let result = f(admin);
    diesel::sql_query(format!("SELECT pg_advisory_unlock({CREATE_LOCK})")).execute(admin)?;
    Ok(result)
}

/// The name of the database for `test` of `package` in this run: `package_test_RUN`,
/// lower-cased, every other character than `a-z0-9` made `_`, where `RUN` tells this
/// process's run from any other against the same server (two `cargo test` at once, or a
/// failed run's kept databases). When longer than PostgreSQL keeps, the test part keeps
/// its end (the most specific part) after a hash of the whole.
pub fn database_name(package: &str, test: &str) -> String {
    name_in_run(package, test, run_id())
}

/// [`database_name`], made unique within the process too: the `n`-th database requested
/// for the same test (a test that makes a second one while the first lives) is named after
/// `test_n`. What [`TestDatabase`] and the project's harness create.
pub fn fresh_database_name(package: &str, test: &str) -> String {
    static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let earlier = seen
        .iter()
        .filter(|(p, t)| p == package && t == test)
        .count();
    seen.push((package.to_string(), test.to_string()));
    match earlier {
        0 => database_name(package, test),
        n => database_name(package, &format!("{test}_{}", n + 1)),
    }
}

/// Eight hex digits, fixed for the process: its id and start time, hashed.
fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{}:{nanos}", std::process::id());
        format!("{:08x}", fnv1a(&seed) as u32)
    })
}

/// FNV-1a: stable across runs and platforms, unlike std's hasher.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn name_in_run(package: &str, test: &str, run: &str) -> String {
    let whole = if package.is_empty() {
        format!("test_{test}")
    } else {
        format!("{package}_{test}")
    };
    let cleaned: String = whole
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let room = MAX_NAME_BYTES - run.len() - 1;
    if cleaned.len() <= room {
        return format!("{cleaned}_{run}");
    }
    let prefix = format!("t{:08x}_", fnv1a(&cleaned) as u32);
    let tail = &cleaned[cleaned.len() - (room - prefix.len())..];
    format!("{prefix}{tail}_{run}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_test_and_the_run_and_fit_postgres() {
        assert_eq!(
            name_in_run("todo-api", "isolation::tenants_are_isolated", "0a1b2c3d"),
            "todo_api_isolation__tenants_are_isolated_0a1b2c3d"
        );
        assert_eq!(
            name_in_run("", "Weird Name", "0a1b2c3d"),
            "test_weird_name_0a1b2c3d"
        );
        let long = "module::".repeat(20) + "the_test";
        let name = name_in_run("pkg", &long, "0a1b2c3d");
        assert_eq!(name.len(), MAX_NAME_BYTES);
        assert!(name.ends_with("module__the_test_0a1b2c3d"), "{name}");
        assert_ne!(
            name,
            name_in_run("pkg", &long.replacen("module", "modulx", 1), "0a1b2c3d"),
            "names differing only in the cut-off part stay distinct"
        );
        assert_ne!(
            name_in_run("pkg", "t", "0a1b2c3d"),
            name_in_run("pkg", "t", "ffff0000"),
            "two runs of one test never share a database"
        );
        let this_run = database_name("pkg", "t");
        assert_eq!(this_run, database_name("pkg", "t"), "fixed within a run");
        assert!(this_run.starts_with("pkg_t_") && this_run.len() == "pkg_t_".len() + 8);
        let first = fresh_database_name("pkg", "fresh");
        assert_eq!(first, database_name("pkg", "fresh"));
        let second = fresh_database_name("pkg", "fresh");
        assert_eq!(
            second,
            database_name("pkg", "fresh_2"),
            "a second one of one test"
        );
    }

    #[test]
    fn debug_is_the_readable_text_and_alternate_debug_the_structure() {
        let error = TestDatabaseError::Create {
            name: "t_x".into(),
            reason: "permission denied".into(),
        };
        assert_eq!(format!("{error:?}"), error.to_string());
        assert_eq!(
            format!("{error:#?}"),
            "Create {\n    name: \"t_x\",\n    reason: \"permission denied\",\n}"
        );
    }

    #[test]
    fn urls_are_shown_without_password() -> Result<(), url::ParseError> {
        let url = url::Url::parse("postgres://app:s3cret@db:5432/app")?;
        assert_eq!(redacted(&url), "postgres://app:***@db:5432/app");
        Ok(())
    }
}
