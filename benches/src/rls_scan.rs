//! `rls_scan`: what RLS costs on an index scan, against the same query without RLS; and
//! what the inline policy form of Citus mode costs against the default subquery form.
//!
//! Two tables of T tenants x R rows (tenants interleaved, as rows arrive over time), the
//! same data, indexes on `(tenant, id)` and on `tag` (a time bucket: each tenant has R/100
//! rows of each of 100 tags). `scan_item` carries the default policies (the setting read in
//! a subquery, an InitPlan evaluated once per statement); `scan_item_inline` those of Citus
//! mode (the setting read inline). One query at a time, random tenants and tags; for each,
//! every side reads once untimed (so all find the same pages in shared buffers), then every
//! side is timed once, in a random order; all on the `DATABASE_URL` superuser's login:
//! - A: tenant transaction, `scan_item`, a tenant's 50 newest rows, explicit tenant filter;
//! - B: plain transaction as the superuser, whom RLS never applies to: the table without
//!   RLS, same data, pages and plan cache state; the same query as A;
//! - C: tenant transaction, `scan_item`, the 50 newest rows, no filter: RLS alone picks the
//!   tenant's rows (the policy is the index condition);
//! - D: as C on `scan_item_inline`;
//! - E: tenant transaction, `scan_item`, the tenant's rows of one tag (`WHERE tag = $1`,
//!   another indexed column);
//! - F: as E on `scan_item_inline`;
//! - G: admin transaction, `scan_item`, `count(*)` of one tag: every tenant's rows of it,
//!   the policies a filter on each row (not an index condition);
//! - H: as G on `scan_item_inline`.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use tenants_core::policy::{self, Change, QualifiedName, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, TenantConnection, TenantPool};

use crate::db::{self, BenchDb};
use crate::error::{BenchError, Result};
use crate::stats::{self, Rng};

/// Rows per query.
const LIMIT: i64 = 50;
/// Tags (time buckets) per tenant.
const TAGS: u64 = 100;

#[tenants_core::with_rls]
diesel::table! {
    /// The scanned table, with the default (subquery) policies.
    scan_item (id) {
        /// Primary key; larger is newer.
        id -> Int8,
        /// The tenant.
        tenant -> Text,
        /// A time bucket, indexed.
        tag -> Int4,
        /// Payload.
        title -> Text,
    }
}

#[tenants_core::with_rls]
diesel::table! {
    /// The same data, with the policies of Citus mode (inline).
    scan_item_inline (id) {
        /// Primary key; larger is newer.
        id -> Int8,
        /// The tenant.
        tenant -> Text,
        /// A time bucket, indexed.
        tag -> Int4,
        /// Payload.
        title -> Text,
    }
}

/// A row as the queries return it.
type Row = (i64, String, String);

/// The sides, in the order of the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
}

const SIDES: [Side; 8] = [
    Side::A,
    Side::B,
    Side::C,
    Side::D,
    Side::E,
    Side::F,
    Side::G,
    Side::H,
];

