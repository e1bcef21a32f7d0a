//! actix-web integration (feature `actix`): one transaction per request, scoped to the
//! request's tenant, committed when the handler succeeds: the contract of the axum layer
//! (`tenants_core::axum`), in actix-web's terms.
//!
//! - [`TenantMiddleware`] wraps the routes (`App::wrap`, `Scope::wrap`). It commits the
//!   request's transaction when the response is a success (2xx) or a redirection (3xx) and
//!   rolls it back otherwise. A handler that panics or a request that is cancelled (the
//!   client went away) never reaches the commit: its connection is dropped, and a dropped
//!   [`TenantConnection`](crate::TenantConnection) rolls back. A commit that fails replaces
//!   the response with a [`DbError`] response.
//! - [`TenantDb`] is the extractor. It takes the tenant from an extractor of the
//!   application (`TenantDb<T>`: any `T` that is [`FromRequest`] and [`TenantId`], such as a
//!   verified token's claim), or from a [`Tenant`] the application's middleware put in the
//!   request's extensions (`TenantDb`, the default). The library stays out of
//!   authentication.
//! - [`DbError`] is the error of the database side, a [`ResponseError`] answered as JSON
//!   problem details (RFC 9457): 503 with `Retry-After` when no connection comes within the
//!   pool's timeout, 401 for a missing, invalid or wrong-typed tenant, 500 otherwise with
//!   no internals in the body (the cause is logged with `tracing`).
//!
//! The connection is checked out and the transaction begun on the first
//! [`TenantDb::conn`], not when the extractor runs.
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, web};
//! use diesel_async::RunQueryDsl;
//! use tenants_core::actix::{DbError, TenantDb, TenantMiddleware};
//!
//! async fn rename_all(mut db: TenantDb, name: web::Json<String>) -> Result<HttpResponse, DbError> {
//!     diesel::sql_query("UPDATE todo_item SET name = $1")
//!         .bind::<diesel::sql_types::Text, _>(name.into_inner())
//!         .execute(db.conn().await?)
//!         .await?;
//!     Ok(HttpResponse::NoContent().finish()) // committed once the response is ready
//! }
//!
//! # fn run(pool: tenants_core::TenantPool) {
//! let app = App::new()
//!     .wrap(TenantMiddleware::new(pool))
//!     .route("/todos/rename", web::post().to(rename_all));
//! # }
//! ```
//!
//! Synchronous Diesel code (repositories on `&mut PgConnection`, a
//! [`SyncTenantPool`](crate::SyncTenantPool)) runs on actix-web's blocking pool: one
//! `web::block` per request around one closure transaction, so that the request's writes
//! are one transaction (see the README's "Use it in an actix-web service").

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::EitherBody;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::pool::TenantPool;
pub use crate::request::{DbError, TenantDb};
use crate::request::{PROBLEM_JSON, RETRY_AFTER_SECONDS, RequestHandle, RequestTransaction};
use crate::tenant::{Tenant, TenantId};

impl ResponseError for DbError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let status = ResponseError::status_code(self);
        let body = self.problem(status.canonical_reason().unwrap_or("Error"));
        let mut response = HttpResponse::build(status);
        response.insert_header((CONTENT_TYPE, PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((RETRY_AFTER, RETRY_AFTER_SECONDS));
        }
        response.body(body)
    }
}

/// Middleware giving each request one tenant transaction, used through [`TenantDb`]:
/// committed when the response is 2xx or 3xx, rolled back otherwise, on a panic and on
/// cancellation.
#[derive(Debug, Clone)]
pub struct TenantMiddleware {
    pool: TenantPool,
}

impl TenantMiddleware {
    /// Transactions from `pool`.
    pub fn new(pool: TenantPool) -> Self {
        Self { pool }
    }
}

impl<S, B> Transform<S, ServiceRequest> for TenantMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = TenantService<S>;
    type InitError = ();
    type Future = Ready<Result<TenantService<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TenantService {
            service: Rc::new(service),
            pool: self.pool.clone(),
        }))
    }
}

/// The service [`TenantMiddleware`] wraps routes in.
pub struct TenantService<S> {
    service: Rc<S>,
    pool: TenantPool,
}

impl<S, B> Service<ServiceRequest> for TenantService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let transaction = RequestTransaction::new(self.pool.clone());
        request
            .extensions_mut()
            .insert(RequestHandle(transaction.clone()));
        let response = self.service.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    // An error that escaped the handler's service: never a success.
                    transaction.finish(false).await?;
                    return Err(error);
                }
            };
            let status = response.status();
            let succeeded = status.is_success() || status.is_redirection();
            Ok(match transaction.finish(succeeded).await {
                Ok(()) => response.map_into_left_body(),
                Err(error) => {
                    let (request, _) = response.into_parts();
                    ServiceResponse::new(request, error.error_response()).map_into_right_body()
                }
            })
        })
    }
}

impl<T> FromRequest for TenantDb<T>
where
    T: FromRequest + TenantId + 'static,
{
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let handle = request.extensions().get::<RequestHandle>().cloned();
        let id = T::from_request(request, payload);
        Box::pin(async move {
            let Some(RequestHandle(transaction)) = handle else {
                return Err(DbError::NoLayer.into());
            };
            let id = id.await.map_err(Into::into)?;
            Ok(TenantDb::new(transaction, id)?)
        })
    }
}

/// The tenant the application's middleware put in the request's extensions
/// (`request.extensions_mut().insert(tenant)`); without one, 401.
impl FromRequest for Tenant {
    type Error = DbError;
    type Future = Ready<Result<Self, DbError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            request
                .extensions()
                .get::<Tenant>()
                .cloned()
                .ok_or(DbError::NoTenant),
        )
    }
}
