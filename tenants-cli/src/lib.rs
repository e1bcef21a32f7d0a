//! The `tenants` command, as a library so that its logic is testable (the binary is a
//! thin `main`, as in sqlx-cli).
//!
//! It finds the `#[with_rls]` tables by parsing the crate's sources with the parser the
//! macro uses (the crate is not built), reads the live catalog in a fixed number of
//! queries, and turns the differences into a Diesel migration whose SQL comes from
//! `tenants_core::policy`, the one renderer of the contract.

mod audit;
mod catalog;
mod lifecycle;
mod migration;
mod output;
mod settings;
mod sources;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tenants_core::plan::PlanError;
use tenants_core::policy::{self, Change};
use tenants_core::{Config, Purpose};

use output::{out, outln};
pub use settings::Settings;

/// Diff the `#[with_rls]` tables of a crate against the live database and write the
/// Diesel migrations that put them under Row-Level Security.
#[derive(Debug, Parser)]
#[command(name = "tenants", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Each takes the options it uses and no other: an option that would
/// be ignored is refused.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the up and down SQL that `generate` would write (with the same options), or
    /// `no changes`. Exit 0 printed (changes or none); 2 on any error, a migration that
    /// `generate` refuses to write included (the reason on stderr).
    Diff(DiffArgs),
    /// Write the migration `<migration dir>/<YYYY-MM-DD-HHMMSS>_<NAME>/{up,down}.sql` and
    /// print its directory, or print `no changes` and write nothing. Exit 0 written or
    /// nothing to write; 2 on any error, a refused migration included (lost marks, a
    /// database that lacks what the code marks: the reason on stderr, nothing written).
    Generate {
        /// The migration's name.
        #[arg(long, default_value = "tenants_rls")]
        name: String,
        /// Instead of the contract, write the migration that makes every foreign key
        /// between marked tables carry the tenant column: `UNIQUE (tenant, ..)` on the
        /// referenced table where missing, the key replaced by its composite form (same
        /// name and actions); `down.sql` restores the keys as they were.
        #[arg(long)]
        tenant_keys: bool,
        /// Where migrations go (else `diesel.toml`'s `[migrations_directory] dir`, else
        /// `migrations`), relative to the crate directory.
        #[arg(long)]
        migration_dir: Option<PathBuf>,
        /// What the migration is and how it is found.
        #[command(flatten)]
        diff: DiffArgs,
    },
    /// Exit 0 when the database matches the code (`generate`, given the same options,
    /// has nothing to write), 1 listing each difference (one line each) or the reason
    /// `generate` would refuse, 2 on any error. Meant for CI. Warnings (objects no
    /// migration of ours decides about: loopholes such as views or definer functions
    /// running as a role that escapes the policies, cross-tenant foreign keys, unmarked
    /// tables) are printed with their fix and do not change the exit code: `audit` fails
    /// on them.
    Check {
        /// How the database is compared with the code.
        #[command(flatten)]
        plan: PlanArgs,
        /// Shared options.
        #[command(flatten)]
        options: Options,
    },
    /// List what weakens isolation beyond our own objects, each with its fix: views
    /// reading marked tables as an owner that escapes the policies, materialized views,
    /// SECURITY DEFINER functions and triggers of such owners, rules, LEAKPROOF functions,
    /// unique keys and exclusion constraints without the tenant column, foreign keys
    /// between marked tables without it, partitions and inheritance children (any depth)
    /// without RLS, unmarked inheritance parents, TRUNCATE, REFERENCES or TRIGGER granted
    /// to our roles or PUBLIC, other permissive policies reaching our roles, roles that
    /// bypass RLS or can log in, nondeterministic tenant column collations, tenant setting
    /// defaults, unmarked tables with a tenant column or readable by our roles; and what
    /// the serving login can do (superuser, BYPASSRLS, owner, member of the admin role,
    /// grants beyond the tenant role). Exit 0 when none, 1 listing them (or when nothing is
    /// marked), 2 on error.
    Audit {
        /// The login the application serves tenants with (default: the URL's user).
        #[arg(long)]
        login: Option<String>,
        /// Shared options.
        #[command(flatten)]
        options: Options,
    },
    /// The tenant lifecycle: list, export, import, purge.
    #[command(flatten)]
    Lifecycle(lifecycle::Command),
}

