//! Compares the live database with the `#[with_rls]` tables and reports every difference at
//! once, typed.

use std::fmt;

use diesel_async::AsyncPgConnection;

use crate::catalog::{self, Catalog, ProbeKey};
use crate::config::Config;
use crate::error::Error;
use crate::policy::QualifiedName;
use crate::registry::RlsTable;

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

/// One difference between the live database and the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A role of the contract does not exist.
    RoleMissing {
        /// The role.
        role: String,
    },
    /// The connecting role cannot `SET ROLE` to one of our roles.
    RoleNotGranted {
        /// The role.
        role: String,
        /// The connecting role.
        login: String,
    },
    /// A marked table does not exist.
    TableMissing {
        /// The table.
        table: QualifiedName,
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
        expected: String,
        /// What the database has.
        actual: String,
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
    /// The connecting role is not subject to RLS outside our roles (a warning: our roles
    /// still are, but any code path that forgets to scope reads everything).
    LoginBypassesRls {
        /// The connecting role.
        login: String,
        /// Why.
        bypass: Bypass,
    },
}

impl Finding {
    /// Errors fail `verify`; warnings are reported only.
    pub fn severity(&self) -> Severity {
        match self {
            Finding::LoginBypassesRls { .. } => Severity::Warning,
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
            Finding::TableMissing { table } => write!(f, "{table}: table does not exist"),
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
            Finding::LoginBypassesRls { login, bypass } => {
                let why = match bypass {
                    Bypass::Superuser => "a superuser",
                    Bypass::BypassRls => "BYPASSRLS",
                };
                write!(
                    f,
                    "warning: login role \"{login}\" is {why}: unscoped queries are not subject to RLS; log in as a role that is only a member of the tenant role"
                )
            }
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "  {finding}")?;
        }
        Ok(())
    }
}

const TABLE_PRIVILEGES: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];
const SEQUENCE_PRIVILEGES: [&str; 2] = ["USAGE", "SELECT"];

/// The probe keys of `tables`, as [`catalog::read`] takes them.
pub fn catalog_keys(tables: &[RlsTable]) -> Vec<(QualifiedName, ProbeKey)> {
    tables
        .iter()
        .map(|t| {
            (
                QualifiedName::new(t.schema, t.name),
                ProbeKey {
                    column: t.tenant_column.to_string(),
                    sql_type: t.sql_type,
                },
            )
        })
        .collect()
}

/// Compares `catalog` with the contract for `tables`; pure, so the CLI shares it.
pub fn compare(config: &Config, tables: &[RlsTable], catalog: &Catalog) -> VerifyReport {
    let mut findings = Vec::new();
    let our_roles = [config.tenant_role(), config.admin_role()];

    for role in &catalog.roles {
        if !role.exists {
            findings.push(Finding::RoleMissing {
                role: role.name.clone(),
            });
        } else if !role.login_is_member {
            findings.push(Finding::RoleNotGranted {
                role: role.name.clone(),
                login: catalog.login.name.clone(),
            });
        }
    }

    for table in tables {
        let name = QualifiedName::new(table.schema, table.name);
        let Some(state) = catalog
            .tables
            .iter()
            .find(|t| t.schema == table.schema && t.name == table.name)
        else {
            findings.push(Finding::TableMissing { table: name });
            continue;
        };
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

        let key = ProbeKey {
            column: table.tenant_column.to_string(),
            sql_type: table.sql_type,
        };
        let isolation = catalog
            .expected
            .isolation
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, e)| e.as_str())
            .unwrap_or_default();
        check_policy(
            &mut findings,
            catalog,
            &name,
            config.isolation_policy(),
            "public",
            isolation,
        );
        let admin_exists = catalog
            .roles
            .iter()
            .any(|r| r.name == config.admin_role() && r.exists);
        if admin_exists {
            check_policy(
                &mut findings,
                catalog,
                &name,
                config.admin_policy(),
                config.admin_role(),
                &catalog.expected.admin,
            );
        }

        for role in our_roles {
            for privilege in TABLE_PRIVILEGES {
                let granted = catalog.table_privileges.iter().any(|p| {
                    p.schema == table.schema
                        && p.name == table.name
                        && p.grantee == role
                        && p.privilege == privilege
                });
                if !granted {
                    findings.push(Finding::TableGrantMissing {
                        table: name.clone(),
                        role: role.to_string(),
                        privilege: privilege.to_string(),
                    });
                }
            }
        }
        for sequence in catalog
            .sequences
            .iter()
            .filter(|s| s.table_schema == table.schema && s.table_name == table.name)
        {
            for role in our_roles {
                for privilege in SEQUENCE_PRIVILEGES {
                    let granted = catalog.sequence_privileges.iter().any(|p| {
                        p.schema == sequence.schema
                            && p.name == sequence.name
                            && p.grantee == role
                            && p.privilege == privilege
                    });
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

    let login = &catalog.login;
    // A superuser has BYPASSRLS too; the stronger reason is the one worth reporting.
    let bypass = if login.superuser {
        Some(Bypass::Superuser)
    } else if login.bypass_rls {
        Some(Bypass::BypassRls)
    } else {
        None
    };
    if let Some(bypass) = bypass {
        findings.push(Finding::LoginBypassesRls {
            login: login.name.clone(),
            bypass,
        });
    }
    VerifyReport { findings }
}

fn check_policy(
    findings: &mut Vec<Finding>,
    catalog: &Catalog,
    table: &QualifiedName,
    policy: &str,
    role: &str,
    expected: &str,
) {
    let Some(actual) = catalog
        .policies
        .iter()
        .find(|p| p.schema == table.schema && p.table == table.name && p.name == policy)
    else {
        findings.push(Finding::PolicyMissing {
            table: table.clone(),
            policy: policy.to_string(),
        });
        return;
    };
    let describe = |permissive: &str, cmd: &str, roles: &str, using: &str, check: &str| {
        format!("{permissive} FOR {cmd} TO {roles} USING ({using}) WITH CHECK ({check})")
    };
    let want = describe("PERMISSIVE", "ALL", role, expected, expected);
    let have = describe(
        &actual.permissive,
        &actual.cmd,
        &actual.roles.join(", "),
        actual.qual.as_deref().unwrap_or(""),
        actual.with_check.as_deref().unwrap_or(""),
    );
    if want != have {
        findings.push(Finding::PolicyDiffers {
            table: table.clone(),
            policy: policy.to_string(),
            expected: want,
            actual: have,
        });
    }
}

/// Reads the catalog and compares; `Err(Error::Drift)` when any finding is an error.
pub(crate) async fn verify_async(
    conn: &mut AsyncPgConnection,
    config: &Config,
    tables: &[RlsTable],
) -> Result<VerifyReport, Error> {
    let catalog = catalog::read(conn, config, &catalog_keys(tables)).await?;
    let report = compare(config, tables, &catalog);
    if report.is_ok() {
        Ok(report)
    } else {
        Err(Error::Drift(report))
    }
}
