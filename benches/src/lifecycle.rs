//! `lifecycle`: export and import throughput of one tenant's rows, against a plain `COPY`
//! of the same rows; the cost of `list` and `purge` on the same table.
//!
//! One table holds one tenant's N rows (1M; 10k with --smoke), so that `COPY life_item`
//! moves exactly the rows the export does. Each round runs, in turn: plain `COPY TO`
//! (CSV into memory, as the superuser, whom RLS does not apply to), `export_tenant` (as
//! the owner, through RLS, into files with their checksums), `TRUNCATE` + plain `COPY FROM`
//! of the CSV, `purge_tenant`, `TRUNCATE` (untimed) + `import_tenant` of the export: both
//! loads start from the same empty table. (Straight after the purge's `DELETE`, the table
//! holds the tenant's rows dead, and every insert of the same key checks its dead twin in
//! the heap: about 1.7x the time for `COPY FROM` and the import alike, a cost of the
//! table's state, not of either load.) The ratios are export / COPY TO and import / COPY FROM
//! throughput (rows/s), medians over the rounds. `list` is timed with the table's
//! `(tenant, id)` index (an index-only scan once vacuumed) and without it (a sequential
//! scan). Memory: the process's peak RSS is reset before the export and the import
//! (`/proc/self/clear_refs`) and read after each (`VmHWM`); the figure is how far the peak
//! rose above the RSS before the operation (the baseline's CSV is resident meanwhile).

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use diesel::pg::{CopyFormat, CopyHeader};
use diesel::{Connection, ExecuteCopyFromDsl, PgConnection};
use diesel_async::SimpleAsyncConnection;
use tenants_core::catalog::{MarkedTable, ProbeKey};
use tenants_core::lifecycle::{self, PurgeMode};
use tenants_core::policy::{Grantee, QualifiedName, RoleGrant, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, TenantPool};

use crate::db::{self, BenchDb, OWNER};
use crate::error::{BenchError, IoContext, Result};
use crate::stats;

/// The one tenant of the table.
const TENANT: &str = "big";

diesel::table! {
    /// The benchmark table, for diesel's typed `COPY`.
    life_item (id) {
        /// Primary key (identity).
        id -> Int8,
        /// The tenant.
        tenant -> Text,
        /// Payload.
        title -> Text,
        /// Payload.
        amount -> Numeric,
        /// Payload.
        created -> Timestamptz,
        /// Payload.
        done -> Bool,
    }
}

/// The figures of one round.
#[derive(Debug, Default, Clone, Copy)]
struct Round {
    copy_out: Duration,
    export: Duration,
    copy_in: Duration,
    purge: Duration,
    import: Duration,
    /// Peak RSS above the RSS before the export, in bytes.
    export_rss: u64,
    /// Peak RSS above the RSS before the import, in bytes.
    import_rss: u64,
}

