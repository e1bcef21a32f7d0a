//! Scoped transactions on a synchronous `diesel::PgConnection`.

use diesel::PgConnection;
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};

use crate::config::Config;
use crate::error::Error;
use crate::footprint::Footprint;
use crate::scope::Scope;
use crate::tenant::{Tenant, TenantId};
use crate::trace::TransactionSpan;
use crate::transaction::{Batch, Batches, Begin, End, EndStep, Ended, Ending};

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
        let batches = Batches::new(config, &scope);
        // A connection of your own: nothing to replace it with when it is lost.
        if let Err(error) = begin(self, &batches, &mut Begin::new(0)) {
            trace.failed(&error);
            return Err(error.into());
        }
        let result = f(self);
        // A connection of your own: no watch reads its statements.
        finish(self, &batches, Footprint::Unknown, result, &mut trace)
    }
}

/// Sends `batches`' begin on `conn` as `begin` says: a failure is followed by a `ROLLBACK`
/// and, once, another begin. `Err` when it did not begin, with the connection's transaction
/// manager broken when the connection is lost; `Ok(Some(error))`: lost, replace it.
pub(crate) fn begin(
    conn: &mut PgConnection,
    batches: &Batches,
    begin: &mut Begin,
) -> Result<Option<diesel::result::Error>, Error> {
    loop {
        let error = match AnsiTransactionManager::begin_transaction_sql(conn, batches.begin()) {
            Ok(()) => return Ok(None),
            Err(error) => error,
        };
        let rollback = conn.batch_execute(batches.sql(Batch::EndBlock));
        if let Some(stopped) = begin.failed(error, &rollback) {
            if stopped.discard {
                AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
            }
            return stopped.outcome();
        }
    }
}

/// Ends the transaction on `conn` as `ending`, sending what [`End`] says.
pub(crate) fn end(
    conn: &mut PgConnection,
    batches: &Batches,
    ending: Ending,
    footprint: Footprint,
) -> Ended {
    let depth = AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth();
    let (mut end, mut step) = End::start(ending, depth, footprint);
    loop {
        match step {
            EndStep::Send(batch) => step = end.answered(conn.batch_execute(batches.sql(batch))),
            EndStep::Done(ended) => {
                ended.settle(AnsiTransactionManager::transaction_manager_status_mut(conn));
                return ended;
            }
        }
    }
}

/// Commits after `Ok`, rolls back after `Err`, as diesel's `transaction`, and ends `trace`;
/// `footprint` is what the transaction's statements left on the session.
pub(crate) fn finish<T, E>(
    conn: &mut PgConnection,
    batches: &Batches,
    footprint: Footprint,
    result: Result<T, E>,
    trace: &mut TransactionSpan,
) -> Result<T, E>
where
    E: From<Error>,
{
    let ending = if result.is_ok() {
        Ending::Commit
    } else {
        Ending::Rollback
    };
    let ended = end(conn, batches, ending, footprint);
    trace.ended(&ended);
    transaction_result(result, ended.result)
}

/// What a transaction closure's caller gets once its `result` was committed or rolled back
/// (`ended`), in the sync and the async forms: the value after a commit, the commit's error
/// otherwise (a transaction that PostgreSQL rolled back instead is an error too), and after
/// a rollback the closure's own error, unless ending the transaction failed.
pub(crate) fn transaction_result<T, E>(
    result: Result<T, E>,
    ended: Result<(), Error>,
) -> Result<T, E>
where
    E: From<Error>,
{
    match (result, ended) {
        (Ok(value), Ok(())) => Ok(value),
        // A broken transaction manager is reported by the next use of the connection; the
        // caller's error is the one worth seeing.
        (
            Err(user_error),
            Ok(()) | Err(Error::Database(diesel::result::Error::BrokenTransactionManager)),
        ) => Err(user_error),
        (Ok(_) | Err(_), Err(error)) => Err(error.into()),
    }
}
