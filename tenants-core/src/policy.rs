//! The one renderer of the SQL contract (DESIGN.md, "The database contract").
//!
//! What a migration does is modelled as an ordered list of [`Change`]s; `up` renders them
//! in order and `down` renders each one's exact inverse in reverse order. [`setup`] builds
//! the full list for a set of tables; the CLI builds the subset its diff finds missing.

use std::fmt;

use crate::catalog::{Catalog, MarkedTable, PolicyDef};
use crate::config::Config;
use crate::registry::{RlsTable, TenantSqlType};
use crate::tenant::{quote_ident, quote_literal};
use crate::verify::{self, Finding};

/// A schema-qualified name, rendered quoted: `"public"."todo_item"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    /// The schema.
    pub schema: String,
    /// The object's name within the schema.
    pub name: String,
}

impl QualifiedName {
    /// `schema.name`.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            quote_ident(&self.schema),
            quote_ident(&self.name)
        )
    }
}

/// A marked table as the renderer needs it: where it is, its tenant column, and the
/// sequences it owns (serial and identity columns), which tenants need to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// The table.
    pub table: QualifiedName,
    /// SQL name of the tenant column.
    pub tenant_column: String,
    /// SQL type of the tenant column.
    pub sql_type: TenantSqlType,
    /// Sequences owned by the table's columns.
    pub sequences: Vec<QualifiedName>,
}

impl TableSpec {
    /// The spec of a registry entry, with the sequences the live catalog says it owns.
    pub fn from_registry(table: &RlsTable, sequences: Vec<QualifiedName>) -> Self {
        Self {
            table: QualifiedName::new(table.schema, table.name),
            tenant_column: table.tenant_column.to_string(),
            sql_type: table.sql_type,
            sequences,
        }
    }
}

/// Who receives our roles, so that it may `SET ROLE` to them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grantee {
    /// A named login role.
    Role(String),
    /// `CURRENT_USER`: whoever runs the migration, for applications that migrate with the
    /// role they serve with.
    CurrentUser,
}

impl fmt::Display for Grantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grantee::Role(name) => f.write_str(&quote_ident(name)),
            Grantee::CurrentUser => f.write_str("CURRENT_USER"),
        }
    }
}

/// One step of a migration, with an exact inverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create a `NOLOGIN` role if it does not exist; the inverse drops it again unless
    /// something still depends on it (roles are cluster-wide: another database may use it).
    CreateRole {
        /// The role.
        role: String,
    },
    /// `GRANT role TO member`, so the login role may `SET ROLE` to it.
    GrantRole {
        /// The granted role.
        role: String,
        /// The login role receiving it.
        member: Grantee,
    },
    /// `GRANT USAGE ON SCHEMA`.
    GrantSchemaUsage {
        /// The schema.
        schema: String,
        /// The roles receiving it.
        roles: Vec<String>,
    },
    /// `ENABLE ROW LEVEL SECURITY`.
    EnableRls {
        /// The table.
        table: QualifiedName,
    },
    /// `FORCE ROW LEVEL SECURITY`: the owner is subject to the policies too.
    ForceRls {
        /// The table.
        table: QualifiedName,
    },
    /// The isolation policy: rows whose tenant column equals the tenant setting.
    CreateIsolationPolicy {
        /// The table.
        table: QualifiedName,
        /// SQL name of the tenant column.
        column: String,
        /// SQL type of the tenant column, the setting's cast.
        sql_type: TenantSqlType,
    },
    /// The admin policy: every row, while the current role is the admin role.
    CreateAdminPolicy {
        /// The table.
        table: QualifiedName,
    },
    /// A policy as the catalog describes it: what [`Change::Undo`] restores when a policy
    /// of ours with another definition is replaced or removed.
    CreatePolicy {
        /// The table.
        table: QualifiedName,
        /// The policy's name.
        name: String,
        /// Its definition, with the server's deparsed expressions.
        def: PolicyDef,
    },
    /// Table privileges to roles (`SELECT, INSERT, UPDATE, DELETE` to both of ours, for
    /// a table put under the contract from scratch).
    GrantTable {
        /// The table.
        table: QualifiedName,
        /// The privileges, in `SELECT, INSERT, UPDATE, DELETE` order.
        privileges: Vec<String>,
        /// The roles receiving them.
        roles: Vec<String>,
    },
    /// Sequence privileges to roles (`USAGE, SELECT`), which tenants need to insert.
    GrantSequence {
        /// The sequence.
        sequence: QualifiedName,
        /// The privileges, in `USAGE, SELECT` order.
        privileges: Vec<String>,
        /// The roles receiving them.
        roles: Vec<String>,
    },
    /// The inverse of a change: `up` is its `down` and the other way round (`DISABLE ROW
    /// LEVEL SECURITY`, dropping a policy of ours from a table no longer marked, ...).
    Undo(Box<Change>),
}

