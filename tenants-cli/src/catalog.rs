//! Reads the marked tables from the sources and the live catalog, and compares them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tenants_core::catalog::{self as core_catalog, Catalog, MarkedTable, ProbeKey};
use tenants_core::plan::{self, Plan, PlanError, PlanOptions};
use tenants_core::policy::{self, Change, Grantee, QualifiedName, RoleGrant, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, Finding, Purpose, VerifyReport, verify};

use crate::settings::Settings;
use crate::{CliError, Options, PlanArgs, sources};

/// The database could not be reached or read.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// No connection.
    #[error(
        "cannot connect to {target}: {reason}; is PostgreSQL running there, and is --database-url / DATABASE_URL right?"
    )]
    Connect {
        /// Database, host and port, and user (never the password).
        target: String,
        /// The server's or the operating system's reason.
        reason: String,
    },
    /// A catalog query failed.
    #[error("cannot read the catalog: {0}")]
    Query(String),
    /// No async runtime could be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
}

/// Counts the statements sent, to show the catalog is read in a fixed number of them.
#[derive(Clone, Default)]
struct StatementCount(Arc<AtomicUsize>);

impl Instrumentation for StatementCount {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { .. } = event {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the sources mark and what the database has.
pub struct State {
    /// The names in use.
    pub config: Config,
    /// The marked tables, with their tenant column types.
    pub tables: Vec<MarkedTable>,
    /// The `#[shared]` tables.
    pub shared: Vec<QualifiedName>,
    /// The live catalog.
    pub catalog: Catalog,
    /// `--grant-to`, `--grant-tenant-to` and `--grant-admin-to`, as given, each with the
    /// purpose its flag grants for.
    grant_to: Vec<(String, Purpose)>,
}

/// The `--grant-to` keyword for whoever runs the migration.
const CURRENT_USER: &str = "CURRENT_USER";

fn one_line(text: impl ToString) -> String {
    text.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sources parsed and a connection open: what every subcommand starts from.
struct Session {
    runtime: tokio::runtime::Runtime,
    conn: AsyncPgConnection,
    config: Config,
    tables: Vec<MarkedTable>,
    shared: Vec<QualifiedName>,
    count: StatementCount,
}

/// A connection to `database_url`, its failure one line naming the target.
pub async fn connect(database_url: &str) -> Result<AsyncPgConnection, DatabaseError> {
    tenants_core::establish(database_url)
        .await
        .map_err(|e| match e {
            tenants_core::Error::Connect { target, reason } => DatabaseError::Connect {
                target,
                reason: one_line(reason),
            },
            other => DatabaseError::Connect {
                target: "the database".into(),
                reason: one_line(other),
            },
        })
}

/// Whether the server at `database_url` is to be worked with in Citus mode
/// ([`crate::citus_mode`]), read on `conn` from its catalog.
pub async fn citus_mode(
    options: &Options,
    database_url: &str,
    conn: &mut AsyncPgConnection,
    usage: crate::Use,
) -> Result<bool, CliError> {
    let version = core_catalog::citus_version(conn)
        .await
        .map_err(|e| DatabaseError::Query(one_line(e)))?;
    crate::citus_mode(options, database_url, version.as_deref(), usage)
}

impl Session {
    fn open(options: &Options) -> Result<Self, CliError> {
        let config = crate::config(options)?;
        let settings = Settings::resolve(options)?;
        let marks = sources::marks(&options.crate_dir, &options.schema)?;
        let marked = marks.tables.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DatabaseError::Runtime(e.to_string()))?;
        let count = StatementCount::default();
        let (conn, tables, config) = runtime.block_on(async {
            let mut conn = connect(&settings.database_url).await?;
            conn.set_instrumentation(count.clone());
            let citus = citus_mode(
                options,
                &settings.database_url,
                &mut conn,
                crate::Use::Contract,
            )
            .await?;
            let tables = resolve_types(&mut conn, marked).await?;
            Ok::<_, CliError>((conn, tables, config.with_citus(citus)))
        })?;
        // Stated once connected, so that an error stays one line.
        eprintln!("{}", marks.summary());
        Ok(Self {
            runtime,
            conn,
            config,
            tables,
            shared: marks.shared,
            count,
        })
    }
}

/// What `tenants audit` reports: the comparison's findings that weaken isolation, every
/// weakness beyond our objects and the serving `login`'s (the connecting role when
/// `None`), and the `#[shared]` tables; or, when nothing is marked, the refusal `check`
/// gives.
pub fn audit(
    options: &Options,
    login: Option<&str>,
) -> Result<Result<crate::audit::Report, PlanError>, CliError> {
    let mut session = Session::open(options)?;
    let login = match login {
        Some(name) => name.to_string(),
        None => session
            .runtime
            .block_on(diesel_async::RunQueryDsl::get_result::<String>(
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
                    "session_user::text",
                )),
                &mut session.conn,
            ))
            .map_err(|e| DatabaseError::Query(one_line(e)))?,
    };
    let weaknesses = session
        .runtime
        .block_on(crate::audit::audit(
            &mut session.conn,
            &session.config,
            &session.tables,
            &login,
        ))
        .map_err(|e| DatabaseError::Query(one_line(e)))?;
    let state = State::read_in(session, &PlanArgs::default())?;
    if state.tables.is_empty()
        && let Err(refused) = state.plan(false)
    {
        return Ok(Err(refused));
    }
    let findings = state
        .report()
        .findings
        .into_iter()
        .filter(crate::audit::weakens_isolation)
        .collect();
    Ok(Ok(crate::audit::Report {
        findings,
        weaknesses,
        shared: state.shared,
    }))
}