/// Options shared by every subcommand: where the database and the marks are, and the
/// names of the contract.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// The database (else `DATABASE_URL`, else `DATABASE_URL` in the crate's `.env`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// The crate whose `src/` holds the `#[with_rls]` items.
    #[arg(long, default_value = ".")]
    pub crate_dir: PathBuf,
    /// The schema of marked tables that name none.
    #[arg(long, default_value = "public")]
    pub schema: String,
    /// The role tenant transactions run as.
    #[arg(long, default_value = "tenants_user")]
    pub tenant_role: String,
    /// The role admin transactions run as.
    #[arg(long, default_value = "tenants_admin")]
    pub admin_role: String,
    /// The transaction-local setting holding the current tenant.
    #[arg(long, default_value = "tenants.current_tenant")]
    pub setting: String,
    /// Citus mode (`Config::with_citus`: policies without subqueries, roles that may log
    /// in on the workers) on a server that is NOT a Citus coordinator: diff, generate,
    /// check and audit then write and check the Citus form in a development database for a
    /// cluster (the form is valid on PostgreSQL too: the one real choice). On a Citus
    /// coordinator Citus mode is read from the server, with or without this flag; list,
    /// export, import and purge refuse it on any other server (they act on its rows).
    #[arg(long)]
    pub citus: bool,
}

/// How `diff`, `generate` and `check` compare the database with the code: `check` takes
/// the options `generate` takes, so that it passes exactly when `generate` has nothing to
/// write.
#[derive(Debug, Clone, Default, Args)]
pub struct PlanArgs {
    /// The login role(s) to grant both our roles to (default, when no --grant-* is given:
    /// the connecting role); `CURRENT_USER` means whoever runs the migration (with --full;
    /// otherwise the connecting role). A login that serves tenants should get the tenant
    /// role only (--grant-tenant-to), an admin login the admin role only (--grant-admin-to).
    #[arg(long, value_name = "LOGIN")]
    pub grant_to: Vec<String>,
    /// The login role(s) serving tenant transactions: granted the tenant role only. The
    /// role must exist (else exit 2, nothing written).
    #[arg(long, value_name = "LOGIN")]
    pub grant_tenant_to: Vec<String>,
    /// The login role(s) doing admin work: granted the admin role only. The role must
    /// exist (else exit 2, nothing written).
    #[arg(long, value_name = "LOGIN")]
    pub grant_admin_to: Vec<String>,
    /// Allow a migration that removes our policies and row level security from tables no
    /// longer marked. Without it such a plan is refused, and `check` fails: lost marks
    /// (`diesel print-schema`) must never turn RLS off silently.
    #[arg(long)]
    pub allow_unmark: bool,
    /// Also print how many statements read the catalog.
    #[arg(long)]
    pub verbose: bool,
}

/// The options of `diff`, which `generate` takes too: what the migration covers, how the
/// database is compared with the code, and the shared ones.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The whole contract for every marked table, whatever the database already has. A
    /// migration to commit and replay on any database (roles are created only where
    /// missing); with `--grant-to CURRENT_USER` it grants our roles to whoever runs it.
    #[arg(long)]
    pub full: bool,
    /// How the database is compared with the code.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Shared options.
    #[command(flatten)]
    pub options: Options,
}

