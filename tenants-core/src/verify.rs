//! Compares the live database with the `#[with_rls]` tables and reports every difference at
//! once, typed.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::catalog::{self, Catalog, Distribution, Loophole, MarkedTable, PolicyDef, ProbeKey};
use crate::config::Config;
use crate::policy::{SEQUENCE_PRIVILEGES, TABLE_PRIVILEGES};
use crate::registry::{RlsTable, SharedTable, TenantSqlType};
use crate::spec::{QualifiedName, TenantForeignKey};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Isolation is weaker than the code expects; [`crate::TenantPool::verify`] fails.
    Error,
    /// Worth knowing, but the contract holds; reported, not failed.
    Warning,
}

/// Why the connecting role is not subject to RLS outside our roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Superusers skip RLS entirely.
    Superuser,
    /// The role has `BYPASSRLS`.
    BypassRls,
}

impl Bypass {
    fn describe(self) -> &'static str {
        match self {
            Bypass::Superuser => "a superuser",
            Bypass::BypassRls => "BYPASSRLS",
        }
    }
}

/// One difference between the live database and the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A role of the contract does not exist.
    RoleMissing {
        /// The role.
        role: String,
    },
    /// A login role cannot `SET ROLE` to one of our roles.
    RoleNotGranted {
        /// The role.
        role: String,
        /// The login role.
        login: String,
    },
    /// One of our roles cannot use a schema holding marked tables.
    SchemaUsageMissing {
        /// The schema.
        schema: String,
        /// The role.
        role: String,
    },
    /// A marked table does not exist.
    TableMissing {
        /// The table.
        table: QualifiedName,
    },
    /// A marked table has no column by the tenant column's name.
    ColumnMissing {
        /// The table.
        table: QualifiedName,
        /// The tenant column.
        column: String,
    },
    /// The tenant column's type in the database is not the one the code says.
    ColumnTypeMismatch {
        /// The table.
        table: QualifiedName,
        /// The tenant column.
        column: String,
        /// The type the code says.
        expected: TenantSqlType,
        /// The type in the database, as `format_type` prints it.
        actual: String,
    },
    /// `ENABLE ROW LEVEL SECURITY` is off.
    RlsDisabled {
        /// The table.
        table: QualifiedName,
    },
    /// `FORCE ROW LEVEL SECURITY` is off although the config asks for it.
    RlsNotForced {
        /// The table.
        table: QualifiedName,
    },
    /// One of our policies is missing.
    PolicyMissing {
        /// The table.
        table: QualifiedName,
        /// The policy.
        policy: String,
    },
    /// One of our policies exists with another expression, role list or command.
    PolicyDiffers {
        /// The table.
        table: QualifiedName,
        /// The policy.
        policy: String,
        /// What the contract says, as PostgreSQL deparses it.
        expected: Box<PolicyDef>,
        /// What the database has.
        actual: Box<PolicyDef>,
    },
    /// A table carries one of our policies but is not marked (a warning: `tenants
    /// generate` removes it, and `verify` in a binary that links only some marked crates
    /// would see this for the others).
    PolicyOnUnmarkedTable {
        /// The table.
        table: QualifiedName,
        /// The policy.
        policy: String,
    },
    /// A table privilege our roles need is not granted.
    TableGrantMissing {
        /// The table.
        table: QualifiedName,
        /// The role lacking it.
        role: String,
        /// `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
        privilege: String,
    },
    /// A sequence privilege our roles need to insert is not granted.
    SequenceGrantMissing {
        /// The sequence.
        sequence: QualifiedName,
        /// The role lacking it.
        role: String,
        /// `USAGE` or `SELECT`.
        privilege: String,
    },
    /// The tenant column accepts NULL: the code declares it `NOT NULL`, and a row without a
    /// tenant belongs to no tenant (invisible to all, readable by admin only).
    TenantColumnNullable {
        /// The table.
        table: QualifiedName,
        /// The tenant column.
        column: String,
    },
    /// The tenant column's default is not the current scope's tenant (missing, or another
    /// expression): inserts that leave the tenant out fail instead of getting the scope's.
    TenantDefaultDiffers {
        /// The table.
        table: QualifiedName,
        /// The tenant column.
        column: String,
        /// The contract's default, as PostgreSQL deparses it.
        expected: String,
        /// The column's default; `None` without one.
        actual: Option<String>,
    },
    /// A permissive policy other than ours applies to tenant transactions: PostgreSQL ORs
    /// permissive policies, so its rows are visible (and writable) to every tenant.
    PermissivePolicy {
        /// The table.
        table: QualifiedName,
        /// The policy.
        policy: String,
        /// The roles it applies to (`public` for all).
        roles: Vec<String>,
    },
    /// One of our roles is a superuser or has `BYPASSRLS`: transactions running as it are
    /// never subject to RLS.
    RoleBypassesRls {
        /// The role.
        role: String,
        /// Why.
        bypass: Bypass,
    },
    /// The tenant column has a nondeterministic collation (a case-insensitive ICU one):
    /// the policy's `=` then matches ids that differ, and tenant `ACME` reads `acme`'s rows.
    TenantColumnCollation {
        /// The table.
        table: QualifiedName,
        /// The tenant column.
        column: String,
        /// Its type, as `format_type` prints it.
        type_name: String,
        /// The collation.
        collation: String,
    },
    /// Sessions start with the tenant setting set (or as the admin role) by `ALTER
    /// DATABASE/ROLE ... SET`: an unscoped query sees that tenant's rows (or every tenant's),
    /// and a pool refuses such connections as dirty.
    SettingDefault {
        /// The database it applies to (`None`: every database).
        database: Option<String>,
        /// The role it applies to (`None`: every role).
        role: Option<String>,
        /// The setting.
        setting: String,
        /// Its value.
        value: String,
    },
    /// A foreign key between marked tables without the tenant column (a warning: isolation
    /// of reads holds, but a tenant can insert a row referencing another tenant's row, the
    /// other tenant's `ON DELETE CASCADE` then deletes it, and it blocks the other's
    /// deletes and purges).
    CrossTenantReference(Box<TenantForeignKey>),
    /// A table neither marked nor `#[shared]` that has a column named like a tenant column
    /// (a forgotten mark), or that our roles can read or write (every tenant then sees all
    /// of it). A warning: a binary that links only some crates' marks cannot tell.
    UnmarkedTable {
        /// The table.
        table: QualifiedName,
        /// Its column named like a marked table's tenant column, if any.
        tenant_column: Option<String>,
        /// Our roles that can read or write it.
        granted_to: Vec<String>,
    },
    /// A partition or inheritance child of a marked table (at any depth), or an inheritance
    /// parent of one, that is not marked and lacks row level security or FORCE: a child
    /// queried directly is under its own row level security only; a parent returns its
    /// marked child's rows of every tenant.
    UnprotectedRelative {
        /// The related table.
        table: QualifiedName,
        /// `partition`, `inheritance child` or `inheritance parent`.
        kind: String,
        /// The marked table it is related to.
        marked: QualifiedName,
        /// Whether it has row level security at all (else only FORCE is missing).
        rls_enabled: bool,
    },
    /// An object `generate` does not manage that reaches a marked table's rows around its
    /// policies: a view or a definer function, trigger or rule running as a role that
    /// escapes them, a materialized view, a leakproof function, `TRUNCATE`, `REFERENCES` or
    /// `TRIGGER` granted to our roles or `PUBLIC`; or answers questions about its rows: a
    /// unique key without the tenant column (an existence oracle). A warning: no migration
    /// of ours decides about someone else's object (`tenants audit` fails on it).
    Loophole(Loophole),
    /// A table declared `#[shared]` does not exist.
    SharedTableMissing {
        /// The table.
        table: QualifiedName,
    },
    /// A table declared `#[shared]` is not readable by one of our roles.
    SharedGrantMissing {
        /// The table.
        table: QualifiedName,
        /// The role lacking `SELECT`.
        role: String,
    },
    /// No table is marked `#[with_rls]`: nothing is compared, so nothing is protected
    /// (marks lost by `diesel print-schema`, or the wrong crate).
    NoTablesMarked,
    /// The connecting role is not subject to RLS outside our roles: our roles still are,
    /// but any code path that forgets to scope reads and writes every tenant's rows. An
    /// error unless the configuration allows it ([`Config::with_bypassing_login`]).
    LoginBypassesRls {
        /// The connecting role.
        login: String,
        /// Why.
        bypass: Bypass,
        /// Whether [`Config::bypassing_login`] allows it (then a warning).
        allowed: bool,
    },
    /// A login inherits the privileges of one of our roles (a warning): a statement outside
    /// any scope then runs with our roles' grants and silently returns nothing, where a
    /// login that does not inherit them gets `permission denied`.
    LoginInheritsRole {
        /// The login role.
        login: String,
        /// Our role.
        role: String,
        /// The server's `server_version_num`: the fix differs from PostgreSQL 16 on.
        server_version_num: i32,
    },
    /// Citus mode: one of our roles cannot log in, and Citus opens the connections to the
    /// workers as the current role, so every scoped transaction touching them fails.
    RoleCannotLogin {
        /// The role.
        role: String,
    },
    /// Outside Citus mode one of our roles can log in (a warning): nothing needs it, and
    /// whoever authenticates as it is a tenant, or for the admin role every tenant.
    RoleCanLogin {
        /// The role.
        role: String,
    },
    /// The server is a Citus coordinator whose marked tables live on the workers, and
    /// Citus mode is off. Citus opens the worker connections as the current role, but
    /// only Citus mode's begin batch hands the tenant to them: with
    /// `citus.propagate_set_commands` at `none` (Citus's default) the workers see no tenant
    /// and tenant transactions see and write nothing; with `local` set on the database the
    /// plain begin batch is re-sent whole to every worker connection.
    CitusModeOff {
        /// The session's `citus.propagate_set_commands` (Citus's default is `none`).
        value: String,
    },
    /// On a Citus coordinator, a marked table is not hash-distributed by its tenant column
    /// (a warning: isolation holds, but a tenant's rows are not kept together and a
    /// tenant-filtered query does not route to one node).
    NotDistributedByTenant {
        /// The table.
        table: QualifiedName,
        /// Its tenant column.
        column: String,
        /// How Citus holds it.
        actual: Distribution,
    },
    /// On a Citus coordinator, a marked table distributed by its tenant column is not
    /// co-located with the other marked tables (a warning: a transaction or join over both
    /// reaches two nodes for one tenant).
    NotColocated {
        /// The table.
        table: QualifiedName,
        /// A table of the co-location group most marked tables share.
        with: QualifiedName,
    },
    /// On a Citus coordinator, a `#[shared]` table is not a reference table (a warning: a
    /// distributed table's join with it cannot run on the workers alone).
    SharedNotReference {
        /// The table.
        table: QualifiedName,
        /// How Citus holds it.
        actual: Distribution,
    },
}