/// The privileges our roles need on a marked table, in the order they are rendered.
pub const TABLE_PRIVILEGES: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];
/// The privileges our roles need on a marked table's sequences.
pub const SEQUENCE_PRIVILEGES: [&str; 2] = ["USAGE", "SELECT"];

/// The expression of the isolation policy for `column` of `sql_type` (`USING` and `WITH
/// CHECK` alike). `(SELECT ...)` makes it an InitPlan, evaluated once per statement;
/// `NULLIF(.., '')` makes "no tenant" match no row instead of failing the cast.
pub fn isolation_expression(config: &Config, column: &str, sql_type: TenantSqlType) -> String {
    format!(
        "{} = (SELECT NULLIF(current_setting({}, true), '')::{})",
        quote_ident(column),
        quote_literal(config.setting()),
        cast_type(sql_type)
    )
}

/// The expression of the admin policy: true only while the current role *is* the admin
/// role, not merely a member of it (the login role is a member).
pub fn admin_expression(config: &Config) -> String {
    format!(
        "(SELECT current_user) = {}",
        quote_literal(config.admin_role())
    )
}

fn cast_type(sql_type: TenantSqlType) -> &'static str {
    match sql_type {
        TenantSqlType::Text => "text",
        TenantSqlType::VarChar => "varchar",
        TenantSqlType::Int4 => "int4",
        TenantSqlType::Int8 => "int8",
        TenantSqlType::Uuid => "uuid",
    }
}

/// Every change that puts `tables` under the contract from scratch: both roles, their
/// grants to each of `grant_to`, schema usage, then per table (sorted by schema and name)
/// RLS, FORCE (unless turned off), both policies and the grants.
pub fn setup(config: &Config, tables: &[TableSpec], grant_to: &[Grantee]) -> Vec<Change> {
    let mut tables: Vec<&TableSpec> = tables.iter().collect();
    tables.sort_by(|a, b| a.table.cmp(&b.table));
    let mut schemas: Vec<&str> = tables.iter().map(|t| t.table.schema.as_str()).collect();
    schemas.dedup();

    let roles = [config.tenant_role(), config.admin_role()];
    let mut changes: Vec<Change> = roles
        .iter()
        .map(|role| Change::CreateRole {
            role: role.to_string(),
        })
        .collect();
    for member in grant_to {
        changes.extend(roles.iter().map(|role| Change::GrantRole {
            role: role.to_string(),
            member: member.clone(),
        }));
    }
    let role_names: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    changes.extend(schemas.into_iter().map(|schema| Change::GrantSchemaUsage {
        schema: schema.to_string(),
        roles: role_names.clone(),
    }));
    for spec in tables {
        let table = spec.table.clone();
        changes.push(Change::EnableRls {
            table: table.clone(),
        });
        if config.force_rls() {
            changes.push(Change::ForceRls {
                table: table.clone(),
            });
        }
        changes.push(Change::CreateIsolationPolicy {
            table: table.clone(),
            column: spec.tenant_column.clone(),
            sql_type: spec.sql_type,
        });
        changes.push(Change::CreateAdminPolicy {
            table: table.clone(),
        });
        changes.push(Change::GrantTable {
            table,
            privileges: TABLE_PRIVILEGES.map(String::from).to_vec(),
            roles: role_names.clone(),
        });
        let mut sequences = spec.sequences.clone();
        sequences.sort();
        changes.extend(sequences.into_iter().map(|sequence| Change::GrantSequence {
            sequence,
            privileges: SEQUENCE_PRIVILEGES.map(String::from).to_vec(),
            roles: role_names.clone(),
        }));
    }
    changes
}

