//! `citus`: a tenant transaction against a plain one on a Citus coordinator, with and
//! without an explicit tenant filter.
//!
//! The workload of `tenant_tx` (read one row by id, insert one row, commit; 16 tasks, pools
//! of 10) on `item_rls` and `item_plain`, both distributed by `tenant` (primary key
//! `(tenant, id)`), on a fresh Citus database of the coordinator `TENANTS_CITUS_URL` names.
//! Four sides, interleaved in rounds:
//! - A: `TenantPool::tenant` (Citus mode), the read by id alone: the policy does not route,
//!   so the read goes to every shard;
//! - B: plain `BEGIN`, the same read on `item_plain`: every shard too;
//! - A': as A, the read through `item_rls::table.scoped(&conn)`: one shard;
//! - B': as B, the read with `WHERE tenant = $1`: one shard.
//!
//! Not in `all` nor in the smoke run: CI has no Citus cluster.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use tenants_core::policy::{self, Grantee, QualifiedName, RoleGrant, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, TenantPool};

use crate::db::{self, OWNER, UrlParts};
use crate::error::{BenchError, Result};
use crate::stats::{self, Rng};
use crate::workload::{self, Phase, Pick, Read, TENANTS};

/// Concurrent client tasks, as `tenant_tx`.
const TASKS: usize = 16;
/// Connections per pool, as `tenant_tx`.
const POOL_SIZE: u32 = 10;
/// Rounds; each runs every side once, in a rotating order.
const ROUNDS: usize = 5;
/// The benchmark's database on the coordinator.
const DATABASE: &str = "tenants_bench_citus";

/// The four sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Tenant transaction, read by id only.
    Tenant,
    /// Plain transaction, read by id only.
    Plain,
    /// Tenant transaction, read through `scoped`.
    TenantFiltered,
    /// Plain transaction, read with `WHERE tenant = $1`.
    PlainFiltered,
}

const SIDES: [Side; 4] = [
    Side::Tenant,
    Side::Plain,
    Side::TenantFiltered,
    Side::PlainFiltered,
];

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Tenant => "A  tenant, no filter",
            Side::Plain => "B  plain, no filter",
            Side::TenantFiltered => "A' tenant, scoped()",
            Side::PlainFiltered => "B' plain, WHERE tenant",
        }
    }
}

/// The tenant pool (Citus mode) and the plain pool, both logging in as [`OWNER`].
struct Pools {
    tenant: TenantPool,
    plain: Pool<AsyncPgConnection>,
}

/// Runs the benchmark for `duration` (all rounds together) and returns its `bench` line.
pub async fn run(duration: Duration, smoke: bool) -> Result<String> {
    let server = tenants_tests::citus::citus_url().map_err(BenchError::Failed)?;
    let per_tenant = if smoke { 10 } else { 100 };
    let created = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || tenants_tests::citus::create(&server, DATABASE))
    };
    created
        .await
        .map_err(|e| BenchError::Failed(format!("creating the database panicked: {e}")))?
        .map_err(BenchError::Failed)?;
    println!("created Citus database {DATABASE} on {server}");
    let url = UrlParts {
        database: DATABASE.to_string(),
        ..UrlParts::parse(&server)?
    };
    let config = Config::default().with_citus(true);
    setup(&url.render(), &config, per_tenant).await?;
    let owner_url = UrlParts {
        userinfo: Some(OWNER.to_string()),
        ..url.clone()
    }
    .render();
    let builder = || bb8::Pool::builder().max_size(POOL_SIZE);
    let pools = Arc::new(Pools {
        tenant: TenantPool::connect_with(&owner_url, config, builder()).await?,
        plain: builder()
            .build(
                diesel_async::pooled_connection::AsyncDieselConnectionManager::new(
                    owner_url.as_str(),
                ),
            )
            .await?,
    });
    let tasks = tasks_per_read(&pools).await?;

    let phase_len = duration / (SIDES.len() * ROUNDS) as u32;
    let warm_up = if smoke {
        phase_len
    } else {
        Duration::from_secs(1)
    };
    println!(
        "{TASKS} tasks, pools of {POOL_SIZE}, {ROUNDS} rounds of the four sides, {:.2} s per side per round; warm-up {:.1} s per side",
        phase_len.as_secs_f64(),
        warm_up.as_secs_f64()
    );
    for side in SIDES {
        phase(&pools, side, warm_up, per_tenant).await?;
    }
    let mut measured: [Phase; 4] = Default::default();
    for round in 0..ROUNDS {
        let mut line = format!("round {:2}:", round + 1);
        for k in 0..SIDES.len() {
            let slot = (round + k) % SIDES.len();
            let phase = phase(&pools, SIDES[slot], phase_len, per_tenant).await?;
            line.push_str(&format!(
                " {} {:5.0} tps;",
                &SIDES[slot].name()[..2],
                phase.tps()
            ));
            measured[slot].add(phase);
        }
        println!("{line}");
    }
    drop(pools);
    let dropped =
        tokio::task::spawn_blocking(move || tenants_tests::citus::drop(&server, DATABASE));
    dropped
        .await
        .map_err(|e| BenchError::Failed(format!("dropping the database panicked: {e}")))?
        .map_err(BenchError::Failed)?;
    println!("dropped Citus database {DATABASE}");

    for (side, m) in SIDES.iter().zip(measured.iter_mut()) {
        m.latencies.sort_unstable();
        println!(
            "{:<24} {} transactions = {:.0} tps; latency p50 {}, p99 {}",
            side.name(),
            m.transactions,
            m.tps(),
            stats::ms(stats::percentile(&m.latencies, 50.0)),
            stats::ms(stats::percentile(&m.latencies, 99.0))
        );
    }
    let [a, b, a_filtered, b_filtered] = measured.each_ref().map(Phase::tps);
    let ratio = a / b;
    let filtered_ratio = a_filtered / b_filtered;
    println!(
        "tasks per read: {} without a filter, {} with one (EXPLAIN)",
        tasks.0, tasks.1
    );
    Ok(format!(
        "bench citus: ratio {ratio:.3} (no filter: A tenant {a:.0} tps / B plain {b:.0} tps, {} tasks per read; tenant filter: ratio {filtered_ratio:.3}, A' {a_filtered:.0} tps / B' {b_filtered:.0} tps, {} task per read; scoped() vs no filter {:.2}x; {TASKS} tasks, pools of {POOL_SIZE}, {ROUNDS} rounds)",
        tasks.0,
        tasks.1,
        a_filtered / a,
    ))
}

