//! Settings, read from the environment.
//!
//! The database settings mirror the original FastAPI example's `POSTGRES_*` variables;
//! `DATABASE_URL`, when set, overrides the connection ones. An empty variable counts as
//! unset.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

/// Characters left as they are in a URL's user, password, host or database: the unreserved
/// ones (RFC 3986). Everything else is percent-encoded, so any password works. (`url`'s
/// setters leave `%` alone, taking it for an escape already made, so parts are encoded
/// here first.)
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Whether queries carry an explicit `WHERE tenant = ...` besides the RLS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TenantFilter {
    /// Every query filters by tenant itself, as the original recommends (the default).
    #[default]
    Explicit,
    /// Queries carry no tenant filter: PostgreSQL's policies alone keep tenants apart. A
    /// demonstration (and test) that the service stays correct if a filter is forgotten.
    RlsOnly,
}

/// The login the service makes on start and serves through when `SERVING_DATABASE_URL` is
/// unset: a member of `tenants_user` only, not inheriting it, neither superuser nor owner.
pub const SERVING_LOGIN: &str = "todo_api_app";

/// Everything the service reads from the environment.
#[derive(Clone)]
pub struct Settings {
    /// The database URL (`DATABASE_URL`, or built from the `POSTGRES_*` variables): the
    /// owner's, which creates the database, migrates it and makes the serving login.
    pub database_url: String,
    /// The URL requests are served through (`SERVING_DATABASE_URL`; default: the database
    /// URL as [`SERVING_LOGIN`], without password).
    pub serving_url: String,
    /// The login the service makes on start ([`SERVING_LOGIN`]); `None` when
    /// `SERVING_DATABASE_URL` names one made beforehand.
    pub serving_login: Option<String>,
    /// The database the URL names in its path: the one database the service creates when
    /// it is missing. `None` when the URL names none there (or names it with `?dbname=`):
    /// then nothing is created.
    pub database: Option<String>,
    /// `statement_timeout` of every pooled connection (`POSTGRES_STATEMENT_TIMEOUT_SECONDS`,
    /// default 120; 0 turns it off).
    pub statement_timeout: Duration,
    /// The address to listen on (`BIND`, default `127.0.0.1:3000`; port 0 picks one).
    pub bind: String,
    /// The HS256 secret tokens are verified with (`JWT_SECRET`); `None` makes a random one.
    pub jwt_secret: Option<Vec<u8>>,
    /// The audience tokens must name (`JWT_AUDIENCE`); `None` checks no audience.
    pub jwt_audience: Option<String>,
    /// Most connections the pool opens (`POOL_MAX_SIZE`, default 10).
    pub pool_max_size: u32,
    /// How long a request waits for a pooled connection before it is answered 503
    /// (`POOL_TIMEOUT_SECONDS`, default 5).
    pub pool_timeout: Duration,
    /// `TENANT_FILTER`: `explicit` (default) or `rls-only`.
    pub tenant_filter: TenantFilter,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password and the secret is one: neither is printed.
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("serving_url", &redact_url(&self.serving_url))
            .field("serving_login", &self.serving_login)
            .field("database", &self.database)
            .field("statement_timeout", &self.statement_timeout)
            .field("bind", &self.bind)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("jwt_audience", &self.jwt_audience)
            .field("pool_max_size", &self.pool_max_size)
            .field("pool_timeout", &self.pool_timeout)
            .field("tenant_filter", &self.tenant_filter)
            .finish()
    }
}