/// What mends a finding.
const MEND_WITH_GENERATE: &str =
    "run `tenants generate`, then apply the migration (`diesel migration run`)";

impl Finding {
    /// What to do about it: the command or statement that actually mends it.
    pub fn hint(&self) -> String {
        match self {
            Finding::RoleMissing { .. }
            | Finding::RoleNotGranted { .. }
            | Finding::SchemaUsageMissing { .. }
            | Finding::RlsDisabled { .. }
            | Finding::RlsNotForced { .. }
            | Finding::PolicyMissing { .. }
            | Finding::PolicyDiffers { .. }
            | Finding::TableGrantMissing { .. }
            | Finding::SequenceGrantMissing { .. }
            | Finding::TenantColumnNullable { .. }
            | Finding::TenantDefaultDiffers { .. }
            | Finding::SharedGrantMissing { .. } => MEND_WITH_GENERATE.to_string(),
            Finding::TableMissing { .. } | Finding::ColumnMissing { .. } => {
                "run the migrations that create it first (`diesel migration run`), or correct the #[with_rls] mark".to_string()
            }
            Finding::ColumnTypeMismatch { .. } => {
                "make the `table!` say the live type (`diesel print-schema`), or migrate the column to the type the code says".to_string()
            }
            Finding::PolicyOnUnmarkedTable { .. } => {
                "mark the table #[with_rls] again (did `diesel print-schema` drop the mark? keep it out of schema.rs: `#[with_rls] use schema::<table>;` in a file of your own), or remove its RLS on purpose with `tenants generate --allow-unmark`".to_string()
            }
            Finding::PermissivePolicy { table, policy, .. } => format!(
                "make it restrictive or drop it (`DROP POLICY \"{policy}\" ON {table};`); permissive policies are ORed with the isolation policy"
            ),
            Finding::RoleBypassesRls { role, .. } => format!(
                "as a superuser: `ALTER ROLE \"{role}\" NOSUPERUSER NOBYPASSRLS;`"
            ),
            Finding::TenantColumnCollation {
                table,
                column,
                type_name,
                ..
            } => format!(
                "compare tenant ids byte for byte: `ALTER TABLE {table} ALTER COLUMN {} TYPE {type_name} COLLATE \"default\";` (PostgreSQL refuses while a policy uses the column: drop the table's isolation policy first, `tenants generate` recreates it)",
                crate::tenant::quote_ident(column)
            ),
            Finding::SettingDefault {
                database,
                role,
                setting,
                ..
            } => {
                let target = match (database, role) {
                    (Some(d), Some(r)) => format!(
                        "ROLE {} IN DATABASE {}",
                        crate::tenant::quote_ident(r),
                        crate::tenant::quote_ident(d)
                    ),
                    (None, Some(r)) => format!("ROLE {}", crate::tenant::quote_ident(r)),
                    (Some(d), None) => format!("DATABASE {}", crate::tenant::quote_ident(d)),
                    (None, None) => "SYSTEM".to_string(),
                };
                format!(
                    "sessions must start without it (the scopes set it per transaction): `ALTER {target} RESET {};`",
                    crate::tenant::quote_ident(setting)
                )
            }
            Finding::CrossTenantReference(key) => {
                let unique = if key.parent_has_unique {
                    String::new()
                } else {
                    crate::policy::tenant_unique_sql(
                        &key.parent,
                        &crate::policy::tenant_unique_columns(key),
                    ) + "\n    "
                };
                format!(
                    "make it carry the tenant column (`tenants generate --tenant-keys` writes this as a migration):\n    {unique}{}",
                    crate::policy::tenant_key_sql(key).replace("\n  ", "\n      ")
                )
            }
            Finding::UnmarkedTable {
                table,
                tenant_column,
                granted_to,
            } => {
                let revoke = if granted_to.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; otherwise revoke it: `REVOKE ALL ON {table} FROM {}, PUBLIC;`",
                        granted_to
                            .iter()
                            .map(|r| crate::tenant::quote_ident(r))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let join = if tenant_column.is_none() {
                    " (a join table of tenant rows too: give it the tenant column)"
                } else {
                    ""
                };
                format!(
                    "if its rows belong to a tenant, mark it #[with_rls]{join} and run `tenants generate`; only data every tenant may read is #[tenants_core::shared]{revoke}"
                )
            }
            Finding::UnprotectedRelative { table, kind, .. } if kind == "inheritance parent" => {
                format!(
                    "mark {table} #[with_rls] too and run `tenants generate`, or detach the child from it"
                )
            }
            Finding::UnprotectedRelative { table, .. } => format!(
                "mark it #[with_rls] and run `tenants generate` (row level security, FORCE and the policies), or at least `ALTER TABLE {table} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;` (nobody then reads it directly)"
            ),
            Finding::Loophole(loophole) => loophole_hint(loophole),
            Finding::SharedTableMissing { .. } => {
                "create the table first (`diesel migration run`), or remove its #[shared] mark".to_string()
            }
            Finding::NoTablesMarked => {
                "mark the tenant tables #[with_rls] (did `diesel print-schema` drop the marks? is the module declaring them compiled into this program?)".to_string()
            }
            Finding::LoginBypassesRls { allowed: false, .. } => {
                "serve through a login that is neither superuser nor BYPASSRLS, member of the tenant role only (README, \"Deployment\"); or allow it on purpose with `Config::with_bypassing_login(true)`".to_string()
            }
            Finding::LoginBypassesRls { allowed: true, .. } => {
                "serve through a login that is neither superuser nor BYPASSRLS, member of the tenant role only (README, \"Deployment\")".to_string()
            }
            Finding::LoginInheritsRole {
                login,
                role,
                server_version_num,
            } => {
                let login = crate::tenant::quote_ident(login);
                let role = crate::tenant::quote_ident(role);
                if *server_version_num >= 160_000 {
                    format!(
                        "as a superuser or the role's admin: `REVOKE {role} FROM {login}; GRANT {role} TO {login} WITH INHERIT FALSE;`"
                    )
                } else {
                    format!("as a superuser: `ALTER ROLE {login} NOINHERIT;`")
                }
            }
            Finding::RoleCannotLogin { .. } => format!(
                "{MEND_WITH_GENERATE} (it makes the role LOGIN); restrict its logins to the cluster's nodes in pg_hba.conf (README, \"Scaling out with Citus\")"
            ),
            Finding::RoleCanLogin { role } => format!(
                "as a superuser: `ALTER ROLE \"{role}\" NOLOGIN;` (only Citus mode needs it to log in)"
            ),
            Finding::CitusModeOff { .. } => format!(
                "turn on Citus mode in the application (`Config::with_citus(true)`; the CLI reads it from the server): its begin batch sets {} to 'local' and hands the role and the tenant to the workers, its policies have no subqueries (Citus refuses them on distributed tables) and its roles may log in on the workers",
                crate::config::CITUS_PROPAGATE_SET_COMMANDS
            ),
            Finding::NotDistributedByTenant { table, column, .. } => format!(
                "distribute it by its tenant column, co-located with the other marked tables: `SELECT create_distributed_table('{}', '{}');` (its unique keys must include the column)",
                table.to_string().replace('\'', "''"),
                column.replace('\'', "''")
            ),
            Finding::NotColocated { table, with } => format!(
                "`SELECT update_distributed_table_colocation('{}', colocate_with => '{}');`",
                table.to_string().replace('\'', "''"),
                with.to_string().replace('\'', "''")
            ),
            Finding::SharedNotReference { table, .. } => format!(
                "`SELECT create_reference_table('{}');`",
                table.to_string().replace('\'', "''")
            ),
        }
    }

