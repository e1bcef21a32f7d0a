//! What a scoped transaction runs as, and the one statement batch that begins it.

use crate::config::Config;
use crate::tenant::{Tenant, escape_literal, quote_ident};

/// The setting the commit guard names when the scope is no longer the one begun: its
/// error (`unrecognized configuration parameter`) is recognised by this name.
pub(crate) const SCOPE_ENDED_MARK: &str = "tenants.scope_ended_before_commit";

/// Who a transaction runs as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The tenant role with the tenant setting set: sees and writes only this tenant's rows.
    Tenant(Tenant),
    /// The admin role: sees and writes every tenant's rows.
    Admin,
}

impl Scope {
    /// The tenant of a tenant scope.
    pub fn tenant(&self) -> Option<&Tenant> {
        match self {
            Scope::Tenant(tenant) => Some(tenant),
            Scope::Admin => None,
        }
    }

    /// The batch that begins a transaction in this scope, sent as ONE simple-query message:
    /// `BEGIN; SET LOCAL ROLE ...; SET LOCAL <setting> = E'...'`.
    ///
    /// `SET LOCAL` (rather than `SELECT set_config(.., true)`) because a utility statement is
    /// neither planned nor returns a row; both end with the transaction, so nothing can
    /// survive into the next user of a pooled connection. Role and setting are set every
    /// time (the admin scope sets the setting to `''`, no tenant), so the batch overrides a
    /// session-level `SET ROLE` or `set_config(.., false)` that earlier code left on the
    /// connection: this is why [`crate::TenantPool`] checks no connection before it.
    ///
    /// In Citus mode the batch first sets `citus.propagate_set_commands` to `local` (never
    /// propagated itself), then sets the role and the tenant from a `DO` block, one
    /// `EXECUTE` each. Citus propagates a `SET LOCAL` by re-sending the source text it was
    /// given (`queryString` of its utility hook) to each worker connection of the
    /// transaction; for a statement of a multi-statement message that text is the WHOLE
    /// message, so a plain batch would reach every worker connection once per propagated
    /// `SET` with its `BEGIN` (a warning each) and anything else in it run again. The
    /// source text of an `EXECUTE` is that one statement, so the workers receive exactly
    /// `SET LOCAL ROLE ...;SET LOCAL <setting> = ...;`, still in one round trip.
    pub fn begin_sql(&self, config: &Config) -> String {
        let (role, value) = match self {
            Scope::Tenant(tenant) => (config.tenant_role(), escape_literal(tenant.as_str())),
            // The setting is cleared too: the batch is self-sufficient, overriding a
            // session-level `set_config(.., false)` left on the connection.
            Scope::Admin => (config.admin_role(), "''".to_string()),
        };
        let role = format!("SET LOCAL ROLE {}", quote_ident(role));
        let setting = format!("SET LOCAL {} = {value}", quote_ident(config.setting()));
        if config.citus() {
            let body = format!(
                "BEGIN EXECUTE {}; EXECUTE {}; END",
                escape_literal(&role),
                escape_literal(&setting)
            );
            format!(
                "BEGIN; {}DO {}",
                crate::config::CITUS_BEGIN_PREFIX,
                escape_literal(&body)
            )
        } else {
            format!("BEGIN; {role}; {setting}")
        }
    }

    /// The statement sent just before `COMMIT`, in the same message: it fails, at run time,
    /// unless the connection is still inside the transaction this scope began, as its role
    /// and with its tenant. So the `COMMIT` after it does not run when the transaction is
    /// aborted (every statement fails then) or was ended by a raw `COMMIT` or `ROLLBACK`
    /// (the role and setting are the session's again, and the message runs in a
    /// transaction of its own: `now()`, the transaction's start, is the message's
    /// `statement_timestamp()`).
    ///
    /// The failure is `current_setting` of a setting that does not exist, named
    /// [`SCOPE_ENDED_MARK`]: evaluated when the statement runs, never
    /// folded into a constant when it is planned. A setting never set (NULL) makes the
    /// condition NULL, which is the `ELSE`: no `coalesce` needed (12 k server instructions
    /// fewer per commit, PERFORMANCE.md).
    pub(crate) fn commit_guard_sql(&self, config: &Config) -> String {
        let (role, tenant) = match self {
            Scope::Tenant(tenant) => (config.tenant_role(), escape_literal(tenant.as_str())),
            Scope::Admin => (config.admin_role(), "''".to_string()),
        };
        format!(
            "SELECT current_setting(CASE WHEN current_user = {} \
             AND current_setting({}, true) = {tenant} \
             AND now() <> statement_timestamp() THEN 'server_version' ELSE '{}' END)",
            escape_literal(role),
            escape_literal(config.setting()),
            SCOPE_ENDED_MARK,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_is_one_batch() -> Result<(), crate::InvalidTenantId> {
        let config = Config::default();
        assert_eq!(
            Scope::Tenant(Tenant::new("o'brien")?).begin_sql(&config),
            r#"BEGIN; SET LOCAL ROLE "tenants_user"; SET LOCAL "tenants.current_tenant" = E'o''brien'"#
        );
        assert_eq!(
            Scope::Admin.begin_sql(&config),
            r#"BEGIN; SET LOCAL ROLE "tenants_admin"; SET LOCAL "tenants.current_tenant" = ''"#
        );
        Ok(())
    }

    #[test]
    fn citus_mode_sets_role_and_tenant_each_with_its_own_source_text()
    -> Result<(), crate::InvalidTenantId> {
        let config = Config::default().with_citus(true);
        assert_eq!(
            Scope::Tenant(Tenant::new(r"o'b\n")?).begin_sql(&config),
            r#"BEGIN; SET LOCAL citus.propagate_set_commands = 'local'; DO E'BEGIN EXECUTE E''SET LOCAL ROLE "tenants_user"''; EXECUTE E''SET LOCAL "tenants.current_tenant" = E''''o''''''''b\\\\\\\\n''''''; END'"#
        );
        assert_eq!(
            Scope::Admin.begin_sql(&config),
            r#"BEGIN; SET LOCAL citus.propagate_set_commands = 'local'; DO E'BEGIN EXECUTE E''SET LOCAL ROLE "tenants_admin"''; EXECUTE E''SET LOCAL "tenants.current_tenant" = ''''''''''; END'"#
        );
        Ok(())
    }
}
