//! What the async and the sync pool share about checking out a connection: the clean check
//! a plain checkout runs, and the reason the last attempt to connect failed.
//!
//! Tenant and admin checkouts run no check: their begin batch sets the role and the tenant
//! itself (see [`crate::Scope::begin_sql`]). A plain checkout hands out a connection outside
//! any scope, so it must be back to its login role, with no tenant set and no transaction
//! left open by raw SQL.

use std::sync::{Arc, Mutex};

use diesel::QueryResult;
use diesel::result::Error as DieselError;

use crate::config::Config;
use crate::tenant::quote_literal;

/// A statement that fails unless the connection is back to its login role, with no tenant
/// set and no transaction left open. Sent with the simple protocol, where a statement
/// outside a transaction block has `now() = statement_timestamp()`; inside one begun
/// earlier, `now()` is older.
pub(crate) fn clean_check_sql(config: &Config) -> String {
    format!(
        "DO $tenants$ BEGIN\n  IF current_user <> session_user\n     OR coalesce(current_setting({}, true), '') <> ''\n     OR now() <> statement_timestamp() THEN\n    RAISE EXCEPTION 'tenants: pooled connection not clean (role %, tenant or transaction left over)', current_user;\n  END IF;\nEND $tenants$",
        quote_literal(config.setting())
    )
}

/// A statement that fails unless a new session starts as its login role with no tenant.
/// A default set by `ALTER DATABASE/ROLE ... SET` (of the tenant setting, or of `role`)
/// would make every connection dirty from its first statement: the clean check would
/// refuse each one and a plain checkout (`verify()` among them) would time out without
/// saying why. Run once per new connection, it names the cause instead.
pub(crate) fn session_start_check_sql(config: &Config) -> String {
    let setting = quote_literal(config.setting());
    format!(
        "DO $tenants$ BEGIN\n  IF current_user <> session_user OR coalesce(current_setting({setting}, true), '') <> '' THEN\n    RAISE EXCEPTION 'tenants: new sessions start as role % with % = %, a default set by ALTER DATABASE or ALTER ROLE ... SET; reset it (tenants check names it): a session must start outside every tenant', current_user, {setting}, quote_literal(coalesce(current_setting({setting}, true), ''));\n  END IF;\nEND $tenants$"
    )
}

/// The check as one `SELECT` for the extended protocol, true when clean. Of a transaction
/// left open by raw SQL it sees one that wrote (it has a transaction id); not one that only
/// read (`now() <> statement_timestamp()` holds for every extended-protocol statement). One
/// opened through diesel's transaction manager makes the pool discard the connection before
/// this runs (`has_broken`).
pub(crate) fn clean_check_prepared_sql(config: &Config) -> String {
    format!(
        "SELECT current_user = session_user AND coalesce(current_setting({}, true), '') = '' \
         AND pg_current_xact_id_if_assigned() IS NULL",
        quote_literal(config.setting())
    )
}

/// The prepared check's answer as the pool's verdict: an error when not clean.
pub(crate) fn clean_check_verdict(clean: QueryResult<bool>) -> QueryResult<()> {
    match clean {
        Ok(true) => Ok(()),
        Ok(false) => Err(DieselError::QueryBuilderError(
            "pooled connection is not clean: role switched, tenant set or transaction left open"
                .into(),
        )),
        Err(error) => Err(error),
    }
}

/// The prepared recycle check: diesel caches it by its SQL text. (`diesel::dsl::sql` and
/// `sql_query` are never cached: the check would be parsed, planned and closed again on
/// every checkout, one extra round trip.)
#[derive(Debug, Clone)]
pub(crate) struct CleanCheck(pub(crate) Arc<str>);

impl diesel::query_builder::QueryId for CleanCheck {
    type QueryId = ();
    // No static id: the cache keys the statement by its SQL, which the config shapes.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for CleanCheck {
    type SqlType = diesel::sql_types::Bool;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for CleanCheck {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        out.push_sql(&self.0);
        Ok(())
    }
}

// diesel implements its (sync) `RunQueryDsl` per query type; diesel-async's covers all.
impl<Conn> diesel::RunQueryDsl<Conn> for CleanCheck {}

/// Why the pool's last attempt to open a connection failed; cleared when one succeeds.
/// Pools retry failed connections until a checkout times out and then report only that it
/// timed out: this keeps the reason for that error.
#[derive(Debug, Clone, Default)]
pub(crate) struct LastConnectError(Arc<Mutex<Option<String>>>);

impl LastConnectError {
    pub(crate) fn record(&self, reason: Option<String>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = reason;
    }

    pub(crate) fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