    /// Errors fail `verify`; warnings are reported only.
    pub fn severity(&self) -> Severity {
        match self {
            Finding::LoginBypassesRls { allowed: true, .. }
            | Finding::LoginInheritsRole { .. }
            | Finding::PolicyOnUnmarkedTable { .. }
            | Finding::RoleCanLogin { .. }
            | Finding::NotDistributedByTenant { .. }
            | Finding::NotColocated { .. }
            | Finding::SharedNotReference { .. }
            | Finding::CrossTenantReference(..)
            | Finding::UnmarkedTable { .. }
            | Finding::Loophole(..) => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::RoleMissing { role } => write!(f, "role \"{role}\" does not exist"),
            Finding::RoleNotGranted { role, login } => {
                write!(f, "login role \"{login}\" is not a member of \"{role}\"")
            }
            Finding::SchemaUsageMissing { schema, role } => {
                write!(f, "schema \"{schema}\": USAGE is not granted to \"{role}\"")
            }
            Finding::TableMissing { table } => write!(f, "{table}: table does not exist"),
            Finding::ColumnMissing { table, column } => {
                write!(f, "{table}: tenant column \"{column}\" does not exist")
            }
            Finding::ColumnTypeMismatch {
                table,
                column,
                expected,
                actual,
            } => write!(
                f,
                "{table}: tenant column \"{column}\" is {actual}, the code says {}",
                expected.pg_name()
            ),
            Finding::PolicyOnUnmarkedTable { table, policy } => write!(
                f,
                "warning: {table}: carries policy \"{policy}\" but is not marked #[with_rls]"
            ),
            Finding::RlsDisabled { table } => {
                write!(f, "{table}: row level security is not enabled")
            }
            Finding::RlsNotForced { table } => {
                write!(f, "{table}: row level security is not forced")
            }
            Finding::PolicyMissing { table, policy } => {
                write!(f, "{table}: policy \"{policy}\" is missing")
            }
            Finding::PolicyDiffers {
                table,
                policy,
                expected,
                actual,
            } => write!(
                f,
                "{table}: policy \"{policy}\" differs: expected {expected}, found {actual}"
            ),
            Finding::TableGrantMissing {
                table,
                role,
                privilege,
            } => write!(f, "{table}: {privilege} is not granted to \"{role}\""),
            Finding::SequenceGrantMissing {
                sequence,
                role,
                privilege,
            } => write!(
                f,
                "sequence {sequence}: {privilege} is not granted to \"{role}\""
            ),
            Finding::TenantColumnNullable { table, column } => write!(
                f,
                "{table}: tenant column \"{column}\" is nullable, the code says NOT NULL"
            ),
            Finding::TenantDefaultDiffers {
                table,
                column,
                expected,
                actual: None,
            } => write!(
                f,
                "{table}: tenant column \"{column}\" has no default; the contract's is {expected}"
            ),
            Finding::TenantDefaultDiffers {
                table,
                column,
                expected,
                actual: Some(actual),
            } => write!(
                f,
                "{table}: tenant column \"{column}\" defaults to {actual}, the contract says {expected}"
            ),
            Finding::PermissivePolicy {
                table,
                policy,
                roles,
            } => write!(
                f,
                "{table}: permissive policy \"{policy}\" (TO {}) is ORed with the isolation policy: every tenant sees the rows it allows",
                roles.join(", ")
            ),
            Finding::RoleBypassesRls { role, bypass } => write!(
                f,
                "role \"{role}\" is {}: transactions running as it are not subject to RLS",
                bypass.describe()
            ),
            Finding::TenantColumnCollation {
                table,
                column,
                collation,
                ..
            } => write!(
                f,
                "{table}: tenant column \"{column}\" has the nondeterministic collation \"{collation}\": tenant ids that compare equal (ACME, acme) share their rows"
            ),
            Finding::SettingDefault {
                database,
                role,
                setting,
                value,
            } => {
                let scope = match (database, role) {
                    (Some(d), Some(r)) => format!("role \"{r}\" in database \"{d}\""),
                    (None, Some(r)) => format!("role \"{r}\""),
                    (Some(d), None) => format!("database \"{d}\""),
                    (None, None) => "every session".to_string(),
                };
                write!(
                    f,
                    "{scope} sets {setting} = '{value}' for every session: unscoped queries run with it"
                )
            }
            Finding::CrossTenantReference(key) => write!(
                f,
                "warning: {}: foreign key \"{}\" references {} without the tenant column: a tenant can reference another tenant's row, cascade into it and block its deletes",
                key.table, key.name, key.parent
            ),
            Finding::UnmarkedTable {
                table,
                tenant_column,
                granted_to,
            } => {
                let what = match tenant_column {
                    Some(column) => format!("has a tenant column \"{column}\""),
                    None => "holds rows".to_string(),
                };
                let who = if granted_to.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", and {} can read or write all of it",
                        granted_to
                            .iter()
                            .map(|r| format!("\"{r}\""))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )
                };
                write!(
                    f,
                    "warning: {table}: {what} but is neither #[with_rls] nor #[shared]{who}"
                )
            }
            Finding::UnprotectedRelative {
                table,
                kind,
                marked,
                rls_enabled,
            } => {
                let lacks = if *rls_enabled {
                    "FORCE ROW LEVEL SECURITY"
                } else {
                    "row level security"
                };
                let (is, why) = if kind == "inheritance parent" {
                    (
                        "is not marked and lacks",
                        "selecting from it returns the child's rows of every tenant",
                    )
                } else {
                    (
                        "lacks",
                        "queried directly, only its own row level security applies",
                    )
                };
                write!(
                    f,
                    "{table}: {kind} of marked table {marked} {is} {lacks}: {why}"
                )
            }
            Finding::Loophole(loophole) => write_loophole(f, loophole),
            Finding::SharedTableMissing { table } => {
                write!(f, "{table}: shared table does not exist")
            }
            Finding::SharedGrantMissing { table, role } => write!(
                f,
                "{table}: shared table is not readable by \"{role}\" (SELECT not granted)"
            ),
            Finding::NoTablesMarked => f.write_str("no table is marked #[with_rls]"),
            Finding::LoginBypassesRls {
                login,
                bypass,
                allowed,
            } => write!(
                f,
                "{}login role \"{login}\" is {}: unscoped queries read and write every tenant's rows",
                if *allowed { "warning: " } else { "" },
                bypass.describe()
            ),
            Finding::LoginInheritsRole { login, role, .. } => write!(
                f,
                "warning: login role \"{login}\" inherits the privileges of \"{role}\": a statement outside any scope returns nothing instead of failing with permission denied"
            ),
            Finding::RoleCannotLogin { role } => write!(
                f,
                "role \"{role}\" cannot log in: Citus reaches the workers as the current role, so scoped transactions on distributed tables fail"
            ),
            Finding::RoleCanLogin { role } => write!(
                f,
                "warning: role \"{role}\" can log in, which only Citus mode needs"
            ),
            Finding::CitusModeOff { value } => write!(
                f,
                "the server is a Citus coordinator and Citus mode is off ({} is '{value}'): the workers do not get the tenant, so tenant transactions on distributed tables see and write nothing",
                crate::config::CITUS_PROPAGATE_SET_COMMANDS
            ),
            Finding::NotDistributedByTenant {
                table,
                column,
                actual,
            } => write!(
                f,
                "warning: {table}: {}, not distributed by its tenant column \"{column}\": queries do not route to one node",
                describe_distribution(actual)
            ),
            Finding::NotColocated { table, with } => write!(
                f,
                "warning: {table}: not co-located with {with}: one tenant's rows of both may live on two nodes"
            ),
            Finding::SharedNotReference { table, actual } => write!(
                f,
                "warning: {table}: shared table is {}, not a reference table",
                describe_distribution(actual)
            ),
        }
    }
}

