//! The names of every database object the library relies on, in one value that the
//! runtime, the policy renderer, `verify` and the CLI all read.

use std::fmt;

use crate::registry::TenantSqlType;
use crate::tenant::{InvalidTenantId, Tenant, TenantId};

/// PostgreSQL's identifier length limit (`NAMEDATALEN - 1`): a longer name would be
/// silently truncated by the server and then never match what the runtime sends.
pub const MAX_NAME_BYTES: usize = 63;

/// The Citus setting that decides whether `SET LOCAL` reaches the workers (Citus's
/// default, `none`, forwards neither the role nor the tenant).
pub(crate) const CITUS_PROPAGATE_SET_COMMANDS: &str = "citus.propagate_set_commands";

/// The first statement of a scoped transaction in Citus mode, before the role and the
/// tenant are set, so that both reach the workers. A server without Citus accepts it as a
/// placeholder setting, which ends with the transaction like any `SET LOCAL`.
pub(crate) const CITUS_BEGIN_PREFIX: &str = "SET LOCAL citus.propagate_set_commands = 'local'; ";

/// A configuration name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The name is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Which name was wrong.
        what: &'static str,
    },
    /// The name contains a NUL byte, which PostgreSQL cannot store.
    #[error("{what} {name:?} contains a NUL byte")]
    ContainsNul {
        /// Which name was wrong.
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The name is longer than PostgreSQL keeps.
    #[error("{what} {name:?} is longer than {MAX_NAME_BYTES} bytes; PostgreSQL would truncate it")]
    TooLong {
        /// Which name was wrong.
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// A role name containing `$`: the migration creates roles inside a dollar-quoted `DO`
    /// block, which such a name could end early.
    #[error("{what} {name:?} contains `$`, which tenants does not accept in role names")]
    DollarInRole {
        /// Which name was wrong.
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// A custom setting name needs a prefix: PostgreSQL only accepts `prefix.name`.
    #[error(
        "setting {name:?} is not a custom setting name; use the form `prefix.name` with letters, digits and `_`, e.g. `tenants.current_tenant`"
    )]
    InvalidSetting {
        /// The rejected name.
        name: String,
    },
}

/// What a pool's transactions are, hence which of our roles its login must be able to
/// `SET ROLE` to (and, for the hardened deployment, nothing more): what
/// [`crate::TenantPool::verify`] checks the login against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Tenant transactions only (the default): the login needs the tenant role.
    Tenant,
    /// Admin transactions only: the login needs the admin role.
    Admin,
    /// Both, on one pool: the login needs both roles.
    TenantAndAdmin,
}

impl Purpose {
    /// The roles of `config` a login serving this purpose must be a member of.
    pub fn roles<'c>(&self, config: &'c Config) -> Vec<&'c str> {
        match self {
            Purpose::Tenant => vec![config.tenant_role()],
            Purpose::Admin => vec![config.admin_role()],
            Purpose::TenantAndAdmin => vec![config.tenant_role(), config.admin_role()],
        }
    }
}

/// Names of the roles, setting and policies (the README's "Put them under RLS" shows the
/// SQL they name).
///
/// ```
/// let config = tenants_core::Config::default()
///     .with_tenant_role("app_tenant")?
///     .with_setting("app.tenant")?;
/// assert_eq!(config.tenant_role(), "app_tenant");
/// # Ok::<(), tenants_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    tenant_role: String,
    admin_role: String,
    setting: String,
    isolation_policy: String,
    admin_policy: String,
    force_rls: bool,
    tenant_type: Option<TenantSqlType>,
    statement_cache: bool,
    citus: bool,
    trace_tenant: bool,
    purpose: Purpose,
    bypassing_login: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tenant_role: "tenants_user".into(),
            admin_role: "tenants_admin".into(),
            setting: "tenants.current_tenant".into(),
            isolation_policy: "tenants_isolation".into(),
            admin_policy: "tenants_admin".into(),
            force_rls: true,
            tenant_type: None,
            statement_cache: true,
            citus: false,
            trace_tenant: true,
            purpose: Purpose::Tenant,
            bypassing_login: false,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("tenant_role", &self.tenant_role)
            .field("admin_role", &self.admin_role)
            .field("setting", &self.setting)
            .field("isolation_policy", &self.isolation_policy)
            .field("admin_policy", &self.admin_policy)
            .field("force_rls", &self.force_rls)
            .field("tenant_type", &self.tenant_type)
            .field("statement_cache", &self.statement_cache)
            .field("citus", &self.citus)
            .field("trace_tenant", &self.trace_tenant)
            .field("purpose", &self.purpose)
            .field("bypassing_login", &self.bypassing_login)
            .finish()
    }
}