fn role_list(roles: &[String]) -> String {
    roles
        .iter()
        .map(|r| {
            // pg_policies lists PUBLIC as the pseudo-role `public`.
            if r == "public" {
                "PUBLIC".to_string()
            } else {
                quote_ident(r)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether [`privileges_sql`] grants or revokes.
#[derive(Clone, Copy)]
enum Direction {
    Grant,
    Revoke,
}

/// `GRANT privileges ON object TO roles;` or its `REVOKE .. FROM ..` inverse.
fn privileges_sql(
    direction: Direction,
    privileges: &[String],
    object: &str,
    roles: &[String],
) -> String {
    let (verb, preposition) = match direction {
        Direction::Grant => ("GRANT", "TO"),
        Direction::Revoke => ("REVOKE", "FROM"),
    };
    format!(
        "{verb} {} ON {object} {preposition} {};",
        privileges.join(", "),
        role_list(roles)
    )
}

fn create_policy_sql(table: &QualifiedName, name: &str, def: &PolicyDef) -> String {
    let mut sql = format!(
        "CREATE POLICY {} ON {table} AS {} FOR {} TO {}",
        quote_ident(name),
        def.permissive,
        def.cmd,
        role_list(&def.roles)
    );
    if let Some(using) = &def.using {
        sql.push_str(&format!("\n  USING ({using})"));
    }
    if let Some(check) = &def.check {
        sql.push_str(&format!("\n  WITH CHECK ({check})"));
    }
    sql.push(';');
    sql
}

impl Change {
    /// The statement that applies this change.
    pub fn up(&self, config: &Config) -> String {
        match self {
            Change::CreateRole { role } => format!(
                "DO $tenants$ BEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN\n    CREATE ROLE {} NOLOGIN;\n  END IF;\nEND $tenants$;",
                quote_literal(role),
                quote_ident(role)
            ),
            Change::GrantRole { role, member } => {
                format!("GRANT {} TO {member};", quote_ident(role))
            }
            Change::GrantSchemaUsage { schema, roles } => privileges_sql(
                Direction::Grant,
                &["USAGE".to_string()],
                &format!("SCHEMA {}", quote_ident(schema)),
                roles,
            ),
            Change::EnableRls { table } => {
                format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;")
            }
            Change::ForceRls { table } => format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY;"),
            Change::CreateIsolationPolicy {
                table,
                column,
                sql_type,
            } => {
                let expression = isolation_expression(config, column, *sql_type);
                format!(
                    "CREATE POLICY {} ON {table} AS PERMISSIVE FOR ALL TO PUBLIC\n  USING      ({expression})\n  WITH CHECK ({expression});",
                    quote_ident(config.isolation_policy())
                )
            }
            Change::CreateAdminPolicy { table } => {
                let expression = admin_expression(config);
                format!(
                    "CREATE POLICY {} ON {table} AS PERMISSIVE FOR ALL TO {}\n  USING ({expression}) WITH CHECK ({expression});",
                    quote_ident(config.admin_policy()),
                    quote_ident(config.admin_role())
                )
            }
            Change::CreatePolicy { table, name, def } => create_policy_sql(table, name, def),
            Change::GrantTable {
                table,
                privileges,
                roles,
            } => privileges_sql(Direction::Grant, privileges, &table.to_string(), roles),
            Change::GrantSequence {
                sequence,
                privileges,
                roles,
            } => privileges_sql(
                Direction::Grant,
                privileges,
                &format!("SEQUENCE {sequence}"),
                roles,
            ),
            Change::Undo(change) => change.down(config),
        }
    }

    /// The statement that undoes [`Change::up`].
    pub fn down(&self, config: &Config) -> String {
        match self {
            Change::CreateRole { role } => format!(
                "DO $tenants$ BEGIN\n  IF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = {literal}\n      AND NOT EXISTS (SELECT FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid)\n      AND NOT EXISTS (SELECT FROM pg_auth_members m WHERE r.oid IN (m.roleid, m.member))) THEN\n    DROP ROLE {ident};\n  END IF;\nEND $tenants$;",
                literal = quote_literal(role),
                ident = quote_ident(role)
            ),
            Change::GrantRole { role, member } => {
                format!("REVOKE {} FROM {member};", quote_ident(role))
            }
            Change::GrantSchemaUsage { schema, roles } => privileges_sql(
                Direction::Revoke,
                &["USAGE".to_string()],
                &format!("SCHEMA {}", quote_ident(schema)),
                roles,
            ),
            Change::EnableRls { table } => {
                format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;")
            }
            Change::ForceRls { table } => {
                format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;")
            }
            Change::CreateIsolationPolicy { table, .. } => format!(
                "DROP POLICY {} ON {table};",
                quote_ident(config.isolation_policy())
            ),
            Change::CreateAdminPolicy { table } => {
                format!(
                    "DROP POLICY {} ON {table};",
                    quote_ident(config.admin_policy())
                )
            }
            Change::CreatePolicy { table, name, .. } => {
                format!("DROP POLICY {} ON {table};", quote_ident(name))
            }
            Change::GrantTable {
                table,
                privileges,
                roles,
            } => privileges_sql(Direction::Revoke, privileges, &table.to_string(), roles),
            Change::GrantSequence {
                sequence,
                privileges,
                roles,
            } => privileges_sql(
                Direction::Revoke,
                privileges,
                &format!("SEQUENCE {sequence}"),
                roles,
            ),
            Change::Undo(change) => change.up(config),
        }
    }
}

/// Why no migration can be planned: the database lacks what the code marks. Nothing is
/// to be written; run the table migrations (`diesel migration run`) first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the database does not have what the code marks:\n{}", render_findings(.0))]
pub struct PlanError(pub Vec<Finding>);

fn render_findings(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("  {f}\n")).collect()
}

/// The changes that bring the live database (`catalog`, read for `tables`) under the
/// contract: exactly what [`verify::compare`] finds wrong, each finding turned into the
/// change that mends it, plus the removal of our policies (and then RLS) from tables no
/// longer marked. Empty when the database already matches.
///
/// A marked table or tenant column missing from the database, or of another type than
/// the code says, is a [`PlanError`].
pub fn plan(
    config: &Config,
    tables: &[MarkedTable],
    catalog: &Catalog,
) -> Result<Vec<Change>, PlanError> {
    let report = verify::compare(config, tables, catalog);
    let blocking: Vec<Finding> = report
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f,
                Finding::TableMissing { .. }
                    | Finding::ColumnMissing { .. }
                    | Finding::ColumnTypeMismatch { .. }
            )
        })
        .cloned()
        .collect();
    if !blocking.is_empty() {
        return Err(PlanError(blocking));
    }
    let admin_role_missing = report
        .findings
        .iter()
        .any(|f| matches!(f, Finding::RoleMissing { role } if role == config.admin_role()));

    let mut changes: Vec<Change> = Vec::new();
    let mut unmarked: Vec<QualifiedName> = Vec::new();
    for finding in &report.findings {
        match finding {
            Finding::RoleMissing { role } => {
                changes.push(Change::CreateRole { role: role.clone() })
            }
            Finding::RoleNotGranted { role, login } => changes.push(Change::GrantRole {
                role: role.clone(),
                member: Grantee::Role(login.clone()),
            }),
            Finding::SchemaUsageMissing { schema, role } => merge_grant(
                &mut changes,
                Change::GrantSchemaUsage {
                    schema: schema.clone(),
                    roles: vec![role.clone()],
                },
            ),
            Finding::RlsDisabled { table } => changes.push(Change::EnableRls {
                table: table.clone(),
            }),
            Finding::RlsNotForced { table } => changes.push(Change::ForceRls {
                table: table.clone(),
            }),
            Finding::PolicyMissing { table, policy } => {
                changes.push(create_ours(config, tables, table, policy));
            }
            Finding::PolicyDiffers {
                table,
                policy,
                actual,
                ..
            } => {
                changes.push(Change::Undo(Box::new(Change::CreatePolicy {
                    table: table.clone(),
                    name: policy.clone(),
                    def: (**actual).clone(),
                })));
                changes.push(create_ours(config, tables, table, policy));
            }
            Finding::TableGrantMissing {
                table,
                role,
                privilege,
            } => merge_grant(
                &mut changes,
                Change::GrantTable {
                    table: table.clone(),
                    privileges: vec![privilege.clone()],
                    roles: vec![role.clone()],
                },
            ),
            Finding::SequenceGrantMissing {
                sequence,
                role,
                privilege,
            } => merge_grant(
                &mut changes,
                Change::GrantSequence {
                    sequence: sequence.clone(),
                    privileges: vec![privilege.clone()],
                    roles: vec![role.clone()],
                },
            ),
            Finding::PolicyOnUnmarkedTable { table, policy } => {
                if let Some(state) = catalog.policies.iter().find(|p| {
                    p.schema == table.schema && p.table == table.name && p.name == *policy
                }) {
                    changes.push(Change::Undo(Box::new(Change::CreatePolicy {
                        table: table.clone(),
                        name: policy.clone(),
                        def: state.def.clone(),
                    })));
                }
                if !unmarked.contains(table) {
                    unmarked.push(table.clone());
                }
            }
            Finding::TableMissing { .. }
            | Finding::ColumnMissing { .. }
            | Finding::ColumnTypeMismatch { .. }
            | Finding::LoginBypassesRls { .. } => {}
        }
    }

    // Without the admin role there was nothing to compare the admin policy with; the role
    // is created above, so the policy is created where none exists.
    if admin_role_missing {
        for marked in tables {
            let has_admin_policy = catalog.policies.iter().any(|p| {
                p.schema == marked.table.schema
                    && p.table == marked.table.name
                    && p.name == config.admin_policy()
            });
            if !has_admin_policy {
                changes.push(Change::CreateAdminPolicy {
                    table: marked.table.clone(),
                });
            }
        }
    }

    // A table no longer marked loses RLS too, unless policies other than ours remain on it
    // (then RLS is someone else's, and stays).
    let ours = [config.isolation_policy(), config.admin_policy()];
    for table in unmarked {
        let others_remain = catalog.policies.iter().any(|p| {
            p.schema == table.schema && p.table == table.name && !ours.contains(&p.name.as_str())
        });
        let Some(state) = catalog
            .tables
            .iter()
            .find(|t| t.schema == table.schema && t.name == table.name)
        else {
            continue;
        };
        if others_remain {
            continue;
        }
        if state.rls_forced {
            changes.push(Change::Undo(Box::new(Change::ForceRls {
                table: table.clone(),
            })));
        }
        if state.rls_enabled {
            changes.push(Change::Undo(Box::new(Change::EnableRls { table })));
        }
    }
    Ok(join_roles(changes))
}