/// `item_rls` and `item_plain`, distributed by `tenant` and owned by [`OWNER`], each with
/// `per_tenant` rows for each of the [`TENANTS`] tenants (row `id` belongs to tenant
/// `(id - 1) % TENANTS`, as in `tenant_tx`); `item_rls` under the contract in Citus mode.
async fn setup(url: &str, config: &Config, per_tenant: u64) -> Result<()> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    db::ensure_owner(&mut conn).await?;
    let rows = per_tenant * TENANTS;
    for table in ["item_rls", "item_plain"] {
        // One statement per batch: Citus forwards some DDL by its source text.
        for statement in [
            format!(
                "CREATE TABLE {table} (id bigserial, tenant text NOT NULL, name text NOT NULL, PRIMARY KEY (tenant, id))"
            ),
            format!("SELECT create_distributed_table('{table}', 'tenant')"),
            format!(
                "INSERT INTO {table} (id, tenant, name)
                 SELECT i, 'tenant' || ((i - 1) % {TENANTS}), 'seed ' || i FROM generate_series(1, {rows}) i"
            ),
            format!("SELECT setval('{table}_id_seq', {rows})"),
            format!("ALTER TABLE {table} OWNER TO \"{OWNER}\""),
        ] {
            conn.batch_execute(&statement).await?;
        }
    }
    let spec = TableSpec {
        table: QualifiedName::new("public", "item_rls"),
        tenant_column: "tenant".into(),
        sql_type: TenantSqlType::Text,
        sequences: vec![QualifiedName::new("public", "item_rls_id_seq")],
    };
    let changes = policy::setup(
        config,
        &[spec],
        &[RoleGrant::both(Grantee::Role(OWNER.into()))],
    );
    db::batch_locked(&mut conn, &policy::render_up(config, &changes)).await?;
    conn.batch_execute("ANALYZE item_rls; ANALYZE item_plain")
        .await?;
    println!(
        "loaded item_rls (RLS, Citus mode) and item_plain (no RLS), both distributed by tenant: {TENANTS} tenants x {per_tenant} rows each, owner {OWNER}"
    );
    Ok(())
}

/// Citus's `Task Count` for the read by id without and with the tenant filter, in a tenant
/// transaction.
async fn tasks_per_read(pools: &Pools) -> Result<(usize, usize)> {
    let pick = Pick::random(&mut Rng::new(0), 1);
    let mut conn = pools.tenant.tenant(pick.tenant.as_str()).await?;
    let mut count = async |sql: String| -> Result<usize> {
        let plan = db::explain(&mut conn, &format!("EXPLAIN {sql}")).await?;
        plan.iter()
            .find_map(|l| l.trim().strip_prefix("Task Count: "))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| {
                BenchError::Failed(format!("not a Citus plan:\n  {}", plan.join("\n  ")))
            })
    };
    let unfiltered = count(format!(
        "SELECT id, name FROM item_rls WHERE id = {}",
        pick.id
    ))
    .await?;
    let filtered = count(format!(
        "SELECT id, name FROM item_rls WHERE tenant = '{}' AND id = {}",
        pick.tenant, pick.id
    ))
    .await?;
    conn.rollback().await?;
    if filtered != 1 {
        return Err(BenchError::Failed(format!(
            "a tenant-filtered read runs {filtered} tasks, not one: it does not route"
        )));
    }
    Ok((unfiltered, filtered))
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
                Side::TenantFiltered => {
                    workload::tenant_tx(&pools.tenant, &pick, Read::ByTenantAndId).await
                }
                Side::PlainFiltered => {
                    workload::plain_tx(&pools.plain, &pick, Read::ByTenantAndId).await
                }
            }
        }
    })
    .await
}
