//! Scoped transactions on a synchronous `diesel::PgConnection`.

use diesel::PgConnection;
use diesel::connection::{AnsiTransactionManager, TransactionManager};

use crate::config::Config;
use crate::error::Error;
use crate::scope::Scope;
use crate::tenant::{Tenant, TenantId};

/// Tenant- and admin-scoped transactions on [`PgConnection`].
///
/// The closure runs inside a transaction begun with one round trip; it commits when the
/// closure returns `Ok` and rolls back when it returns `Err`. Nested `.transaction()` calls
/// inside become savepoints, as usual in Diesel.
///
/// ```no_run
/// use diesel::prelude::*;
/// use tenants_core::TenantTransactionExt;
///
/// # fn run(conn: &mut PgConnection) -> Result<(), tenants_core::Error> {
/// let n: i64 = conn.tenant_transaction("acme", |conn| {
///     Ok::<_, tenants_core::Error>(diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("1")).get_result(conn)?)
/// })?;
/// # Ok(()) }
/// ```
pub trait TenantTransactionExt {
    /// Runs `f` in a transaction of `scope` with the names of `config`.
    fn scoped_transaction<T, E, F>(&mut self, config: &Config, scope: Scope, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>;

    /// Runs `f` as tenant `tenant` (default [`Config`]). An invalid id is an
    /// [`Error::InvalidTenantId`] before anything is sent.
    fn tenant_transaction<T, E, F>(&mut self, tenant: impl TenantId, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>,
    {
        let tenant = Tenant::new(tenant).map_err(Error::from)?;
        self.scoped_transaction(&Config::default(), Scope::Tenant(tenant), f)
    }

    /// Runs `f` as the admin role (default [`Config`]): every tenant's rows.
    fn admin_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>,
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
        AnsiTransactionManager::begin_transaction_sql(self, &scope.begin_sql(config))
            .map_err(Error::from)?;
        match f(self) {
            Ok(value) => {
                AnsiTransactionManager::commit_transaction(self).map_err(Error::from)?;
                Ok(value)
            }
            Err(user_error) => match AnsiTransactionManager::rollback_transaction(self) {
                // A broken transaction manager is reported by the next use of the connection;
                // the caller's error is the one worth seeing, as in diesel's own `transaction`.
                Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(user_error),
                Err(rollback_error) => Err(Error::from(rollback_error).into()),
            },
        }
    }
}
