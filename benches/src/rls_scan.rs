//! `rls_scan`: what RLS costs on an index scan, against the same query without RLS.
//!
//! One table of T tenants x R rows (tenants interleaved, as rows arrive over time), an
//! index on `(tenant, id)`; the query is a tenant's 50 newest rows. All three sides run
//! on the same table and the same login (the `DATABASE_URL` superuser), one query at a
//! time, in turn with random tenants:
//! - A: tenant transaction (RLS applies to the role it switches to), explicit filter;
//! - B: plain transaction as the superuser, whom RLS never applies to: the table without
//!   RLS, same data, same pages, same plan cache state; explicit filter;
//! - C: tenant transaction, no filter: RLS alone picks the tenant's rows.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use tenants_core::policy::{QualifiedName, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, TenantPool};

use crate::db::{self, BenchDb};
use crate::error::{BenchError, Result};
use crate::stats::{self, Rng};

/// Rows per query.
const LIMIT: i64 = 50;
/// The index the plans must use.
const INDEX: &str = "scan_item_tenant_id";

#[tenants_core::with_rls]
diesel::table! {
    /// The scanned table.
    scan_item (id) {
        /// Primary key; larger is newer.
        id -> Int8,
        /// The tenant.
        tenant -> Text,
        /// Payload.
        title -> Text,
    }
}

/// A row as the query returns it.
type Row = (i64, String, String);

/// Runs the benchmark for `duration` and returns its `bench` line.
pub async fn run(duration: Duration, smoke: bool) -> Result<String> {
    let (tenants, per_tenant) = if smoke { (100, 200) } else { (1000, 1000) };
    let db = BenchDb::create("tenants_bench_rls_scan").await?;
    load(&db, tenants, per_tenant).await?;

    let url = db.url();
    let builder = || bb8::Pool::builder().max_size(1);
    let tenant_pool = TenantPool::connect_with(&url, Config::default(), builder()).await?;
    let plain_pool: Pool<AsyncPgConnection> = builder()
        .build(AsyncDieselConnectionManager::new(url.as_str()))
        .await?;

    check_plans(&tenant_pool).await?;

    let warm_up = if smoke {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    };
    let mut rng = Rng::new(1);
    let mut latencies: [Vec<Duration>; 3] = Default::default();
    for (length, keep) in [(warm_up, false), (duration, true)] {
        let deadline = Instant::now() + length;
        let mut turn = 0usize;
        while Instant::now() < deadline {
            let tenant = format!("tenant{}", rng.below(tenants));
            // Rotate which side goes first, so that no side always meets a cold cache.
            for k in 0..3 {
                let side = (turn + k) % 3;
                let took = query(side, &tenant_pool, &plain_pool, &tenant).await?;
                if keep {
                    latencies[side].push(took);
                }
            }
            turn += 1;
        }
    }
    drop((tenant_pool, plain_pool));
    db.drop_db().await?;

    for l in &mut latencies {
        l.sort_unstable();
    }
    let names = [
        "A RLS + tenant transaction, explicit filter",
        "B no RLS (superuser), explicit filter",
        "C RLS + tenant transaction, no filter",
    ];
    for (name, l) in names.iter().zip(&latencies) {
        println!(
            "{name:<45} {} queries, median {}, p99 {}",
            l.len(),
            stats::ms(stats::median(l)),
            stats::ms(stats::percentile(l, 99.0))
        );
    }
    let [a, b, c] = latencies.each_ref().map(|l| stats::median(l).as_secs_f64());
    let ratio = a / b;
    let c_ratio = c / b;
    println!("targets: A/B <= 1.10, C/B <= 1.5");
    Ok(format!(
        "bench rls_scan: ratio {ratio:.3} (median A {}, B {}, C {}; C/B {c_ratio:.3}; {tenants} tenants x {per_tenant} rows, {LIMIT} newest rows, {} queries per side; C uses {INDEX})",
        stats::ms(Duration::from_secs_f64(a)),
        stats::ms(Duration::from_secs_f64(b)),
        stats::ms(Duration::from_secs_f64(c)),
        latencies[0].len(),
    ))
}

