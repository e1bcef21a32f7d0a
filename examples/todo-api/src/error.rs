//! The service's error responses: a status and a JSON body
//! `{"error": "<code>", "message": "<text>"}`.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::Serialize;
use tenants_core::axum::DbError;

use crate::auth::AuthError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: missing or invalid credentials.
    #[error("{0}")]
    Unauthorized(AuthError),
    /// 404: no such todo for this tenant (another tenant's todo looks exactly the same).
    #[error("todo not found")]
    NotFound,
    /// 404: no such route.
    #[error("no such route")]
    NoRoute,
    /// 422: the body is not valid JSON or not a valid todo.
    #[error("{0}")]
    Unprocessable(String),
    /// Another client error with its own status (unsupported media type, body too large).
    #[error("{message}")]
    BadRequest {
        /// The status.
        status: StatusCode,
        /// What is wrong.
        message: String,
    },
    /// 503: no database connection within the pool's bound, the database is down, or a
    /// statement ran into `statement_timeout`. The cause is logged, not sent.
    #[error("the database is unavailable; try again shortly")]
    Unavailable(String),
    /// 500: anything else; the cause is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound | ApiError::NoRoute => "not_found",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::BadRequest { status, .. } => match *status {
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                _ => "bad_request",
            },
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "database unavailable"),
            _ => {}
        }
        let body = ErrorBody {
            error: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(AuthError::MissingHeader | AuthError::NotBearer) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(cause) => ApiError::Unavailable(cause.to_string()),
            // `auth::Tenant` validated the id already; an invalid one cannot reach here, but
            // it is the caller's credential that names it.
            DbError::InvalidTenant(reason) => {
                ApiError::Unauthorized(AuthError::InvalidTenant(reason))
            }
            // A query's error: the statement timeout and a lost connection are 503s.
            DbError::Database(tenants_core::Error::Database(error)) => error.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<DieselError> for ApiError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::NotFound => ApiError::NotFound,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | DieselError::BrokenTransactionManager => {
                ApiError::Unavailable(format!("database connection lost: {error}"))
            }
            // SQLSTATE 57014 carries no kind of its own in Diesel; its message is stable.
            DieselError::DatabaseError(_, info) if info.message().contains("statement timeout") => {
                ApiError::Unavailable(format!("database too slow: {error}"))
            }
            _ => ApiError::Internal(format!("database error: {error}")),
        }
    }
}
