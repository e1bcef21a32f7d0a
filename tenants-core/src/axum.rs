//! axum integration (feature `axum`): one transaction per request, scoped to the request's
//! tenant, committed when the handler succeeds.
//!
//! - [`TenantLayer`] wraps the routes. It commits the request's transaction when the
//!   response is a success (2xx) or a redirection (3xx) and rolls it back otherwise. A
//!   handler that panics or a request that is cancelled (the client went away, a timeout
//!   layer fired) never reaches the layer's commit: its connection is dropped, and a
//!   dropped [`TenantConnection`] rolls back.
//! - [`TenantDb`] is the extractor. It takes the tenant from an extractor of the
//!   application (`TenantDb<T>`: any `T` that is `FromRequestParts` and [`TenantId`], such
//!   as a verified token's claim), or from a [`Tenant`] the application's middleware put in
//!   the request's extensions (`TenantDb`, the default). The library stays out of
//!   authentication.
//! - [`DbError`] is the error of the database side, answered as JSON problem details
//!   (RFC 9457, `application/problem+json`): no connection within the pool's timeout or no
//!   database is 503 with `Retry-After`, an invalid tenant is 401, anything else 500 with
//!   no internals in the body (the cause is logged with `tracing`).
//!
//! The connection is checked out and the transaction begun on the first
//! [`TenantDb::conn`], not when the extractor runs: a handler validates its body (the last
//! extractor) before it holds a pooled connection, and a slow upload never pins one.
//!
//! ```no_run
//! use axum::{Json, Router, http::StatusCode, routing::post};
//! use diesel_async::RunQueryDsl;
//! use tenants_core::axum::{DbError, TenantDb, TenantLayer};
//!
//! async fn rename_all(mut db: TenantDb, Json(name): Json<String>) -> Result<StatusCode, DbError> {
//!     diesel::sql_query("UPDATE todo_item SET name = $1")
//!         .bind::<diesel::sql_types::Text, _>(name)
//!         .execute(db.conn().await?)
//!         .await?;
//!     Ok(StatusCode::NO_CONTENT) // committed once the response is ready
//! }
//!
//! # async fn run(pool: tenants_core::TenantPool) {
//! let app: Router = Router::new()
//!     .route("/todos/rename", post(rename_all))
//!     .layer(TenantLayer::new(pool));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use ::axum::extract::FromRequestParts;
use ::axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use ::axum::http::request::Parts;
use ::axum::http::{HeaderValue, Request, StatusCode};
use ::axum::response::{IntoResponse, Response};
use diesel_async::AsyncPgConnection;

use crate::error::Error;
use crate::pool::{TenantConnection, TenantPool};
use crate::tenant::{InvalidTenantId, Tenant, TenantId};

/// Seconds a client is asked to wait after a 503, in `Retry-After`.
const RETRY_AFTER_SECONDS: &str = "1";

/// Why a [`TenantDb`] could not give a connection, or a request's transaction could not
/// commit. Answered as problem details (see the module documentation); the body never
/// carries a database message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// 503: no connection within the pool's timeout, or the database cannot be reached.
    #[error("{0}")]
    Unavailable(Error),
    /// 401: the request's tenant is not a valid tenant id (for the pool's
    /// [`Config::tenant`](crate::Config::tenant)).
    #[error("invalid tenant: {0}")]
    InvalidTenant(InvalidTenantId),
    /// 401: `TenantDb` (whose tenant comes from the request's extensions) found no
    /// [`Tenant`] there: the request was not authenticated by the application's middleware.
    #[error("the request names no tenant: no `Tenant` in its extensions")]
    NoTenant,
    /// 500: a query, the begin or the commit failed.
    #[error("{0}")]
    Database(Error),
    /// 500: a `TenantDb` on a route that [`TenantLayer`] does not wrap.
    #[error(
        "TenantDb used on a route without TenantLayer: add `.layer(TenantLayer::new(pool))` to the router"
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
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            DbError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DbError::InvalidTenant(_) | DbError::NoTenant => StatusCode::UNAUTHORIZED,
            DbError::Database(_) | DbError::NoLayer | DbError::Conflict | DbError::Escaped => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
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

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        let status = self.status();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %self, "database unavailable")
            }
            status if status.is_server_error() => tracing::error!(error = %self, "request failed"),
            // Most likely the route lacks the middleware that authenticates the request and
            // puts its `Tenant` in the extensions: the server's mistake as much as the
            // client's, so it is logged where an operator looks.
            _ if matches!(self, DbError::NoTenant) => tracing::warn!(
                error = %self,
                "request refused: no tenant; is the middleware that inserts the request's `Tenant` on this route?"
            ),
            _ => tracing::debug!(error = %self, "request refused"),
        }
        problem(status, &self.public_detail())
    }
}

/// A problem details response (RFC 9457): `about:blank` typed, titled by the status.
fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