impl State {
    /// Parses the sources, then reads the catalog.
    pub fn read(options: &Options, plan: &PlanArgs) -> Result<Self, CliError> {
        Self::read_in(Session::open(options)?, plan)
    }

    /// Reads the catalog on an open session.
    fn read_in(mut session: Session, plan: &PlanArgs) -> Result<Self, CliError> {
        let grant_to: Vec<(String, Purpose)> = [
            (&plan.grant_to, Purpose::TenantAndAdmin),
            (&plan.grant_tenant_to, Purpose::Tenant),
            (&plan.grant_admin_to, Purpose::Admin),
        ]
        .into_iter()
        .flat_map(|(names, purpose)| names.iter().map(move |name| (name.clone(), purpose)))
        .collect();
        // Outside --full, CURRENT_USER is the connecting role, which an empty list means.
        let members: Vec<(String, Purpose)> = grant_to
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case(CURRENT_USER))
            .cloned()
            .collect();
        let catalog = session
            .runtime
            .block_on(core_catalog::read(
                &mut session.conn,
                &session.config,
                &session.tables,
                &session.shared,
                &members,
            ))
            .map_err(|e| DatabaseError::Query(one_line(e)))?;
        if let Some(unknown) = catalog.memberships.iter().find(|m| !m.member_exists) {
            return Err(CliError::UnknownRole(unknown.member.clone()));
        }
        if plan.verbose {
            eprintln!(
                "read the catalog for {} marked table(s) in {} statements",
                session.tables.len(),
                session.count.0.load(Ordering::Relaxed)
            );
        }
        Ok(Self {
            config: session.config,
            tables: session.tables,
            shared: session.shared,
            catalog,
            grant_to,
        })
    }

    /// Every difference, typed.
    pub fn report(&self) -> VerifyReport {
        verify::compare(&self.config, &self.tables, &self.catalog)
    }

    /// The one decision behind `diff`, `generate` and `check`: the changes that bring the
    /// database under the contract, or why none may be written.
    pub fn plan(&self, allow_unmark: bool) -> Result<Plan, PlanError> {
        plan::plan(
            &self.config,
            &self.tables,
            &self.catalog,
            &self.plan_options(allow_unmark),
        )
    }

    /// The `--grant-*` logins (none means both roles to CURRENT_USER, whoever runs the
    /// migration, so that it replays on a fresh server) and `--allow-unmark`.
    fn plan_options(&self, allow_unmark: bool) -> PlanOptions {
        let grant_to = self
            .grant_to
            .iter()
            .map(|(name, purpose)| RoleGrant {
                member: if name.eq_ignore_ascii_case(CURRENT_USER) {
                    Grantee::CurrentUser
                } else {
                    Grantee::Role(name.clone())
                },
                purpose: *purpose,
            })
            .collect();
        PlanOptions {
            allow_unmark,
            grant_to,
        }
    }

    /// The migration that makes every foreign key between marked tables carry the tenant
    /// column (`generate --tenant-keys`): the parents' unique keys, then the keys.
    pub fn tenant_keys(&self) -> Vec<Change> {
        policy::tenant_keys(&self.catalog.cross_tenant_keys)
    }

    /// The whole contract for every marked table, from scratch (`--full`). The tables and
    /// their tenant columns must exist all the same: their sequences come from the catalog.
    pub fn full(&self) -> Result<Vec<Change>, PlanError> {
        let missing: Vec<Finding> = self
            .report()
            .findings
            .into_iter()
            .filter(|f| {
                matches!(
                    f,
                    Finding::TableMissing { .. }
                        | Finding::ColumnMissing { .. }
                        | Finding::ColumnTypeMismatch { .. }
                )
            })
            .collect();
        if !missing.is_empty() {
            return Err(PlanError::Blocked(missing));
        }
        let specs: Vec<TableSpec> = self
            .tables
            .iter()
            .map(|t| TableSpec {
                table: t.table.clone(),
                tenant_column: t.key.column.clone(),
                sql_type: t.key.sql_type,
                sequences: self
                    .catalog
                    .sequences
                    .iter()
                    .filter(|s| s.table_schema == t.table.schema && s.table_name == t.table.name)
                    .map(|s| QualifiedName::new(&s.schema, &s.name))
                    .collect(),
            })
            .collect();
        let grantees = self.plan_options(false).grantees();
        let mut changes = policy::setup(&self.config, &specs, &grantees);
        changes.extend(policy::share(&self.config, &self.shared, &specs));
        Ok(changes)
    }
}

/// Fills in the tenant column type of tables marked only through a struct from the live
/// column (one query for all of them). A missing column keeps a placeholder type: the
/// comparison then reports the column as missing.
pub(crate) async fn resolve_types(
    conn: &mut AsyncPgConnection,
    marked: Vec<sources::Marked>,
) -> Result<Vec<MarkedTable>, DatabaseError> {
    let untyped: Vec<(QualifiedName, String)> = marked
        .iter()
        .filter(|m| m.sql_type.is_none())
        .map(|m| (m.table.clone(), m.column.clone()))
        .collect();
    let live = if untyped.is_empty() {
        Vec::new()
    } else {
        core_catalog::columns(conn, &untyped)
            .await
            .map_err(|e| DatabaseError::Query(one_line(e)))?
    };
    Ok(marked
        .into_iter()
        .map(|m| {
            let sql_type = m.sql_type.unwrap_or_else(|| {
                live.iter()
                    .find(|c| {
                        c.schema == m.table.schema
                            && c.table == m.table.name
                            && c.column == m.column
                    })
                    .and_then(|c| core_catalog::tenant_type_of(&c.type_name))
                    .unwrap_or(TenantSqlType::Text)
            });
            MarkedTable {
                table: m.table,
                key: ProbeKey {
                    column: m.column,
                    sql_type,
                },
            }
        })
        .collect())
}
