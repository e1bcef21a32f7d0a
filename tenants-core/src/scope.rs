//! What a scoped transaction runs as, and the one statement batch that begins it.

use crate::config::Config;
use crate::tenant::{Tenant, escape_literal, quote_ident};

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
    /// In Citus mode the batch first sets `citus.propagate_set_commands` to `local`, so
    /// that the role and the tenant reach the workers the transaction touches.
    pub fn begin_sql(&self, config: &Config) -> String {
        let citus = if config.citus() {
            crate::config::CITUS_BEGIN_PREFIX
        } else {
            ""
        };
        let (role, tenant) = match self {
            Scope::Tenant(tenant) => (config.tenant_role(), escape_literal(tenant.as_str())),
            // The setting is cleared too: the batch is self-sufficient, overriding a
            // session-level `set_config(.., false)` left on the connection.
            Scope::Admin => (config.admin_role(), "''".to_string()),
        };
        format!(
            "BEGIN; {citus}SET LOCAL ROLE {}; SET LOCAL {} = {tenant}",
            quote_ident(role),
            quote_ident(config.setting())
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
    fn citus_mode_propagates_the_sets_first() -> Result<(), crate::InvalidTenantId> {
        let config = Config::default().with_citus(true);
        assert_eq!(
            Scope::Tenant(Tenant::new("acme")?).begin_sql(&config),
            r#"BEGIN; SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL ROLE "tenants_user"; SET LOCAL "tenants.current_tenant" = E'acme'"#
        );
        assert_eq!(
            Scope::Admin.begin_sql(&config),
            r#"BEGIN; SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL ROLE "tenants_admin"; SET LOCAL "tenants.current_tenant" = ''"#
        );
        Ok(())
    }
}