/// A variable that is set to something unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct SettingsError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn error(var: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        var,
        reason: reason.into(),
    }
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|var| std::env::var_os(var).map(|v| v.into_string()))
    }

    /// Reads the settings through `lookup`, which returns `None` for an unset variable and
    /// `Some(Err(..))` for one that is not valid Unicode.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, SettingsError>
    where
        F: Fn(&'static str) -> Option<Result<String, std::ffi::OsString>>,
    {
        let get = |var: &'static str| -> Result<Option<String>, SettingsError> {
            match lookup(var) {
                None => Ok(None),
                Some(Err(_)) => Err(error(var, "is not valid UTF-8")),
                Some(Ok(value)) if value.is_empty() => Ok(None),
                Some(Ok(value)) => Ok(Some(value)),
            }
        };
        let number = |var: &'static str, default: u64| -> Result<u64, SettingsError> {
            match get(var)? {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse()
                    .map_err(|_| error(var, format!("expected a whole number, found {value:?}"))),
            }
        };

        let database_url = match get("DATABASE_URL")? {
            Some(url) => url,
            None => {
                let server = get("POSTGRES_SERVER")?.unwrap_or_else(|| "localhost".into());
                let port = number("POSTGRES_PORT", 5432)?;
                let port = u16::try_from(port)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| error("POSTGRES_PORT", format!("{port} is not a TCP port")))?;
                let user = get("POSTGRES_USER")?.unwrap_or_else(|| "postgres".into());
                let password = get("POSTGRES_PASSWORD")?;
                let database = get("POSTGRES_DB")?.unwrap_or_else(|| "todo_api".into());
                postgres_url(&server, port, &user, password.as_deref(), &database)?
            }
        };
        let database =
            database_in(&database_url).map_err(|reason| error("DATABASE_URL", reason))?;
        let (serving_url, serving_login) = match get("SERVING_DATABASE_URL")? {
            Some(url) => {
                parse_postgres_url(&url).map_err(|reason| error("SERVING_DATABASE_URL", reason))?;
                (url, None)
            }
            None => {
                let mut url = parse_postgres_url(&database_url)
                    .map_err(|reason| error("DATABASE_URL", reason))?;
                // A postgres:// URL always takes a user; the login has no password.
                let _ = url.set_username(SERVING_LOGIN);
                let _ = url.set_password(None);
                (url.into(), Some(SERVING_LOGIN.to_string()))
            }
        };

        let statement_timeout =
            Duration::from_secs(number("POSTGRES_STATEMENT_TIMEOUT_SECONDS", 120)?);
        let bind = get("BIND")?.unwrap_or_else(|| "127.0.0.1:3000".into());
        if !bind.contains(':') {
            return Err(error(
                "BIND",
                format!("expected host:port, e.g. 127.0.0.1:3000, found {bind:?}"),
            ));
        }

        let jwt_secret = get("JWT_SECRET")?.map(String::into_bytes);
        let jwt_audience = get("JWT_AUDIENCE")?;

        let pool_max_size = number("POOL_MAX_SIZE", 10)?;
        let pool_max_size = u32::try_from(pool_max_size)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                error(
                    "POOL_MAX_SIZE",
                    format!("must be between 1 and {}, found {pool_max_size}", u32::MAX),
                )
            })?;
        let pool_timeout = number("POOL_TIMEOUT_SECONDS", 5)?;
        if pool_timeout == 0 {
            return Err(error(
                "POOL_TIMEOUT_SECONDS",
                "must be at least 1: a request never waits forever for a connection",
            ));
        }

        let tenant_filter = match get("TENANT_FILTER")?.as_deref() {
            None | Some("explicit") => TenantFilter::Explicit,
            Some("rls-only") => TenantFilter::RlsOnly,
            Some(other) => {
                return Err(error(
                    "TENANT_FILTER",
                    format!("expected `explicit` or `rls-only`, found {other:?}"),
                ));
            }
        };

        Ok(Self {
            database_url,
            serving_url,
            serving_login,
            database,
            statement_timeout,
            bind,
            jwt_secret,
            jwt_audience,
            pool_max_size,
            pool_timeout: Duration::from_secs(pool_timeout),
            tenant_filter,
        })
    }
}

/// `postgres://user:password@server:port/database`, each part percent-encoded. `server` is
/// a host name, an IP address (IPv6 with or without brackets) or a Unix socket directory
/// (`/run/postgresql`, sent percent-encoded as the host, as libpq and tokio-postgres take it).
pub fn postgres_url(
    server: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Result<String, SettingsError> {
    let encode = |part: &str| utf8_percent_encode(part, COMPONENT).to_string();
    let server_error = |why: String| error("POSTGRES_SERVER", why);
    let mut url = Url::parse("postgres://localhost").map_err(|e| server_error(e.to_string()))?;
    let bare = server
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(server);
    match bare.parse::<IpAddr>() {
        Ok(ip) => url.set_ip_host(ip),
        // A socket directory goes percent-encoded; a host name must be valid as it is.
        Err(_) if server.starts_with('/') => url.set_host(Some(&encode(server))).map_err(|_| ()),
        Err(_) => url.set_host(Some(server)).map_err(|_| ()),
    }
    .map_err(|()| {
        server_error(format!(
            "{server:?} is not a host name, IP address or socket directory"
        ))
    })?;
    let _ = url.set_port(Some(port));
    let _ = url.set_username(&encode(user));
    if let Some(password) = password {
        let _ = url.set_password(Some(&encode(password)));
    }
    url.set_path(&format!("/{}", encode(database)));
    Ok(url.into())
}

/// `text` as a `postgres://` or `postgresql://` URL.
fn parse_postgres_url(text: &str) -> Result<Url, String> {
    let expected = "expected postgres://user[:password]@host[:port]/database";
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e}); {expected}"))?;
    match url.scheme() {
        "postgres" | "postgresql" => Ok(url),
        other => Err(format!("the scheme is {other:?}; {expected}")),
    }
}

