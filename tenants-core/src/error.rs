//! The crate's error type.

use std::fmt;
use std::time::Duration;

use crate::config::ConfigError;
use crate::tenant::InvalidTenantId;
use crate::verify::VerifyReport;

/// Everything that can go wrong in `tenants-core`.
///
/// `{:?}` prints the same readable text as `{}` (as `anyhow::Error` does), so that
/// `fn main() -> Result<(), tenants_core::Error>` and `.expect(..)` show a drift report as
/// its list of findings; `{:#?}` prints the structure.
#[derive(thiserror::Error)]
pub enum Error {
    /// The tenant id was rejected before anything was sent to the database.
    #[error("invalid tenant id: {0}")]
    InvalidTenantId(#[from] InvalidTenantId),
    /// A tenant filter (`ScopedDsl::scoped`) was asked of an admin scope, which has no
    /// tenant.
    #[error(
        "no tenant to filter by: this is an admin transaction (filter admin queries explicitly, or open a tenant transaction)"
    )]
    NotTenantScoped,
    /// A configured name is unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A query or transaction failed.
    #[error("database error: {source}{hint}", source = .0, hint = database_hint(.0))]
    Database(#[from] diesel::result::Error),
    /// No connection could be opened: the URL does not parse, or the server (or the
    /// network) refused.
    #[error(
        "cannot connect to {target}: {reason} (is PostgreSQL running there, and is the URL right?)"
    )]
    Connect {
        /// Database, host and port, and user, e.g. `the database "app" on localhost:5432
        /// as user "app"` (never the password).
        target: String,
        /// The server's message or the operating system's error, e.g. `error connecting
        /// to server: Connection refused (os error 111)`.
        reason: String,
    },
    /// The pool gave no connection within its connection timeout.
    #[error("no database connection within {waited:?}: {}", match last_connect_error {
        Some(error) => error.as_str(),
        None => "no connection became free and none could be opened in time",
    })]
    PoolTimedOut {
        /// The pool's connection timeout.
        waited: Duration,
        /// Why the last attempt to open a connection failed, when it did (pools built by
        /// [`crate::TenantPool::connect_with`] keep it); `None` when no attempt failed.
        last_connect_error: Option<String>,
    },
    /// `COMMIT` was not done: the transaction had been aborted by a statement that failed
    /// (and whose error was not returned, or was ignored), so PostgreSQL rolled it back.
    /// Nothing it wrote was kept. The connection is rolled back and kept.
    #[error(
        "the transaction was rolled back, not committed: a statement in it had failed (find the error that was ignored)"
    )]
    RolledBack,
    /// The tenant or admin transaction was ended by a raw `COMMIT` or `ROLLBACK` (or its
    /// role or tenant was changed) before the library's commit: what ran after it was not
    /// in the scope. Nothing more is committed; the connection is discarded.
    #[error(
        "the tenant transaction was ended by a raw COMMIT or ROLLBACK (or its role or tenant was changed) before commit; statements after it ran outside the scope, and the connection is discarded (end scopes with commit() or rollback() only)"
    )]
    ScopeEnded,
    /// `verify()` found the live database out of line with the `#[with_rls]` tables.
    #[error("the database does not enforce the #[with_rls] tables as expected:\n{0}")]
    Drift(VerifyReport),
}

impl VerifyReport {
    /// `Ok(self)` when no finding is an error, else [`Error::Drift`]: what a pool's
    /// `verify` returns. Each warning is emitted as a `tracing` WARN event first (target
    /// `tenants_core::verify`), so that `pool.verify().await?` does not drop them unseen.
    pub fn into_result(self) -> Result<Self, Error> {
        for warning in self.warnings() {
            tracing::warn!(
                target: "tenants_core::verify",
                hint = %warning.hint(),
                "{warning}"
            );
        }
        if self.is_ok() {
            Ok(self)
        } else {
            Err(Error::Drift(self))
        }
    }
}

impl Error {
    /// Whether the database could not be reached (no connection, or none free in time):
    /// worth retrying later, a 503 rather than a 500 in a service.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::PoolTimedOut { .. })
    }
}

/// What to do about a database error the contract itself causes. `permission denied` on a
/// `#[with_rls]` table comes from a statement outside any scope: the hardened serving
/// login does not inherit our roles' privileges (inside a tenant transaction the tenant
/// role has them). On any other table, from a tenant transaction: the tenant role may
/// read only marked and `#[shared]` tables.
fn database_hint(error: &diesel::result::Error) -> &'static str {
    let diesel::result::Error::DatabaseError(_, info) = error else {
        return "";
    };
    let Some(table) = info.message().strip_prefix("permission denied for table ") else {
        return "";
    };
    if crate::registry::tables().iter().any(|t| t.name == table) {
        "\nhint: this #[with_rls] table is read and written only inside a tenant or admin transaction: open a tenant transaction (`pool.tenant(id)`, `pool.transaction(id, ..)`), or an admin one for every tenant's rows"
    } else {
        "\nhint: tenant transactions run as the tenant role, which reads only #[with_rls] tables (through their policies) and #[shared] ones; if this table's rows belong to a tenant, mark it #[with_rls] (a join table too: give it the tenant column), then run `tenants generate`; #[tenants_core::shared] is only for data every tenant may read, all of it"
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(self, f);
        }
        match self {
            Error::InvalidTenantId(e) => f.debug_tuple("InvalidTenantId").field(e).finish(),
            Error::NotTenantScoped => f.write_str("NotTenantScoped"),
            Error::Config(e) => f.debug_tuple("Config").field(e).finish(),
            Error::Database(e) => f.debug_tuple("Database").field(e).finish(),
            Error::Connect { target, reason } => f
                .debug_struct("Connect")
                .field("target", target)
                .field("reason", reason)
                .finish(),
            Error::PoolTimedOut {
                waited,
                last_connect_error,
            } => f
                .debug_struct("PoolTimedOut")
                .field("waited", waited)
                .field("last_connect_error", last_connect_error)
                .finish(),
            Error::RolledBack => f.write_str("RolledBack"),
            Error::ScopeEnded => f.write_str("ScopeEnded"),
            Error::Drift(report) => f.debug_tuple("Drift").field(report).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::QualifiedName;
    use crate::verify::Finding;

    /// What `fn main() -> Result<(), Error>` prints (`Error: {:?}`) is the readable list.
    #[test]
    fn debug_is_the_readable_text_and_alternate_debug_the_structure() {
        let report = VerifyReport {
            findings: vec![
                Finding::RlsDisabled {
                    table: QualifiedName::new("public", "todo_item"),
                },
                Finding::RoleMissing {
                    role: "tenants_user".into(),
                },
            ],
        };
        let error = Error::Drift(report.clone());
        let readable = format!("{error:?}");
        assert_eq!(readable, error.to_string());
        assert_eq!(
            readable,
            format!("the database does not enforce the #[with_rls] tables as expected:\n{report}")
        );
        assert!(
            readable.lines().count() > 2,
            "one finding a line: {readable}"
        );
        assert!(!readable.contains("RlsDisabled"), "{readable}");
        let structured = format!("{error:#?}");
        assert!(
            structured.starts_with("Drift(\n    VerifyReport {")
                && structured.contains("RlsDisabled"),
            "{structured}"
        );
    }
}
