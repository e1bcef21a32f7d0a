//! The one error type of the benchmarks.

use diesel_async::pooled_connection::PoolError;

/// Everything that stops a benchmark; printed on stderr with exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A query failed.
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// No connection could be made.
    #[error(
        "cannot connect: {0}\nhint: start PostgreSQL (`pg_ctlcluster --skip-systemctl-redirect 15 main start`) or set DATABASE_URL to a server where this role may create databases and roles"
    )]
    Connect(#[from] diesel::ConnectionError),
    /// The library under test failed.
    #[error("tenants: {0}")]
    Tenants(#[from] tenants_core::Error),
    /// A pool could not be built or hand out a connection.
    #[error("pool: {0}")]
    Pool(String),
    /// A file, socket or process failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A check of the benchmark failed (wrong result, unexpected plan, bad exit code).
    #[error("{0}")]
    Failed(String),
}

impl From<PoolError> for BenchError {
    fn from(error: PoolError) -> Self {
        Self::Pool(error.to_string())
    }
}

impl From<bb8::RunError<PoolError>> for BenchError {
    fn from(error: bb8::RunError<PoolError>) -> Self {
        Self::Pool(error.to_string())
    }
}

/// Adds context to an I/O error.
pub trait IoContext<T> {
    /// Wraps the error with what was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Io {
            context: what(),
            source,
        })
    }
}

/// The result of every fallible step.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