/// The database `url` names in its path, decoded; `None` when it names none there or
/// overrides it with a `dbname` parameter.
pub fn database_in(url: &str) -> Result<Option<String>, String> {
    let url = parse_postgres_url(url)?;
    if url.query_pairs().any(|(key, _)| key == "dbname") {
        return Ok(None);
    }
    let encoded = url.path().strip_prefix('/').unwrap_or(url.path());
    let name = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| "the database name is not UTF-8".to_string())?;
    Ok((!name.is_empty()).then(|| name.into_owned()))
}

/// `url` with the database `postgres` instead of its own: the same server, user, password
/// and parameters, for creating the database.
pub fn maintenance_url(url: &str) -> Result<String, String> {
    let mut url = parse_postgres_url(url)?;
    url.set_path("/postgres");
    Ok(url.into())
}

/// `url` with the password replaced by `***`, for logs and messages (a string that is not
/// a `postgres://` URL is not shown at all).
pub fn redact_url(url: &str) -> String {
    match parse_postgres_url(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.into()
        }
        Err(_) => "(not a postgres:// URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;

    use super::*;

    fn settings(vars: &[(&'static str, &str)]) -> Result<Settings, SettingsError> {
        let vars: HashMap<&'static str, String> =
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Settings::from_lookup(|var| vars.get(var).cloned().map(Ok))
    }

    #[test]
    fn defaults_run_against_the_local_server() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(
            s.database_url,
            "postgres://postgres@localhost:5432/todo_api"
        );
        assert_eq!(s.statement_timeout, Duration::from_secs(120));
        assert_eq!(s.bind, "127.0.0.1:3000");
        assert_eq!(s.jwt_secret, None);
        assert_eq!(s.jwt_audience, None);
        assert_eq!(s.pool_max_size, 10);
        assert_eq!(s.pool_timeout, Duration::from_secs(5));
        assert_eq!(s.tenant_filter, TenantFilter::Explicit);
    }

    #[test]
    fn any_password_survives_the_url() {
        let password = "p@ss:w/rd?#%20 ü'\"\\";
        let s = settings(&[
            ("POSTGRES_SERVER", "db.internal"),
            ("POSTGRES_PORT", "6543"),
            ("POSTGRES_USER", "app user"),
            ("POSTGRES_PASSWORD", password),
            ("POSTGRES_DB", "todo/db"),
        ])
        .expect("valid");
        let parsed = tokio_postgres::Config::from_str(&s.database_url).expect("a valid URL");
        assert_eq!(parsed.get_password(), Some(password.as_bytes()));
        assert_eq!(parsed.get_user(), Some("app user"));
        assert_eq!(parsed.get_dbname(), Some("todo/db"));
        assert_eq!(parsed.get_ports(), [6543]);
        assert_eq!(
            parsed.get_hosts(),
            [tokio_postgres::config::Host::Tcp("db.internal".into())]
        );
        assert!(
            !format!("{s:?}").contains("w/rd") && !format!("{s:?}").contains("w%2Frd"),
            "Debug hides the password"
        );
        assert_eq!(s.database.as_deref(), Some("todo/db"));
    }

    #[test]
    fn database_url_overrides_the_postgres_variables() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://u@h/d"),
            ("POSTGRES_SERVER", "ignored"),
            ("POSTGRES_STATEMENT_TIMEOUT_SECONDS", "7"),
        ])
        .expect("valid");
        assert_eq!(s.database_url, "postgres://u@h/d");
        assert_eq!(s.statement_timeout, Duration::from_secs(7));
    }

    #[test]
    fn servers_may_be_names_ipv6_addresses_or_socket_directories() {
        let url = |server| postgres_url(server, 5432, "postgres", None, "todo_api");
        assert_eq!(
            url("::1").as_deref(),
            Ok("postgres://postgres@[::1]:5432/todo_api")
        );
        assert_eq!(
            url("[::1]").as_deref(),
            Ok("postgres://postgres@[::1]:5432/todo_api")
        );
        let socket = url("/run/postgresql").expect("a socket directory");
        assert_eq!(
            socket,
            "postgres://postgres@%2Frun%2Fpostgresql:5432/todo_api"
        );
        let parsed = tokio_postgres::Config::from_str(&socket).expect("tokio-postgres reads it");
        assert_eq!(
            parsed.get_hosts(),
            [tokio_postgres::config::Host::Unix("/run/postgresql".into())]
        );
        assert_eq!(url("db host").map_err(|e| e.var), Err("POSTGRES_SERVER"));
    }

    #[test]
    fn the_database_to_create_is_the_one_in_the_urls_path() {
        for (url, database) in [
            (
                "postgres://u:p%2Fw@h:5432/my%20db?sslmode=disable",
                Some("my db"),
            ),
            ("postgresql://u@[::1]:5432/db", Some("db")),
            ("postgres://u@%2Frun%2Fpostgresql/db", Some("db")),
            ("postgres://h:5432/db?host=/run/postgresql", Some("db")),
            // Named by a parameter, or not at all: nothing is created.
            ("postgres://u@h/db?dbname=other", None),
            ("postgres://u@h", None),
            ("postgres://u@h/", None),
        ] {
            assert_eq!(
                database_in(url).map(|d| d.as_deref().map(str::to_string)),
                Ok(database.map(str::to_string)),
                "{url}"
            );
        }
        for bad in ["host=h dbname=d", "mysql://h/d", "notaurl"] {
            assert!(database_in(bad).is_err(), "{bad}");
            let err = settings(&[("DATABASE_URL", bad)]).expect_err(bad);
            assert_eq!(err.var, "DATABASE_URL");
            assert!(err.reason.contains("expected postgres://"), "{err}");
        }
    }

    #[test]
    fn the_maintenance_url_keeps_everything_but_the_database() {
        for (url, maintenance) in [
            (
                "postgres://u:p%40ss%2Fw%25rd@h:5432/my%20db?sslmode=disable&application_name=todo",
                "postgres://u:p%40ss%2Fw%25rd@h:5432/postgres?sslmode=disable&application_name=todo",
            ),
            (
                "postgresql://u@[::1]:6543/db",
                "postgresql://u@[::1]:6543/postgres",
            ),
            (
                "postgres://u@%2Frun%2Fpostgresql/db",
                "postgres://u@%2Frun%2Fpostgresql/postgres",
            ),
            (
                "postgres://u@localhost/db?host=/run/postgresql",
                "postgres://u@localhost/postgres?host=/run/postgresql",
            ),
        ] {
            assert_eq!(maintenance_url(url).as_deref(), Ok(maintenance), "{url}");
        }
        let parsed = tokio_postgres::Config::from_str(
            &maintenance_url("postgres://u:p%40ss%2Fw%25rd@h/d").expect("valid"),
        )
        .expect("tokio-postgres reads it");
        assert_eq!(parsed.get_password(), Some("p@ss/w%rd".as_bytes()));
        assert_eq!(parsed.get_dbname(), Some("postgres"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("POSTGRES_STATEMENT_TIMEOUT_SECONDS", "soon"),
            ("POSTGRES_PORT", "70000"),
            ("POOL_MAX_SIZE", "0"),
            ("POOL_MAX_SIZE", "-1"),
            ("POOL_TIMEOUT_SECONDS", "0"),
            ("TENANT_FILTER", "none"),
            ("BIND", "3000"),
        ] {
            let err = settings(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let s = settings(&[("JWT_SECRET", ""), ("POSTGRES_DB", "")]).expect("valid");
        assert_eq!(s.jwt_secret, None);
        assert!(s.database_url.ends_with("/todo_api"));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/d?sslmode=require"),
            "postgres://u:***@h:5432/d?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            redact_url("host=h password=secret dbname=d"),
            "(not a postgres:// URL)"
        );
    }
}
