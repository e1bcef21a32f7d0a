//! The HTTP routes.
//!
//! Every query filters by tenant explicitly, as the original recommends, with the typed
//! tenant filter (`todo_item::table.scoped(..)`: no hand-written `WHERE tenant`; on Citus
//! it is what routes a query to one shard); the tenant transaction's RLS policies make that
//! filter redundant for isolation, and `TENANT_FILTER=rls-only` drops it to show the
//! service staying correct without it.

use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use tracing::Instrument;

use tenants_core::ScopedDsl;
use tenants_core::axum::{DbError, TenantLayer};

use crate::AppState;
use crate::db::{Db, TodoItem, todo_item};
use crate::error::ApiError;
use crate::settings::TenantFilter;

/// The longest todo name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 500;

/// The service's routes, with request tracing; each request's tenant transaction (see
/// [`Db`]) commits when the handler answers 2xx or 3xx and rolls back otherwise.
pub fn router(state: AppState) -> Router {
    let transactions = TenantLayer::new(state.pool.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/todos", get(list_todos).post(create_todo))
        .route(
            "/todos/{id}",
            get(get_todo).patch(update_todo).delete(delete_todo),
        )
        .fallback(|| async { ApiError::NoRoute })
        // Inside the request span, so that the commit is logged within it.
        .layer(transactions)
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// One span per request, `request{method path tenant}`; the tenant is filled in once the
/// token is verified. Headers (and so the token) are never logged.
async fn trace_request(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        tenant = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let response = next.run(request).await;
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request finished"
        );
        response
    }
    .instrument(span)
    .await
}

/// Liveness: answers without touching the database.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The body of `POST /todos` and `PATCH /todos/{id}`.
#[derive(Debug, Deserialize)]
pub struct TodoInput {
    /// What to do: 1 to 500 characters, not only whitespace.
    pub name: String,
}

/// A JSON body, validated; every failure is a JSON error (422 for syntax and content).
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

/// A request body that can be checked beyond its shape.
pub trait Validate {
    /// `Err` with a message when the value is unacceptable.
    fn validate(&self) -> Result<(), String>;
}

impl Validate for TodoInput {
    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        let chars = self.name.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(format!(
                "name is {chars} characters long; the limit is {MAX_NAME_CHARS}"
            ));
        }
        Ok(())
    }
}

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state)
            .await
            .map_err(|rejection| match rejection {
                JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
                JsonRejection::JsonSyntaxError(e) => ApiError::Unprocessable(e.body_text()),
                other => ApiError::BadRequest {
                    status: other.status(),
                    message: other.body_text(),
                },
            })?;
        value.validate().map_err(ApiError::Unprocessable)?;
        Ok(ValidJson(value))
    }
}

/// The `{id}` of a todo route. An id that is not a number names no todo: 404.
#[derive(Debug, Clone, Copy)]
pub struct TodoId(pub i32);

impl<S: Send + Sync> FromRequestParts<S> for TodoId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) = axum::extract::Path::<i32>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        Ok(TodoId(id))
    }
}

/// `SELECT ... FROM todo_item`, filtered by tenant unless `TENANT_FILTER=rls-only`.
fn todos(
    filter: TenantFilter,
    tenant: &tenants_core::Tenant,
) -> Result<todo_item::BoxedQuery<'static, diesel::pg::Pg>, ApiError> {
    Ok(match filter {
        TenantFilter::Explicit => todo_item::table
            .scoped(tenant)
            .map_err(DbError::Database)?
            .into_boxed(),
        TenantFilter::RlsOnly => todo_item::table.into_boxed(),
    })
}

/// `GET /todos`: the tenant's todos, oldest first.
async fn list_todos(
    State(state): State<AppState>,
    mut db: Db,
) -> Result<Json<Vec<TodoItem>>, ApiError> {
    let tenant = db.tenant().clone();
    let items = todos(state.tenant_filter, &tenant)?
        .order(todo_item::id)
        .select(TodoItem::as_select())
        .load(db.conn().await?)
        .await?;
    Ok(Json(items))
}

/// `GET /todos/{id}`: one todo; another tenant's is 404, like a missing one.
async fn get_todo(
    State(state): State<AppState>,
    mut db: Db,
    TodoId(id): TodoId,
) -> Result<Json<TodoItem>, ApiError> {
    let tenant = db.tenant().clone();
    let item = todos(state.tenant_filter, &tenant)?
        .filter(todo_item::id.eq(id))
        .select(TodoItem::as_select())
        .first(db.conn().await?)
        .await
        .optional()?;
    item.map(Json).ok_or(ApiError::NotFound)
}

/// `POST /todos`: creates a todo for the tenant; 201 with the row.
///
/// The body (the last extractor) is validated before the first `db.conn()` checks a
/// connection out, so an invalid one costs no database work.
async fn create_todo(
    mut db: Db,
    ValidJson(input): ValidJson<TodoInput>,
) -> Result<impl IntoResponse, ApiError> {
    // The tenant column fills itself: its default is the transaction's tenant.
    let item = diesel::insert_into(todo_item::table)
        .values(todo_item::name.eq(&input.name))
        .returning(TodoItem::as_returning())
        .get_result(db.conn().await?)
        .await?;
    let location = format!("/todos/{}", item.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item),
    ))
}

/// `PATCH /todos/{id}`: renames a todo; another tenant's is 404 and stays unchanged.
async fn update_todo(
    State(state): State<AppState>,
    mut db: Db,
    TodoId(id): TodoId,
    ValidJson(input): ValidJson<TodoInput>,
) -> Result<Json<TodoItem>, ApiError> {
    let tenant = db.tenant().clone();
    let rename = todo_item::name.eq(&input.name);
    let update = match state.tenant_filter {
        TenantFilter::Explicit => diesel::update(
            todo_item::table
                .scoped(&tenant)
                .map_err(DbError::Database)?,
        )
        .set(rename)
        .into_boxed(),
        TenantFilter::RlsOnly => diesel::update(todo_item::table).set(rename).into_boxed(),
    };
    let item = update
        .filter(todo_item::id.eq(id))
        .returning(TodoItem::as_returning())
        .get_result(db.conn().await?)
        .await
        .optional()?;
    item.map(Json).ok_or(ApiError::NotFound)
}

/// `DELETE /todos/{id}`: 204; another tenant's is 404 and stays.
async fn delete_todo(
    State(state): State<AppState>,
    mut db: Db,
    TodoId(id): TodoId,
) -> Result<StatusCode, ApiError> {
    let tenant = db.tenant().clone();
    let delete = match state.tenant_filter {
        TenantFilter::Explicit => diesel::delete(
            todo_item::table
                .scoped(&tenant)
                .map_err(DbError::Database)?,
        )
        .into_boxed(),
        TenantFilter::RlsOnly => diesel::delete(todo_item::table).into_boxed(),
    };
    let deleted = delete
        .filter(todo_item::id.eq(id))
        .execute(db.conn().await?)
        .await?;
    if deleted == 0 {
        Err(ApiError::NotFound)
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_in_characters() {
        let input = |name: &str| TodoInput { name: name.into() };
        assert!(input("buy milk").validate().is_ok());
        assert!(input(&"é".repeat(MAX_NAME_CHARS)).validate().is_ok());
        assert!(input(&"é".repeat(MAX_NAME_CHARS + 1)).validate().is_err());
        assert!(input("").validate().is_err());
        assert!(input(" \t\n").validate().is_err());
    }
}