/// Runs the benchmark and returns its `bench` line.
pub async fn run(smoke: bool) -> Result<String> {
    let (rows, rounds) = if smoke { (10_000, 1) } else { (1_000_000, 3) };
    let db = BenchDb::create("tenants_bench_lifecycle").await?;
    load(&db, rows).await?;
    let pool = TenantPool::connect_with(
        &db.url_as(OWNER),
        Config::default(),
        bb8::Pool::builder().max_size(1),
    )
    .await?;
    let tables = vec![MarkedTable {
        table: QualifiedName::new("public", "life_item"),
        key: ProbeKey {
            column: "tenant".into(),
            sql_type: TenantSqlType::Text,
        },
    }];
    let mut plain = PgConnection::establish(&db.url())?;
    let dir = std::env::temp_dir().join(format!("tenants_bench_lifecycle_{}", std::process::id()));
    std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;

    let mut measured = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let out = dir.join(format!("round{round}"));
        let figures = one_round(&mut plain, &pool, &tables, &out, rows).await?;
        println!(
            "round {round}: COPY TO {}, export {} (peak RSS +{}), COPY FROM {}, purge {}, import {} (peak RSS +{})",
            secs(figures.copy_out),
            secs(figures.export),
            mib(figures.export_rss),
            secs(figures.copy_in),
            secs(figures.purge),
            secs(figures.import),
            mib(figures.import_rss)
        );
        std::fs::remove_dir_all(&out).context(|| format!("remove {}", out.display()))?;
        measured.push(figures);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let (list_indexed, list_scan) = time_list(&db, &pool, &tables, rows).await?;
    drop(pool);
    drop(plain);
    db.drop_db().await?;

    let median = |pick: fn(&Round) -> Duration| {
        let mut all: Vec<Duration> = measured.iter().map(pick).collect();
        all.sort_unstable();
        stats::median(&all)
    };
    let per_s = |d: Duration| rows as f64 / d.as_secs_f64().max(f64::EPSILON);
    let (copy_out, export) = (median(|r| r.copy_out), median(|r| r.export));
    let (copy_in, import) = (median(|r| r.copy_in), median(|r| r.import));
    let purge = median(|r| r.purge);
    let export_rss = measured.iter().map(|r| r.export_rss).max().unwrap_or(0);
    let import_rss = measured.iter().map(|r| r.import_rss).max().unwrap_or(0);
    let export_ratio = per_s(export) / per_s(copy_out);
    let import_ratio = per_s(import) / per_s(copy_in);
    Ok(format!(
        "bench lifecycle: ratio export {export_ratio:.3} import {import_ratio:.3} of COPY (export {:.0} rows/s vs COPY TO {:.0}; import {:.0} rows/s vs COPY FROM {:.0}; purge {:.0} rows/s; list {} with the (tenant, id) index, {} without; peak RSS +{} exporting, +{} importing; {rows} rows of one tenant, median of {rounds} round(s))",
        per_s(export),
        per_s(copy_out),
        per_s(import),
        per_s(copy_in),
        per_s(purge),
        stats::ms(list_indexed),
        stats::ms(list_scan),
        mib(export_rss),
        mib(import_rss),
    ))
}

async fn one_round(
    plain: &mut PgConnection,
    pool: &TenantPool,
    tables: &[MarkedTable],
    out: &Path,
    rows: u64,
) -> Result<Round> {
    let mut round = Round::default();

    let began = Instant::now();
    let mut csv = Vec::new();
    diesel::copy_to(life_item::table)
        .with_format(CopyFormat::Csv)
        .with_header(true)
        .load_raw(plain)?
        .read_to_end(&mut csv)
        .context(|| "read COPY TO output".into())?;
    round.copy_out = began.elapsed();
    check(
        csv.iter().filter(|&&b| b == b'\n').count() as u64,
        rows + 1,
        "COPY TO lines",
    )?;

    let before = reset_peak_rss();
    let began = Instant::now();
    let manifest =
        lifecycle::export_tenant(pool, tables, TENANT, out, lifecycle::EmptyExport::Refuse)
            .await
            .map_err(lifecycle_error)?;
    round.export = began.elapsed();
    round.export_rss = peak_rss().saturating_sub(before);
    check(
        manifest.tables.iter().map(|t| t.rows).sum(),
        rows,
        "exported rows",
    )?;

    diesel::connection::SimpleConnection::batch_execute(plain, "TRUNCATE life_item")?;
    let began = Instant::now();
    let copied = diesel::copy_from(life_item::table)
        .from_raw_data(life_item::table, |sink: &mut dyn Write| {
            sink.write_all(&csv)
                .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))
        })
        .with_format(CopyFormat::Csv)
        .with_header(CopyHeader::Set(true))
        .execute(plain)?;
    round.copy_in = began.elapsed();
    check(copied as u64, rows, "COPY FROM rows")?;

    let began = Instant::now();
    let purged = lifecycle::purge_tenant(pool, tables, TENANT, PurgeMode::Delete)
        .await
        .map_err(lifecycle_error)?;
    round.purge = began.elapsed();
    check(purged.total(), rows, "purged rows")?;
    // The state `COPY FROM` started from: no dead rows (see the module documentation).
    diesel::connection::SimpleConnection::batch_execute(plain, "TRUNCATE life_item")?;

    let before = reset_peak_rss();
    let began = Instant::now();
    let imported = lifecycle::import_tenant(pool, tables, TENANT, out)
        .await
        .map_err(lifecycle_error)?;
    round.import = began.elapsed();
    round.import_rss = peak_rss().saturating_sub(before);
    check(
        imported.tables.iter().map(|t| t.rows).sum(),
        rows,
        "imported rows",
    )?;
    Ok(round)
}