/// Our policy named `policy` for `table`, as the contract creates it.
fn create_ours(
    config: &Config,
    tables: &[MarkedTable],
    table: &QualifiedName,
    policy: &str,
) -> Change {
    let key = tables.iter().find(|t| t.table == *table).map(|t| &t.key);
    match key {
        Some(key) if policy == config.isolation_policy() => Change::CreateIsolationPolicy {
            table: table.clone(),
            column: key.column.clone(),
            sql_type: key.sql_type,
        },
        _ => Change::CreateAdminPolicy {
            table: table.clone(),
        },
    }
}

/// Adds a one-role, one-privilege grant, merging it into the previous grant on the same
/// object: first the privileges of the same role, then roles missing the same privileges.
fn merge_grant(changes: &mut Vec<Change>, grant: Change) {
    use Change::{GrantSchemaUsage, GrantSequence, GrantTable};
    let merged = match (changes.last_mut(), &grant) {
        (
            Some(GrantTable {
                table: t,
                privileges: p,
                roles: r,
            }),
            GrantTable {
                table,
                privileges,
                roles,
            },
        ) if t == table => merge_lists(p, r, privileges, roles),
        (
            Some(GrantSequence {
                sequence: s,
                privileges: p,
                roles: r,
            }),
            GrantSequence {
                sequence,
                privileges,
                roles,
            },
        ) if s == sequence => merge_lists(p, r, privileges, roles),
        (
            Some(GrantSchemaUsage {
                schema: s,
                roles: r,
            }),
            GrantSchemaUsage { schema, roles },
        ) if s == schema => {
            r.extend(roles.iter().cloned());
            true
        }
        _ => false,
    };
    if !merged {
        changes.push(grant);
    }
}

