//! One tenant transaction per HTTP request, whatever the framework: the error a handler's
//! database side answers with, the transaction a request's extractors share, and the
//! decision to commit or roll back once the response is known. `tenants_core::axum` and
//! `tenants_core::actix` only wire this into their framework's layer and extractor, so
//! both keep the same contract.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use diesel_async::AsyncPgConnection;

use crate::error::Error;
use crate::pool::{TenantConnection, TenantPool};
use crate::tenant::{InvalidTenantId, Tenant, TenantId};

/// Seconds a client is asked to wait after a 503, in `Retry-After`.
pub(crate) const RETRY_AFTER_SECONDS: &str = "1";

/// The media type of problem details (RFC 9457).
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// Why a `TenantDb` could not give a connection, or a request's transaction could not
/// commit. Answered as problem details (RFC 9457, `application/problem+json`): no
/// connection within the pool's timeout or no database is 503 with `Retry-After`, an
/// invalid or missing tenant is 401, anything else 500; the body never carries a database
/// message (the cause is logged with `tracing`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// 503: no connection within the pool's timeout, or the database cannot be reached.
    #[error("{0}")]
    Unavailable(Error),
    /// 401: the request's tenant is not a valid tenant id for the pool's
    /// [`Config::tenant`](crate::Config::tenant) (empty, too long, or not of the tenant
    /// columns' type).
    #[error("invalid tenant: {0}")]
    InvalidTenant(InvalidTenantId),
    /// 401: `TenantDb` (whose tenant comes from the request's extensions) found no
    /// [`Tenant`] there: the request was not authenticated by the application's middleware.
    #[error("the request names no tenant: no `Tenant` in its extensions")]
    NoTenant,
    /// 500: a query, the begin or the commit failed.
    #[error("{0}")]
    Database(Error),
    /// 500: a `TenantDb` on a route that the framework's tenant layer does not wrap.
    #[error(
        "TenantDb used on a route without the tenant layer: wrap the routes in `tenants_core::axum::TenantLayer` or `tenants_core::actix::TenantMiddleware`"
    )]
    NoLayer,
    /// 500: two `TenantDb`s of one request used the connection at the same time, or named
    /// different tenants.
    #[error(
        "the request's transaction is in use by another TenantDb of the same request, or belongs to another tenant"
    )]
    Conflict,
    /// 500: a `TenantDb` was kept beyond its request (moved into a spawned task, say): its
    /// writes are rolled back, so the response may not claim success.
    #[error("a TenantDb outlived its request; its transaction is rolled back")]
    Escaped,
}

impl DbError {
    /// The HTTP status code this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            DbError::Unavailable(_) => 503,
            DbError::InvalidTenant(_) | DbError::NoTenant => 401,
            DbError::Database(_) | DbError::NoLayer | DbError::Conflict | DbError::Escaped => 500,
        }
    }

    /// What the response body says: the client's own mistake in full, nothing about the
    /// server's.
    fn public_detail(&self) -> String {
        match self {
            DbError::Unavailable(_) => "the database is unavailable; try again shortly".into(),
            DbError::InvalidTenant(reason) => format!("invalid tenant: {reason}"),
            DbError::NoTenant => "the request names no tenant".into(),
            DbError::Database(_) | DbError::NoLayer | DbError::Conflict | DbError::Escaped => {
                "internal server error".into()
            }
        }
    }

    /// Logs the error as its status deserves, then renders its problem-details body.
    pub(crate) fn problem(&self, title: &str) -> String {
        match self.http_status() {
            503 => tracing::warn!(error = %self, "database unavailable"),
            500 => tracing::error!(error = %self, "request failed"),
            // Most likely the route lacks the middleware that authenticates the request and
            // puts its `Tenant` in the extensions: the server's mistake as much as the
            // client's, so it is logged where an operator looks.
            _ if matches!(self, DbError::NoTenant) => tracing::warn!(
                error = %self,
                "request refused: no tenant; is the middleware that inserts the request's `Tenant` on this route?"
            ),
            _ => tracing::debug!(error = %self, "request refused"),
        }
        serde_json::json!({
            "type": "about:blank",
            "title": title,
            "status": self.http_status(),
            "detail": self.public_detail(),
        })
        .to_string()
    }
}

