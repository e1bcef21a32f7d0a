//! The one renderer of the SQL contract (DESIGN.md, "The database contract").
//!
//! What a migration does is modelled as an ordered list of [`Change`]s; `up` renders them
//! in order and `down` renders each one's exact inverse in reverse order. [`setup`] builds
//! the full list for a set of tables; the CLI builds the subset its diff finds missing.

use std::fmt;

use crate::config::Config;
use crate::registry::{RlsTable, TenantSqlType};
use crate::tenant::{quote_ident, quote_literal};

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
    /// `GRANT USAGE ON SCHEMA` to the tenant and admin roles.
    GrantSchemaUsage {
        /// The schema.
        schema: String,
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
    /// `SELECT, INSERT, UPDATE, DELETE` on the table to the tenant and admin roles.
    GrantTable {
        /// The table.
        table: QualifiedName,
    },
    /// `USAGE, SELECT` on a sequence to the tenant and admin roles.
    GrantSequence {
        /// The sequence.
        sequence: QualifiedName,
    },
}

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
    changes.extend(schemas.into_iter().map(|schema| Change::GrantSchemaUsage {
        schema: schema.to_string(),
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
        changes.push(Change::GrantTable { table });
        let mut sequences = spec.sequences.clone();
        sequences.sort();
        changes.extend(
            sequences
                .into_iter()
                .map(|sequence| Change::GrantSequence { sequence }),
        );
    }
    changes
}

impl Change {
    fn our_roles(config: &Config) -> String {
        format!(
            "{}, {}",
            quote_ident(config.tenant_role()),
            quote_ident(config.admin_role())
        )
    }

    /// The statement that applies this change.
    pub fn up(&self, config: &Config) -> String {
        let roles = Self::our_roles(config);
        match self {
            Change::CreateRole { role } => format!(
                "DO $tenants$ BEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN\n    CREATE ROLE {} NOLOGIN;\n  END IF;\nEND $tenants$;",
                quote_literal(role),
                quote_ident(role)
            ),
            Change::GrantRole { role, member } => {
                format!("GRANT {} TO {member};", quote_ident(role))
            }
            Change::GrantSchemaUsage { schema } => {
                format!("GRANT USAGE ON SCHEMA {} TO {roles};", quote_ident(schema))
            }
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
            Change::GrantTable { table } => {
                format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {roles};")
            }
            Change::GrantSequence { sequence } => {
                format!("GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {roles};")
            }
        }
    }

    /// The statement that undoes [`Change::up`].
    pub fn down(&self, config: &Config) -> String {
        let roles = Self::our_roles(config);
        match self {
            Change::CreateRole { role } => format!(
                "DO $tenants$ BEGIN\n  IF EXISTS (SELECT FROM pg_roles r WHERE r.rolname = {literal}\n      AND NOT EXISTS (SELECT FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid)\n      AND NOT EXISTS (SELECT FROM pg_auth_members m WHERE r.oid IN (m.roleid, m.member))) THEN\n    DROP ROLE {ident};\n  END IF;\nEND $tenants$;",
                literal = quote_literal(role),
                ident = quote_ident(role)
            ),
            Change::GrantRole { role, member } => {
                format!("REVOKE {} FROM {member};", quote_ident(role))
            }
            Change::GrantSchemaUsage { schema } => {
                format!(
                    "REVOKE USAGE ON SCHEMA {} FROM {roles};",
                    quote_ident(schema)
                )
            }
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
            Change::GrantTable { table } => {
                format!("REVOKE SELECT, INSERT, UPDATE, DELETE ON {table} FROM {roles};")
            }
            Change::GrantSequence { sequence } => {
                format!("REVOKE USAGE, SELECT ON SEQUENCE {sequence} FROM {roles};")
            }
        }
    }
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