/// Merges one (privilege, role) into a grant of `privileges` to the same `roles`.
fn merge_lists(
    privileges: &mut Vec<String>,
    roles: &[String],
    new_privileges: &[String],
    new_roles: &[String],
) -> bool {
    if roles != new_roles {
        return false;
    }
    privileges.extend(new_privileges.iter().cloned());
    true
}

/// Joins adjacent grants of the same privileges on the same object into one statement to
/// all their roles, as the contract writes them (`... TO "tenants_user", "tenants_admin"`).
fn join_roles(changes: Vec<Change>) -> Vec<Change> {
    let mut joined: Vec<Change> = Vec::with_capacity(changes.len());
    for change in changes {
        let same = match (joined.last_mut(), &change) {
            (
                Some(Change::GrantTable {
                    table: t,
                    privileges: p,
                    roles: r,
                }),
                Change::GrantTable {
                    table,
                    privileges,
                    roles,
                },
            ) if t == table && p == privileges => Some((r, roles)),
            (
                Some(Change::GrantSequence {
                    sequence: s,
                    privileges: p,
                    roles: r,
                }),
                Change::GrantSequence {
                    sequence,
                    privileges,
                    roles,
                },
            ) if s == sequence && p == privileges => Some((r, roles)),
            _ => None,
        };
        match same {
            Some((r, roles)) => r.extend(roles.iter().cloned()),
            None => joined.push(change),
        }
    }
    joined
}