/// A tower layer giving each request one tenant transaction, used through [`TenantDb`]:
/// committed when the response is 2xx or 3xx, rolled back otherwise, on a panic and on
/// cancellation.
///
/// A commit that fails turns the response into a [`DbError`] response, so a client is never
/// told that a write succeeded when it did not.
#[derive(Debug, Clone)]
pub struct TenantLayer {
    pool: TenantPool,
}

impl TenantLayer {
    /// Transactions from `pool`.
    pub fn new(pool: TenantPool) -> Self {
        Self { pool }
    }
}

impl<S> tower_layer::Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> TenantService<S> {
        TenantService {
            inner,
            pool: self.pool.clone(),
        }
    }
}

/// The service [`TenantLayer`] wraps routes in.
#[derive(Debug, Clone)]
pub struct TenantService<S> {
    inner: S,
    pool: TenantPool,
}

impl<S, B> tower_service::Service<Request<B>> for TenantService<S>
where
    S: tower_service::Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let transaction = Arc::new(RequestTransaction {
            pool: self.pool.clone(),
            slot: Mutex::new(Slot::Unused),
        });
        request
            .extensions_mut()
            .insert(RequestHandle(transaction.clone()));
        // The clone that was made ready by `poll_ready` serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?.into_response();
            Ok(transaction.finish(response).await)
        })
    }
}

/// The transaction of one request, shared by the layer and the request's `TenantDb`s.
struct RequestTransaction {
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

/// The request extension through which a `TenantDb` finds its request's transaction.
#[derive(Clone)]
struct RequestHandle(Arc<RequestTransaction>);

impl RequestTransaction {
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

    /// Commits after a 2xx or 3xx response, rolls back after any other.
    async fn finish(&self, response: Response) -> Response {
        let slot = std::mem::replace(&mut *self.slot(), Slot::Finished);
        let status = response.status();
        let succeeded = status.is_success() || status.is_redirection();
        match slot {
            Slot::Unused | Slot::Finished => response,
            Slot::Parked(conn) if succeeded => match conn.commit().await {
                Ok(()) => response,
                Err(error) => DbError::from(error).into_response(),
            },
            Slot::Parked(conn) => {
                if let Err(error) = conn.rollback().await {
                    tracing::warn!(%error, "rollback after an unsuccessful response failed");
                }
                response
            }
            Slot::Lent if succeeded => DbError::Escaped.into_response(),
            Slot::Lent => response,
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

/// The request's tenant transaction: an extractor for handlers under [`TenantLayer`].
///
/// `T` says where the tenant comes from: an extractor of the application that is also a
/// [`TenantId`] (a verified claim, a header, a subdomain). By default, `T` is [`Tenant`],
/// read from the request's extensions, where the application's middleware puts it. The
/// tenant is validated with the pool's [`Config`](crate::Config) when the extractor runs
/// (an invalid one is a 401); the connection is checked out and the transaction begun on
/// the first [`conn`](TenantDb::conn).
///
/// Several `TenantDb`s of one request (in a middleware and in the handler, say) share one
/// transaction, one after the other.
pub struct TenantDb<T = Tenant> {
    tenant: Tenant,
    id: T,
    transaction: Arc<RequestTransaction>,
    conn: Option<TenantConnection>,
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

/// Why a [`TenantDb<T>`] could not be extracted.
#[derive(Debug)]
pub enum TenantDbRejection<R> {
    /// `T`, the application's tenant extractor, refused the request.
    Tenant(R),
    /// No [`TenantLayer`], or an invalid tenant.
    Db(DbError),
}

impl<R: IntoResponse> IntoResponse for TenantDbRejection<R> {
    fn into_response(self) -> Response {
        match self {
            TenantDbRejection::Tenant(rejection) => rejection.into_response(),
            TenantDbRejection::Db(error) => error.into_response(),
        }
    }
}

impl<S, T> FromRequestParts<S> for TenantDb<T>
where
    S: Send + Sync,
    T: FromRequestParts<S> + TenantId + Send,
{
    type Rejection = TenantDbRejection<T::Rejection>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(RequestHandle(transaction)) = parts.extensions.get::<RequestHandle>().cloned()
        else {
            return Err(TenantDbRejection::Db(DbError::NoLayer));
        };
        let id = T::from_request_parts(parts, state)
            .await
            .map_err(TenantDbRejection::Tenant)?;
        let tenant = transaction
            .pool
            .config()
            .tenant(&id)
            .map_err(|reason| TenantDbRejection::Db(DbError::InvalidTenant(reason)))?;
        Ok(TenantDb {
            tenant,
            id,
            transaction,
            conn: None,
        })
    }
}

/// The tenant the application's middleware put in the request's extensions
/// (`request.extensions_mut().insert(tenant)`); without one, 401.
impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = DbError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, DbError> {
        parts
            .extensions
            .get::<Tenant>()
            .cloned()
            .ok_or(DbError::NoTenant)
    }
}
