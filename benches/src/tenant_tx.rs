//! `tenant_tx`: throughput and latency of a tenant transaction against a plain one.
//!
//! Closed loop: 16 tasks share a pool of 10; each runs transactions back to back (read one
//! row by id, insert one row, commit). Side A opens them with `TenantPool::tenant` on the
//! RLS table; side B with a plain `BEGIN` on an identical table without RLS. A and B
//! alternate in rounds (ABBA order, so that drift in the machine's load hits both).

use std::sync::Arc;
use std::time::Duration;

use crate::db::{BenchDb, OWNER};
use crate::error::Result;
use crate::stats;
use crate::workload::{self, Phase, Pools, Read};

/// Concurrent client tasks.
const TASKS: usize = 16;
/// Connections per pool.
const POOL_SIZE: u32 = 10;
/// Rounds; each runs A once and B once.
const ROUNDS: u32 = 10;

/// Which transaction a phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `TenantPool::tenant` + RLS table.
    Tenant,
    /// Plain `BEGIN` + table without RLS.
    Plain,
}

/// Runs the benchmark for `duration` (all rounds together) and returns its `bench` line.
pub async fn run(duration: Duration, smoke: bool) -> Result<String> {
    let per_tenant = if smoke { 10 } else { 100 };
    let db = BenchDb::create("tenants_bench_tenant_tx").await?;
    workload::setup(&db, per_tenant).await?;
    let pools = Arc::new(Pools::new(&db.url_as(OWNER), POOL_SIZE).await?);

    let phase_len = duration / (2 * ROUNDS);
    let warm_up = if smoke {
        phase_len
    } else {
        Duration::from_secs(1)
    };
    println!(
        "A: TenantPool::tenant (no checkout statement: the begin batch sets role and tenant) on item_rls; B: diesel-async bb8 pool (default check, SELECT 1), BEGIN, on item_plain"
    );
    println!(
        "{TASKS} tasks, pools of {POOL_SIZE} (same bb8 settings), {ROUNDS} rounds of A and B, {:.2} s per side per round; warm-up {:.1} s per side",
        phase_len.as_secs_f64(),
        warm_up.as_secs_f64()
    );
    for side in [Side::Tenant, Side::Plain] {
        phase(&pools, side, warm_up, per_tenant).await?;
    }

    let mut a = Phase::default();
    let mut b = Phase::default();
    let mut round_ratios = Vec::with_capacity(ROUNDS as usize);
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [Side::Tenant, Side::Plain]
        } else {
            [Side::Plain, Side::Tenant]
        };
        let mut line = format!("round {:2}:", round + 1);
        let mut tps = [0.0; 2];
        for side in order {
            let measured = phase(&pools, side, phase_len, per_tenant).await?;
            let side_tps = measured.transactions as f64 / measured.elapsed.as_secs_f64();
            let (total, name, slot) = match side {
                Side::Tenant => (&mut a, "A", 0),
                Side::Plain => (&mut b, "B", 1),
            };
            line.push_str(&format!(" {name} {side_tps:7.0} tps"));
            tps[slot] = side_tps;
            total.transactions += measured.transactions;
            total.elapsed += measured.elapsed;
            total.latencies.extend(measured.latencies);
        }
        let ratio = tps[0] / tps[1];
        println!("{line}  A/B {ratio:.3}");
        round_ratios.push(ratio);
    }
    round_ratios.sort_by(f64::total_cmp);
    let median_round = round_ratios[round_ratios.len() / 2];
    drop(pools);
    db.drop_db().await?;

    let describe = |name: &str, phase: &mut Phase| {
        phase.latencies.sort_unstable();
        let tps = phase.transactions as f64 / phase.elapsed.as_secs_f64();
        let p50 = stats::percentile(&phase.latencies, 50.0);
        let p99 = stats::percentile(&phase.latencies, 99.0);
        println!(
            "{name}: {} transactions in {:.2} s = {tps:.0} tps; latency p50 {}, p99 {}",
            phase.transactions,
            phase.elapsed.as_secs_f64(),
            stats::ms(p50),
            stats::ms(p99)
        );
        (tps, p50, p99)
    };
    let (a_tps, a_p50, a_p99) = describe("A tenant (TenantPool::tenant, RLS)", &mut a);
    let (b_tps, b_p50, b_p99) = describe("B plain (BEGIN, no RLS)", &mut b);
    let ratio = a_tps / b_tps;
    println!(
        "A/B per round: min {:.3}, median {median_round:.3}, max {:.3}",
        round_ratios[0],
        round_ratios[round_ratios.len() - 1]
    );
    println!("target: ratio >= 0.95");
    Ok(format!(
        "bench tenant_tx: ratio {ratio:.3} (A tenant {a_tps:.0} tps p50 {} p99 {}; B plain {b_tps:.0} tps p50 {} p99 {}; median round {median_round:.3}; {TASKS} tasks, pool {POOL_SIZE}, {ROUNDS} rounds, {:.1} s per side)",
        stats::ms(a_p50),
        stats::ms(a_p99),
        stats::ms(b_p50),
        stats::ms(b_p99),
        a.elapsed.as_secs_f64(),
    ))
}

/// Runs `side` with [`TASKS`] tasks until `length` has passed (see
/// [`workload::closed_loop`]).
async fn phase(pools: &Arc<Pools>, side: Side, length: Duration, per_tenant: u64) -> Result<Phase> {
    let pools = Arc::clone(pools);
    workload::closed_loop(TASKS, length, per_tenant, move |pick| {
        let pools = Arc::clone(&pools);
        async move {
            match side {
                Side::Tenant => workload::tenant_tx(&pools.tenant, &pick, Read::ById).await,
                Side::Plain => workload::plain_tx(&pools.plain, &pick, Read::ById).await,
            }
        }
    })
    .await
}