/// Everything that stops a command; printed on stderr, exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A configured name is unusable.
    #[error("{0}")]
    Config(#[from] tenants_core::ConfigError),
    /// A source file could not be read or parsed, or an item is marked wrongly.
    #[error("{0}")]
    Sources(#[from] sources::SourceError),
    /// The settings (URL, diesel.toml) are unusable.
    #[error("{0}")]
    Settings(#[from] settings::SettingsError),
    /// The database could not be reached or read.
    #[error("{0}")]
    Database(#[from] catalog::DatabaseError),
    /// `--citus` for a command that acts on the server's rows, and the server is not a
    /// Citus coordinator: most likely the wrong server.
    #[error(
        "--citus, but {target} is not a Citus coordinator (its database has no citus extension)\nhint: point --database-url at the coordinator, or drop --citus; on a coordinator Citus mode is read from the server"
    )]
    NotCitus {
        /// Database, host and port, and user.
        target: String,
    },
    /// No migration may be written: nothing marked, the database lacks what the code
    /// marks, something a migration must not decide, or RLS would be removed unasked.
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// The migration could not be written.
    #[error("{0}")]
    Write(#[from] migration::WriteError),
    /// A login named by --grant-to, --grant-tenant-to or --grant-admin-to does not exist.
    #[error(
        "role \"{0}\" does not exist; nothing written\nhint: create the login first (`CREATE ROLE \"{0}\" LOGIN;`), or correct the name"
    )]
    UnknownRole(String),
}

/// Runs `cli`, printing results on stdout and errors on stderr; returns the exit code.
/// A closed stdout does not change it; any other failure to write stdout makes it 2.
pub fn main_with(cli: Cli) -> ExitCode {
    let code = match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    };
    match output::failure() {
        Some(failure) => {
            eprintln!("error: cannot write to stdout: {failure}");
            ExitCode::from(2)
        }
        None => code,
    }
}

/// Runs `cli`; `Ok` carries the exit code of a command that ran to its end.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Lifecycle(command) => Ok(lifecycle::run(command)),
        Command::Diff(diff) => {
            let (config, changes) = changes(&diff)?;
            if changes.is_empty() {
                outln!("no changes");
            } else {
                outln!("-- up.sql");
                out!("{}", policy::render_up(&config, &changes));
                outln!("-- down.sql");
                out!("{}", policy::render_down(&config, &changes));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            name,
            migration_dir,
            tenant_keys,
            diff,
        } => {
            let (config, changes) = if tenant_keys {
                let state = catalog::State::read(&diff.options, &diff.plan)?;
                let changes = state.tenant_keys();
                (state.config, changes)
            } else {
                changes(&diff)?
            };
            if changes.is_empty() {
                outln!("no changes");
                return Ok(ExitCode::SUCCESS);
            }
            let migration_dir = settings::migration_dir(&diff.options.crate_dir, migration_dir)?;
            let dir = migration::write(
                &migration_dir,
                &name,
                &policy::render_up(&config, &changes),
                &policy::render_down(&config, &changes),
            )?;
            outln!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { login, options } => audit_command(&options, login.as_deref()),
        Command::Check { plan, options } => check(&options, &plan),
    }
}