/// The `up.sql` of `changes`: each change's statement, in order, one per line.
pub fn render_up(config: &Config, changes: &[Change]) -> String {
    changes.iter().map(|c| c.up(config) + "\n").collect()
}

/// The `down.sql` of `changes`: each change's inverse, in reverse order.
pub fn render_down(config: &Config, changes: &[Change]) -> String {
    changes
        .iter()
        .rev()
        .map(|c| c.down(config) + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn todo_item() -> TableSpec {
        TableSpec {
            table: QualifiedName::new("public", "todo_item"),
            tenant_column: "tenant".into(),
            sql_type: TenantSqlType::Text,
            sequences: vec![QualifiedName::new("public", "todo_item_id_seq")],
        }
    }

    #[test]
    fn table_up_sql_is_the_design_contract() {
        let config = Config::default();
        let changes = setup(&config, &[todo_item()], &[]);
        let per_table: Vec<Change> = changes.into_iter().skip(3).collect();
        assert_eq!(
            render_up(&config, &per_table),
            r#"ALTER TABLE "public"."todo_item" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "public"."todo_item" FORCE ROW LEVEL SECURITY;
CREATE POLICY "tenants_isolation" ON "public"."todo_item" AS PERMISSIVE FOR ALL TO PUBLIC
  USING      ("tenant" = (SELECT NULLIF(current_setting('tenants.current_tenant', true), '')::text))
  WITH CHECK ("tenant" = (SELECT NULLIF(current_setting('tenants.current_tenant', true), '')::text));
CREATE POLICY "tenants_admin" ON "public"."todo_item" AS PERMISSIVE FOR ALL TO "tenants_admin"
  USING ((SELECT current_user) = 'tenants_admin') WITH CHECK ((SELECT current_user) = 'tenants_admin');
GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."todo_item" TO "tenants_user", "tenants_admin";
GRANT USAGE, SELECT ON SEQUENCE "public"."todo_item_id_seq" TO "tenants_user", "tenants_admin";
"#
        );
    }

    #[test]
    fn once_part_creates_roles_grants_them_and_schema_usage() {
        let config = Config::default();
        let changes = setup(&config, &[todo_item()], &[Grantee::Role("app".into())]);
        let once: Vec<Change> = changes.into_iter().take(5).collect();
        assert_eq!(
            render_up(&config, &once),
            r#"DO $tenants$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_user') THEN
    CREATE ROLE "tenants_user" NOLOGIN;
  END IF;
END $tenants$;
DO $tenants$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_admin') THEN
    CREATE ROLE "tenants_admin" NOLOGIN;
  END IF;
END $tenants$;
GRANT "tenants_user" TO "app";
GRANT "tenants_admin" TO "app";
GRANT USAGE ON SCHEMA "public" TO "tenants_user", "tenants_admin";
"#
        );
    }

    #[test]
    fn roles_can_go_to_whoever_runs_the_migration() {
        let config = Config::default();
        let changes = setup(&config, &[], &[Grantee::CurrentUser]);
        let up = render_up(&config, &changes);
        assert!(up.contains("GRANT \"tenants_user\" TO CURRENT_USER;\n"));
        assert!(
            render_down(&config, &changes)
                .contains("REVOKE \"tenants_admin\" FROM CURRENT_USER;\n")
        );
    }

    #[test]
    fn down_sql_undoes_up_in_reverse_order() {
        let config = Config::default();
        let changes = setup(&config, &[todo_item()], &[Grantee::Role("app".into())]);
        let down = render_down(&config, &changes);
        let lines: Vec<&str> = down.lines().collect();
        assert_eq!(
            lines[..7],
            [
                r#"REVOKE USAGE, SELECT ON SEQUENCE "public"."todo_item_id_seq" FROM "tenants_user", "tenants_admin";"#,
                r#"REVOKE SELECT, INSERT, UPDATE, DELETE ON "public"."todo_item" FROM "tenants_user", "tenants_admin";"#,
                r#"DROP POLICY "tenants_admin" ON "public"."todo_item";"#,
                r#"DROP POLICY "tenants_isolation" ON "public"."todo_item";"#,
                r#"ALTER TABLE "public"."todo_item" NO FORCE ROW LEVEL SECURITY;"#,
                r#"ALTER TABLE "public"."todo_item" DISABLE ROW LEVEL SECURITY;"#,
                r#"REVOKE USAGE ON SCHEMA "public" FROM "tenants_user", "tenants_admin";"#,
            ]
        );
        assert_eq!(lines[7], r#"REVOKE "tenants_admin" FROM "app";"#);
        assert_eq!(lines[8], r#"REVOKE "tenants_user" FROM "app";"#);
        assert!(lines[9].starts_with("DO $tenants$ BEGIN"));
        assert!(down.contains(r#"DROP ROLE "tenants_admin";"#));
        assert_eq!(down.matches("DROP ROLE").count(), 2);
    }

    #[test]
    fn names_and_types_come_from_config_and_column() {
        let config = Config::default()
            .with_tenant_role("app_tenant")
            .and_then(|c| c.with_admin_role("app_admin"))
            .and_then(|c| c.with_setting("app.org"))
            .and_then(|c| c.with_isolation_policy("iso"))
            .and_then(|c| c.with_admin_policy("adm"))
            .expect("valid config")
            .with_force_rls(false);
        let spec = TableSpec {
            table: QualifiedName::new("sales", "or\"der"),
            tenant_column: "org_id".into(),
            sql_type: TenantSqlType::Uuid,
            sequences: vec![],
        };
        let up = render_up(&config, &setup(&config, &[spec], &[]));
        assert!(!up.contains("FORCE"));
        assert!(up.contains(
            r#"CREATE POLICY "iso" ON "sales"."or""der" AS PERMISSIVE FOR ALL TO PUBLIC"#
        ));
        assert!(up.contains(
            r#"("org_id" = (SELECT NULLIF(current_setting('app.org', true), '')::uuid))"#
        ));
        assert!(up.contains(
            r#"CREATE POLICY "adm" ON "sales"."or""der" AS PERMISSIVE FOR ALL TO "app_admin""#
        ));
        assert!(up.contains(r#"USING ((SELECT current_user) = 'app_admin')"#));
        assert!(up.contains(r#"GRANT USAGE ON SCHEMA "sales" TO "app_tenant", "app_admin";"#));
        for (ty, cast) in [
            (TenantSqlType::Text, "::text)"),
            (TenantSqlType::VarChar, "::varchar)"),
            (TenantSqlType::Int4, "::int4)"),
            (TenantSqlType::Int8, "::int8)"),
            (TenantSqlType::Uuid, "::uuid)"),
        ] {
            assert!(isolation_expression(&config, "t", ty).ends_with(cast));
        }
    }

    #[test]
    fn tables_are_rendered_sorted_by_schema_and_name() {
        let config = Config::default();
        let spec = |schema: &str, name: &str| TableSpec {
            table: QualifiedName::new(schema, name),
            tenant_column: "tenant".into(),
            sql_type: TenantSqlType::Text,
            sequences: vec![],
        };
        let changes = setup(
            &config,
            &[spec("public", "b"), spec("app", "z"), spec("public", "a")],
            &[],
        );
        let enabled: Vec<String> = changes
            .iter()
            .filter_map(|c| match c {
                Change::EnableRls { table } => Some(table.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            enabled,
            [r#""app"."z""#, r#""public"."a""#, r#""public"."b""#]
        );
    }
}
