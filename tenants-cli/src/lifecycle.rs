//! `tenants list | export | import | purge`: the tenant lifecycle over every table the
//! crate's sources mark, through `tenants_core::lifecycle`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use tenants_core::TenantPool;
use tenants_core::catalog::MarkedTable;
use tenants_core::lifecycle::{
    self, EmptyExport, LifecycleError, PurgeMode, TableRows, display_tenant, plain_name,
};
use tenants_core::policy::QualifiedName;
use tenants_core::verify::{self, Finding};

use crate::output::{out, outln};
use crate::settings::Settings;
use crate::{CliError, Options, sources};

/// The lifecycle subcommands, flattened into the CLI's `Command`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every tenant id found in the marked tables, with its row count per table and in
    /// total, sorted (read as admin; one statement, a scan of each table). Exit 0 listed (none
    /// included), 2 on error.
    List {
        /// Print JSON: `{"tenants": [{"tenant", "tables": [{"table", "rows"}], "total"}]}`.
        #[arg(long)]
        json: bool,
        /// Shared options.
        #[command(flatten)]
        options: Options,
    },
    /// Write the tenant's rows of every marked table, read in one REPEATABLE READ tenant
    /// transaction, to a new directory: one file per table in COPY's text format and
    /// manifest.json, readable by their owner only. A table neither marked nor shared that
    /// has a column named like a tenant column is not exported: a warning on stderr names
    /// it. Exit 0 written, 1 when DIR is not empty or the tenant has no rows (a mistyped id;
    /// see --allow-empty) and nothing was written, 2 on error.
    Export {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The directory to create (it may exist if empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Write the export even when the tenant has no rows at all.
        #[arg(long)]
        allow_empty: bool,
        /// Shared options.
        #[command(flatten)]
        options: Options,
    },
    /// Load an export into this (migrated) database in one tenant transaction, parents
    /// before children, ids kept, sequences advanced past them; checksums and columns are
    /// checked before anything is written, and any failure rolls everything back.
    /// Exit 0 loaded, 2 on error (nothing written).
    Import {
        /// The tenant; must be the export's.
        #[arg(long)]
        tenant: String,
        /// The export directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Shared options.
        #[command(flatten)]
        options: Options,
    },
    /// Delete the tenant's rows from every marked table, children before parents, in one
    /// tenant transaction, printing the count per table. Without --yes it only reports
    /// what it would delete. Exit 0 deleted, 1 nothing deleted (no --yes, --dry-run, or no
    /// rows), 2 on error.
    Purge {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Only report what would be deleted (the default without --yes).
        #[arg(long)]
        dry_run: bool,
        /// Delete for good.
        #[arg(long)]
        yes: bool,
        /// Shared options.
        #[command(flatten)]
        options: Options,
    },
}

/// What stops a lifecycle command.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Sources, settings or configuration.
    #[error("{0}")]
    Cli(#[from] CliError),
    /// The operation itself.
    #[error("{0}")]
    Lifecycle(#[from] LifecycleError),
    /// No async runtime.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The sources mark no table: an operation over "every marked table" would silently
    /// do nothing (marks lost to `diesel print-schema` look exactly like this).
    #[error(
        "no #[with_rls] table in {}\nhint: point --crate-dir at the crate holding the marked tables",
        .0.display()
    )]
    NothingMarked(PathBuf),
}

