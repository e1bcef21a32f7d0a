//! The schema, the migrations, the pool, and [`Db`], the request's tenant transaction.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use serde::Serialize;
use tenants_core::{Config, Purpose, TenantPool};

use crate::StartupError;
use crate::auth::Tenant;
use crate::settings::{Settings, maintenance_url, redact_url};

/// The Diesel schema.
pub mod schema {
    // Every row belongs to the tenant in its `tenant` column; PostgreSQL's RLS policies
    // (migration `2026-11-25-000001_tenants_rls`) enforce it.
    #[tenants_core::with_rls]
    diesel::table! {
        /// The todos of every tenant.
        todo_item (id) {
            /// Primary key, from the `todo_item_id_seq` sequence.
            id -> Int4,
            /// What to do.
            name -> Text,
            /// The tenant owning the row.
            tenant -> Text,
        }
    }
}

pub use schema::todo_item;

/// A todo as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = todo_item, check_for_backend(diesel::pg::Pg))]
pub struct TodoItem {
    /// Its id.
    pub id: i32,
    /// What to do.
    pub name: String,
}

/// The migrations in `migrations/`, compiled into the binary and applied at start-up.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Serialises concurrent start-ups of the service against one database (advisory locks
/// are per database).
const MIGRATION_LOCK: i64 = 0x746f_646f_5f61_7069;

/// Connects to `url` (the owner's) with a blocking connection and applies the pending
/// migrations, then makes `serving_login` (when given) a login of the hardened deployment:
/// a member of the tenant role only, not inheriting it (`tenants_core::policy::
/// serving_login`). Returns the versions applied. When the server says that `database`
/// (the one the settings name, see [`Settings::database`]) does not exist, creates it
/// first, and no other.
pub fn prepare_database(
    url: &str,
    database: Option<&str>,
    serving_login: Option<&str>,
) -> Result<Vec<String>, StartupError> {
    let mut conn = match (PgConnection::establish(url), database) {
        (Ok(conn), _) => conn,
        (Err(ConnectionError::BadConnection(message)), Some(database))
            if message.contains(&format!("database \"{database}\" does not exist")) =>
        {
            create_database(url, database, &message)?;
            PgConnection::establish(url).map_err(|e| StartupError::connect(url, e))?
        }
        (Err(e), _) => return Err(StartupError::connect(url, e)),
    };
    let migrate_error = |e: &dyn std::fmt::Display| StartupError::Migrations(e.to_string());
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .map_err(|e| migrate_error(&e))?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| migrate_error(&e))?
        .into_iter()
        .map(|version| version.to_string())
        .collect();
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .map_err(|e| migrate_error(&e))?;
    if let Some(login) = serving_login {
        make_serving_login(&mut conn, login)?;
    }
    Ok(applied)
}

/// Makes `login` the hardened serving login. Roles are cluster-wide and the advisory lock
/// is per database, so services starting at once on other databases may race on the
/// same role ("tuple concurrently updated"): the idempotent statement is retried.
fn make_serving_login(conn: &mut PgConnection, login: &str) -> Result<(), StartupError> {
    let sql = tenants_core::policy::serving_login(&Config::default(), login, Purpose::Tenant);
    let mut attempt = 0;
    loop {
        match conn.batch_execute(&sql) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 && e.to_string().contains("concurrently") => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
            }
            Err(e) => {
                return Err(StartupError::Migrations(format!(
                    "cannot make the serving login {login} (DATABASE_URL's user must be allowed to create roles; or set SERVING_DATABASE_URL to a login made beforehand): {e}"
                )));
            }
        }
    }
}