/// What mends a loophole: the statement that closes it.
fn loophole_hint(loophole: &Loophole) -> String {
    use crate::tenant::quote_ident;
    match loophole {
        Loophole::View { view, .. } => format!(
            "`ALTER VIEW {view} SET (security_invoker = true);` (or give it an owner subject to the policies)"
        ),
        Loophole::MaterializedView { view, .. } => format!(
            "`DROP MATERIALIZED VIEW {view};` (a view WITH (security_invoker = true) reads through the policies)"
        ),
        Loophole::DefinerFunction { function, .. } => format!(
            "`ALTER FUNCTION {function} SECURITY INVOKER;` (or give it an owner subject to the policies)"
        ),
        Loophole::DefinerTrigger { function, .. } => format!(
            "`ALTER FUNCTION {function} SECURITY INVOKER;` (a trigger then runs as the caller, under the policies)"
        ),
        Loophole::Rule { rule, table, .. } => format!(
            "`DROP RULE {} ON {table};` (a trigger runs as the caller, under the policies)",
            quote_ident(rule)
        ),
        Loophole::LeakproofFunction { function } => {
            format!("as a superuser: `ALTER FUNCTION {function} NOT LEAKPROOF;`")
        }
        Loophole::ExistenceOracle { kind, fix, .. } if kind == "exclusion constraint" => {
            format!("`{fix}` (gist needs the btree_gist extension for the tenant column)")
        }
        Loophole::ExistenceOracle { fix, .. } => format!("`{fix}`"),
        Loophole::Grant {
            table,
            privilege,
            grantee,
        } => format!(
            "`REVOKE {privilege} ON {table} FROM {};`",
            grantee.as_deref().map_or("PUBLIC".to_string(), quote_ident)
        ),
    }
}

