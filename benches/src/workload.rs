//! The read-one-insert-one transaction of `tenant_tx` and `round_trips`, in its two forms.

use diesel::prelude::*;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use tenants_core::policy::{Grantee, QualifiedName, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, TenantPool};

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
        &[Grantee::Role(OWNER.into())],
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

/// The tenant side: `pool.tenant(..)`, read the row by id (RLS adds the tenant check),
/// insert a row, `commit()`.
pub async fn tenant_tx(pool: &TenantPool, pick: &Pick) -> Result<()> {
    let mut conn = pool.tenant(pick.tenant.as_str()).await?;
    let (id, _name): (i64, String) = item_rls::table
        .find(pick.id)
        .select((item_rls::id, item_rls::name))
        .get_result(&mut *conn)
        .await?;
    if id != pick.id {
        return Err(BenchError::Failed(format!(
            "read row {id}, wanted {}",
            pick.id
        )));
    }
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
pub async fn plain_tx(pool: &Pool<AsyncPgConnection>, pick: &Pick) -> Result<()> {
    let mut conn = pool.get().await?;
    let conn = &mut *conn;
    AnsiTransactionManager::begin_transaction(conn).await?;
    let (id, _name): (i64, String) = item_plain::table
        .find(pick.id)
        .select((item_plain::id, item_plain::name))
        .get_result(conn)
        .await?;
    if id != pick.id {
        return Err(BenchError::Failed(format!(
            "read row {id}, wanted {}",
            pick.id
        )));
    }
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
