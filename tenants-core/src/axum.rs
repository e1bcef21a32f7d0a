//! axum integration (feature `axum`): one transaction per request, scoped to the request's
//! tenant, committed when the handler succeeds.
//!
//! - [`TenantLayer`] wraps the routes. It commits the request's transaction when the
//!   response is a success (2xx) or a redirection (3xx) and rolls it back otherwise. A
//!   handler that panics or a request that is cancelled (the client went away, a timeout
//!   layer fired) never reaches the layer's commit: its connection is dropped, and a
//!   dropped [`TenantConnection`](crate::TenantConnection) rolls back.
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
use std::task::{Context, Poll};

use ::axum::extract::FromRequestParts;
use ::axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use ::axum::http::request::Parts;
use ::axum::http::{HeaderValue, Request, StatusCode};
use ::axum::response::{IntoResponse, Response};

use crate::pool::TenantPool;
pub use crate::request::{DbError, TenantDb};
use crate::request::{PROBLEM_JSON, RETRY_AFTER_SECONDS, RequestHandle, RequestTransaction};
use crate::tenant::{Tenant, TenantId};

impl DbError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = self.problem(status.canonical_reason().unwrap_or("Error"));
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
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
        let transaction = RequestTransaction::new(self.pool.clone());
        request
            .extensions_mut()
            .insert(RequestHandle(transaction.clone()));
        // The clone that was made ready by `poll_ready` serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?.into_response();
            let status = response.status();
            let succeeded = status.is_success() || status.is_redirection();
            Ok(match transaction.finish(succeeded).await {
                Ok(()) => response,
                Err(error) => error.into_response(),
            })
        })
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
        TenantDb::new(transaction, id).map_err(TenantDbRejection::Db)
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