/// A loophole, in a finding's words.
fn write_loophole(f: &mut fmt::Formatter<'_>, loophole: &Loophole) -> fmt::Result {
    match loophole {
        Loophole::View {
            view,
            marked,
            owner,
            escape,
        } => write!(
            f,
            "warning: view {view}: reads marked table {marked} as its owner \"{owner}\", {}: row level security applies to the owner, not the caller",
            escape.describe()
        ),
        Loophole::MaterializedView { view, marked } => write!(
            f,
            "warning: materialized view {view}: stores rows of marked table {marked} without row level security: who may read it reads what its owner saw at the last refresh"
        ),
        Loophole::DefinerFunction {
            function,
            owner,
            escape,
        } => write!(
            f,
            "warning: function {function}: is SECURITY DEFINER and owned by \"{owner}\", {}: its callers act as \"{owner}\"",
            escape.describe()
        ),
        Loophole::DefinerTrigger {
            trigger,
            table,
            function,
            owner,
            escape,
        } => write!(
            f,
            "warning: trigger \"{trigger}\" on {table}: runs {function}, SECURITY DEFINER and owned by \"{owner}\", {}: it sees and writes every tenant's rows",
            escape.describe()
        ),
        Loophole::Rule {
            rule,
            table,
            owner,
            escape,
        } => write!(
            f,
            "warning: rule \"{rule}\" on {table}: runs its actions as \"{owner}\", the owner of {table}, {}: row level security does not apply to them",
            escape.describe()
        ),
        Loophole::LeakproofFunction { function } => write!(
            f,
            "warning: function {function}: is LEAKPROOF: the planner may run it on rows before row level security filters them, so what it reveals (errors, notices) comes from every tenant's rows"
        ),
        Loophole::ExistenceOracle {
            kind,
            name,
            table,
            tenant_column,
            ..
        } => {
            let reveals = if kind == "exclusion constraint" {
                "a conflict reveals another tenant's rows"
            } else {
                "a conflict reveals whether another tenant's row holds a value"
            };
            write!(
                f,
                "warning: {kind} \"{name}\" on {table}: does not include the tenant column \"{tenant_column}\": {reveals}"
            )
        }
        Loophole::Grant {
            table,
            privilege,
            grantee,
        } => {
            let why = match privilege.as_str() {
                "TRUNCATE" => "TRUNCATE ignores row level security",
                "TRIGGER" => {
                    "a trigger it creates runs in other tenants' statements, seeing their rows"
                }
                _ => "a foreign key to this table reveals other tenants' values",
            };
            let grantee = grantee
                .as_ref()
                .map_or("PUBLIC".to_string(), |g| format!("\"{g}\""));
            write!(
                f,
                "warning: {table}: {privilege} is granted to {grantee}: {why}"
            )
        }
    }
}

