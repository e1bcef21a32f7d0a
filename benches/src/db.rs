//! The benchmark databases: each benchmark gets a fresh one, dropped when it ends.

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tenants_core::Config;
use tenants_core::policy::{self, RoleGrant, TableSpec};

use crate::error::{BenchError, Result};

/// The login role that owns the benchmark tables and serves tenant transactions (the
/// plain side logs in as it too): not a superuser, so RLS applies as in production.
pub const OWNER: &str = "tenants_bench_owner";

/// The advisory lock the integration tests take around `CREATE ROLE`/`GRANT` on
/// cluster-wide roles; the benchmarks take it too, so they can run beside the tests.
const CREATE_LOCK: i64 = 0x7465_6e61_6e74;

/// The server: `DATABASE_URL`, else `postgres://postgres@localhost:5432/postgres`. Its
/// user must be allowed to create databases and roles (a superuser on a dev machine).
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@localhost:5432/postgres".to_string())
}

/// The parts of a `postgres://user@host:port/db?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// `postgres` or `postgresql`.
    pub scheme: String,
    /// `user[:password]`, when present.
    pub userinfo: Option<String>,
    /// `host[:port]`.
    pub host: String,
    /// The database.
    pub database: String,
    /// Everything after `?`.
    pub query: Option<String>,
}

impl UrlParts {
    /// Splits `url` with the `url` crate; the parts stay percent-encoded, as in `url`.
    pub fn parse(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| BenchError::Failed(format!("DATABASE_URL {url:?} is not a URL: {e}")))?;
        let userinfo = match (parsed.username(), parsed.password()) {
            ("", None) => None,
            (user, None) => Some(user.to_string()),
            (user, Some(password)) => Some(format!("{user}:{password}")),
        };
        let host = match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        Ok(Self {
            scheme: parsed.scheme().to_string(),
            userinfo,
            host,
            database: parsed.path().trim_start_matches('/').to_string(),
            query: parsed.query().map(str::to_string),
        })
    }

    /// The URL again.
    pub fn render(&self) -> String {
        let mut out = format!("{}://", self.scheme);
        if let Some(userinfo) = &self.userinfo {
            out.push_str(userinfo);
            out.push('@');
        }
        out.push_str(&self.host);
        out.push('/');
        out.push_str(&self.database);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(query);
        }
        out
    }

    /// `host:port` with the default port 5432 filled in (`localhost` when empty).
    pub fn host_port(&self) -> String {
        let parsed = url::Url::parse(&self.render()).ok();
        let host = parsed
            .as_ref()
            .and_then(|u| u.host_str())
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost")
            .to_string();
        let port = parsed.and_then(|u| u.port()).unwrap_or(5432);
        format!("{host}:{port}")
    }
}

/// A database created for one benchmark run.
#[derive(Debug)]
pub struct BenchDb {
    name: String,
    server: UrlParts,
}

impl BenchDb {
    /// Drops `name` if a previous run left it, and creates it empty.
    pub async fn create(name: &str) -> Result<Self> {
        let server = UrlParts::parse(&server_url())?;
        let mut admin = AsyncPgConnection::establish(&server.render()).await?;
        // Two messages: neither statement may run in a multi-statement batch.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        println!("created database {name}");
        Ok(Self {
            name: name.to_string(),
            server,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This database, as the `DATABASE_URL` user (a superuser here).
    pub fn url(&self) -> String {
        UrlParts {
            database: self.name.clone(),
            ..self.server.clone()
        }
        .render()
    }

    /// This database, logged in as `user` (password auth is not supported: the
    /// benchmarks expect trust or peer auth on a local server).
    pub fn url_as(&self, user: &str) -> String {
        UrlParts {
            database: self.name.clone(),
            userinfo: Some(user.to_string()),
            ..self.server.clone()
        }
        .render()
    }

    /// The parsed URL of this database as the `DATABASE_URL` user.
    pub fn url_parts(&self) -> UrlParts {
        UrlParts {
            database: self.name.clone(),
            ..self.server.clone()
        }
    }

    /// A connection to this database as the `DATABASE_URL` user.
    pub async fn connect(&self) -> Result<AsyncPgConnection> {
        Ok(AsyncPgConnection::establish(&self.url()).await?)
    }

    /// Drops the database (terminating any connection left to it).
    pub async fn drop_db(self) -> Result<()> {
        let mut admin = AsyncPgConnection::establish(&self.server.render()).await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await?;
        println!("dropped database {}", self.name);
        Ok(())
    }
}

/// Runs `sql` under the role-creation advisory lock (roles are cluster-wide: the tests
/// create and grant the same ones concurrently).
pub async fn batch_locked(conn: &mut AsyncPgConnection, sql: &str) -> Result<()> {
    conn.batch_execute(&format!("SELECT pg_advisory_lock({CREATE_LOCK})"))
        .await?;
    let result = conn.batch_execute(sql).await;
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({CREATE_LOCK})"))
        .await?;
    Ok(result?)
}

/// Creates the [`OWNER`] login role if it does not exist.
pub async fn ensure_owner(conn: &mut AsyncPgConnection) -> Result<()> {
    batch_locked(
        conn,
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER}') \
             THEN CREATE ROLE \"{OWNER}\" LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
        ),
    )
    .await
}

/// Puts `tables` under the contract with the migration `tenants_core::policy` renders
/// (default [`Config`]), granting our roles to `grant_to`.
pub async fn apply_rls(
    conn: &mut AsyncPgConnection,
    tables: &[TableSpec],
    grant_to: &[RoleGrant],
) -> Result<()> {
    let config = Config::default();
    let changes = policy::setup(&config, tables, grant_to);
    batch_locked(conn, &policy::render_up(&config, &changes)).await
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// The lines `EXPLAIN <query>` (or any statement returning `QUERY PLAN`) returns.
pub async fn explain(conn: &mut AsyncPgConnection, sql: &str) -> Result<Vec<String>> {
    let lines: Vec<PlanLine> = diesel::sql_query(sql).load(conn).await?;
    Ok(lines.into_iter().map(|l| l.line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_round_trip() -> Result<()> {
        let url = "postgres://postgres@localhost:5432/postgres?sslmode=disable";
        let parts = UrlParts::parse(url)?;
        assert_eq!(parts.render(), url);
        assert_eq!(parts.host_port(), "localhost:5432");
        let other = UrlParts {
            database: "x".into(),
            userinfo: Some("u".into()),
            ..parts
        };
        assert_eq!(
            other.render(),
            "postgres://u@localhost:5432/x?sslmode=disable"
        );
        assert_eq!(UrlParts::parse("postgres://h/db")?.host_port(), "h:5432");
        assert_eq!(
            UrlParts::parse("postgres://[::1]:6000/db")?.host_port(),
            "[::1]:6000"
        );
        // Percent-encoded passwords and socket hosts stay encoded through a round trip.
        let encoded = "postgres://u:p%40ss%2Fw@%2Frun%2Fpostgresql/db?application_name=x";
        assert_eq!(UrlParts::parse(encoded)?.render(), encoded);
        assert!(UrlParts::parse("notaurl").is_err());
        Ok(())
    }
}
