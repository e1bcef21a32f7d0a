//! A test kit for applications (feature `testing`): a fresh database per test with the
//! application's migrations applied, served as the hardened deployment is (a serving login
//! of the tenant role only, an admin login of the admin role only), and a check that every
//! `#[with_rls]` table keeps tenants apart.
//!
//! ```no_run
//! use diesel_async::RunQueryDsl;
//! use diesel_migrations::{EmbeddedMigrations, embed_migrations};
//! use tenants_core::testing::{IsolationCheck, TestDatabase};
//!
//! const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../examples/todo-api/migrations");
//!
//! # async fn isolated() -> Result<(), Box<dyn std::error::Error>> {
//! let db = TestDatabase::new(MIGRATIONS)?;
//! let pool = db.pool().await?;
//! IsolationCheck::new()
//!     .rows("todo_item", async |conn, tenant| {
//!         diesel::sql_query("INSERT INTO todo_item (name, tenant) VALUES ('kit', $1)")
//!             .bind::<diesel::sql_types::Text, _>(tenant.as_str())
//!             .execute(conn)
//!             .await
//!     })
//!     .privileged_url(db.url())
//!     .admin_pool(db.admin_pool().await?)
//!     .assert(&pool)
//!     .await;
//! # Ok(()) }
//! ```

mod database;
mod isolation;

pub use database::{
    ADMIN_LOGIN, DEFAULT_DATABASE_URL, SERVING_LOGIN, TestDatabase, TestDatabaseError,
    database_name, fresh_database_name, with_create_lock,
};
pub use isolation::{Failure, IsolationCheck, IsolationReport, Property};
