//! `cli_diff`: wall time of the real `tenants` binary as the number of marked tables grows.
//!
//! For a small and a large crate (50 and 500 marked tables), in a fresh database each:
//! `tenants diff` while every table still needs RLS, then the printed `up.sql` is applied,
//! then `tenants check` while none does. The catalog is read in a fixed number of
//! statements, so the time should grow far slower than the table count.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;

use crate::db::{self, BenchDb, OWNER};
use crate::error::{BenchError, IoContext, Result};
use crate::stats;

/// The guard on `ratio`: 500 tables cost at most this many times 50 tables.
const MAX_RATIO: f64 = 5.0;
/// The guard on `check` over the large fixture.
const MAX_LARGE_CHECK: Duration = Duration::from_millis(250);

/// Runs the benchmark, spending about `duration` on the timed runs, and returns its
/// `bench` line.
pub async fn run(duration: Duration, smoke: bool) -> Result<String> {
    let (small, large) = if smoke { (5, 50) } else { (50, 500) };
    let binary = tenants_binary()?;
    println!("tenants binary: {}", binary.display());
    // Four timed commands share the budget; each runs at least `min_runs` times.
    let budget = duration / 4;
    let min_runs = if smoke { 1 } else { 5 };
    let small_times = measure(&binary, small, budget, min_runs).await?;
    let large_times = measure(&binary, large, budget, min_runs).await?;
    let diff_ratio = ratio_of_medians(&large_times.diff, &small_times.diff);
    let check_ratio = ratio_of_medians(&large_times.check, &small_times.check);
    let ratio = diff_ratio.max(check_ratio);
    // The guard (the earlier 2.0 target is retired: PostgreSQL deparses every policy for
    // pg_policies, a cost per table): ten times the tables costs at most five times as
    // much, and `check` on the large fixture stays interactive.
    let large_check = stats::median(&large_times.check);
    let guard_met = ratio <= MAX_RATIO && (smoke || large_check <= MAX_LARGE_CHECK);
    println!(
        "guard: ratio <= {MAX_RATIO} (the larger of the diff and check ratios) and check on {large} tables <= {} ms",
        MAX_LARGE_CHECK.as_millis()
    );
    Ok(format!(
        "bench cli_diff: ratio {ratio:.3} (median diff {} for {small} tables, {} for {large}: {diff_ratio:.3}; check {} / {}: {check_ratio:.3}; {} and {} runs; guard {})",
        stats::ms(stats::median(&small_times.diff)),
        stats::ms(stats::median(&large_times.diff)),
        stats::ms(stats::median(&small_times.check)),
        stats::ms(large_check),
        small_times.diff.len(),
        large_times.diff.len(),
        if guard_met { "met" } else { "MISSED" },
    ))
}

/// The sorted wall times of one table count.
#[derive(Debug, Default)]
struct Times {
    diff: Vec<Duration>,
    check: Vec<Duration>,
}

/// median(`large`) / median(`small`), both sorted.
fn ratio_of_medians(large: &[Duration], small: &[Duration]) -> f64 {
    stats::median(large).as_secs_f64() / stats::median(small).as_secs_f64()
}