/// Creates and fills the table, its index, and its RLS (rendered by `tenants_core::policy`).
async fn load(db: &BenchDb, tenants: u64, per_tenant: u64) -> Result<()> {
    let started = Instant::now();
    let rows = tenants * per_tenant;
    let mut conn = db.connect().await?;
    conn.batch_execute(&format!(
        "CREATE TABLE scan_item (id bigint PRIMARY KEY, tenant text NOT NULL, title text NOT NULL);
         INSERT INTO scan_item (id, tenant, title)
           SELECT i, 'tenant' || ((i - 1) % {tenants}), 'row ' || i || ' ' || md5(i::text)
           FROM generate_series(1, {rows}) i;
         CREATE INDEX {INDEX} ON scan_item (tenant, id);"
    ))
    .await?;
    db::apply_rls(
        &mut conn,
        &[TableSpec {
            table: QualifiedName::new("public", "scan_item"),
            tenant_column: "tenant".into(),
            sql_type: TenantSqlType::Text,
            sequences: vec![],
        }],
        &[],
    )
    .await?;
    conn.batch_execute("VACUUM ANALYZE scan_item").await?;
    println!(
        "loaded scan_item: {tenants} tenants x {per_tenant} rows = {rows} rows, index ({INDEX}) on (tenant, id), RLS forced, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs one side's query for `tenant`; returns the query's latency (the transaction's
/// begin and commit are outside the timing).
async fn query(
    side: usize,
    tenant_pool: &TenantPool,
    plain_pool: &Pool<AsyncPgConnection>,
    tenant: &str,
) -> Result<Duration> {
    let filtered = scan_item::table
        .filter(scan_item::tenant.eq(tenant))
        .order(scan_item::id.desc())
        .limit(LIMIT)
        .select((scan_item::id, scan_item::tenant, scan_item::title));
    let unfiltered = scan_item::table
        .order(scan_item::id.desc())
        .limit(LIMIT)
        .select((scan_item::id, scan_item::tenant, scan_item::title));
    let (rows, took): (Vec<Row>, Duration) = match side {
        0 | 2 => {
            let mut conn = tenant_pool.tenant(tenant).await?;
            let began = Instant::now();
            let rows = if side == 0 {
                filtered.load(&mut *conn).await?
            } else {
                unfiltered.load(&mut *conn).await?
            };
            let took = began.elapsed();
            conn.commit().await?;
            (rows, took)
        }
        _ => {
            let mut conn = plain_pool.get().await?;
            let conn = &mut *conn;
            AnsiTransactionManager::begin_transaction(conn).await?;
            let began = Instant::now();
            let rows = filtered.load(conn).await?;
            let took = began.elapsed();
            AnsiTransactionManager::commit_transaction(conn).await?;
            (rows, took)
        }
    };
    if rows.len() != LIMIT as usize || rows.iter().any(|(_, t, _)| t != tenant) {
        return Err(BenchError::Failed(format!(
            "side {side}: expected {LIMIT} rows of {tenant}, got {} ({} of other tenants)",
            rows.len(),
            rows.iter().filter(|(_, t, _)| t != tenant).count()
        )));
    }
    Ok(took)
}

/// Prints the plans of A and C and fails unless C's uses the `(tenant, id)` index, both as
/// planned for literal values and as the generic plan of the prepared statement the
/// benchmark runs (diesel binds the limit as `$1`).
async fn check_plans(pool: &TenantPool) -> Result<()> {
    let mut conn = pool.tenant("tenant1").await?;
    let a = db::explain(
        &mut conn,
        "EXPLAIN SELECT id, tenant, title FROM scan_item WHERE tenant = 'tenant1' ORDER BY id DESC LIMIT 50",
    )
    .await?;
    let c = db::explain(
        &mut conn,
        "EXPLAIN SELECT id, tenant, title FROM scan_item ORDER BY id DESC LIMIT 50",
    )
    .await?;
    conn.batch_execute(
        "SET LOCAL plan_cache_mode = force_generic_plan;
         PREPARE tenants_bench_c AS SELECT id, tenant, title FROM scan_item ORDER BY id DESC LIMIT $1",
    )
    .await?;
    let c_generic = db::explain(&mut conn, "EXPLAIN EXECUTE tenants_bench_c(50)").await;
    conn.batch_execute("DEALLOCATE tenants_bench_c").await?;
    let c_generic = c_generic?;
    conn.rollback().await?;
    println!("plan A (RLS, explicit filter):\n  {}", a.join("\n  "));
    println!("plan C (RLS, no filter):\n  {}", c.join("\n  "));
    println!(
        "plan C, generic plan of the prepared statement:\n  {}",
        c_generic.join("\n  ")
    );
    for (name, plan) in [("C", &c), ("C (generic plan)", &c_generic)] {
        let uses_index = plan
            .iter()
            .any(|l| l.contains("Index Scan") && l.contains(INDEX));
        let index_cond = plan
            .iter()
            .any(|l| l.contains("Index Cond") && l.contains("tenant ="));
        if !(uses_index && index_cond) {
            return Err(BenchError::Failed(format!(
                "plan {name} does not scan {INDEX} with an index condition on tenant: RLS would cost a scan of every tenant's rows\n  {}",
                plan.join("\n  ")
            )));
        }
    }
    println!("plan check: C uses {INDEX} with Index Cond on tenant (custom and generic plans)");
    Ok(())
}
