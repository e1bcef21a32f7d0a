//! The read-one-insert-one transaction of `tenant_tx`, `round_trips` and `citus`, in its
//! two forms, and the closed loop that runs it.

use std::future::Future;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use tenants_core::policy::{Grantee, QualifiedName, RoleGrant, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, ScopedDsl, TenantPool};

use crate::db::{self, BenchDb, OWNER};
use crate::error::{BenchError, Result};
use crate::stats::Rng;

/// The number of tenants the transactions pick from.
pub const TENANTS: u64 = 100;

#[tenants_core::with_rls]
diesel::table! {
    /// Under RLS (FORCE, both policies): the tenant side.
    item_rls (id) {
        /// Primary key (bigserial).
        id -> Int8,
        /// The tenant.
        tenant -> Text,
        /// Payload.
        name -> Text,
    }
}

diesel::table! {
    /// The same table without RLS: the plain side.
    item_plain (id) {
        /// Primary key (bigserial).
        id -> Int8,
        /// The tenant.
        tenant -> Text,
        /// Payload.
        name -> Text,
    }
}

/// Creates `item_rls` and `item_plain` owned by [`OWNER`], each with `per_tenant` rows for
/// each of the [`TENANTS`] tenants (row `id` belongs to tenant `(id - 1) % TENANTS`), and
/// puts `item_rls` under RLS with the migration `tenants_core::policy` renders.
pub async fn setup(db: &BenchDb, per_tenant: u64) -> Result<()> {
    let mut conn = db.connect().await?;
    db::ensure_owner(&mut conn).await?;
    let rows = per_tenant * TENANTS;
    let mut ddl = String::new();
    for table in ["item_rls", "item_plain"] {
        ddl.push_str(&format!(
            "CREATE TABLE {table} (id bigserial PRIMARY KEY, tenant text NOT NULL, name text NOT NULL);
             CREATE INDEX {table}_tenant_id ON {table} (tenant, id);
             INSERT INTO {table} (id, tenant, name)
               SELECT i, 'tenant' || ((i - 1) % {TENANTS}), 'seed ' || i FROM generate_series(1, {rows}) i;
             SELECT setval('{table}_id_seq', {rows});
             ALTER TABLE {table} OWNER TO \"{OWNER}\";\n"
        ));
    }
    conn.batch_execute(&ddl).await?;
    db::apply_rls(
        &mut conn,
        &[TableSpec {
            table: QualifiedName::new("public", "item_rls"),
            tenant_column: "tenant".into(),
            sql_type: TenantSqlType::Text,
            sequences: vec![QualifiedName::new("public", "item_rls_id_seq")],
        }],
        &[RoleGrant::both(Grantee::Role(OWNER.into()))],
    )
    .await?;
    conn.batch_execute("ANALYZE item_rls; ANALYZE item_plain")
        .await?;
    println!(
        "loaded item_rls (RLS, FORCE) and item_plain (no RLS): {TENANTS} tenants x {per_tenant} rows each, owner {OWNER}"
    );
    Ok(())
}

/// The two pools, built with the same bb8 settings and logging in as [`OWNER`]: the
/// library's pool (a tenant checkout sends nothing, its begin batch sets role and tenant;
/// a plain checkout runs its recycle check) and a plain diesel-async pool (its default
/// check, `SELECT 1`, on every checkout).
pub struct Pools {
    /// The tenant side.
    pub tenant: TenantPool,
    /// The plain side.
    pub plain: Pool<AsyncPgConnection>,
}

impl Pools {
    /// Both pools of `size` connections for `url`.
    pub async fn new(url: &str, size: u32) -> Result<Self> {
        let builder = || bb8::Pool::builder().max_size(size);
        let tenant = TenantPool::connect_with(url, Config::default(), builder()).await?;
        let plain = builder()
            .build(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
            .await?;
        Ok(Self { tenant, plain })
    }
}

/// What one transaction works on: a tenant and one of its rows.
#[derive(Debug, Clone)]
pub struct Pick {
    /// `tenant<k>`.
    pub tenant: String,
    /// A row of that tenant.
    pub id: i64,
}

impl Pick {
    /// A random tenant and one of its first `per_tenant` rows.
    pub fn random(rng: &mut Rng, per_tenant: u64) -> Self {
        let k = rng.below(TENANTS);
        let j = rng.below(per_tenant);
        Self {
            tenant: format!("tenant{k}"),
            id: (1 + j * TENANTS + k) as i64,
        }
    }
}

/// How a transaction reads its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// By id alone (on the tenant side RLS adds the tenant check).
    ById,
    /// By id, filtered by the tenant too: `scoped()` on the tenant side, `WHERE tenant =
    /// $1` on the plain side (on Citus, what routes the read to one shard).
    ByTenantAndId,
}