/// Runs `command`: results on stdout, errors on stderr; returns the exit code.
pub fn run(command: Command) -> ExitCode {
    match execute(command) {
        Ok(code) => code,
        Err(Failure::Lifecycle(
            error @ (LifecycleError::OutputNotEmpty(_) | LifecycleError::NoRows { .. }),
        )) => {
            eprintln!("refused: {error}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn execute(command: Command) -> Result<ExitCode, Failure> {
    let options = match &command {
        Command::List { options, .. }
        | Command::Export { options, .. }
        | Command::Import { options, .. }
        | Command::Purge { options, .. } => options.clone(),
    };
    let config = crate::config(&options).map_err(CliError::from)?;
    let settings = Settings::resolve(&options).map_err(CliError::from)?;
    let marks = sources::marks(&options.crate_dir, &options.schema).map_err(CliError::from)?;
    if marks.tables.is_empty() {
        return Err(Failure::NothingMarked(marks.src));
    }
    let marked = marks.tables;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::Runtime)?;
    runtime.block_on(async {
        // Citus mode from the server's catalog: outside it a coordinator's workers get no
        // tenant, and every command would report success over zero rows.
        let mut conn = crate::catalog::connect(&settings.database_url)
            .await
            .map_err(CliError::from)?;
        let citus = crate::catalog::citus_mode(
            &options,
            &settings.database_url,
            &mut conn,
            crate::Use::Rows,
        )
        .await?;
        drop(conn);
        let config = config.with_citus(citus);
        let pool = TenantPool::connect_with(
            &settings.database_url,
            config,
            bb8::Pool::builder().max_size(1),
        )
        .await
        .map_err(LifecycleError::from)?;
        let tables = marked_tables(&pool, marked).await?;
        // An export holds the marked tables only: say which tables look like tenant data
        // but are not marked (a forgotten `#[with_rls]`), so that leaving them out is never
        // silent.
        let forgotten = match &command {
            Command::Export { .. } => forgotten_tables(&pool, &tables, &marks.shared).await?,
            _ => Vec::new(),
        };
        match command {
            Command::List { json, .. } => list(&pool, &tables, json).await,
            Command::Export {
                tenant,
                out,
                allow_empty,
                ..
            } => {
                let empty = if allow_empty {
                    EmptyExport::Write
                } else {
                    EmptyExport::Refuse
                };
                let manifest =
                    lifecycle::export_tenant(&pool, &tables, &tenant, &out, empty).await?;
                for finding in &forgotten {
                    eprintln!("{finding}: not exported\nhint: {}", finding.hint());
                }
                for table in &manifest.tables {
                    outln!("{}.{}\t{}", table.schema, table.name, table.rows);
                }
                let total: u64 = manifest.tables.iter().map(|t| t.rows).sum();
                outln!(
                    "exported {total} rows of tenant {} to {}",
                    display_tenant(&manifest.tenant),
                    out.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Import { tenant, from, .. } => {
                let report = lifecycle::import_tenant(&pool, &tables, &tenant, &from).await?;
                print_rows(&report.tables);
                for sequence in &report.sequences_advanced {
                    outln!("advanced sequence {sequence}");
                }
                let total: u64 = report.tables.iter().map(|t| t.rows).sum();
                outln!("imported {total} rows of tenant {}", display_tenant(&report.tenant));
                Ok(ExitCode::SUCCESS)
            }
            Command::Purge {
                tenant,
                dry_run,
                yes,
                ..
            } => {
                let mode = if yes && !dry_run {
                    PurgeMode::Delete
                } else {
                    PurgeMode::DryRun
                };
                let report = lifecycle::purge_tenant(&pool, &tables, &tenant, mode).await?;
                print_rows(&report.tables);
                let total = report.total();
                if report.deleted {
                    outln!("deleted {total} rows of tenant {}", display_tenant(&report.tenant));
                    Ok(if total == 0 {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                } else {
                    outln!(
                        "would delete {total} rows of tenant {}; nothing deleted (pass --yes to delete)",
                        display_tenant(&report.tenant)
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
    })
}

/// `check`'s `UnmarkedTable` findings of tables with a column named like a marked table's
/// tenant column (unmarked and unshared), from the same catalog read and comparison.
async fn forgotten_tables(
    pool: &TenantPool,
    tables: &[MarkedTable],
    shared: &[QualifiedName],
) -> Result<Vec<Finding>, Failure> {
    let mut conn = pool.admin().await.map_err(LifecycleError::from)?;
    let catalog = tenants_core::catalog::read(&mut conn, pool.config(), tables, shared, &[])
        .await
        .map_err(|e| LifecycleError::from(tenants_core::Error::from(e)))?;
    conn.commit().await.map_err(LifecycleError::from)?;
    Ok(verify::compare(pool.config(), tables, &catalog)
        .findings
        .into_iter()
        .filter(|finding| {
            matches!(
                finding,
                Finding::UnmarkedTable {
                    tenant_column: Some(_),
                    ..
                }
            )
        })
        .collect())
}

/// The marked tables with their tenant column types (struct-only marks take theirs from
/// the live column), as every other subcommand resolves them.
async fn marked_tables(
    pool: &TenantPool,
    marked: Vec<sources::Marked>,
) -> Result<Vec<MarkedTable>, Failure> {
    // A catalog read: the admin transaction is just a connection from the pool here.
    let mut conn = pool.admin().await.map_err(LifecycleError::from)?;
    let tables = crate::catalog::resolve_types(&mut conn, marked)
        .await
        .map_err(CliError::from)?;
    conn.commit().await.map_err(LifecycleError::from)?;
    Ok(tables)
}

async fn list(pool: &TenantPool, tables: &[MarkedTable], json: bool) -> Result<ExitCode, Failure> {
    let list = lifecycle::list_tenants(pool, tables).await?;
    if json {
        match serde_json::to_string_pretty(&list) {
            Ok(text) => outln!("{text}"),
            Err(e) => {
                eprintln!("error: cannot render JSON: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    } else if list.tenants.is_empty() {
        outln!("no tenants: the marked tables hold no rows");
    } else {
        out!("{}", list.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: &[TableRows]) {
    for table in rows {
        outln!("{}\t{}", plain_name(&table.table), table.rows);
    }
}
