//! The export's and the import's own connection: a tokio-postgres client inside one tenant
//! transaction, for `COPY`.
//!
//! Why a connection of its own: diesel-async 0.9 has no `COPY`, and its connection does not
//! hand out the tokio-postgres client it wraps; diesel's `COPY` is synchronous and needs a
//! `table!` type known at compile time. tokio-postgres is already the driver underneath,
//! streams `COPY` both ways, and runs in the caller's tokio runtime. The connection is
//! opened from the pool's URL, begins with the same batch as every tenant transaction
//! ([`Scope::begin_sql`]), and is closed when the session ends: whatever happens, nothing
//! of it reaches a pooled connection, and a session dropped before [`Session::commit`]
//! leaves nothing written (closing the connection rolls the transaction back).

use bytes::Bytes;
use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::types::ToSql;

use super::LifecycleError;
use crate::pool::TenantPool;
use crate::scope::Scope;
use crate::tenant::Tenant;

/// A tenant transaction on a connection of its own.
pub(super) struct Session {
    client: tokio_postgres::Client,
}

impl Session {
    /// Opens a connection to the database of `pool` and begins `tenant`'s transaction,
    /// with the transaction `modes` (`ISOLATION LEVEL ...`) when given: they go into the
    /// `BEGIN` of the begin batch itself, since a `SET TRANSACTION` after it comes too late
    /// when the batch runs a query (Citus mode's `DO` block).
    pub async fn begin(
        pool: &TenantPool,
        tenant: &Tenant,
        modes: Option<&str>,
    ) -> Result<Self, LifecycleError> {
        let url = pool.database_url().ok_or(LifecycleError::NoDatabaseUrl)?;
        let client = crate::connect::open_client(url).await?;
        let mut begin = Scope::Tenant(tenant.clone()).begin_sql(pool.config());
        if let Some(modes) = modes {
            // Every begin batch starts with its `BEGIN;` (scope.rs's tests say so).
            begin = match begin.strip_prefix("BEGIN;") {
                Some(rest) => format!("BEGIN {modes};{rest}"),
                None => format!("{begin}; SET TRANSACTION {modes}"),
            };
        }
        client
            .batch_execute(&begin)
            .await
            .map_err(pg("beginning the tenant transaction"))?;
        Ok(Self { client })
    }

    /// Runs `sql` (one or more statements, no parameters).
    pub async fn batch(&self, sql: &str, context: &str) -> Result<(), LifecycleError> {
        self.client.batch_execute(sql).await.map_err(pg(context))
    }

    /// Runs one statement; returns the rows it changed.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.client.execute(sql, params).await
    }

    /// Runs one query; returns its rows.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        context: &str,
    ) -> Result<Vec<tokio_postgres::Row>, LifecycleError> {
        self.client.query(sql, params).await.map_err(pg(context))
    }

    /// Runs `COPY ... TO STDOUT`, handing each chunk of its output to `sink` as it arrives.
    pub async fn copy_out(
        &self,
        sql: &str,
        context: &str,
        mut sink: impl FnMut(&[u8]) -> Result<(), LifecycleError>,
    ) -> Result<(), LifecycleError> {
        let stream = self.client.copy_out(sql).await.map_err(pg(context))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            sink(&chunk.map_err(pg(context))?)?;
        }
        Ok(())
    }

    /// Runs `COPY ... FROM STDIN`, sending the chunks `source` yields; returns the rows
    /// copied. An `Err` from `source` aborts the `COPY` (the transaction with it) and is
    /// returned as it is; the server's refusal is returned as the raw driver error, whose
    /// context names the line.
    pub async fn copy_in(
        &self,
        sql: &str,
        mut source: impl FnMut() -> Option<Result<Bytes, LifecycleError>>,
    ) -> Result<Result<u64, tokio_postgres::Error>, LifecycleError> {
        let sink = match self.client.copy_in::<_, Bytes>(sql).await {
            Ok(sink) => sink,
            Err(error) => return Ok(Err(error)),
        };
        let mut sink = std::pin::pin!(sink);
        while let Some(chunk) = source() {
            // Dropping the sink unfinished sends CopyFail: the server aborts the COPY.
            let chunk = chunk?;
            if let Err(error) = sink.feed(chunk).await {
                return Ok(Err(error));
            }
        }
        Ok(sink.as_mut().finish().await)
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), LifecycleError> {
        self.batch("COMMIT", "committing").await
    }
}

/// A driver error as the diesel error [`LifecycleError::Database`] carries, with `context`.
pub(super) fn pg(context: &str) -> impl FnOnce(tokio_postgres::Error) -> LifecycleError + '_ {
    move |error| LifecycleError::Database {
        context: context.to_string(),
        source: to_diesel(error),
    }
}

/// The server's error as diesel reports one (kind from the SQLSTATE, message, detail,
/// hint, names); any other driver error as an unknown database error with its text.
pub(super) fn to_diesel(error: tokio_postgres::Error) -> diesel::result::Error {
    let Some(db) = error.as_db_error() else {
        let kind = if error.is_closed() {
            DatabaseErrorKind::ClosedConnection
        } else {
            DatabaseErrorKind::Unknown
        };
        return diesel::result::Error::DatabaseError(kind, Box::new(error.to_string()));
    };
    use tokio_postgres::error::SqlState;
    let code = db.code();
    let kind = if *code == SqlState::UNIQUE_VIOLATION {
        DatabaseErrorKind::UniqueViolation
    } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
        DatabaseErrorKind::ForeignKeyViolation
    } else if *code == SqlState::NOT_NULL_VIOLATION {
        DatabaseErrorKind::NotNullViolation
    } else if *code == SqlState::CHECK_VIOLATION {
        DatabaseErrorKind::CheckViolation
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE {
        DatabaseErrorKind::SerializationFailure
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        DatabaseErrorKind::ReadOnlyTransaction
    } else {
        DatabaseErrorKind::Unknown
    };
    diesel::result::Error::DatabaseError(kind, Box::new(ServerError(db.clone())))
}

/// The server's error, readable through diesel's error information.
#[derive(Debug)]
struct ServerError(tokio_postgres::error::DbError);

impl DatabaseErrorInformation for ServerError {
    fn message(&self) -> &str {
        self.0.message()
    }
    fn details(&self) -> Option<&str> {
        self.0.detail()
    }
    fn hint(&self) -> Option<&str> {
        self.0.hint()
    }
    fn table_name(&self) -> Option<&str> {
        self.0.table()
    }
    fn column_name(&self) -> Option<&str> {
        self.0.column()
    }
    fn constraint_name(&self) -> Option<&str> {
        self.0.constraint()
    }
    fn statement_position(&self) -> Option<i32> {
        match self.0.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(at)) => i32::try_from(*at).ok(),
            _ => None,
        }
    }
}
