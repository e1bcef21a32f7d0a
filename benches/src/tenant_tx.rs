//! `tenant_tx`: throughput and latency of a tenant transaction against what a user would
//! write without the library.
//!
//! Closed loop: 16 tasks share a pool of 10; each runs transactions back to back (read one
//! row by id and tenant, insert one row, commit: the workload of sqlalchemy-tenants'
//! benchmark). Three sides, alternating in rounds (the order rotates each round, so that
//! drift in the machine's load hits all of them):
//! - A: `TenantPool::tenant`, the read through the typed filter `scoped()`, on the RLS
//!   table;
//! - B: plain diesel-async on its default bb8 pool (`AsyncDieselConnectionManager::new`,
//!   default recycling: `SELECT 1` at each checkout), `BEGIN`, `WHERE tenant = $1 AND id =
//!   $2`, on an identical table without RLS: the honest ceiling;
//! - P: a plain checkout of `TenantPool`'s own pool (its cleanliness check instead of
//!   `SELECT 1`), then as B.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;

use crate::db::{BenchDb, OWNER};
use crate::error::Result;
use crate::stats;
use crate::workload::{self, Phase, Pools, Read};

/// Concurrent client tasks.
const TASKS: usize = 16;
/// Connections per pool.
const POOL_SIZE: u32 = 10;
/// Rounds; each runs every side once.
const ROUNDS: u32 = 10;

/// Which transaction a phase runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `TenantPool::tenant` + `scoped()` + RLS table.
    Tenant,
    /// diesel-async's default pool, `BEGIN`, table without RLS.
    Plain,
    /// `TenantPool`'s plain checkout, `BEGIN`, table without RLS.
    PoolPlain,
}

const SIDES: [Side; 3] = [Side::Tenant, Side::Plain, Side::PoolPlain];

impl Side {
    fn letter(self) -> &'static str {
        match self {
            Side::Tenant => "A",
            Side::Plain => "B",
            Side::PoolPlain => "P",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Side::Tenant => "A tenant (TenantPool::tenant, scoped(), RLS)",
            Side::Plain => "B plain diesel-async (default bb8 pool, BEGIN, no RLS)",
            Side::PoolPlain => "P TenantPool's plain checkout (BEGIN, no RLS)",
        }
    }
}

/// Runs the benchmark for `duration` (all rounds together) and returns its `bench` line.
pub async fn run(duration: Duration, smoke: bool) -> Result<String> {
    let per_tenant = if smoke { 10 } else { 100 };
    let db = BenchDb::create("tenants_bench_tenant_tx").await?;
    workload::setup(&db, per_tenant).await?;
    // Commits do not wait for the disk: the fsync is the same on every side, and on a
    // shared machine it stalls for hundreds of milliseconds at random, burying the
    // differences the sides are here to show (CPU and round trips).
    db.connect()
        .await?
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET synchronous_commit = off",
            db.name()
        ))
        .await?;
    let pools = Arc::new(Pools::new(&db.url_as(OWNER), POOL_SIZE).await?);

    let phase_len = duration / (SIDES.len() as u32 * ROUNDS);
    let warm_up = if smoke {
        phase_len
    } else {
        Duration::from_secs(1)
    };
    for side in SIDES {
        println!("{}", side.describe());
    }
    println!(
        "read one row by id and tenant, insert one, commit (synchronous_commit off); {TASKS} tasks, pools of {POOL_SIZE} (same bb8 settings), {ROUNDS} rounds of each side in rotating order, {:.2} s per side per round; warm-up {:.1} s per side",
        phase_len.as_secs_f64(),
        warm_up.as_secs_f64()
    );
    for side in SIDES {
        phase(&pools, side, warm_up, per_tenant).await?;
    }

    let mut totals: [Phase; SIDES.len()] = Default::default();
    let mut to_plain = Vec::with_capacity(ROUNDS as usize);
    let mut to_pool_plain = Vec::with_capacity(ROUNDS as usize);
    for round in 0..ROUNDS as usize {
        let mut line = format!("round {:2}:", round + 1);
        let mut tps = [0.0; SIDES.len()];
        for k in 0..SIDES.len() {
            let slot = (round + k) % SIDES.len();
            let side = SIDES[slot];
            let measured = phase(&pools, side, phase_len, per_tenant).await?;
            tps[slot] = measured.tps();
            line.push_str(&format!(" {} {:6.0} tps", side.letter(), tps[slot]));
            totals[slot].add(measured);
        }
        let (a_b, a_p) = (tps[0] / tps[1], tps[0] / tps[2]);
        println!("{line}  A/B {a_b:.3}  A/P {a_p:.3}");
        to_plain.push(a_b);
        to_pool_plain.push(a_p);
    }
    drop(pools);
    db.drop_db().await?;

    let mut figures = Vec::with_capacity(SIDES.len());
    for (side, phase) in SIDES.iter().zip(&mut totals) {
        phase.latencies.sort_unstable();
        let p50 = stats::percentile(&phase.latencies, 50.0);
        let p99 = stats::percentile(&phase.latencies, 99.0);
        println!(
            "{}: {} transactions in {:.2} s = {:.0} tps; latency p50 {}, p99 {}",
            side.describe(),
            phase.transactions,
            phase.elapsed.as_secs_f64(),
            phase.tps(),
            stats::ms(p50),
            stats::ms(p99)
        );
        figures.push(format!(
            "{} {:.0} tps p50 {} p99 {}",
            side.letter(),
            phase.tps(),
            stats::ms(p50),
            stats::ms(p99)
        ));
    }
    let median = |ratios: &mut Vec<f64>| {
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let (median_b, median_p) = (median(&mut to_plain), median(&mut to_pool_plain));
    let ratio = totals[0].tps() / totals[1].tps();
    let ratio_p = totals[0].tps() / totals[2].tps();
    println!(
        "A/B per round: min {:.3}, median {median_b:.3}, max {:.3}; A/P median {median_p:.3}",
        to_plain[0],
        to_plain[to_plain.len() - 1]
    );
    println!("target: A/B >= 0.95");
    Ok(format!(
        "bench tenant_tx: ratio {ratio:.3} to plain diesel-async (median round {median_b:.3}); {ratio_p:.3} to TenantPool's plain checkout (median round {median_p:.3}) ({}; read by id and tenant, insert, commit; {TASKS} tasks, pool {POOL_SIZE}, {ROUNDS} rounds, {:.1} s per side)",
        figures.join("; "),
        totals[0].elapsed.as_secs_f64(),
    ))
}

/// Runs `side` with [`TASKS`] tasks until `length` has passed (see
/// [`workload::closed_loop`]).
async fn phase(pools: &Arc<Pools>, side: Side, length: Duration, per_tenant: u64) -> Result<Phase> {
    let pools = Arc::clone(pools);
    workload::closed_loop(TASKS, length, per_tenant, move |pick| {
        let pools = Arc::clone(&pools);
        async move {
            let read = Read::ByTenantAndId;
            match side {
                Side::Tenant => workload::tenant_tx(&pools.tenant, &pick, read).await,
                Side::Plain => workload::plain_tx(&pools.plain, &pick, read).await,
                Side::PoolPlain => workload::plain_tx(pools.tenant.pool(), &pick, read).await,
            }
        }
    })
    .await
}