/// How a table is held, in a finding's words.
fn describe_distribution(distribution: &Distribution) -> String {
    match distribution {
        Distribution::Local => "a local table (unknown to Citus)".to_string(),
        Distribution::CitusLocal => "a Citus local table".to_string(),
        Distribution::Reference => "a reference table (every row on every node)".to_string(),
        Distribution::SingleShard => "a single-shard distributed table".to_string(),
        Distribution::Hash { column, .. } => format!("distributed by \"{column}\""),
        Distribution::Other { column } => {
            format!("append- or range-distributed by \"{column}\"")
        }
    }
}

/// Every finding of one `verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Errors and warnings, in a stable order.
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// True when no finding is an error.
    pub fn is_ok(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| f.severity() == Severity::Error)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity() == Severity::Warning)
    }
}

impl fmt::Display for VerifyReport {
    /// One finding per line, each followed by its hint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "  {finding}\n    hint: {}", finding.hint())?;
        }
        Ok(())
    }
}

/// The registry's tables as [`catalog::read`] takes them.
pub fn marked_tables(tables: &[RlsTable]) -> Vec<MarkedTable> {
    tables
        .iter()
        .map(|t| MarkedTable {
            table: QualifiedName::new(t.schema, t.name),
            key: ProbeKey {
                column: t.tenant_column.to_string(),
                sql_type: t.sql_type,
            },
        })
        .collect()
}

/// The registry's shared tables as [`catalog::read`] takes them.
pub fn shared_tables(tables: &[SharedTable]) -> Vec<QualifiedName> {
    tables
        .iter()
        .map(|t| QualifiedName::new(t.schema, t.name))
        .collect()
}

/// The marked and the shared tables linked into this binary (the registry), as
/// [`catalog::read`] takes them: what a pool's `verify` compares.
pub fn linked_tables() -> (Vec<MarkedTable>, Vec<QualifiedName>) {
    (
        marked_tables(&crate::registry::tables()),
        shared_tables(&crate::registry::shared_tables()),
    )
}

