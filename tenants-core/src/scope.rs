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
    /// survive into the next user of a pooled connection.
    pub fn begin_sql(&self, config: &Config) -> String {
        match self {
            Scope::Tenant(tenant) => format!(
                "BEGIN; SET LOCAL ROLE {}; SET LOCAL {} = {}",
                quote_ident(config.tenant_role()),
                quote_ident(config.setting()),
                escape_literal(tenant.as_str())
            ),
            Scope::Admin => format!("BEGIN; SET LOCAL ROLE {}", quote_ident(config.admin_role())),
        }
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
            r#"BEGIN; SET LOCAL ROLE "tenants_admin""#
        );
        Ok(())
    }
}