impl Side {
    fn describe(self) -> &'static str {
        match self {
            Side::A => "A RLS + tenant transaction, explicit filter",
            Side::B => "B no RLS (superuser), explicit filter",
            Side::C => "C RLS (subquery) + tenant, no filter",
            Side::D => "D RLS (inline) + tenant, no filter",
            Side::E => "E RLS (subquery) + tenant, WHERE tag",
            Side::F => "F RLS (inline) + tenant, WHERE tag",
            Side::G => "G RLS (subquery) + admin, count WHERE tag",
            Side::H => "H RLS (inline) + admin, count WHERE tag",
        }
    }
}

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
    let mut latencies: [Vec<Duration>; SIDES.len()] = Default::default();
    for (length, keep) in [(warm_up, false), (duration, true)] {
        let deadline = Instant::now() + length;
        while Instant::now() < deadline {
            let tenant = format!("tenant{}", rng.below(tenants));
            let tag = rng.below(TAGS) as i32;
            // Every side reads the tenant's rows once before any is timed: the two tables
            // are larger than shared_buffers, and the first side to read a tenant would
            // pay the reads from the kernel's cache for the others.
            for side in SIDES {
                query(side, &tenant_pool, &plain_pool, &tenant, tag, per_tenant).await?;
            }
            // Then the sides are timed in a fresh random order: a side timed right after
            // an admin count of 10,000 rows (G, H) runs with cold CPU caches, so a fixed
            // or rotated cycle (which keeps each side's predecessor) biases the side that
            // follows them. Earlier runs rotated the cycle: A always followed H, and that
            // made A about 1.2 to 1.5 times slower than B and C.
            let mut order: [usize; SIDES.len()] = std::array::from_fn(|k| k);
            for k in (1..order.len()).rev() {
                order.swap(k, rng.below(k as u64 + 1) as usize);
            }
            for slot in order {
                let took = query(
                    SIDES[slot],
                    &tenant_pool,
                    &plain_pool,
                    &tenant,
                    tag,
                    per_tenant,
                )
                .await?;
                if keep {
                    latencies[slot].push(took);
                }
            }
        }
    }
    let plan_cache = plan_cache(&tenant_pool, &plain_pool).await?;
    drop((tenant_pool, plain_pool));
    db.drop_db().await?;

    for l in &mut latencies {
        l.sort_unstable();
    }
    for (side, l) in SIDES.iter().zip(&latencies) {
        println!(
            "{:<45} {} queries, median {}, p99 {}",
            side.describe(),
            l.len(),
            stats::ms(stats::median(l)),
            stats::ms(stats::percentile(l, 99.0))
        );
    }
    let [a, b, c, d, e, f, g, h] = latencies.each_ref().map(|l| stats::median(l).as_secs_f64());
    let ms = |s: f64| stats::ms(Duration::from_secs_f64(s));
    println!(
        "targets: A/B <= 1.10, A/C <= 1.05, C/B <= 1.5; inline vs subquery: D/C, F/E, H/G (1.0 = as fast)"
    );
    Ok(format!(
        "bench rls_scan: ratio {:.3} (median A {}, B {}, C {}; A/C {:.3}; C/B {:.3}; plan cache generic/custom {plan_cache}; inline form: D/C {:.3} (index condition), F/E {:.3} (WHERE tag, tenant), H/G {:.3} (WHERE tag, admin: the policy a filter on each row; G {}, H {}); {tenants} tenants x {per_tenant} rows, {LIMIT} newest rows, {} queries per side; C and D use their (tenant, id) index)",
        a / b,
        ms(a),
        ms(b),
        ms(c),
        a / c,
        c / b,
        d / c,
        f / e,
        h / g,
        ms(g),
        ms(h),
        latencies[0].len(),
    ))
}