/// `list` on the vacuumed table with its `(tenant, id)` index, then without it.
async fn time_list(
    db: &BenchDb,
    pool: &TenantPool,
    tables: &[MarkedTable],
    rows: u64,
) -> Result<(Duration, Duration)> {
    let mut conn = db.connect().await?;
    conn.batch_execute("VACUUM ANALYZE life_item").await?;
    let mut timed = [Duration::ZERO; 2];
    for (i, slot) in timed.iter_mut().enumerate() {
        if i == 1 {
            conn.batch_execute("DROP INDEX life_item_tenant_id_idx")
                .await?;
        }
        let mut runs = Vec::new();
        for _ in 0..3 {
            let began = Instant::now();
            let list = lifecycle::list_tenants(pool, tables)
                .await
                .map_err(lifecycle_error)?;
            runs.push(began.elapsed());
            check(
                list.tenants.iter().map(|t| t.total).sum(),
                rows,
                "listed rows",
            )?;
        }
        runs.sort_unstable();
        *slot = stats::median(&runs);
    }
    Ok((timed[0], timed[1]))
}

/// Creates the table (identity id, index on `(tenant, id)`), fills it with `rows` rows of
/// [`TENANT`] and puts it under RLS, owned by [`OWNER`].
async fn load(db: &BenchDb, rows: u64) -> Result<()> {
    let started = Instant::now();
    let mut conn = db.connect().await?;
    db::ensure_owner(&mut conn).await?;
    conn.batch_execute(&format!(
        "CREATE TABLE life_item (
           id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
           tenant text NOT NULL,
           title text NOT NULL,
           amount numeric(12, 2) NOT NULL,
           created timestamptz NOT NULL,
           done bool NOT NULL
         );
         INSERT INTO life_item (tenant, title, amount, created, done)
           SELECT '{TENANT}', 'item ' || g || ' ' || md5(g::text), g * 0.01,
                  timestamptz '2026-01-01 00:00+00' + g * interval '1 second', g % 3 = 0
           FROM generate_series(1, {rows}) g;
         CREATE INDEX life_item_tenant_id_idx ON life_item (tenant, id);
         ALTER TABLE life_item OWNER TO {OWNER};"
    ))
    .await?;
    db::apply_rls(
        &mut conn,
        &[TableSpec {
            table: QualifiedName::new("public", "life_item"),
            tenant_column: "tenant".into(),
            sql_type: TenantSqlType::Text,
            sequences: vec![QualifiedName::new("public", "life_item_id_seq")],
        }],
        &[RoleGrant::both(Grantee::Role(OWNER.into()))],
    )
    .await?;
    conn.batch_execute("VACUUM ANALYZE life_item").await?;
    println!(
        "loaded life_item: {rows} rows of tenant {TENANT}, index on (tenant, id), RLS forced, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check(got: u64, expected: u64, what: &str) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "{what}: expected {expected}, got {got}"
        )))
    }
}

fn lifecycle_error(error: lifecycle::LifecycleError) -> BenchError {
    BenchError::Failed(format!("lifecycle: {error}"))
}

/// Resets the process's peak RSS to its current RSS (Linux: `5` to `/proc/self/clear_refs`)
/// and returns that RSS in bytes; 0 where there is no `/proc`.
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:") * 1024
}

/// The process's peak RSS since the last reset, in bytes; 0 where there is no `/proc`.
fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