fn checked_name(what: &'static str, name: impl Into<String>) -> Result<String, ConfigError> {
    let name = name.into();
    if name.is_empty() {
        Err(ConfigError::Empty { what })
    } else if name.contains('\0') {
        Err(ConfigError::ContainsNul { what, name })
    } else if name.len() > MAX_NAME_BYTES {
        Err(ConfigError::TooLong { what, name })
    } else {
        Ok(name)
    }
}

fn checked_role(what: &'static str, name: impl Into<String>) -> Result<String, ConfigError> {
    let name = checked_name(what, name)?;
    if name.contains('$') {
        return Err(ConfigError::DollarInRole { what, name });
    }
    Ok(name)
}

impl Config {
    /// The role every tenant transaction runs as (`SET LOCAL ROLE`). Default `tenants_user`.
    pub fn tenant_role(&self) -> &str {
        &self.tenant_role
    }
    /// The role every admin transaction runs as; it sees all tenants. Default `tenants_admin`.
    pub fn admin_role(&self) -> &str {
        &self.admin_role
    }
    /// The transaction-local setting holding the current tenant. Default `tenants.current_tenant`.
    pub fn setting(&self) -> &str {
        &self.setting
    }
    /// Name of the per-table isolation policy. Default `tenants_isolation`.
    pub fn isolation_policy(&self) -> &str {
        &self.isolation_policy
    }
    /// Name of the per-table admin policy. Default `tenants_admin`.
    pub fn admin_policy(&self) -> &str {
        &self.admin_policy
    }
    /// Whether marked tables get `FORCE ROW LEVEL SECURITY` (default `true`): with it, the
    /// table owner is subject to the policies too.
    pub fn force_rls(&self) -> bool {
        self.force_rls
    }

    /// Sets the tenant role.
    pub fn with_tenant_role(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.tenant_role = checked_role("tenant role", name)?;
        Ok(self)
    }
    /// Sets the admin role.
    pub fn with_admin_role(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.admin_role = checked_role("admin role", name)?;
        Ok(self)
    }
    /// Sets the isolation policy's name.
    pub fn with_isolation_policy(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.isolation_policy = checked_name("isolation policy", name)?;
        Ok(self)
    }
    /// Sets the admin policy's name.
    pub fn with_admin_policy(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.admin_policy = checked_name("admin policy", name)?;
        Ok(self)
    }
    /// Sets the tenant setting; it must be a custom setting name, `prefix.name`.
    pub fn with_setting(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = checked_name("setting", name)?;
        let valid_part = |part: &str| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !name.contains('.') || !name.split('.').all(valid_part) {
            return Err(ConfigError::InvalidSetting { name });
        }
        self.setting = name;
        Ok(self)
    }
    /// The type tenant ids are checked against before anything is sent (see
    /// [`Tenant::of_type`]): the one set with [`Config::with_tenant_type`], else the one
    /// every `#[with_rls]` table of the binary shares ([`registry::tenant_type`]), else
    /// none (nothing marked, or columns of different types).
    ///
    /// [`registry::tenant_type`]: crate::registry::tenant_type
    pub fn tenant_type(&self) -> Option<TenantSqlType> {
        self.tenant_type.or_else(crate::registry::tenant_type)
    }

    /// Declares the type all tenant columns share, so that an id of another type (a
    /// non-UUID for `uuid` columns, an overflowing number for `int4`) is a typed error
    /// before any I/O instead of a failed cast inside the transaction. Needed only when the
    /// binary's marked tables do not say it (their tenant columns differ in type, or the
    /// tables are marked in a crate this binary does not link).
    pub fn with_tenant_type(mut self, sql_type: TenantSqlType) -> Self {
        self.tenant_type = Some(sql_type);
        self
    }

    /// `id` as a tenant of this configuration: validated, and checked against
    /// [`Config::tenant_type`] when there is one.
    pub fn tenant(&self, id: impl TenantId) -> Result<Tenant, InvalidTenantId> {
        match self.tenant_type() {
            Some(sql_type) => Tenant::of_type(id, sql_type),
            None => Tenant::new(id),
        }
    }

    /// Whether pooled connections cache prepared statements (default `true`).
    pub fn statement_cache(&self) -> bool {
        self.statement_cache
    }