/// Creates and fills both tables, their indexes, and their RLS: the renderer's contract,
/// with the Citus-mode policies on `scan_item_inline` (only the policies: Citus mode would
/// also make the shared roles of this server LOGIN).
async fn load(db: &BenchDb, tenants: u64, per_tenant: u64) -> Result<()> {
    let started = Instant::now();
    let rows = tenants * per_tenant;
    let mut conn = db.connect().await?;
    let mut ddl = String::new();
    for table in ["scan_item", "scan_item_inline"] {
        ddl.push_str(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, tenant text NOT NULL, tag int NOT NULL, title text NOT NULL);
             INSERT INTO {table} (id, tenant, tag, title)
               SELECT i, 'tenant' || ((i - 1) % {tenants}), ((i - 1) / {tenants}) % {TAGS}, 'row ' || i || ' ' || md5(i::text)
               FROM generate_series(1, {rows}) i;
             CREATE INDEX {table}_tenant_id ON {table} (tenant, id);
             CREATE INDEX {table}_tag ON {table} (tag);\n"
        ));
    }
    conn.batch_execute(&ddl).await?;
    let spec = |name: &str| TableSpec {
        table: QualifiedName::new("public", name),
        tenant_column: "tenant".into(),
        sql_type: TenantSqlType::Text,
        sequences: vec![],
    };
    db::apply_rls(
        &mut conn,
        &[spec("scan_item"), spec("scan_item_inline")],
        &[],
    )
    .await?;
    let plain = Config::default();
    let inline = plain.clone().with_citus(true);
    let mut replace = String::new();
    for change in policy::setup(&plain, &[spec("scan_item_inline")], &[]) {
        if matches!(
            change,
            Change::CreateIsolationPolicy { .. } | Change::CreateAdminPolicy { .. }
        ) {
            replace.push_str(&change.down(&plain));
            replace.push_str(&change.up(&inline));
        }
    }
    conn.batch_execute(&replace).await?;
    // One statement per batch: VACUUM may not run in the transaction a batch is.
    for table in ["scan_item", "scan_item_inline"] {
        conn.batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await?;
    }
    println!(
        "loaded scan_item (subquery policies) and scan_item_inline (inline policies): {tenants} tenants x {per_tenant} rows = {rows} rows each, indexes on (tenant, id) and tag, RLS forced, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The tenant's 50 newest rows of `scan_item`, optionally filtered by tenant, as Diesel
/// sends them.
macro_rules! newest {
    ($table:ident, $conn:expr) => {
        $table::table
            .order($table::id.desc())
            .limit(LIMIT)
            .select(($table::id, $table::tenant, $table::title))
            .load::<Row>($conn)
    };
}

/// The rows of one tag, as Diesel sends them.
macro_rules! of_tag {
    ($table:ident, $tag:expr, $conn:expr) => {
        $table::table
            .filter($table::tag.eq($tag))
            .order($table::id.desc())
            .select(($table::id, $table::tenant, $table::title))
            .load::<Row>($conn)
    };
}

/// Runs one side's query; returns the query's latency (the transaction's begin and commit
/// are outside the timing).
async fn query(
    side: Side,
    tenant_pool: &TenantPool,
    plain_pool: &Pool<AsyncPgConnection>,
    tenant: &str,
    tag: i32,
    per_tenant: u64,
) -> Result<Duration> {
    let expect_rows = |rows: &[Row], wanted: usize| {
        if rows.len() != wanted || rows.iter().any(|(_, t, _)| t != tenant) {
            return Err(BenchError::Failed(format!(
                "side {side:?}: expected {wanted} rows of {tenant}, got {} ({} of other tenants)",
                rows.len(),
                rows.iter().filter(|(_, t, _)| t != tenant).count()
            )));
        }
        Ok(())
    };
    let per_tag = (per_tenant / TAGS) as usize;
    if side == Side::B {
        let mut conn = plain_pool.get().await?;
        let conn = &mut *conn;
        AnsiTransactionManager::begin_transaction(conn).await?;
        let began = Instant::now();
        let rows = scan_item::table
            .filter(scan_item::tenant.eq(tenant))
            .order(scan_item::id.desc())
            .limit(LIMIT)
            .select((scan_item::id, scan_item::tenant, scan_item::title))
            .load::<Row>(conn)
            .await?;
        let took = began.elapsed();
        AnsiTransactionManager::commit_transaction(conn).await?;
        expect_rows(&rows, LIMIT as usize)?;
        return Ok(took);
    }
    let admin = matches!(side, Side::G | Side::H);
    let mut conn: TenantConnection = if admin {
        tenant_pool.admin().await?
    } else {
        tenant_pool.tenant(tenant).await?
    };
    let began = Instant::now();
    match side {
        Side::A => {
            let rows = scan_item::table
                .filter(scan_item::tenant.eq(tenant))
                .order(scan_item::id.desc())
                .limit(LIMIT)
                .select((scan_item::id, scan_item::tenant, scan_item::title))
                .load::<Row>(&mut *conn)
                .await?;
            expect_rows(&rows, LIMIT as usize)?;
        }
        Side::C => expect_rows(&newest!(scan_item, &mut *conn).await?, LIMIT as usize)?,
        Side::D => expect_rows(
            &newest!(scan_item_inline, &mut *conn).await?,
            LIMIT as usize,
        )?,
        Side::E => expect_rows(&of_tag!(scan_item, tag, &mut *conn).await?, per_tag)?,
        Side::F => expect_rows(&of_tag!(scan_item_inline, tag, &mut *conn).await?, per_tag)?,
        Side::G | Side::H => {
            let count: i64 = if side == Side::G {
                scan_item::table
                    .filter(scan_item::tag.eq(tag))
                    .count()
                    .get_result(&mut *conn)
                    .await?
            } else {
                scan_item_inline::table
                    .filter(scan_item_inline::tag.eq(tag))
                    .count()
                    .get_result(&mut *conn)
                    .await?
            };
            if count == 0 {
                return Err(BenchError::Failed(format!(
                    "side {side:?}: the admin sees no row of tag {tag}"
                )));
            }
        }
        Side::B => unreachable!("the plain side returned above"),
    }
    let took = began.elapsed();
    conn.commit().await?;
    Ok(took)
}

#[derive(QueryableByName)]
struct PlanCount {
    #[diesel(sql_type = Text)]
    statement: String,
    #[diesel(sql_type = BigInt)]
    generic_plans: i64,
    #[diesel(sql_type = BigInt)]
    custom_plans: i64,
}

/// What PostgreSQL's plan cache did with the statements diesel prepared and cached for A,
/// B and C (each pool has one connection), read from `pg_prepared_statements`: how many
/// executions reused the generic plan and how many were planned again (custom plans).
async fn plan_cache(
    tenant_pool: &TenantPool,
    plain_pool: &Pool<AsyncPgConnection>,
) -> Result<String> {
    let newest = r#"FROM "scan_item" ORDER BY"#;
    let filtered = r#"FROM "scan_item" WHERE ("scan_item"."tenant" = $1)"#;
    let mut found = Vec::new();
    for (pool, side, needle) in [
        (tenant_pool.pool(), "A", filtered),
        (plain_pool, "B", filtered),
        (tenant_pool.pool(), "C", newest),
    ] {
        let mut conn = pool.get().await?;
        let counts: Vec<PlanCount> = diesel::sql_query(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements",
        )
        .load(&mut *conn)
        .await?;
        let count = counts
            .into_iter()
            .find(|c| c.statement.contains(needle))
            .ok_or_else(|| {
                BenchError::Failed(format!("side {side}'s statement is not prepared"))
            })?;
        println!(
            "plan cache, side {side}: {} generic, {} custom plans: {}",
            count.generic_plans, count.custom_plans, count.statement
        );
        found.push(format!(
            "{side} {}/{}",
            count.generic_plans, count.custom_plans
        ));
    }
    Ok(found.join(", "))
}

/// Prints the plans and fails unless C's and D's use the `(tenant, id)` index with an
/// index condition on the tenant (RLS, in either form, keeps the index), both as planned
/// for literal values and as the generic plan of the prepared statement the benchmark runs
/// (diesel binds the limit as `$1`).
async fn check_plans(pool: &TenantPool) -> Result<()> {
    let mut conn = pool.tenant("tenant1").await?;
    let mut plans = Vec::new();
    for (name, sql) in [
        (
            "A (RLS, explicit filter)",
            "SELECT id, tenant, title FROM scan_item WHERE tenant = 'tenant1' ORDER BY id DESC LIMIT 50",
        ),
        (
            "C (subquery, no filter)",
            "SELECT id, tenant, title FROM scan_item ORDER BY id DESC LIMIT 50",
        ),
        (
            "D (inline, no filter)",
            "SELECT id, tenant, title FROM scan_item_inline ORDER BY id DESC LIMIT 50",
        ),
        (
            "E (subquery, WHERE tag)",
            "SELECT id, tenant, title FROM scan_item WHERE tag = 7 ORDER BY id DESC",
        ),
        (
            "F (inline, WHERE tag)",
            "SELECT id, tenant, title FROM scan_item_inline WHERE tag = 7 ORDER BY id DESC",
        ),
    ] {
        plans.push((
            name,
            db::explain(&mut conn, &format!("EXPLAIN {sql}")).await?,
        ));
    }
    let mut generic = Vec::new();
    for (name, table) in [("C", "scan_item"), ("D", "scan_item_inline")] {
        conn.batch_execute(&format!(
            "SET LOCAL plan_cache_mode = force_generic_plan;
             PREPARE tenants_bench_newest AS SELECT id, tenant, title FROM {table} ORDER BY id DESC LIMIT $1"
        ))
        .await?;
        let plan = db::explain(&mut conn, "EXPLAIN EXECUTE tenants_bench_newest(50)").await;
        conn.batch_execute("DEALLOCATE tenants_bench_newest")
            .await?;
        generic.push((name, plan?));
    }
    conn.rollback().await?;
    let mut admin = pool.admin().await?;
    for (name, table) in [
        ("G (subquery, admin)", "scan_item"),
        ("H (inline, admin)", "scan_item_inline"),
    ] {
        let sql = format!("EXPLAIN SELECT count(*) FROM {table} WHERE tag = 7");
        plans.push((name, db::explain(&mut admin, &sql).await?));
    }
    admin.rollback().await?;
    for (name, plan) in &plans {
        println!("plan {name}:\n  {}", plan.join("\n  "));
    }
    for (name, plan) in &generic {
        println!(
            "plan {name}, generic plan of the prepared statement:\n  {}",
            plan.join("\n  ")
        );
    }
    let newest = plans
        .iter()
        .filter(|(name, _)| name.starts_with('C') || name.starts_with('D'))
        .map(|(name, plan)| (*name, plan))
        .chain(generic.iter().map(|(name, plan)| (*name, plan)));
    for (name, plan) in newest {
        let uses_index = plan
            .iter()
            .any(|l| l.contains("Index Scan") && l.contains("_tenant_id"));
        let index_cond = plan
            .iter()
            .any(|l| l.contains("Index Cond") && l.contains("tenant ="));
        if !(uses_index && index_cond) {
            return Err(BenchError::Failed(format!(
                "plan {name} does not scan the (tenant, id) index with an index condition on tenant: RLS would cost a scan of every tenant's rows\n  {}",
                plan.join("\n  ")
            )));
        }
    }
    println!(
        "plan check: C and D use the (tenant, id) index with Index Cond on tenant (custom and generic plans)"
    );
    Ok(())
}
