//! Opening connections so that a failure names the server and says why.
//!
//! diesel-async's `establish` keeps only tokio-postgres's summary of a failed connection
//! ("error connecting to server"); the cause (the OS error, the server's message) is in the
//! error's `source`, which it drops. These functions keep it, and name the target from the
//! connection string as the driver itself reads it (`tokio_postgres::Config`, which also
//! understands `?host=/socket/dir`, several hosts and `key=value` strings), never showing
//! the password.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::str::FromStr;

use diesel_async::AsyncPgConnection;
use tokio_postgres::config::Host;

use crate::error::Error;

/// The port PostgreSQL listens on unless the connection string says otherwise.
const DEFAULT_PORT: u16 = 5432;

/// Opens one connection to `database_url`, as `AsyncPgConnection::establish` does, but a
/// failure is an [`Error::Connect`] naming the host, port, database and user with the
/// server's or the operating system's reason (never the password).
///
/// ```no_run
/// # async fn run() -> Result<(), tenants_core::Error> {
/// let conn = tenants_core::establish("postgres://app@localhost:5432/app").await?;
/// # Ok(()) }
/// ```
pub async fn establish(database_url: &str) -> Result<AsyncPgConnection, Error> {
    let target = describe_target(database_url)?;
    open(database_url)
        .await
        .map_err(|reason| Error::Connect { target, reason })
}

/// What `database_url` points at, e.g. `database "app" on localhost:5432 as user "app"`,
/// for error messages. An unparsable string is an [`Error::Connect`] whose reason is the
/// parser's (the string itself is not repeated: it may hold a password).
pub fn describe_target(database_url: &str) -> Result<String, Error> {
    let config = tokio_postgres::Config::from_str(database_url).map_err(|e| Error::Connect {
        target: "the database".into(),
        reason: format!(
            "the database URL is not valid ({}); expected postgres://user[:password]@host[:port]/database",
            chain(&e)
        ),
    })?;
    Ok(describe(&config))
}

/// Opens a connection; the error is the reason only (the caller knows the target).
pub(crate) async fn open(database_url: &str) -> Result<AsyncPgConnection, String> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| reason(&e))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|e| e.to_string())
}

/// Opens a bare tokio-postgres client (its connection driven by a spawned task, which ends
/// when the client is dropped), failing as [`establish`] does. For what diesel-async cannot
/// do: the lifecycle's `COPY`.
pub(crate) async fn open_client(database_url: &str) -> Result<tokio_postgres::Client, Error> {
    let target = describe_target(database_url)?;
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Connect {
            target,
            reason: reason(&e),
        })?;
    tokio::spawn(async move {
        // A broken connection fails the client's next call, which reports it.
        let _ = connection.await;
    });
    Ok(client)
}

fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| match ports {
        [] => DEFAULT_PORT,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(DEFAULT_PORT),
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
        })
        .collect();
    let mut out = String::from("the database");
    // The server defaults the database to the user's name.
    if let Some(database) = config.get_dbname().or(config.get_user()) {
        let _ = write!(out, " {database:?}");
    }
    if hosts.is_empty() {
        out.push_str(" (no host given)");
    } else {
        let _ = write!(out, " on {}", hosts.join(", "));
    }
    if let Some(user) = config.get_user() {
        let _ = write!(out, " as user {user:?}");
    }
    out
}

/// The server's message when the server refused, else the error with its causes.
fn reason(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.hint() {
            Some(hint) => format!("{} (hint: {hint})", db.message()),
            None => db.message().to_string(),
        },
        None => chain(error),
    }
}

/// `error: cause: cause's cause`: tokio-postgres's own text is only a summary.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> String {
        describe_target(url).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn names_host_port_database_and_user_but_not_the_password() {
        for (url, expected) in [
            (
                "postgres://app:s3cret@db.internal:6543/shop",
                r#"the database "shop" on db.internal:6543 as user "app""#,
            ),
            (
                "postgres://u@[::1]/db",
                r#"the database "db" on [::1]:5432 as user "u""#,
            ),
            (
                "postgres://u@%2Frun%2Fpostgresql/db",
                r#"the database "db" on /run/postgresql/.s.PGSQL.5432 as user "u""#,
            ),
            (
                "postgresql://u@a:5433,b/db?host=/tmp",
                r#"the database "db" on a:5433, b:5432, /tmp/.s.PGSQL.5432 as user "u""#,
            ),
            (
                "host=h user=app password=s3cret",
                r#"the database "app" on h:5432 as user "app""#,
            ),
        ] {
            assert_eq!(target(url), expected, "{url}");
        }
    }

    #[test]
    fn an_unparsable_url_is_refused_without_echoing_it() {
        for url in ["notaurl", "postgres://u:s3cret@h:notaport/d"] {
            let text = target(url);
            assert!(
                text.starts_with(
                    "error: cannot connect to the database: the database URL is not valid ("
                ),
                "{text}"
            );
            assert!(!text.contains("s3cret") && !text.contains(url), "{text}");
        }
    }
}
