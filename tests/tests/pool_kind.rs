//! The two pools behind one interface, so that one suite runs through either: the async
//! `TenantPool` (bb8, diesel-async) and the sync `SyncTenantPool` (r2d2, diesel's
//! `PgConnection`). The sync calls block the test's thread, which is all a test needs.

use diesel::sql_types::BigInt;
use diesel::{PgConnection, QueryResult, QueryableByName};
use diesel_async::AsyncPgConnection;
use tenants_core::{
    Config, Error, SyncTenantConnection, SyncTenantPool, TenantConnection, TenantId, TenantPool,
    VerifyReport,
};

use tenants_tests::TestDb;

use crate::common::{Login, SESSION_SQL, Server, Session};

/// Which pool a suite runs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// [`TenantPool`].
    Async,
    /// [`SyncTenantPool`].
    Sync,
}

/// A pool of either kind.
#[derive(Debug, Clone)]
pub enum AnyPool {
    Async(TenantPool),
    Sync(SyncTenantPool),
}

/// A connection inside a tenant or admin transaction, from either pool.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a test holds one connection at a time"
)]
pub enum AnyConnection {
    Async(TenantConnection),
    Sync(SyncTenantConnection),
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A pool of `size` connections to `url` with `config`, of `kind`.
pub async fn connect(kind: PoolKind, url: &str, config: Config, size: u32) -> AnyPool {
    let pool = match kind {
        PoolKind::Async => {
            TenantPool::connect_with(url, config, bb8::Pool::builder().max_size(size))
                .await
                .map(AnyPool::Async)
        }
        PoolKind::Sync => {
            SyncTenantPool::connect_with(url, config, diesel::r2d2::Pool::builder().max_size(size))
                .map(AnyPool::Sync)
        }
    };
    pool.unwrap_or_else(|e| panic!("cannot build a {kind:?} pool for {url}: {e}"))
}

/// A pool of `kind` and `size` to `db` on `server` as `login`. The sync pool is tried on
/// PostgreSQL directly; PgBouncer and Citus runs are the async pool's.
pub async fn on(
    server: Server<'_>,
    kind: PoolKind,
    db: &TestDb,
    login: Login,
    size: u32,
) -> AnyPool {
    match kind {
        PoolKind::Async => AnyPool::Async(server.pool(db, login, size).await),
        PoolKind::Sync => {
            assert!(
                matches!(server, Server::Direct),
                "the sync pool's suites run on PostgreSQL directly"
            );
            connect(kind, &login.url(db), server.config(), size).await
        }
    }
}

impl AnyPool {
    pub async fn tenant(&self, tenant: impl TenantId) -> Result<AnyConnection, Error> {
        match self {
            AnyPool::Async(pool) => pool.tenant(tenant).await.map(AnyConnection::Async),
            AnyPool::Sync(pool) => pool.tenant(tenant).map(AnyConnection::Sync),
        }
    }

    pub async fn admin(&self) -> Result<AnyConnection, Error> {
        match self {
            AnyPool::Async(pool) => pool.admin().await.map(AnyConnection::Async),
            AnyPool::Sync(pool) => pool.admin().map(AnyConnection::Sync),
        }
    }

    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        match self {
            AnyPool::Async(pool) => pool.verify().await,
            AnyPool::Sync(pool) => pool.verify(),
        }
    }

    /// The session of a plain (checked) checkout.
    pub async fn checkout_session(&self) -> Session {
        match self {
            AnyPool::Async(pool) => {
                let mut conn = pool.unscoped().await.expect("checkout");
                async_query::<Session>(&mut conn, SESSION_SQL).await
            }
            AnyPool::Sync(pool) => {
                let mut conn = pool.unscoped().expect("checkout");
                sync_query::<Session>(&mut conn, SESSION_SQL)
            }
        }
        .expect("session state")
    }

    /// On one plain (checked) checkout: the `count(*) AS n` that `count_sql` selects, then
    /// what executing `execute_sql` gave.
    pub async fn unscoped_count_and_execute(
        &self,
        count_sql: &str,
        execute_sql: &str,
    ) -> (QueryResult<i64>, QueryResult<usize>) {
        match self {
            AnyPool::Async(pool) => {
                let mut conn = pool.unscoped().await.expect("plain checkout");
                let count = async_query::<N>(&mut conn, count_sql).await;
                let executed = async_execute(&mut conn, execute_sql).await;
                (count.map(|c| c.n), executed)
            }
            AnyPool::Sync(pool) => {
                let mut conn = pool.unscoped().expect("plain checkout");
                let count = sync_query::<N>(&mut conn, count_sql);
                let executed = sync_execute(&mut conn, execute_sql);
                (count.map(|c| c.n), executed)
            }
        }
    }
}

impl AnyConnection {
    pub async fn execute_sql(&mut self, sql: &str) -> QueryResult<usize> {
        match self {
            AnyConnection::Async(conn) => async_execute(conn, sql).await,
            AnyConnection::Sync(conn) => sync_execute(conn, sql),
        }
    }

    /// The `count(*) AS n` that `sql` selects.
    pub async fn count_of(&mut self, sql: &str) -> i64 {
        match self {
            AnyConnection::Async(conn) => async_query::<N>(conn, sql).await,
            AnyConnection::Sync(conn) => sync_query::<N>(conn, sql),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
    }

    /// Runs the async or the sync form of one query.
    pub async fn load_either<T>(
        &mut self,
        on_async: impl AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
        on_sync: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
    ) -> QueryResult<T> {
        match self {
            AnyConnection::Async(conn) => on_async(conn).await,
            AnyConnection::Sync(conn) => on_sync(conn),
        }
    }

    pub async fn commit(self) -> Result<(), Error> {
        match self {
            AnyConnection::Async(conn) => conn.commit().await,
            AnyConnection::Sync(conn) => conn.commit(),
        }
    }

    pub async fn rollback(self) -> Result<(), Error> {
        match self {
            AnyConnection::Async(conn) => conn.rollback().await,
            AnyConnection::Sync(conn) => conn.rollback(),
        }
    }
}

async fn async_query<T>(conn: &mut AsyncPgConnection, sql: &str) -> QueryResult<T>
where
    T: QueryableByName<diesel::pg::Pg> + Send + 'static,
{
    diesel_async::RunQueryDsl::get_result(diesel::sql_query(sql), conn).await
}

fn sync_query<T>(conn: &mut PgConnection, sql: &str) -> QueryResult<T>
where
    T: QueryableByName<diesel::pg::Pg> + 'static,
{
    diesel::RunQueryDsl::get_result(diesel::sql_query(sql), conn)
}

async fn async_execute(conn: &mut AsyncPgConnection, sql: &str) -> QueryResult<usize> {
    diesel_async::RunQueryDsl::execute(diesel::sql_query(sql), conn).await
}

fn sync_execute(conn: &mut PgConnection, sql: &str) -> QueryResult<usize> {
    diesel::RunQueryDsl::execute(diesel::sql_query(sql), conn)
}