/// Creates `database` through the `postgres` maintenance database of the same server.
fn create_database(url: &str, database: &str, original_error: &str) -> Result<(), StartupError> {
    let cannot = |why: String| StartupError::Connect {
        url: redact_url(url),
        message: format!(
            "{}\nand it could not be created: {why}",
            original_error.trim()
        ),
    };
    let maintenance = maintenance_url(url).map_err(&cannot)?;
    let mut admin = PgConnection::establish(&maintenance)
        .map_err(|e| cannot(format!("cannot connect to the postgres database: {e}")))?;
    // The server quotes the name (`%I`) exactly as its parser reads it back.
    let create = diesel::sql_query("SELECT format('CREATE DATABASE %I', $1) AS sql")
        .bind::<Text, _>(database)
        .get_result::<Statement>(&mut admin)
        .map_err(|e| cannot(e.to_string()))?;
    match diesel::sql_query(create.sql).execute(&mut admin) {
        Ok(_) => {
            tracing::info!(%database, "created the database");
            Ok(())
        }
        // Another instance starting at the same time created it first.
        Err(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("already exists") =>
        {
            Ok(())
        }
        Err(e) => Err(cannot(e.to_string())),
    }
}

/// A statement the server rendered.
#[derive(QueryableByName)]
struct Statement {
    #[diesel(sql_type = Text)]
    sql: String,
}

/// The pool, through the serving login (`Settings::serving_url`): `Config::default()`'s
/// names (tenant transactions only), `tenants-core`'s recycle check, and
/// `statement_timeout` for every connection. Its first connection is made here, so an
/// unreachable database is a start-up error with the server's reason.
pub async fn pool(settings: &Settings) -> Result<TenantPool, tenants_core::Error> {
    let builder = bb8::Pool::builder()
        .max_size(settings.pool_max_size)
        .connection_timeout(settings.pool_timeout);
    let url = with_statement_timeout(
        &settings.serving_url,
        settings.statement_timeout.as_millis(),
    );
    TenantPool::connect_with(&url, Config::default(), builder).await
}

/// `url` asking the server for `statement_timeout` (milliseconds; 0 is none) as a startup
/// option: the session's default, which the reset after every tenant transaction keeps (a
/// `SET` made on a new connection would be reset after its first transaction).
fn with_statement_timeout(url: &str, millis: u128) -> String {
    let option = format!("-c statement_timeout={millis}");
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Percent-encoded: the driver reads `+` as itself, not as a space.
            let option =
                percent_encoding::utf8_percent_encode(&option, percent_encoding::NON_ALPHANUMERIC);
            let query = match parsed.query() {
                Some(query) => format!("{query}&options={option}"),
                None => format!("options={option}"),
            };
            parsed.set_query(Some(&query));
            parsed.into()
        }
        // A `key=value` connection string.
        Err(_) => format!("{url} options='{option}'"),
    }
}

/// The request's tenant transaction, its tenant the one of the request's verified token
/// ([`Tenant`]): the counterpart of the original's `Database_T`.
///
/// Extracting it authenticates the request, so bad credentials are a 401 before any
/// database work; the first `db.conn().await?` checks a connection out (within the pool's
/// bound) and begins the transaction. `tenants_core::axum::TenantLayer` (see
/// [`crate::routes::router`]) commits it when the handler answers 2xx or 3xx and rolls it
/// back otherwise, on a panic, and when the client goes away.
pub type Db = tenants_core::axum::TenantDb<Tenant>;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tenants_core::policy::{self, Grantee, QualifiedName, RoleGrant, TableSpec};
    use tenants_core::registry;

    use super::*;

    const RLS_MIGRATION: &str = "migrations/2026-11-25-000001_tenants_rls";

    /// The committed RLS migration is exactly what `tenants_core::policy` renders for the
    /// marked table (what `tenants generate` writes). `TODO_API_BLESS=1 cargo test -p
    /// todo-api --lib` rewrites it.
    #[test]
    fn committed_rls_migration_is_the_renderers_output() {
        let config = Config::default();
        let tables = registry::tables();
        assert_eq!(
            tables
                .iter()
                .map(|t| (t.schema, t.name, t.tenant_column))
                .collect::<Vec<_>>(),
            [("public", "todo_item", "tenant")]
        );
        let spec = TableSpec::from_registry(
            &tables[0],
            vec![QualifiedName::new("public", "todo_item_id_seq")],
        );
        let changes = policy::setup(&config, &[spec], &[RoleGrant::both(Grantee::CurrentUser)]);
        let up = policy::render_up(&config, &changes);
        let down = policy::render_down(&config, &changes);

        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(RLS_MIGRATION);
        if std::env::var_os("TODO_API_BLESS").is_some() {
            std::fs::write(dir.join("up.sql"), &up).expect("write up.sql");
            std::fs::write(dir.join("down.sql"), &down).expect("write down.sql");
        }
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .unwrap_or_else(|e| panic!("{RLS_MIGRATION}/{file}: {e}"))
        };
        let hint = "the committed RLS migration differs from the renderer's output; \
                    regenerate it with `TODO_API_BLESS=1 cargo test -p todo-api --lib`";
        assert_eq!(read("up.sql"), up, "{hint}");
        assert_eq!(read("down.sql"), down, "{hint}");
    }
}