impl From<Error> for DbError {
    fn from(error: Error) -> Self {
        match error {
            error if error.is_unavailable() => DbError::Unavailable(error),
            Error::InvalidTenantId(reason) => DbError::InvalidTenant(reason),
            other => DbError::Database(other),
        }
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(error: diesel::result::Error) -> Self {
        DbError::Database(Error::Database(error))
    }
}

/// The transaction of one request, shared by the framework's layer and the request's
/// `TenantDb`s.
pub(crate) struct RequestTransaction {
    pool: TenantPool,
    slot: Mutex<Slot>,
}

/// Where the request's connection is.
enum Slot {
    /// Not begun yet.
    Unused,
    /// Begun, and back from the `TenantDb` that used it.
    Parked(Box<TenantConnection>),
    /// Held (or being begun) by a `TenantDb`.
    Lent,
    /// The response is out: nothing may begin or commit any more.
    Finished,
}

impl RequestTransaction {
    /// A request's transaction from `pool`, not begun.
    pub(crate) fn new(pool: TenantPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            slot: Mutex::new(Slot::Unused),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        // No code panics while holding the lock; a poisoned lock still holds a valid slot.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request's connection for `tenant`, begun on first use.
    async fn lend(&self, tenant: &Tenant) -> Result<TenantConnection, DbError> {
        let previous = std::mem::replace(&mut *self.slot(), Slot::Lent);
        match previous {
            Slot::Unused => {
                // Back to `Unused` if the begin fails or its future is dropped half-way.
                let mut reset = ResetOnDrop(Some(self));
                let conn = self.pool.tenant(tenant).await?;
                reset.0 = None;
                Ok(conn)
            }
            Slot::Parked(conn) if conn.tenant() == Some(tenant) => Ok(*conn),
            Slot::Parked(conn) => {
                *self.slot() = Slot::Parked(conn);
                Err(DbError::Conflict)
            }
            Slot::Lent => Err(DbError::Conflict),
            Slot::Finished => {
                *self.slot() = Slot::Finished;
                Err(DbError::Escaped)
            }
        }
    }

    /// Takes back a lent connection; after the response it is dropped (rolled back).
    fn park(&self, conn: TenantConnection) {
        let mut slot = self.slot();
        if matches!(*slot, Slot::Lent) {
            *slot = Slot::Parked(Box::new(conn));
        }
    }

    /// Ends the request's transaction once its response is known: commits when the response
    /// `succeeded` (2xx or 3xx), rolls back otherwise. An `Err` replaces the response: the
    /// commit failed, or a `TenantDb` still holds the connection (it outlived the request).
    pub(crate) async fn finish(&self, succeeded: bool) -> Result<(), DbError> {
        let slot = std::mem::replace(&mut *self.slot(), Slot::Finished);
        match slot {
            Slot::Unused | Slot::Finished => Ok(()),
            Slot::Parked(conn) if succeeded => conn.commit().await.map_err(DbError::from),
            Slot::Parked(conn) => {
                if let Err(error) = conn.rollback().await {
                    tracing::warn!(%error, "rollback after an unsuccessful response failed");
                }
                Ok(())
            }
            Slot::Lent if succeeded => Err(DbError::Escaped),
            Slot::Lent => Ok(()),
        }
    }
}

/// Resets the slot to `Unused` unless disarmed.
struct ResetOnDrop<'a>(Option<&'a RequestTransaction>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(transaction) = self.0 {
            *transaction.slot() = Slot::Unused;
        }
    }
}

/// The request extension through which a `TenantDb` finds its request's transaction.
#[derive(Clone)]
pub(crate) struct RequestHandle(pub(crate) Arc<RequestTransaction>);

/// The request's tenant transaction: the extractor for handlers under the framework's
/// tenant layer ([`crate::axum::TenantLayer`], [`crate::actix::TenantMiddleware`]; the
/// framework's module documents it).
///
/// `T` says where the tenant comes from: an extractor of the application that is also a
/// [`TenantId`] (a verified claim, a header, a subdomain). By default, `T` is [`Tenant`],
/// read from the request's extensions, where the application's middleware puts it. The
/// tenant is validated with the pool's [`Config`](crate::Config) when the extractor runs
/// (an invalid or wrong-typed one is a 401); the connection is checked out and the
/// transaction begun on the first [`conn`](TenantDb::conn).
///
/// Several `TenantDb`s of one request (in a middleware and in the handler, say) share one
/// transaction, one after the other.
pub struct TenantDb<T = Tenant> {
    tenant: Tenant,
    id: T,
    transaction: Arc<RequestTransaction>,
    conn: Option<TenantConnection>,
}

impl<T: TenantId> TenantDb<T> {
    /// `id` validated with the pool's configuration, for the request's `transaction`.
    pub(crate) fn new(transaction: Arc<RequestTransaction>, id: T) -> Result<Self, DbError> {
        let tenant = transaction
            .pool
            .config()
            .tenant(&id)
            .map_err(DbError::InvalidTenant)?;
        Ok(Self {
            tenant,
            id,
            transaction,
            conn: None,
        })
    }
}

impl<T> std::fmt::Debug for TenantDb<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDb")
            .field("tenant", &self.tenant)
            .field("begun", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> TenantDb<T> {
    /// The request's tenant, validated (and made canonical) for the tenant columns' type.
    /// [`Tenant::parse`] gives it back as that type: `db.tenant().parse::<uuid::Uuid>()`.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The tenant as the application's extractor `T` gave it (a verified claim, say), typed
    /// as the application declared it.
    pub fn id(&self) -> &T {
        &self.id
    }

    /// A connection inside the request's tenant transaction, begun on the first call.
    ///
    /// Fails with [`DbError::Unavailable`] when the pool has no connection within its
    /// timeout or the database cannot be reached.
    pub async fn conn(&mut self) -> Result<&mut AsyncPgConnection, DbError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.transaction.lend(&self.tenant).await?,
        };
        Ok(self.conn.insert(conn))
    }
}

impl<T> Drop for TenantDb<T> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.transaction.park(conn);
        }
    }
}
