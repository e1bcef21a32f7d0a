//! Benchmarks of `tenants`, each against a fresh database on `DATABASE_URL`:
//!
//! ```text
//! cargo run --release -p tenants-bench -- <tenant_tx|round_trips|rls_scan|cli_diff|lifecycle|all> [--duration SECONDS] [--smoke]
//! TENANTS_CITUS_URL=postgres://... cargo run --release -p tenants-bench -- citus
//! ```
//!
//! Each benchmark prints its progress and figures and ends with one line
//! `bench <name>: ratio <r> (<details>)`. Sides are measured in the same run, interleaved,
//! because the machine is noisy: the ratios hold, the absolute numbers do not.

mod citus;
mod cli_diff;
mod db;
mod error;
mod lifecycle;
mod rls_scan;
mod round_trips;
mod stats;
mod tenant_tx;
mod workload;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use crate::error::Result;

/// Benchmarks of tenants: a tenant transaction against a plain one, RLS against a WHERE,
/// the CLI at scale. Needs a PostgreSQL server on DATABASE_URL (default
/// postgres://postgres@localhost:5432/postgres) whose user may create databases and roles.
#[derive(Debug, Parser)]
#[command(name = "tenants-bench")]
struct Args {
    /// The benchmark to run.
    bench: Bench,
    /// Measuring time in seconds (default 10; with --smoke 0.5). `round_trips` counts a
    /// fixed number of transactions and ignores it.
    #[arg(long)]
    duration: Option<f64>,
    /// Tiny data and duration: checks that the benchmark works, its figures mean nothing.
    #[arg(long)]
    smoke: bool,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Bench {
    /// Throughput and latency: tenant transactions against plain ones (16 tasks, pool of 10).
    TenantTx,
    /// Client-server round trips of one tenant transaction against one plain one.
    RoundTrips,
    /// Latency of a tenant's 50 newest rows: RLS against a WHERE.
    RlsScan,
    /// Wall time of `tenants diff` and `tenants check` on 500 against 50 marked tables.
    CliDiff,
    /// Export and import throughput of one tenant's 1M rows against a plain COPY.
    Lifecycle,
    /// `tenant_tx` on the Citus coordinator `TENANTS_CITUS_URL` names, with and without a
    /// tenant filter (not in `all`: CI has no Citus cluster).
    Citus,
    /// All five, one after the other.
    All,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::TenantTx => "tenant_tx",
            Bench::RoundTrips => "round_trips",
            Bench::RlsScan => "rls_scan",
            Bench::CliDiff => "cli_diff",
            Bench::Lifecycle => "lifecycle",
            Bench::Citus => "citus",
            Bench::All => "all",
        }
    }

    async fn run(self, duration: Duration, smoke: bool) -> Result<String> {
        match self {
            Bench::TenantTx => tenant_tx::run(duration, smoke).await,
            Bench::RoundTrips => round_trips::run(smoke).await,
            Bench::RlsScan => rls_scan::run(duration, smoke).await,
            Bench::CliDiff => cli_diff::run(duration, smoke).await,
            Bench::Lifecycle => lifecycle::run(smoke).await,
            Bench::Citus => citus::run(duration, smoke).await,
            Bench::All => unreachable!("`all` is expanded by main"),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seconds = args.duration.unwrap_or(if args.smoke { 0.5 } else { 10.0 });
    let Ok(duration) = Duration::try_from_secs_f64(seconds) else {
        eprintln!("error: --duration must be a non-negative number of seconds");
        return ExitCode::from(2);
    };
    let benches = match args.bench {
        Bench::All => vec![
            Bench::TenantTx,
            Bench::RoundTrips,
            Bench::RlsScan,
            Bench::CliDiff,
            Bench::Lifecycle,
        ],
        one => vec![one],
    };
    let mut lines = Vec::new();
    for bench in benches {
        println!(
            "== {}{}",
            bench.name(),
            if args.smoke { " (smoke)" } else { "" }
        );
        let started = Instant::now();
        match bench.run(duration, args.smoke).await {
            Ok(line) => {
                println!("took {:.1} s", started.elapsed().as_secs_f64());
                println!("{line}");
                lines.push(line);
            }
            Err(error) => {
                eprintln!("error: bench {} failed: {error}", bench.name());
                eprintln!(
                    "(its database tenants_bench_{}* is kept for inspection; the next run drops it)",
                    bench.name()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if lines.len() > 1 {
        println!("== summary");
        for line in lines {
            println!("{line}");
        }
    }
    ExitCode::SUCCESS
}