/// Compares `catalog` with the contract for `tables`; pure, so the CLI shares it.
///
/// Findings come in a fixed order: no table marked, roles (their bypass, then their login
/// ability), memberships (missing, then inherited), schema usage, then per table (sorted) its existence, column, RLS
/// flags, policies and grants, then tables carrying our policies without being marked,
/// unprotected relatives, cross-tenant keys, unmarked tables, loopholes, the shared tables, then on a Citus coordinator the propagation setting, the distribution and
/// co-location of the marked tables and the shared tables' distribution, then the login
/// role's bypass.
pub fn compare(config: &Config, tables: &[MarkedTable], catalog: &Catalog) -> VerifyReport {
    let mut findings = Vec::new();
    let our_roles = [config.tenant_role(), config.admin_role()];
    let our_policies = [config.isolation_policy(), config.admin_policy()];
    let mut tables: Vec<&MarkedTable> = tables.iter().collect();
    tables.sort();

    // Index the catalog once. A linear search per table, role and privilege made
    // `tenants check` quadratic: ~16 million string comparisons for 500 tables.
    let table_states: HashMap<(&str, &str), &catalog::TableState> = catalog
        .tables
        .iter()
        .map(|t| ((t.schema.as_str(), t.name.as_str()), t))
        .collect();
    let columns: HashMap<(&str, &str, &str), &catalog::ColumnState> = catalog
        .columns
        .iter()
        .map(|c| ((c.schema.as_str(), c.table.as_str(), c.column.as_str()), c))
        .collect();
    let table_privileges = privilege_set(&catalog.table_privileges);
    let sequence_privileges = privilege_set(&catalog.sequence_privileges);
    let mut sequences: HashMap<(&str, &str), Vec<&catalog::OwnedSequence>> = HashMap::new();
    for s in &catalog.sequences {
        sequences
            .entry((s.table_schema.as_str(), s.table_name.as_str()))
            .or_default()
            .push(s);
    }
    let mut policies_by_table: HashMap<(&str, &str), Vec<&catalog::PolicyState>> = HashMap::new();
    for p in &catalog.policies {
        policies_by_table
            .entry((p.schema.as_str(), p.table.as_str()))
            .or_default()
            .push(p);
    }

    let reaching: HashSet<(&str, &str, &str)> = catalog
        .policy_reach
        .iter()
        .map(|r| (r.schema.as_str(), r.table.as_str(), r.policy.as_str()))
        .collect();

    if tables.is_empty() {
        findings.push(Finding::NoTablesMarked);
    }
    for role in &catalog.roles {
        if !role.exists {
            findings.push(Finding::RoleMissing {
                role: role.name.clone(),
            });
        } else if let Some(bypass) = bypass_of(role.superuser, role.bypass_rls) {
            findings.push(Finding::RoleBypassesRls {
                role: role.name.clone(),
                bypass,
            });
        }
    }
    for role in catalog.roles.iter().filter(|r| r.exists) {
        let role_name = role.name.clone();
        match (config.citus(), role.can_login) {
            (true, false) => findings.push(Finding::RoleCannotLogin { role: role_name }),
            (false, true) => findings.push(Finding::RoleCanLogin { role: role_name }),
            _ => {}
        }
    }
    findings.extend(
        catalog
            .memberships
            .iter()
            .filter(|m| !m.is_member)
            .map(|m| Finding::RoleNotGranted {
                role: m.role.clone(),
                login: m.member.clone(),
            }),
    );
    findings.extend(
        catalog
            .setting_defaults
            .iter()
            .map(|d| Finding::SettingDefault {
                database: d.database.clone(),
                role: d.role.clone(),
                setting: d.setting.clone(),
                value: d.value.clone(),
            }),
    );
    // A superuser "inherits" everything; its bypass is the finding that matters.
    let login_bypasses = bypass_of(catalog.login.superuser, catalog.login.bypass_rls).is_some();
    findings.extend(
        catalog
            .memberships
            .iter()
            .filter(|m| m.is_member && m.inherits)
            .filter(|m| !(login_bypasses && m.member == catalog.login.name))
            .map(|m| Finding::LoginInheritsRole {
                login: m.member.clone(),
                role: m.role.clone(),
                server_version_num: catalog.server_version_num,
            }),
    );
    findings.extend(catalog.schema_usage.iter().filter(|u| !u.usage).map(|u| {
        Finding::SchemaUsageMissing {
            schema: u.schema.clone(),
            role: u.role.clone(),
        }
    }));

    for marked in &tables {
        let name = &marked.table;
        let Some(state) = table_states.get(&(name.schema.as_str(), name.name.as_str())) else {
            findings.push(Finding::TableMissing {
                table: name.clone(),
            });
            continue;
        };
        let column = columns.get(&(
            name.schema.as_str(),
            name.name.as_str(),
            marked.key.column.as_str(),
        ));
        match column {
            None => {
                findings.push(Finding::ColumnMissing {
                    table: name.clone(),
                    column: marked.key.column.clone(),
                });
                continue;
            }
            Some(c) if catalog::tenant_type_of(&c.type_name) != Some(marked.key.sql_type) => {
                findings.push(Finding::ColumnTypeMismatch {
                    table: name.clone(),
                    column: marked.key.column.clone(),
                    expected: marked.key.sql_type,
                    actual: c.type_name.clone(),
                });
                continue;
            }
            Some(c) => {
                if !c.not_null {
                    findings.push(Finding::TenantColumnNullable {
                        table: name.clone(),
                        column: marked.key.column.clone(),
                    });
                }
                if let Some(expected) = probed(&catalog.expected.defaults, &marked.key)
                    && c.default.as_ref() != Some(expected)
                {
                    findings.push(Finding::TenantDefaultDiffers {
                        table: name.clone(),
                        column: marked.key.column.clone(),
                        expected: expected.clone(),
                        actual: c.default.clone(),
                    });
                }
                if let Some(collation) = &c.nondeterministic_collation {
                    findings.push(Finding::TenantColumnCollation {
                        table: name.clone(),
                        column: marked.key.column.clone(),
                        type_name: c.type_name.clone(),
                        collation: collation.clone(),
                    });
                }
            }
        }
        if !state.rls_enabled {
            findings.push(Finding::RlsDisabled {
                table: name.clone(),
            });
        }
        if config.force_rls() && !state.rls_forced {
            findings.push(Finding::RlsNotForced {
                table: name.clone(),
            });
        }

        let on_table: &[&catalog::PolicyState] = policies_by_table
            .get(&(name.schema.as_str(), name.name.as_str()))
            .map_or(&[], Vec::as_slice);
        if let Some(expected) = probed(&catalog.expected.isolation, &marked.key) {
            check_policy(
                &mut findings,
                on_table,
                name,
                config.isolation_policy(),
                expected,
            );
        }
        if let Some(expected) = &catalog.expected.admin {
            check_policy(
                &mut findings,
                on_table,
                name,
                config.admin_policy(),
                expected,
            );
        }

        // Permissive policies are ORed: any other one that applies to our roles (by name,
        // through PUBLIC or by membership) lets its rows through to every tenant.
        // (Restrictive ones are ANDed: harmless.)
        for policy in on_table {
            let applies_to_us = reaching.contains(&(
                name.schema.as_str(),
                name.name.as_str(),
                policy.name.as_str(),
            ));
            if !our_policies.contains(&policy.name.as_str()) && applies_to_us {
                findings.push(Finding::PermissivePolicy {
                    table: name.clone(),
                    policy: policy.name.clone(),
                    roles: policy.def.roles.clone(),
                });
            }
        }

        for role in our_roles {
            for privilege in TABLE_PRIVILEGES {
                let granted = table_privileges.contains(&(
                    name.schema.as_str(),
                    name.name.as_str(),
                    role,
                    privilege,
                ));
                if !granted {
                    findings.push(Finding::TableGrantMissing {
                        table: name.clone(),
                        role: role.to_string(),
                        privilege: privilege.to_string(),
                    });
                }
            }
        }
        let owned = sequences.get(&(name.schema.as_str(), name.name.as_str()));
        for sequence in owned.into_iter().flatten() {
            for role in our_roles {
                for privilege in SEQUENCE_PRIVILEGES {
                    let granted = sequence_privileges.contains(&(
                        sequence.schema.as_str(),
                        sequence.name.as_str(),
                        role,
                        privilege,
                    ));
                    if !granted {
                        findings.push(Finding::SequenceGrantMissing {
                            sequence: QualifiedName::new(&sequence.schema, &sequence.name),
                            role: role.to_string(),
                            privilege: privilege.to_string(),
                        });
                    }
                }
            }
        }
    }

    let marked_tables: HashSet<(&str, &str)> = tables
        .iter()
        .map(|t| (t.table.schema.as_str(), t.table.name.as_str()))
        .collect();
    for policy in &catalog.policies {
        let marked = marked_tables.contains(&(policy.schema.as_str(), policy.table.as_str()));
        if !marked && our_policies.contains(&policy.name.as_str()) {
            findings.push(Finding::PolicyOnUnmarkedTable {
                table: QualifiedName::new(&policy.schema, &policy.table),
                policy: policy.name.clone(),
            });
        }
    }

    findings.extend(
        catalog
            .relatives
            .iter()
            .map(|r| Finding::UnprotectedRelative {
                table: QualifiedName::new(&r.schema, &r.name),
                kind: r.kind.clone(),
                marked: QualifiedName::new(&r.marked_schema, &r.marked_name),
                rls_enabled: r.rls_enabled,
            }),
    );
    findings.extend(
        catalog
            .cross_tenant_keys
            .iter()
            .map(|k| Finding::CrossTenantReference(Box::new(k.clone()))),
    );
    // A table carrying our policies is named above, as lost marks.
    let policed: HashSet<(&str, &str)> = catalog
        .policies
        .iter()
        .filter(|p| our_policies.contains(&p.name.as_str()))
        .map(|p| (p.schema.as_str(), p.table.as_str()))
        .collect();
    findings.extend(
        catalog
            .unmarked
            .iter()
            .filter(|t| !policed.contains(&(t.schema.as_str(), t.name.as_str())))
            .map(|t| Finding::UnmarkedTable {
                table: QualifiedName::new(&t.schema, &t.name),
                tenant_column: t.tenant_column.clone(),
                granted_to: t.granted_to.clone(),
            }),
    );

    findings.extend(catalog.loopholes.iter().cloned().map(Finding::Loophole));

    for shared in &catalog.shared {
        let table = QualifiedName::new(&shared.schema, &shared.name);
        if !shared.exists {
            findings.push(Finding::SharedTableMissing { table });
            continue;
        }
        for role in our_roles {
            let granted = table_privileges.contains(&(
                shared.schema.as_str(),
                shared.name.as_str(),
                role,
                "SELECT",
            ));
            if !granted {
                findings.push(Finding::SharedGrantMissing {
                    table: table.clone(),
                    role: role.to_string(),
                });
            }
        }
    }

    if let Some(citus) = &catalog.citus {
        compare_citus(config, &tables, citus, &mut findings);
    }

    let login = &catalog.login;
    if let Some(bypass) = bypass_of(login.superuser, login.bypass_rls) {
        findings.push(Finding::LoginBypassesRls {
            login: login.name.clone(),
            bypass,
            allowed: config.bypassing_login(),
        });
    }
    VerifyReport { findings }
}

