//! The crate's error type.

use crate::config::ConfigError;
use crate::tenant::InvalidTenantId;
use crate::verify::VerifyReport;

/// Everything that can go wrong in `tenants-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tenant id was rejected before anything was sent to the database.
    #[error("invalid tenant id: {0}")]
    InvalidTenantId(#[from] InvalidTenantId),
    /// A configured name is unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A query or transaction failed.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// The database could not be reached.
    #[error("cannot connect to the database: {0} (is PostgreSQL running, and is the URL right?)")]
    Connection(#[from] diesel::ConnectionError),
    /// The pool gave no connection (timed out, or every attempt to connect failed).
    #[error("cannot get a connection from the pool: {0}")]
    Pool(#[from] bb8::RunError<diesel_async::pooled_connection::PoolError>),
    /// `verify()` found the live database out of line with the `#[with_rls]` tables.
    #[error("the database does not enforce the #[with_rls] tables as expected:\n{0}")]
    Drift(VerifyReport),
}