/// `check`: exit 0 exactly when `generate` has nothing to write, by asking the same
/// planner; 1 when it would write a migration or must refuse one.
fn check(options: &Options, plan_args: &PlanArgs) -> Result<ExitCode, CliError> {
    let state = catalog::State::read(options, plan_args)?;
    match state.plan(plan_args.allow_unmark) {
        Ok(plan) if plan.is_empty() => {
            for warning in plan.report.warnings() {
                outln!("{warning}\n  hint: {}", warning.hint());
            }
            outln!(
                "the database matches the {} #[with_rls] table(s)",
                state.tables.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(plan) => {
            let differences = &plan.report.findings;
            for difference in differences {
                outln!("{difference}\n  hint: {}", difference.hint());
            }
            outln!(
                "{} difference(s); run `tenants generate`, then `diesel migration run`",
                differences.len()
            );
            Ok(ExitCode::from(1))
        }
        Err(refused) => {
            outln!("{refused}");
            Ok(ExitCode::from(1))
        }
    }
}

fn audit_command(options: &Options, login: Option<&str>) -> Result<ExitCode, CliError> {
    let report = match catalog::audit(options, login)? {
        Ok(report) => report,
        Err(refused) => {
            outln!("{refused}");
            return Ok(ExitCode::from(1));
        }
    };
    // Listed, not counted: a shared table is readable by every tenant on purpose.
    for table in &report.shared {
        outln!("shared: {table} is readable by every tenant (#[shared], not under RLS)");
    }
    let count = report.findings.len() + report.weaknesses.len();
    if count == 0 {
        outln!("nothing weakens isolation");
        return Ok(ExitCode::SUCCESS);
    }
    for finding in &report.findings {
        outln!("{finding}\n  hint: {}", finding.hint());
    }
    for weakness in &report.weaknesses {
        outln!("{weakness}");
    }
    outln!("{count} weakness(es)");
    Ok(ExitCode::from(1))
}

/// The names the options give, Citus mode off: [`citus_mode`] decides it, with the server.
///
/// The CLI runs as whoever migrates (the owner, often a superuser), so its login may
/// bypass RLS; the connecting role, when it is the grantee, gets both roles.
pub fn config(options: &Options) -> Result<Config, tenants_core::ConfigError> {
    Config::default()
        .with_tenant_role(&options.tenant_role)?
        .with_admin_role(&options.admin_role)?
        .with_setting(&options.setting)
        .map(|config| {
            config
                .with_purpose(Purpose::TenantAndAdmin)
                .with_bypassing_login(true)
        })
}

/// What a command does with the server, for [`citus_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Reads the catalog and writes or checks the contract (diff, generate, check, audit).
    Contract,
    /// Reads or changes a tenant's rows (list, export, import, purge).
    Rows,
}

/// Citus mode, from the server's catalog (`citus_version`: its Citus extension, if any):
/// on a Citus coordinator always on (off, the workers would get no tenant and a command
/// would report success over nothing). Elsewhere `--citus` turns it on for the contract
/// (a development database for a cluster) and is refused for rows.
pub fn citus_mode(
    options: &Options,
    database_url: &str,
    citus_version: Option<&str>,
    usage: Use,
) -> Result<bool, CliError> {
    match (citus_version, options.citus, usage) {
        (Some(_), _, _) => Ok(true),
        (None, true, Use::Rows) => Err(CliError::NotCitus {
            target: tenants_core::describe_target(database_url)
                .unwrap_or_else(|_| "the database".into()),
        }),
        (None, flag, _) => Ok(flag),
    }
}

fn changes(diff: &DiffArgs) -> Result<(Config, Vec<Change>), CliError> {
    let state = catalog::State::read(&diff.options, &diff.plan)?;
    let changes = if diff.full {
        state.full()?
    } else {
        state.plan(diff.plan.allow_unmark)?.changes
    };
    Ok((state.config, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(citus: bool) -> Options {
        let flag: &[&str] = if citus { &["--citus"] } else { &[] };
        match Cli::parse_from([&["tenants", "check"][..], flag].concat()).command {
            Command::Check { options, .. } => options,
            _ => unreachable!("parsed check"),
        }
    }

    #[test]
    fn citus_mode_is_the_servers_and_the_flag_only_a_choice_for_the_contract() {
        let url = "postgres://app@db:5432/shop";
        for usage in [Use::Contract, Use::Rows] {
            for flag in [false, true] {
                assert!(matches!(
                    citus_mode(&options(flag), url, Some("13.2-1"), usage),
                    Ok(true)
                ));
            }
            assert!(matches!(
                citus_mode(&options(false), url, None, usage),
                Ok(false)
            ));
        }
        assert!(matches!(
            citus_mode(&options(true), url, None, Use::Contract),
            Ok(true)
        ));
        assert!(matches!(
            citus_mode(&options(true), url, None, Use::Rows),
            Err(CliError::NotCitus { target }) if target.contains("\"shop\" on db:5432")
        ));
    }
}