fn check_row(id: i64, pick: &Pick) -> Result<()> {
    if id == pick.id {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "read row {id}, wanted {}",
            pick.id
        )))
    }
}

/// The tenant side: `pool.tenant(..)`, read the row as `read` says, insert a row,
/// `commit()`.
pub async fn tenant_tx(pool: &TenantPool, pick: &Pick, read: Read) -> Result<()> {
    let mut conn = pool.tenant(pick.tenant.as_str()).await?;
    let columns = (item_rls::id, item_rls::name);
    let (id, _name): (i64, String) = match read {
        Read::ById => {
            item_rls::table
                .find(pick.id)
                .select(columns)
                .get_result(&mut *conn)
                .await?
        }
        Read::ByTenantAndId => {
            item_rls::table
                .scoped(&conn)?
                .find(pick.id)
                .select(columns)
                .get_result(&mut *conn)
                .await?
        }
    };
    check_row(id, pick)?;
    diesel::insert_into(item_rls::table)
        .values((
            item_rls::tenant.eq(pick.tenant.as_str()),
            item_rls::name.eq("bench"),
        ))
        .execute(&mut *conn)
        .await?;
    conn.commit().await?;
    Ok(())
}

/// The plain side: the same statements on `item_plain`, between diesel-async's own
/// `BEGIN` and `COMMIT` (what `AsyncConnection::transaction` sends).
pub async fn plain_tx(pool: &Pool<AsyncPgConnection>, pick: &Pick, read: Read) -> Result<()> {
    let mut conn = pool.get().await?;
    let conn = &mut *conn;
    AnsiTransactionManager::begin_transaction(conn).await?;
    let columns = (item_plain::id, item_plain::name);
    let (id, _name): (i64, String) = match read {
        Read::ById => {
            item_plain::table
                .find(pick.id)
                .select(columns)
                .get_result(conn)
                .await?
        }
        Read::ByTenantAndId => {
            item_plain::table
                .filter(item_plain::tenant.eq(pick.tenant.as_str()))
                .find(pick.id)
                .select(columns)
                .get_result(conn)
                .await?
        }
    };
    check_row(id, pick)?;
    diesel::insert_into(item_plain::table)
        .values((
            item_plain::tenant.eq(pick.tenant.as_str()),
            item_plain::name.eq("bench"),
        ))
        .execute(conn)
        .await?;
    AnsiTransactionManager::commit_transaction(conn).await?;
    Ok(())
}

/// What one phase of a closed loop measured.
#[derive(Debug, Default)]
pub struct Phase {
    /// Transactions finished.
    pub transactions: u64,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Each transaction's latency.
    pub latencies: Vec<Duration>,
}

impl Phase {
    /// Transactions per second.
    pub fn tps(&self) -> f64 {
        self.transactions as f64 / self.elapsed.as_secs_f64()
    }

    /// Adds `other`'s transactions, time and latencies to this one.
    pub fn add(&mut self, other: Phase) {
        self.transactions += other.transactions;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
}

/// A closed loop: `tasks` tokio tasks run `transaction` on a random [`Pick`] back to back
/// until `length` has passed; a transaction started before the deadline is finished and
/// counted. Latency runs from before the call (the checkout's wait included) to its end.
pub async fn closed_loop<F, Fut>(
    tasks: usize,
    length: Duration,
    per_tenant: u64,
    transaction: F,
) -> Result<Phase>
where
    F: Fn(Pick) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + length;
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let transaction = transaction.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng::new(task as u64);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let pick = Pick::random(&mut rng, per_tenant);
                let began = Instant::now();
                transaction(pick).await?;
                latencies.push(began.elapsed());
            }
            Ok::<_, BenchError>(latencies)
        }));
    }
    let mut measured = Phase::default();
    for handle in handles {
        let latencies = handle
            .await
            .map_err(|e| BenchError::Failed(format!("a client task panicked: {e}")))??;
        measured.transactions += latencies.len() as u64;
        measured.latencies.extend(latencies);
    }
    measured.elapsed = start.elapsed();
    Ok(measured)
}
