//! The planner: turns what [`crate::verify::compare`] finds into the [`Change`]s that mend
//! it. The one decision behind `tenants diff`, `generate` and `check`: `check` passes
//! exactly when [`plan`] returns no change, and `generate` writes exactly what it returns.

use crate::catalog::{Catalog, MarkedTable};
use crate::config::{Config, Purpose};
use crate::policy::{Change, RoleGrant};
use crate::spec::{Grantee, QualifiedName};
use crate::verify::{self, Finding, VerifyReport};

/// Why no migration is planned although the database does not match the code. Nothing is
/// to be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No table is marked: most likely the marks were lost (or the wrong crate was read),
    /// and planning would remove RLS from every table that has it.
    #[error(
        "no table is marked #[with_rls]{}\nhint: mark the tenant tables #[with_rls] (is --crate-dir the crate that declares them? did `diesel print-schema` drop the marks?)",
        policed_list(.policed)
    )]
    NothingMarked {
        /// Tables carrying our policies, which a plan would strip.
        policed: Vec<QualifiedName>,
    },
    /// The database lacks what the code marks, or something breaks isolation that a
    /// migration of ours must not decide (another permissive policy, a role bypassing RLS).
    #[error("the database cannot be brought under the contract by a migration:\n{}", render_findings(.0))]
    Blocked(Vec<Finding>),
    /// The plan would disable RLS or drop our policies on tables that are no longer marked:
    /// never done silently.
    #[error(
        "refusing to remove row level security from {} table(s) no longer marked #[with_rls]: {}\nhint: {}",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        UNMARK_HINT
    )]
    WouldUnmark(Vec<QualifiedName>),
}

const UNMARK_HINT: &str = "if `diesel print-schema` rewrote schema.rs, restore the #[with_rls] marks (keep them out of schema.rs: `#[with_rls] use schema::<table>;` in a file of your own); to remove RLS from these tables on purpose, pass --allow-unmark";

fn policed_list(tables: &[QualifiedName]) -> String {
    if tables.is_empty() {
        String::new()
    } else {
        format!(
            ", but the database has tenants' policies on {} table(s): {}",
            tables.len(),
            tables
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn render_findings(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("  {f}\n    hint: {}\n", f.hint()))
        .collect()
}

/// What the planner may do beyond mending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Remove our policies and RLS from tables no longer marked (`--allow-unmark`).
    pub allow_unmark: bool,
    /// Who receives which of our roles in the migration's preamble; empty means both roles
    /// to `CURRENT_USER` (whoever runs the migration).
    pub grant_to: Vec<RoleGrant>,
}

/// A planned migration and the comparison it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The changes, in order; empty exactly when the database matches the code.
    pub changes: Vec<Change>,
    /// Every finding of the comparison, warnings included.
    pub report: VerifyReport,
}

impl PlanOptions {
    /// Who receives which of our roles: [`PlanOptions::grant_to`], or both to
    /// `CURRENT_USER` when empty.
    pub fn grantees(&self) -> Vec<RoleGrant> {
        if self.grant_to.is_empty() {
            vec![RoleGrant {
                member: Grantee::CurrentUser,
                purpose: Purpose::TenantAndAdmin,
            }]
        } else {
            self.grant_to.clone()
        }
    }
}