/// The findings of a Citus coordinator: the propagation setting (outside Citus mode, when
/// marked tables live on the workers), then per marked table (sorted) its distribution and
/// co-location, then the shared tables' distribution.
fn compare_citus(
    config: &Config,
    tables: &[&MarkedTable],
    citus: &catalog::CitusState,
    findings: &mut Vec<Finding>,
) {
    let held: HashMap<&QualifiedName, &Distribution> = citus
        .tables
        .iter()
        .map(|t| (&t.table, &t.distribution))
        .collect();
    let marked: Vec<(&MarkedTable, &Distribution)> = tables
        .iter()
        .filter_map(|t| held.get(&t.table).map(|d| (*t, *d)))
        .collect();
    let on_workers = marked.iter().any(|(_, d)| d.on_workers());
    if on_workers && !config.citus() {
        findings.push(Finding::CitusModeOff {
            value: citus.propagate_set_commands.clone(),
        });
    }

    // The co-location group most marked tables distributed by tenant share (the first
    // such table's, on a tie) is the one the others should join.
    let by_tenant: Vec<(&QualifiedName, i32)> = marked
        .iter()
        .filter_map(|(t, d)| match d {
            Distribution::Hash { column, colocation } if *column == t.key.column => {
                Some((&t.table, *colocation))
            }
            _ => None,
        })
        .collect();
    let mut group_sizes: Vec<(i32, usize, &QualifiedName)> = Vec::new();
    for (table, group) in &by_tenant {
        match group_sizes.iter_mut().find(|(g, ..)| g == group) {
            Some((_, size, _)) => *size += 1,
            None => group_sizes.push((*group, 1, table)),
        }
    }
    let main_group = group_sizes
        .iter()
        .enumerate()
        .max_by_key(|(i, (_, size, _))| (*size, std::cmp::Reverse(*i)))
        .map(|(_, (group, _, table))| (*group, (*table).clone()));

    for (table, distribution) in &marked {
        match distribution {
            Distribution::Hash { column, colocation } if *column == table.key.column => {
                if let Some((group, with)) = &main_group
                    && colocation != group
                {
                    findings.push(Finding::NotColocated {
                        table: table.table.clone(),
                        with: with.clone(),
                    });
                }
            }
            other => findings.push(Finding::NotDistributedByTenant {
                table: table.table.clone(),
                column: table.key.column.clone(),
                actual: (*other).clone(),
            }),
        }
    }

    for table in &citus.tables {
        let is_marked = tables.iter().any(|t| t.table == table.table);
        if !is_marked && table.distribution != Distribution::Reference {
            findings.push(Finding::SharedNotReference {
                table: table.table.clone(),
                actual: table.distribution.clone(),
            });
        }
    }
}

/// What the probe found for tenant column `key` (its policy, its default).
fn probed<'a, T>(found: &'a [(ProbeKey, T)], key: &ProbeKey) -> Option<&'a T> {
    found.iter().find(|(k, _)| k == key).map(|(_, value)| value)
}

/// Why a role is not subject to RLS, if it is not. A superuser has BYPASSRLS too; the
/// stronger reason is the one worth reporting.
fn bypass_of(superuser: bool, bypass_rls: bool) -> Option<Bypass> {
    if superuser {
        Some(Bypass::Superuser)
    } else if bypass_rls {
        Some(Bypass::BypassRls)
    } else {
        None
    }
}

/// `(schema, name, grantee, privilege)` of each privilege, for constant-time lookups.
fn privilege_set(list: &[catalog::Privilege]) -> HashSet<(&str, &str, &str, &str)> {
    list.iter()
        .map(|p| {
            (
                p.schema.as_str(),
                p.name.as_str(),
                p.grantee.as_str(),
                p.privilege.as_str(),
            )
        })
        .collect()
}

/// Compares our policy named `policy` among the policies `on_table` with `expected`.
fn check_policy(
    findings: &mut Vec<Finding>,
    on_table: &[&catalog::PolicyState],
    table: &QualifiedName,
    policy: &str,
    expected: &PolicyDef,
) {
    let actual = on_table.iter().find(|p| p.name == policy);
    match actual {
        None => findings.push(Finding::PolicyMissing {
            table: table.clone(),
            policy: policy.to_string(),
        }),
        Some(actual) if actual.def != *expected => findings.push(Finding::PolicyDiffers {
            table: table.clone(),
            policy: policy.to_string(),
            expected: Box::new(expected.clone()),
            actual: Box::new(actual.def.clone()),
        }),
        Some(_) => {}
    }
}
