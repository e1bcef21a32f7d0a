//! The one renderer of the SQL contract (the README's "Put them under RLS").
//!
//! What a migration does is modelled as an ordered list of [`Change`]s; `up` renders them
//! in order and `down` renders each one's exact inverse in reverse order. [`setup`] builds
//! the full list for a set of tables; [`crate::plan`] builds the subset that mends what
//! [`crate::verify`] finds. This module renders; it reads nothing and decides nothing.

use crate::config::{Config, Purpose};
use crate::registry::TenantSqlType;
pub use crate::spec::{Grantee, PolicyDef, QualifiedName, TableSpec, TenantForeignKey};
use crate::tenant::{quote_ident, quote_literal};

/// A login and what it is granted our roles for: a tenant-serving login gets the tenant
/// role only, an admin login the admin role only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleGrant {
    /// The login role.
    pub member: Grantee,
    /// Which of our roles it receives ([`Purpose::roles`]).
    pub purpose: Purpose,
}

impl RoleGrant {
    /// The tenant role to `member`: a login serving tenant transactions.
    pub fn tenant(member: Grantee) -> Self {
        Self {
            member,
            purpose: Purpose::Tenant,
        }
    }
    /// The admin role to `member`: a login doing admin work.
    pub fn admin(member: Grantee) -> Self {
        Self {
            member,
            purpose: Purpose::Admin,
        }
    }
    /// Both roles to `member`: one login for tenant and admin transactions.
    pub fn both(member: Grantee) -> Self {
        Self {
            member,
            purpose: Purpose::TenantAndAdmin,
        }
    }
}