    /// Turns the prepared-statement cache of pooled connections on or off. Turn it off
    /// behind PgBouncer older than 1.21 in transaction mode: a cached statement lives on one
    /// server connection, and the next transaction may run on another, where it does not
    /// exist. (PgBouncer 1.21+ with `max_prepared_statements` needs no change.)
    pub fn with_statement_cache(mut self, cache: bool) -> Self {
        self.statement_cache = cache;
        self
    }

    /// Turns `FORCE ROW LEVEL SECURITY` on or off for every marked table.
    pub fn with_force_rls(mut self, force: bool) -> Self {
        self.force_rls = force;
        self
    }

    /// Whether the contract is the Citus-valid one (default `false`); see
    /// [`Config::with_citus`].
    pub fn citus(&self) -> bool {
        self.citus
    }

    /// Turns Citus mode on or off. On, the contract is valid on a Citus cluster: the
    /// policies' expressions are inline (Citus refuses subqueries in policies of
    /// distributed tables), our roles are created `LOGIN` (Citus opens worker connections
    /// as the current role), every scoped transaction begins with `SET LOCAL
    /// citus.propagate_set_commands = 'local'` so that the role and the tenant reach the
    /// workers, and each statement of a migration is a `DO` block (Citus forwards some DDL
    /// by its source text, which must not be the whole file). The README's "Scaling out
    /// with Citus" says how to authenticate the roles.
    pub fn with_citus(mut self, citus: bool) -> Self {
        self.citus = citus;
        self
    }

    /// Whether transaction spans record the tenant id (default `true`); see
    /// [`Config::with_trace_tenant`].
    pub fn trace_tenant(&self) -> bool {
        self.trace_tenant
    }

    /// Turns the `tenant` field of every transaction's `tracing` span on or off. Off, the
    /// span keeps its scope, outcome and timings, and no tenant id reaches the logs or
    /// traces (when tenant ids are personal data, or secrets).
    pub fn with_trace_tenant(mut self, trace_tenant: bool) -> Self {
        self.trace_tenant = trace_tenant;
        self
    }

    /// What the pool's transactions are (default [`Purpose::Tenant`]); see
    /// [`Config::with_purpose`].
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Declares what the pool's transactions are: `verify` then requires the login to be a
    /// member of exactly the roles they switch to ([`Purpose::roles`]). The hardened
    /// deployment serves tenants through a login that is a member of the tenant role only,
    /// and does admin work on a second pool, `Purpose::Admin`, logged in as a member of
    /// the admin role only.
    pub fn with_purpose(mut self, purpose: Purpose) -> Self {
        self.purpose = purpose;
        self
    }

    /// Whether `verify` accepts a login that escapes RLS (default `false`); see
    /// [`Config::with_bypassing_login`].
    pub fn bypassing_login(&self) -> bool {
        self.bypassing_login
    }

    /// Allows the pool to log in as a superuser or a `BYPASSRLS` role: `verify` then
    /// reports it as a warning instead of failing. Scoped transactions are still subject to
    /// RLS (they switch to our roles), but any statement outside a scope reads and writes
    /// every tenant's rows; meant for tools that run as the owner or a superuser (the CLI),
    /// not for a serving pool.
    pub fn with_bypassing_login(mut self, allowed: bool) -> Self {
        self.bypassing_login = allowed;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unusable_names_with_typed_errors() {
        let config = Config::default;
        assert_eq!(
            config().with_tenant_role(""),
            Err(ConfigError::Empty {
                what: "tenant role"
            })
        );
        assert!(matches!(
            config().with_admin_role("a\0b"),
            Err(ConfigError::ContainsNul { .. })
        ));
        assert!(matches!(
            config().with_isolation_policy("p".repeat(MAX_NAME_BYTES + 1)),
            Err(ConfigError::TooLong { .. })
        ));
        assert!(matches!(
            config().with_tenant_role("x$tenants$y"),
            Err(ConfigError::DollarInRole { .. })
        ));
        for bad in ["tenant", ".tenant", "app.", "app.ten-ant", "app..t"] {
            assert!(
                matches!(
                    config().with_setting(bad),
                    Err(ConfigError::InvalidSetting { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            config()
                .with_setting("app.tenant_id")
                .map(|c| c.setting().to_string()),
            Ok("app.tenant_id".to_string())
        );
    }

    #[test]
    fn the_citus_prefix_sets_propagation_to_local() {
        assert_eq!(
            CITUS_BEGIN_PREFIX,
            format!("SET LOCAL {CITUS_PROPAGATE_SET_COMMANDS} = 'local'; ")
        );
    }
}