impl Plan {
    /// Whether the database matches the code: no migration to write, `check` passes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Findings no migration of ours mends: the plan is refused, naming them.
fn blocks(finding: &Finding) -> bool {
    matches!(
        finding,
        Finding::TableMissing { .. }
            | Finding::ColumnMissing { .. }
            | Finding::ColumnTypeMismatch { .. }
            | Finding::PermissivePolicy { .. }
            | Finding::TenantColumnCollation { .. }
            | Finding::SettingDefault { .. }
            | Finding::UnprotectedRelative { .. }
            | Finding::RoleBypassesRls { .. }
            | Finding::SharedTableMissing { .. }
            | Finding::CitusModeOff { .. }
    )
}

/// The changes that bring the live database (`catalog`, read for `tables`) under the
/// contract: exactly what [`verify::compare`] finds wrong, each finding turned into the
/// change that mends it, plus (with [`PlanOptions::allow_unmark`]) the removal of our
/// policies and RLS from tables no longer marked. A non-empty plan starts with the
/// contract's roles, memberships and schema usage, idempotent where they already exist,
/// so that the migration replays on a fresh server.
///
/// Refused ([`PlanError`]) when nothing is marked, when a finding cannot be mended by a
/// migration, or when RLS would be removed without `allow_unmark`.
pub fn plan(
    config: &Config,
    tables: &[MarkedTable],
    catalog: &Catalog,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let report = verify::compare(config, tables, catalog);
    let unmarked: Vec<QualifiedName> = {
        let mut unmarked: Vec<QualifiedName> = report
            .findings
            .iter()
            .filter_map(|f| match f {
                Finding::PolicyOnUnmarkedTable { table, .. } => Some(table.clone()),
                _ => None,
            })
            .collect();
        unmarked.dedup();
        unmarked
    };
    if tables.is_empty() && !options.allow_unmark {
        return Err(PlanError::NothingMarked { policed: unmarked });
    }
    let blocking: Vec<Finding> = report
        .findings
        .iter()
        .filter(|f| blocks(f))
        .cloned()
        .collect();
    if !blocking.is_empty() {
        return Err(PlanError::Blocked(blocking));
    }
    if !unmarked.is_empty() && !options.allow_unmark {
        return Err(PlanError::WouldUnmark(unmarked));
    }
    let mut changes = table_changes(config, tables, catalog, &report, &unmarked);
    if !changes.is_empty() {
        let mut preamble = preamble(config, tables, catalog, &report, options);
        preamble.append(&mut changes);
        changes = preamble;
    }
    Ok(Plan { changes, report })
}

/// The once-per-database part: both roles, their grants to the grantees, and schema usage.
/// What the database lacks is a real change (undone by `down.sql`); what it has is
/// [`Change::Ensure`]d: replayed idempotently on a fresh server, left alone by `down.sql`.
fn preamble(
    config: &Config,
    tables: &[MarkedTable],
    catalog: &Catalog,
    report: &VerifyReport,
    options: &PlanOptions,
) -> Vec<Change> {
    let missing = |finding: &Finding| report.findings.contains(finding);
    let real_or_ensured = |change: Change, is_missing: bool| {
        if is_missing {
            change
        } else {
            Change::Ensure(Box::new(change))
        }
    };
    let roles = [config.tenant_role(), config.admin_role()];
    let mut changes: Vec<Change> = roles
        .iter()
        .map(|role| {
            let is_missing = missing(&Finding::RoleMissing {
                role: role.to_string(),
            });
            real_or_ensured(
                Change::CreateRole {
                    role: role.to_string(),
                },
                is_missing,
            )
        })
        .collect();
    // Citus mode: a role that exists but cannot log in is made to (one created above is
    // created LOGIN).
    changes.extend(
        roles
            .iter()
            .filter(|role| {
                missing(&Finding::RoleCannotLogin {
                    role: role.to_string(),
                })
            })
            .map(|role| Change::AllowLogin {
                role: role.to_string(),
            }),
    );
    for grant in &options.grantees() {
        let grantee = &grant.member;
        // The catalog checked the connecting role's membership for CURRENT_USER.
        let login = match grantee {
            Grantee::Role(name) => name.clone(),
            Grantee::CurrentUser => catalog.login.name.clone(),
        };
        for role in grant.purpose.roles(config) {
            let is_missing = missing(&Finding::RoleNotGranted {
                role: role.to_string(),
                login: login.clone(),
            }) || missing(&Finding::RoleMissing {
                role: role.to_string(),
            });
            changes.push(real_or_ensured(
                Change::GrantRole {
                    role: role.to_string(),
                    member: grantee.clone(),
                },
                is_missing,
            ));
        }
    }
    let mut schemas: Vec<&str> = tables
        .iter()
        .map(|t| t.table.schema.as_str())
        .chain(catalog.shared.iter().map(|s| s.schema.as_str()))
        .collect();
    schemas.sort();
    schemas.dedup();
    for schema in schemas {
        let lacking: Vec<String> = roles
            .iter()
            .filter(|role| {
                missing(&Finding::SchemaUsageMissing {
                    schema: schema.to_string(),
                    role: role.to_string(),
                })
            })
            .map(|r| r.to_string())
            .collect();
        let having: Vec<String> = roles
            .iter()
            .map(|r| r.to_string())
            .filter(|r| !lacking.contains(r))
            .collect();
        if !lacking.is_empty() {
            changes.push(Change::GrantSchemaUsage {
                schema: schema.to_string(),
                roles: lacking,
            });
        }
        if !having.is_empty() {
            changes.push(Change::Ensure(Box::new(Change::GrantSchemaUsage {
                schema: schema.to_string(),
                roles: having,
            })));
        }
    }
    changes
}

/// The per-table changes mending `report`'s findings, and the removal of our policies and
/// RLS from the `unmarked` tables (those `report` finds carrying our policies).
fn table_changes(
    config: &Config,
    tables: &[MarkedTable],
    catalog: &Catalog,
    report: &VerifyReport,
    unmarked: &[QualifiedName],
) -> Vec<Change> {
    let admin_role_missing = report
        .findings
        .iter()
        .any(|f| matches!(f, Finding::RoleMissing { role } if role == config.admin_role()));

    let mut changes: Vec<Change> = Vec::new();
    for finding in &report.findings {
        match finding {
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
            }
            Finding::TenantColumnNullable { table, column } => changes.push(Change::SetNotNull {
                table: table.clone(),
                column: column.clone(),
            }),
            Finding::TenantDefaultDiffers {
                table,
                column,
                actual,
                ..
            } => {
                if let Some(marked) = tables.iter().find(|t| t.table == *table) {
                    changes.push(Change::SetTenantDefault {
                        table: table.clone(),
                        column: column.clone(),
                        sql_type: marked.key.sql_type,
                        previous: actual.clone(),
                    });
                }
            }
            Finding::SharedGrantMissing { table, role } => merge_grant(
                &mut changes,
                Change::GrantTable {
                    table: table.clone(),
                    privileges: vec!["SELECT".to_string()],
                    roles: vec![role.clone()],
                },
            ),
            // The preamble's part (roles, their login, memberships, schema usage), refused
            // above, or warnings only.
            Finding::RoleMissing { .. }
            | Finding::RoleNotGranted { .. }
            | Finding::SchemaUsageMissing { .. }
            | Finding::TableMissing { .. }
            | Finding::ColumnMissing { .. }
            | Finding::ColumnTypeMismatch { .. }
            | Finding::PermissivePolicy { .. }
            | Finding::TenantColumnCollation { .. }
            | Finding::SettingDefault { .. }
            | Finding::UnprotectedRelative { .. }
            | Finding::RoleBypassesRls { .. }
            | Finding::SharedTableMissing { .. }
            | Finding::NoTablesMarked
            | Finding::LoginBypassesRls { .. }
            | Finding::LoginInheritsRole { .. }
            | Finding::RoleCannotLogin { .. }
            | Finding::RoleCanLogin { .. }
            | Finding::CitusModeOff { .. }
            | Finding::NotDistributedByTenant { .. }
            | Finding::NotColocated { .. }
            | Finding::SharedNotReference { .. }
            | Finding::UnmarkedTable { .. }
            | Finding::Loophole(..) => {}
            // Warnings: `tenants generate --tenant-keys` writes their migration on request.
            Finding::CrossTenantReference(..) => {}
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
            changes.push(Change::Undo(Box::new(Change::EnableRls {
                table: table.clone(),
            })));
        }
    }
    join_roles(changes)
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