/// One step of a migration, with an exact inverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create a role if it does not exist, `NOLOGIN` (`LOGIN` in Citus mode, whose workers
    /// are reached as the current role); the inverse drops it again unless something still
    /// depends on it (roles are cluster-wide: another database may use it).
    CreateRole {
        /// The role.
        role: String,
    },
    /// `ALTER ROLE .. LOGIN` (Citus mode): Citus opens the connections to the workers as
    /// the current role, so a transaction that switched to it fails unless it may log in.
    AllowLogin {
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
    /// The tenant column's default: the current scope's tenant, so that an insert need not
    /// name it ([`tenant_default_expression`]).
    SetTenantDefault {
        /// The table.
        table: QualifiedName,
        /// SQL name of the tenant column.
        column: String,
        /// SQL type of the tenant column, the setting's cast.
        sql_type: TenantSqlType,
        /// The default it had before, as the server deparses it, restored by the inverse
        /// (`None`: no default, dropped by the inverse).
        previous: Option<String>,
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
    /// `SET NOT NULL` on a tenant column that lost it (a row without a tenant belongs to
    /// nobody; the code declares the column `NOT NULL`).
    SetNotNull {
        /// The table.
        table: QualifiedName,
        /// The tenant column.
        column: String,
    },
    /// `UNIQUE (tenant, ...)` on a marked table referenced by a foreign key of another
    /// marked table: the target a tenant-consistent (composite) foreign key needs.
    AddTenantUnique {
        /// The referenced table.
        table: QualifiedName,
        /// Its tenant column, then the referenced columns.
        columns: Vec<String>,
    },
    /// A foreign key between marked tables replaced by one carrying the tenant columns
    /// on both sides (same name, same actions): a row can then reference, cascade into
    /// and block only rows of its own tenant.
    TenantForeignKey(Box<TenantForeignKey>),
    /// A change the database already has, replayed for a fresh server: `up` applies it
    /// idempotently (roles are created only when missing; grants are idempotent), `down`
    /// leaves it alone, since this migration did not make it.
    Ensure(Box<Change>),
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
///
/// In Citus mode the setting is read inline: Citus refuses subqueries in the policies of
/// distributed tables. `current_setting` is `STABLE`, so an index on the tenant column
/// still serves it as an index condition; where the policy is only a filter it is
/// evaluated per row (benches/PERFORMANCE.md has the cost), hence not the default.
pub fn isolation_expression(config: &Config, column: &str, sql_type: TenantSqlType) -> String {
    let setting = tenant_default_expression(config, sql_type);
    if config.citus() {
        format!("{} = {setting}", quote_ident(column))
    } else {
        format!("{} = (SELECT {setting})", quote_ident(column))
    }
}

/// The current scope's tenant as a value of `sql_type`: the tenant setting, `NULL` outside
/// a tenant scope (after a scope ends, `current_setting` returns `''`, which no cast must
/// see). The isolation policy compares the tenant column with it, and it is the tenant
/// column's default, so that an insert that does not name the tenant gets the scope's,
/// and outside a tenant scope fails (the column is `NOT NULL`).
pub fn tenant_default_expression(config: &Config, sql_type: TenantSqlType) -> String {
    format!(
        "NULLIF(current_setting({}, true), '')::{}",
        quote_literal(config.setting()),
        cast_type(sql_type)
    )
}

/// The expression of the admin policy: true only while the current role *is* the admin
/// role, not merely a member of it (the login role is a member). Inline in Citus mode, as
/// [`isolation_expression`].
pub fn admin_expression(config: &Config) -> String {
    let admin = quote_literal(config.admin_role());
    if config.citus() {
        format!("current_user = {admin}")
    } else {
        format!("(SELECT current_user) = {admin}")
    }
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

/// Every change that puts `tables` under the contract from scratch: both roles (in Citus
/// mode allowed to log in, should they exist already), to each of `grant_to` the roles
/// its purpose needs, schema usage, then per table (sorted by schema and name) RLS, FORCE (unless
/// turned off), both policies and the grants.
pub fn setup(config: &Config, tables: &[TableSpec], grant_to: &[RoleGrant]) -> Vec<Change> {
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
    if config.citus() {
        changes.extend(roles.iter().map(|role| Change::AllowLogin {
            role: role.to_string(),
        }));
    }
    for grant in grant_to {
        changes.extend(
            grant
                .purpose
                .roles(config)
                .into_iter()
                .map(|role| Change::GrantRole {
                    role: role.to_string(),
                    member: grant.member.clone(),
                }),
        );
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
        changes.push(Change::SetTenantDefault {
            table: table.clone(),
            column: spec.tenant_column.clone(),
            sql_type: spec.sql_type,
            previous: None,
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

/// The changes that make `shared` tables readable by both our roles: schema usage where
/// `marked` (already set up) does not grant it, then `SELECT` on each table.
pub fn share(config: &Config, shared: &[QualifiedName], marked: &[TableSpec]) -> Vec<Change> {
    let roles = vec![
        config.tenant_role().to_string(),
        config.admin_role().to_string(),
    ];
    let mut shared: Vec<&QualifiedName> = shared.iter().collect();
    shared.sort();
    let mut schemas: Vec<&str> = shared
        .iter()
        .map(|t| t.schema.as_str())
        .filter(|s| !marked.iter().any(|m| m.table.schema == *s))
        .collect();
    schemas.dedup();
    let mut changes: Vec<Change> = schemas
        .into_iter()
        .map(|schema| Change::GrantSchemaUsage {
            schema: schema.to_string(),
            roles: roles.clone(),
        })
        .collect();
    changes.extend(shared.into_iter().map(|table| Change::GrantTable {
        table: table.clone(),
        privileges: vec!["SELECT".to_string()],
        roles: roles.clone(),
    }));
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

/// `DO $tag$ BEGIN <body> END $tag$;` with a dollar-quote tag that does not occur in the
/// body, whatever names it carries.
fn do_block(body: &str) -> String {
    let mut tag = String::from("tenants");
    while body.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!("DO ${tag}$ BEGIN\n{body}END ${tag}$;")
}

/// A change the database had when the migration was generated, applied only where it is
/// still missing: on that database it changes nothing (so `down.sql` has nothing to undo),
/// on a fresh server it does what an earlier migration would have done.
fn ensure_sql(config: &Config, change: &Change) -> String {
    match change {
        Change::GrantRole { role, member } => {
            let member_expr = match member {
                Grantee::Role(name) => quote_literal(name),
                Grantee::CurrentUser => "current_user".to_string(),
            };
            do_block(&format!(
                "  IF NOT pg_has_role({member_expr}, {}, 'MEMBER') THEN\n    {}\n  END IF;\n",
                quote_literal(role),
                change.up(config)
            ))
        }
        Change::GrantSchemaUsage { schema, roles } => do_block(
            &roles
                .iter()
                .map(|role| {
                    format!(
                        "  IF NOT has_schema_privilege({}, {}, 'USAGE') THEN\n    {}\n  END IF;\n",
                        quote_literal(role),
                        quote_literal(schema),
                        privileges_sql(
                            Direction::Grant,
                            &["USAGE".to_string()],
                            &format!("SCHEMA {}", quote_ident(schema)),
                            std::slice::from_ref(role),
                        )
                    )
                })
                .collect::<String>(),
        ),
        // Creating a role is conditional already; others are idempotent as they are.
        other => other.up(config),
    }
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
                "DO $tenants$ BEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN\n    CREATE ROLE {} {};\n  END IF;\nEND $tenants$;",
                quote_literal(role),
                quote_ident(role),
                if config.citus() { "LOGIN" } else { "NOLOGIN" }
            ),
            Change::AllowLogin { role } => format!("ALTER ROLE {} LOGIN;", quote_ident(role)),
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
            Change::SetTenantDefault {
                table,
                column,
                sql_type,
                ..
            } => on_coordinator_only(
                config,
                format!(
                    "ALTER TABLE {table} ALTER COLUMN {} SET DEFAULT {};",
                    quote_ident(column),
                    tenant_default_expression(config, *sql_type)
                ),
            ),
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
            Change::SetNotNull { table, column } => format!(
                "ALTER TABLE {table} ALTER COLUMN {} SET NOT NULL;",
                quote_ident(column)
            ),
            Change::AddTenantUnique { table, columns } => tenant_unique_sql(table, columns),
            Change::TenantForeignKey(key) => tenant_key_sql(key),
            Change::Ensure(change) => ensure_sql(config, change),
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
            Change::AllowLogin { role } => format!("ALTER ROLE {} NOLOGIN;", quote_ident(role)),
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
            Change::SetTenantDefault {
                table,
                column,
                previous,
                ..
            } => on_coordinator_only(
                config,
                match previous {
                    Some(previous) => format!(
                        "ALTER TABLE {table} ALTER COLUMN {} SET DEFAULT {previous};",
                        quote_ident(column)
                    ),
                    None => format!(
                        "ALTER TABLE {table} ALTER COLUMN {} DROP DEFAULT;",
                        quote_ident(column)
                    ),
                },
            ),
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
            Change::SetNotNull { table, column } => format!(
                "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL;",
                quote_ident(column)
            ),
            Change::AddTenantUnique { table, columns } => format!(
                "ALTER TABLE {table} DROP CONSTRAINT {};",
                quote_ident(&tenant_unique_name(table, columns))
            ),
            Change::TenantForeignKey(key) => format!(
                "ALTER TABLE {} DROP CONSTRAINT {name},\n  ADD CONSTRAINT {name} FOREIGN KEY ({}) REFERENCES {} ({}){};",
                key.table,
                quoted_list(&key.columns),
                key.parent,
                quoted_list(&key.parent_columns),
                key.original_actions,
                name = quote_ident(&key.name),
            ),
            Change::Ensure(change) => match &**change {
                Change::CreateRole { role } => {
                    format!("-- kept: role {} (it existed before)", quote_ident(role))
                }
                other => format!("-- kept (it existed before): {}", other.up(config)),
            },
            Change::Undo(change) => change.up(config),
        }
    }
}

/// `ALTER TABLE .. ADD CONSTRAINT .. UNIQUE (tenant, ..)`: [`Change::AddTenantUnique`].
pub fn tenant_unique_sql(table: &QualifiedName, columns: &[String]) -> String {
    format!(
        "ALTER TABLE {table} ADD CONSTRAINT {} UNIQUE ({});",
        quote_ident(&tenant_unique_name(table, columns)),
        quoted_list(columns)
    )
}

/// The foreign key replaced by its tenant-consistent form: [`Change::TenantForeignKey`].
pub fn tenant_key_sql(key: &TenantForeignKey) -> String {
    format!(
        "ALTER TABLE {} DROP CONSTRAINT {name},\n  ADD CONSTRAINT {name} FOREIGN KEY ({}, {}) REFERENCES {} ({}, {}){};",
        key.table,
        quote_ident(&key.tenant_column),
        quoted_list(&key.columns),
        key.parent,
        quote_ident(&key.parent_tenant_column),
        quoted_list(&key.parent_columns),
        key.actions,
        name = quote_ident(&key.name),
    )
}

/// The parent's unique key a tenant-consistent `key` needs: its tenant column, then the
/// referenced columns.
pub fn tenant_unique_columns(key: &TenantForeignKey) -> Vec<String> {
    std::iter::once(key.parent_tenant_column.clone())
        .chain(key.parent_columns.iter().cloned())
        .collect()
}

/// `"a", "b"`.
fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name of the unique key [`Change::AddTenantUnique`] adds, as PostgreSQL would name it
/// (`<table>_<columns>_key`), cut to the 63 bytes of an identifier.
pub fn tenant_unique_name(table: &QualifiedName, columns: &[String]) -> String {
    let mut name = format!("{}_{}_key", table.name, columns.join("_"));
    if name.len() > 63 {
        let mut end = 63;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// The changes that make `keys` tenant-consistent: each parent's missing unique key once,
/// then each foreign key replaced (what `tenants generate --tenant-keys` writes).
pub fn tenant_keys(keys: &[TenantForeignKey]) -> Vec<Change> {
    let mut changes: Vec<Change> = Vec::new();
    for key in keys.iter().filter(|k| !k.parent_has_unique) {
        let unique = Change::AddTenantUnique {
            table: key.parent.clone(),
            columns: tenant_unique_columns(key),
        };
        if !changes.contains(&unique) {
            changes.push(unique);
        }
    }
    changes.extend(
        keys.iter()
            .map(|k| Change::TenantForeignKey(Box::new(k.clone()))),
    );
    changes
}

/// The hardened serving login `login` for `purpose`, made idempotently (one `DO` block):
/// created if missing `LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT`, and granted exactly the
/// roles its purpose needs (those that exist), without inheriting their privileges: on
/// PostgreSQL 16 and later each grant says `WITH INHERIT FALSE`, before that the role's
/// `NOINHERIT` does. It can `SET ROLE` to them, so its scoped transactions work, while a
/// statement on a marked table outside any scope fails with `permission denied`. For a
/// superuser to run (the example service and the test kit make their logins with it); it
/// does not change a login that exists beyond the grants.
pub fn serving_login(config: &Config, login: &str, purpose: Purpose) -> String {
    let grants: String = purpose
        .roles(config)
        .into_iter()
        .map(|role| {
            let grant = format!("GRANT {} TO {}", quote_ident(role), quote_ident(login));
            format!(
                "  IF EXISTS (SELECT FROM pg_roles WHERE rolname = {role_literal}) THEN
    IF current_setting('server_version_num')::int >= 160000 THEN
      IF NOT pg_has_role({login_literal}, {role_literal}, 'MEMBER') OR pg_has_role({login_literal}, {role_literal}, 'USAGE') THEN
        EXECUTE {with_option};
      END IF;
    ELSIF NOT pg_has_role({login_literal}, {role_literal}, 'MEMBER') THEN
      {grant};
    END IF;
  END IF;
",
                role_literal = quote_literal(role),
                login_literal = quote_literal(login),
                with_option = quote_literal(&format!("{grant} WITH INHERIT FALSE")),
            )
        })
        .collect();
    do_block(&format!(
        "  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN
    CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
  END IF;
{grants}",
        quote_literal(login),
        quote_ident(login),
    ))
}

/// The `up.sql` of `changes`: each change's statement, in order, one per line.
pub fn render_up(config: &Config, changes: &[Change]) -> String {
    render(config, changes.iter().map(|c| c.up(config)))
}

/// The `down.sql` of `changes`: each change's inverse, in reverse order.
pub fn render_down(config: &Config, changes: &[Change]) -> String {
    render(config, changes.iter().rev().map(|c| c.down(config)))
}

/// `alter`, a change of the tenant column's default, in Citus mode on the coordinator only
/// (DDL propagation off around it): Citus refuses `ALTER TABLE` on a distribution column
/// (`cannot execute ALTER TABLE command involving partition column`), and the coordinator,
/// which fills in defaults when it plans an `INSERT` and routes it by the value, is where
/// the default is used. A table distributed later takes the default into its shards.
fn on_coordinator_only(config: &Config, alter: String) -> String {
    if config.citus() {
        format!(
            "SET LOCAL citus.enable_ddl_propagation TO off;\n  {alter}\n  SET LOCAL citus.enable_ddl_propagation TO DEFAULT;"
        )
    } else {
        alter
    }
}

/// In Citus mode, the first statement of a migration. Diesel runs a migration in one
/// transaction, in which Citus refuses DDL on a reference table after a parallel
/// (multi-shard) DDL on a distributed table with a foreign key into it (`cannot execute
/// DDL on table .. because there was a parallel DDL access to distributed table ..`);
/// that is the order our grants come in when the roles exist already (creating a role
/// switches Citus to sequential on its own). Sequential mode runs every multi-shard
/// statement over one connection per worker, so every order applies. Outside a
/// transaction it is a warning, and nothing needs it.
const CITUS_SEQUENTIAL: &str = "SET LOCAL citus.multi_shard_modify_mode TO 'sequential';";

/// `statements` as migration lines (Citus mode: sequential first, then every statement a
/// `DO` block); nothing for no statements.
fn render(config: &Config, statements: impl Iterator<Item = String>) -> String {
    let mut statements = statements.peekable();
    if statements.peek().is_none() {
        return String::new();
    }
    let first = config.citus().then(|| CITUS_SEQUENTIAL.to_string());
    first
        .into_iter()
        .chain(statements)
        .map(|statement| migration_statement(config, statement) + "\n")
        .collect()
}

/// `statement` as a migration runs it. Diesel sends a migration file as one batch of
/// statements; Citus forwards some DDL to the shards (`ALTER TABLE`, `DROP POLICY`) by
/// resending its source text, which is then the whole batch, and the workers refuse it
/// (`cannot insert multiple commands into a prepared statement`). Inside a `DO` block the
/// source text is the one statement, so in Citus mode every statement is one.
fn migration_statement(config: &Config, statement: String) -> String {
    if config.citus() && !statement.starts_with("DO ") && !statement.starts_with("--") {
        do_block(&format!("  {statement}\n"))
    } else {
        statement
    }
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
ALTER TABLE "public"."todo_item" ALTER COLUMN "tenant" SET DEFAULT NULLIF(current_setting('tenants.current_tenant', true), '')::text;
GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."todo_item" TO "tenants_user", "tenants_admin";
GRANT USAGE, SELECT ON SEQUENCE "public"."todo_item_id_seq" TO "tenants_user", "tenants_admin";
"#
        );
    }

    #[test]
    fn citus_mode_inlines_the_policies_and_lets_the_roles_log_in() {
        let config = Config::default().with_citus(true);
        let changes = setup(
            &config,
            &[todo_item()],
            &[RoleGrant::both(Grantee::CurrentUser)],
        );
        let up = render_up(&config, &changes);
        assert!(
            !up.contains("(SELECT NULLIF") && !up.contains("(SELECT current_user)"),
            "no subquery: {up}"
        );
        assert!(up.contains(
            r#"CREATE POLICY "tenants_isolation" ON "public"."todo_item" AS PERMISSIVE FOR ALL TO PUBLIC
  USING      ("tenant" = NULLIF(current_setting('tenants.current_tenant', true), '')::text)
  WITH CHECK ("tenant" = NULLIF(current_setting('tenants.current_tenant', true), '')::text);"#
        ));
        assert!(up.contains(
            r#"USING (current_user = 'tenants_admin') WITH CHECK (current_user = 'tenants_admin');"#
        ));
        assert!(up.contains(r#"CREATE ROLE "tenants_user" LOGIN;"#));
        assert!(up.contains(
            "DO $tenants$ BEGIN\n  ALTER ROLE \"tenants_user\" LOGIN;\nEND $tenants$;\n"
        ));
        // Every statement is a DO block: Citus forwards some DDL by its source text, which
        // must not be the whole migration.
        assert!(
            up.lines()
                .all(|l| l.starts_with("DO ") || l.starts_with("END ") || l.starts_with(' ')),
            "{up}"
        );
        // Sequential first, in up and down: a reference table's DDL after a parallel one
        // on a distributed table is refused in one transaction.
        let sequential = "DO $tenants$ BEGIN\n  SET LOCAL citus.multi_shard_modify_mode TO 'sequential';\nEND $tenants$;\n";
        assert!(up.starts_with(sequential), "{up}");
        // Citus refuses ALTER TABLE on the distribution column: the default is set on the
        // coordinator only.
        assert!(
            up.contains("SET LOCAL citus.enable_ddl_propagation TO off;\n  ALTER TABLE \"public\".\"todo_item\" ALTER COLUMN \"tenant\" SET DEFAULT"),
            "{up}"
        );
        let down = render_down(&config, &changes);
        assert!(down.starts_with(sequential), "{down}");
        assert_eq!(render_up(&config, &[]), "");
        let nologin = down.find(r#"ALTER ROLE "tenants_user" NOLOGIN;"#);
        let dropped = down.find(r#"DROP ROLE "tenants_user";"#);
        assert!(
            matches!((nologin, dropped), (Some(n), Some(d)) if n < d),
            "{down}"
        );
        let plain = Config::default();
        assert!(!render_up(&plain, &setup(&plain, &[todo_item()], &[])).contains(" LOGIN;"));
    }

    #[test]
    fn once_part_creates_roles_grants_them_and_schema_usage() {
        let config = Config::default();
        let changes = setup(
            &config,
            &[todo_item()],
            &[RoleGrant::both(Grantee::Role("app".into()))],
        );
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
        let changes = setup(&config, &[], &[RoleGrant::both(Grantee::CurrentUser)]);
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
        let changes = setup(
            &config,
            &[todo_item()],
            &[RoleGrant::both(Grantee::Role("app".into()))],
        );
        let down = render_down(&config, &changes);
        let lines: Vec<&str> = down.lines().collect();
        assert_eq!(
            lines[..8],
            [
                r#"REVOKE USAGE, SELECT ON SEQUENCE "public"."todo_item_id_seq" FROM "tenants_user", "tenants_admin";"#,
                r#"REVOKE SELECT, INSERT, UPDATE, DELETE ON "public"."todo_item" FROM "tenants_user", "tenants_admin";"#,
                r#"ALTER TABLE "public"."todo_item" ALTER COLUMN "tenant" DROP DEFAULT;"#,
                r#"DROP POLICY "tenants_admin" ON "public"."todo_item";"#,
                r#"DROP POLICY "tenants_isolation" ON "public"."todo_item";"#,
                r#"ALTER TABLE "public"."todo_item" NO FORCE ROW LEVEL SECURITY;"#,
                r#"ALTER TABLE "public"."todo_item" DISABLE ROW LEVEL SECURITY;"#,
                r#"REVOKE USAGE ON SCHEMA "public" FROM "tenants_user", "tenants_admin";"#,
            ]
        );
        assert_eq!(lines[8], r#"REVOKE "tenants_admin" FROM "app";"#);
        assert_eq!(lines[9], r#"REVOKE "tenants_user" FROM "app";"#);
        assert!(lines[10].starts_with("DO $tenants$ BEGIN"));
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
        assert!(up.contains(
            r#"ALTER TABLE "sales"."or""der" ALTER COLUMN "org_id" SET DEFAULT NULLIF(current_setting('app.org', true), '')::uuid;"#
        ));
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
    fn a_replaced_default_is_restored_by_down() {
        let config = Config::default();
        let change = Change::SetTenantDefault {
            table: QualifiedName::new("public", "todo_item"),
            column: "tenant".into(),
            sql_type: TenantSqlType::Int8,
            previous: Some("'0'::bigint".into()),
        };
        assert_eq!(
            change.up(&config),
            r#"ALTER TABLE "public"."todo_item" ALTER COLUMN "tenant" SET DEFAULT NULLIF(current_setting('tenants.current_tenant', true), '')::int8;"#
        );
        assert_eq!(
            change.down(&config),
            r#"ALTER TABLE "public"."todo_item" ALTER COLUMN "tenant" SET DEFAULT '0'::bigint;"#
        );
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

    #[test]
    fn each_login_gets_the_roles_of_its_purpose() {
        let config = Config::default();
        let logins = [
            RoleGrant::tenant(Grantee::Role("app".into())),
            RoleGrant::admin(Grantee::Role("ops".into())),
        ];
        let up = render_up(&config, &setup(&config, &[todo_item()], &logins));
        assert!(up.contains("GRANT \"tenants_user\" TO \"app\";\n"), "{up}");
        assert!(up.contains("GRANT \"tenants_admin\" TO \"ops\";\n"), "{up}");
        assert!(!up.contains("GRANT \"tenants_admin\" TO \"app\""), "{up}");
        assert!(!up.contains("GRANT \"tenants_user\" TO \"ops\""), "{up}");
    }

    #[test]
    fn a_serving_login_is_made_without_inheriting_its_roles() {
        let config = Config::default();
        let sql = serving_login(&config, "app", Purpose::Tenant);
        assert!(
            sql.contains("CREATE ROLE \"app\" LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;"),
            "{sql}"
        );
        assert!(
            sql.contains("EXECUTE 'GRANT \"tenants_user\" TO \"app\" WITH INHERIT FALSE';"),
            "{sql}"
        );
        assert!(!sql.contains("tenants_admin"), "tenant purpose only: {sql}");
        let admin = serving_login(&config, "ops", Purpose::Admin);
        assert!(
            admin.contains("GRANT \"tenants_admin\" TO \"ops\"") && !admin.contains("tenants_user")
        );
    }
}
