//! Scoped transactions on a synchronous `diesel::PgConnection`.

use diesel::PgConnection;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};

use crate::config::Config;
use crate::error::Error;
use crate::scope::Scope;
use crate::tenant::{Tenant, TenantId};
use crate::trace::TransactionSpan;

/// Tenant- and admin-scoped transactions on [`PgConnection`].
///
/// The closure runs inside a transaction begun with one round trip; it commits when the
/// closure returns `Ok` and rolls back when it returns `Err`. Nested `.transaction()` calls
/// inside become savepoints, as usual in Diesel.
///
/// `tenant_transaction` and `admin_transaction` take a closure returning
/// `Result<T, tenants_core::Error>`, so `Ok(..?)` needs no annotation (diesel's errors
/// convert with `?`):
///
/// ```no_run
/// use diesel::prelude::*;
/// use tenants_core::TenantTransactionExt;
///
/// # fn run(conn: &mut PgConnection) -> Result<(), tenants_core::Error> {
/// let n = conn.tenant_transaction("acme", |c| {
///     Ok(diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("1")).get_result::<i64>(c)?)
/// })?;
/// # Ok(()) }
/// ```
///
/// With an error type of your own (any `E: From<tenants_core::Error>`), use
/// `scoped_transaction`:
///
/// ```no_run
/// use diesel::prelude::*;
/// use tenants_core::{Config, Scope, Tenant, TenantTransactionExt};
///
/// #[derive(Debug)]
/// enum AppError {
///     Tenants(tenants_core::Error),
///     Db(diesel::result::Error),
/// }
/// impl From<tenants_core::Error> for AppError {
///     fn from(e: tenants_core::Error) -> Self {
///         AppError::Tenants(e)
///     }
/// }
/// impl From<diesel::result::Error> for AppError {
///     fn from(e: diesel::result::Error) -> Self {
///         AppError::Db(e)
///     }
/// }
///
/// # fn run(conn: &mut PgConnection) -> Result<(), AppError> {
/// let acme = Tenant::new("acme").map_err(tenants_core::Error::from)?;
/// let n = conn.scoped_transaction(&Config::default(), Scope::Tenant(acme), |c| {
///     Ok::<_, AppError>(diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("1")).get_result::<i64>(c)?)
/// })?;
/// # Ok(()) }
/// ```
pub trait TenantTransactionExt {
    /// Runs `f` in a transaction of `scope` with the names of `config`; `f` may return any
    /// error type that a [`tenants_core::Error`](Error) converts into.
    fn scoped_transaction<T, E, F>(&mut self, config: &Config, scope: Scope, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>;

    /// Runs `f` as tenant `tenant` (default [`Config`]). An invalid id is an
    /// [`Error::InvalidTenantId`] before anything is sent.
    fn tenant_transaction<T, F>(&mut self, tenant: impl TenantId, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Self) -> Result<T, Error>,
    {
        let tenant = Tenant::new(tenant)?;
        self.scoped_transaction(&Config::default(), Scope::Tenant(tenant), f)
    }

    /// Runs `f` as the admin role (default [`Config`]): every tenant's rows.
    fn admin_transaction<T, F>(&mut self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut Self) -> Result<T, Error>,
    {
        self.scoped_transaction(&Config::default(), Scope::Admin, f)
    }
}

impl TenantTransactionExt for PgConnection {
    fn scoped_transaction<T, E, F>(&mut self, config: &Config, scope: Scope, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>,
    {
        let mut trace = TransactionSpan::begin(config, &scope);
        let _inside = trace.span().clone().entered();
        if let Err(error) =
            AnsiTransactionManager::begin_transaction_sql(self, &scope.begin_sql(config))
        {
            trace.failed(&error);
            if matches!(error, diesel::result::Error::DatabaseError(..)) {
                // The server may hold a transaction block the batch opened (or found
                // aborted) and diesel does not know of: end it, so the connection stays
                // usable. Best effort: a lost connection fails this too.
                let _ = self.batch_execute("ROLLBACK");
            }
            return Err(Error::from(error).into());
        }
        let result = f(self);
        finish(self, result, &mut trace)
    }
}

/// Commits after `Ok`, rolls back after `Err`, exactly as diesel's `transaction`, and ends
/// `trace`.
pub(crate) fn finish<T, E>(
    conn: &mut PgConnection,
    result: Result<T, E>,
    trace: &mut TransactionSpan,
) -> Result<T, E>
where
    E: From<Error>,
{
    let ended = match result {
        Ok(_) => AnsiTransactionManager::commit_transaction(conn),
        Err(_) => AnsiTransactionManager::rollback_transaction(conn),
    };
    trace.ended(
        result.is_ok(),
        &ended,
        AnsiTransactionManager::transaction_manager_status_mut(conn),
    );
    transaction_result(result, ended)
}

/// What a transaction closure's caller gets once its `result` was committed or rolled back
/// (`ended`), in the sync and the async forms: the value after a commit, the commit's error
/// otherwise, and after a rollback the closure's own error, as in diesel's `transaction`.
pub(crate) fn transaction_result<T, E>(
    result: Result<T, E>,
    ended: diesel::QueryResult<()>,
) -> Result<T, E>
where
    E: From<Error>,
{
    match (result, ended) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(commit_error)) => Err(Error::from(commit_error).into()),
        // A broken transaction manager is reported by the next use of the connection; the
        // caller's error is the one worth seeing.
        (Err(user_error), Ok(()) | Err(diesel::result::Error::BrokenTransactionManager)) => {
            Err(user_error)
        }
        (Err(_), Err(rollback_error)) => Err(Error::from(rollback_error).into()),
    }
}