/// Times `diff` then `check` on `tables` marked tables.
async fn measure(binary: &Path, tables: usize, budget: Duration, min_runs: usize) -> Result<Times> {
    let db = BenchDb::create(&format!("tenants_bench_cli_diff_{tables}")).await?;
    let mut conn = db.connect().await?;
    db::ensure_owner(&mut conn).await?;
    let mut ddl = String::new();
    let mut source = String::from("//! Fixture of the cli_diff benchmark.\n\n");
    for i in 0..tables {
        ddl.push_str(&format!(
            "CREATE TABLE t{i} (id serial PRIMARY KEY, tenant text NOT NULL, name text NOT NULL);\n"
        ));
        source.push_str(&format!(
            "#[tenants_core::with_rls]\ndiesel::table! {{\n    t{i} (id) {{\n        id -> Int4,\n        tenant -> Text,\n        name -> Text,\n    }}\n}}\n\n"
        ));
    }
    conn.batch_execute(&ddl).await?;
    let dir = std::env::temp_dir().join(format!("{}_{}", db.name(), std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("src/lib.rs"), &source)
        .context(|| format!("write {}/src/lib.rs", dir.display()))?;
    println!(
        "{tables} tables created; fixture crate {} ({} KiB of table! items)",
        dir.display(),
        source.len() / 1024
    );

    let url = db.url();
    let tenants = |command: &str| {
        let mut cmd = Command::new(binary);
        cmd.arg(command)
            .arg("--crate-dir")
            .arg(&dir)
            .arg("--database-url")
            .arg(&url)
            // Not the connecting superuser: its memberships are shared with the tests.
            .args(["--grant-to", OWNER])
            .env_remove("DATABASE_URL");
        cmd
    };

    let mut times = Times::default();
    let mut up_sql = String::new();
    let started = Instant::now();
    while times.diff.len() < min_runs || started.elapsed() < budget {
        let (took, stdout) = run_ok(tenants("diff"))?;
        let enabled = stdout.matches("ENABLE ROW LEVEL SECURITY").count();
        if enabled != tables {
            return Err(BenchError::Failed(format!(
                "tenants diff enabled RLS on {enabled} tables, expected {tables}"
            )));
        }
        up_sql = stdout
            .split_once("-- up.sql")
            .and_then(|(_, rest)| rest.split_once("-- down.sql"))
            .map(|(up, _)| up.to_string())
            .ok_or_else(|| BenchError::Failed("tenants diff printed no up.sql".into()))?;
        times.diff.push(took);
    }
    db::batch_locked(&mut conn, &up_sql).await?;
    println!("applied the up.sql tenants diff printed");
    let started = Instant::now();
    while times.check.len() < min_runs || started.elapsed() < budget {
        let (took, _) = run_ok(tenants("check"))?;
        times.check.push(took);
    }
    drop(conn);
    db.drop_db().await?;
    let _ = std::fs::remove_dir_all(&dir);

    times.diff.sort_unstable();
    times.check.sort_unstable();
    println!(
        "{tables:>4} tables: diff median {} ({} runs), check median {} ({} runs)",
        stats::ms(stats::median(&times.diff)),
        times.diff.len(),
        stats::ms(stats::median(&times.check)),
        times.check.len()
    );
    Ok(times)
}

/// Runs `cmd`, requires exit code 0, returns its wall time and stdout.
fn run_ok(mut cmd: Command) -> Result<(Duration, String)> {
    let began = Instant::now();
    let output = cmd.output().context(|| format!("run {cmd:?}"))?;
    let took = began.elapsed();
    if !output.status.success() {
        return Err(BenchError::Failed(format!(
            "{cmd:?} exited with {} (expected 0)\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok((took, String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The `tenants` binary to measure: `$TENANTS_BIN` when set; otherwise the bench builds
/// it with `cargo build -p tenants-cli` in its own profile (a no-op when it is up to
/// date, so a stale binary is never measured) and takes it from the directory the bench
/// binary itself runs from (`target/release` under `cargo run --release`).
fn tenants_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TENANTS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context(|| "locate the bench binary".into())?;
    let dir = exe
        .parent()
        .ok_or_else(|| BenchError::Failed(format!("{} has no directory", exe.display())))?;
    let binary = dir.join(format!("tenants{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--quiet", "-p", "tenants-cli", "--bin", "tenants"])
        .arg("--manifest-path")
        .arg(&manifest);
    if dir.file_name().is_some_and(|d| d == "release") {
        build.arg("--release");
    }
    println!("building the CLI: {build:?}");
    let status = build.status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            return Err(BenchError::Failed(format!(
                "{build:?} failed ({status}); build it yourself (`cargo build --release -p tenants-cli`) or set TENANTS_BIN"
            )));
        }
        // No cargo here (a copied bench binary): use what lies beside it.
        Err(error) if binary.exists() => {
            println!("cannot run cargo ({error}); using the existing binary");
        }
        Err(error) => {
            return Err(BenchError::Io {
                context: format!("run {build:?}"),
                source: error,
            });
        }
    }
    if !binary.exists() {
        return Err(BenchError::Failed(format!(
            "{} does not exist; run `cargo build --release -p tenants-cli` or set TENANTS_BIN",
            binary.display()
        )));
    }
    Ok(binary)
}
