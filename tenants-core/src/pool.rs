//! Async tenant-scoped transactions over a bb8 pool of `AsyncPgConnection`s.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bb8::RunError;
use diesel::ConnectionError;
use diesel::connection::CacheSize;
use diesel::result::Error as DieselError;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use tracing::Instrument;

use crate::checkout::{
    CleanCheck, LastConnectError, clean_check_prepared_sql, clean_check_sql, clean_check_verdict,
    session_start_check_sql,
};
use crate::config::Config;
use crate::error::Error;
use crate::footprint::{self, Footprint, ReadAt, Watch};
use crate::scope::Scope;
use crate::tenant::{Tenant, TenantId};
use crate::trace::{self, TransactionSpan};
use crate::transaction::{Batch, Batches, Begin, End, EndStep, Ended, Ending};
use crate::verify::VerifyReport;

/// An async closure taking a connection, whose future can be named to require `Send`.
///
/// Implemented for every `async |conn| { .. }` closure; it exists because `AsyncFnOnce`
/// alone cannot say "the returned future is `Send`", which axum handlers need.
pub trait ScopedFn<T, R>: AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as ScopedFn<T, R>>::Fut {
    /// The future the closure returns.
    type Fut: Future<Output = R>;
}

impl<F, T, Fut, R> ScopedFn<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

tokio::task_local! {
    /// Set while [`TenantPool`] checks out a connection for a tenant or admin transaction,
    /// whose begin batch makes the recycle check unnecessary (see [`TenantPool::begin`]).
    /// bb8 runs the check inside the checkout's own future, so the recycle callback sees it.
    static SCOPED_CHECKOUT: ();
}

/// A bb8 pool whose connections are handed out inside tenant or admin transactions.
///
/// ```no_run
/// use diesel_async::RunQueryDsl;
/// use tenants_core::TenantPool;
///
/// # async fn run() -> Result<(), tenants_core::Error> {
/// let pool = TenantPool::connect("postgres://app@localhost/app").await?;
/// let mut conn = pool.tenant("acme").await?;
/// diesel::sql_query("DELETE FROM todo_item").execute(&mut conn).await?; // acme's rows only
/// conn.commit().await?;
///
/// let count = pool
///     .transaction("acme", async |conn| {
///         diesel::sql_query("SELECT 1").execute(conn).await.map_err(tenants_core::Error::from)
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TenantPool {
    pool: Pool<AsyncPgConnection>,
    config: Arc<Config>,
    /// What the URL points at, for errors; `None` for a pool given to [`TenantPool::new`].
    target: Option<Arc<str>>,
    /// The URL of [`TenantPool::connect_with`], for the lifecycle's own connection (COPY
    /// needs the driver's client, which a pooled diesel-async connection does not expose);
    /// `None` for a pool given to [`TenantPool::new`]. Never printed.
    database_url: Option<Arc<str>>,
    /// The last failed attempt to open a connection; `None` as for `target`.
    connect_error: Option<LastConnectError>,
}

impl std::fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPool")
            .field("state", &self.pool.state())
            .field("config", &self.config)
            .finish()
    }
}

impl TenantPool {
    /// A pool of default size (bb8's 10) for `database_url`, with the default [`Config`].
    /// Fails, as [`TenantPool::connect_with`] does, when the first connection cannot be
    /// made.
    pub async fn connect(database_url: &str) -> Result<Self, Error> {
        Self::connect_with(database_url, Config::default(), bb8::Pool::builder()).await
    }

    /// A pool built by `builder` for `database_url`, using `config`'s names and the recycle
    /// check of [`TenantPool::manager_config`].
    ///
    /// Makes the first connection before it returns (it stays in the pool): a URL that does
    /// not parse, a server that is not there, a database that does not exist or refused
    /// credentials are an [`Error::Connect`] naming host, port, database and user with the
    /// server's or the operating system's reason, at once (at most `builder`'s connection
    /// timeout). Later, a checkout that times out is an [`Error::PoolTimedOut`] carrying the
    /// last failed attempt to connect, if any.
    pub async fn connect_with(
        database_url: &str,
        config: Config,
        builder: bb8::Builder<AsyncDieselConnectionManager<AsyncPgConnection>>,
    ) -> Result<Self, Error> {
        let target = crate::connect::describe_target(database_url)?;
        let connect_error = LastConnectError::default();
        let manager = AsyncDieselConnectionManager::new_with_config(
            database_url,
            Self::manager_config_recording(&config, Some(connect_error.clone())),
        );
        let pool = builder.build_unchecked(manager);
        let timeout = pool.config().connection_timeout;
        let first = match tokio::time::timeout(timeout, pool.dedicated_connection()).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(PoolError::ConnectionError(ConnectionError::BadConnection(reason)))) => {
                return Err(Error::Connect { target, reason });
            }
            Ok(Err(error)) => {
                return Err(Error::Connect {
                    target,
                    reason: error.to_string(),
                });
            }
            Err(_) => {
                return Err(Error::Connect {
                    target,
                    reason: format!("no answer within {timeout:?}"),
                });
            }
        };
        // Kept as the pool's first idle connection; a pool already full (min_idle) drops it.
        let _ = pool.add(first);
        Ok(Self {
            pool,
            config: Arc::new(config),
            target: Some(Arc::from(target)),
            database_url: Some(Arc::from(database_url)),
            connect_error: Some(connect_error),
        })
    }

    /// Wraps an existing pool. Build its manager with [`TenantPool::manager_config`] so that
    /// every checkout verifies the connection is clean.
    pub fn new(pool: Pool<AsyncPgConnection>, config: Config) -> Self {
        Self {
            pool,
            config: Arc::new(config),
            target: None,
            database_url: None,
            connect_error: None,
        }
    }

    /// A manager configuration whose recycle check refuses, before a plain checkout
    /// ([`TenantPool::unscoped`], `pool().get()`), a connection whose current role is not its
    /// login role, whose tenant setting is not empty, or which is inside a transaction that
    /// wrote (with the statement cache off: inside any transaction): such a connection is
    /// closed and replaced instead of being handed to the next caller. The check replaces
    /// diesel-async's default `SELECT 1`, so it costs no extra round trip. Tenant and admin
    /// checkouts skip it: their begin batch sets role and tenant itself. Keep bb8's
    /// `test_on_check_out` on (its default), or plain checkouts go unchecked. New
    /// connections are opened with [`crate::establish`]'s error reporting, and refused,
    /// naming the cause, when their session starts inside a tenant or as another role (a
    /// default set by `ALTER DATABASE/ROLE ... SET`): every checkout would be dirty.
    ///
    /// Each new connection gets the pool's diesel instrumentation, which reads the text of
    /// every statement a transaction sends: a transaction of the query builder's statements
    /// then ends with `COMMIT` alone instead of the guard and the session reset (README,
    /// "How a transaction ends"). It forwards every event to diesel's default
    /// instrumentation (`diesel::connection::set_default_instrumentation`); a connection
    /// given an instrumentation of its own keeps it and ends every transaction in full.
    pub fn manager_config(config: &Config) -> ManagerConfig<AsyncPgConnection> {
        Self::manager_config_recording(config, None)
    }

    /// [`TenantPool::manager_config`], keeping each failed connection attempt's reason in
    /// `connect_error` (and clearing it on success).
    fn manager_config_recording(
        config: &Config,
        connect_error: Option<LastConnectError>,
    ) -> ManagerConfig<AsyncPgConnection> {
        let check = clean_check_sql(config);
        let prepared = config
            .statement_cache()
            .then(|| CleanCheck(Arc::from(clean_check_prepared_sql(config))));
        let mut manager_config = ManagerConfig::default();
        manager_config.recycling_method =
            RecyclingMethod::CustomFunction(Box::new(move |conn: &mut AsyncPgConnection| {
                if SCOPED_CHECKOUT.try_with(|()| ()).is_ok() {
                    return Box::pin(async { Ok(()) });
                }
                let check = check.clone();
                let prepared = prepared.clone();
                Box::pin(async move {
                    let clean = match prepared {
                        // With the statement cache on (the default): a cached prepared
                        // statement, executed without being parsed or planned again.
                        Some(prepared) => {
                            clean_check_verdict(prepared.get_result::<bool>(conn).await)
                        }
                        // A simple-protocol statement: no prepared statement, so it works
                        // behind any PgBouncer; it fails when not clean.
                        None => conn.batch_execute(&check).await,
                    };
                    if let Err(error) = &clean {
                        trace::dirty_connection_discarded(error);
                    }
                    clean
                })
            }));
        let statement_cache = config.statement_cache();
        let start_check = session_start_check_sql(config);
        manager_config.custom_setup = Box::new(move |url| {
            let url = url.to_string();
            let connect_error = connect_error.clone();
            let start_check = start_check.clone();
            Box::pin(async move {
                let opened = match crate::connect::open(&url).await {
                    Ok(mut conn) => match conn.batch_execute(&start_check).await {
                        Ok(()) => Ok(conn),
                        Err(error) => Err(error.to_string()),
                    },
                    Err(reason) => Err(reason),
                };
                if let Some(slot) = &connect_error {
                    slot.record(opened.as_ref().err().cloned());
                }
                let mut conn = opened.map_err(|reason| {
                    tracing::warn!(%reason, "cannot open a pooled connection");
                    ConnectionError::BadConnection(reason)
                })?;
                if !statement_cache {
                    conn.set_prepared_statement_cache_size(CacheSize::Disabled);
                }
                // What lets a transaction that left nothing end with `COMMIT` alone.
                conn.set_instrumentation(Watch::new(ReadAt::Finish));
                Ok(conn)
            })
        });
        manager_config
    }

    /// The error for a checkout that failed.
    fn checkout_error(&self, error: RunError<PoolError>) -> Error {
        let target = || self.target.as_deref().unwrap_or("the database").to_string();
        match error {
            RunError::User(PoolError::ConnectionError(error)) => Error::Connect {
                target: target(),
                reason: match error {
                    ConnectionError::BadConnection(reason) => reason,
                    other => other.to_string(),
                },
            },
            RunError::User(PoolError::QueryError(error)) => Error::Database(error),
            RunError::TimedOut => Error::PoolTimedOut {
                waited: self.pool.config().connection_timeout,
                last_connect_error: self
                    .connect_error
                    .as_ref()
                    .and_then(LastConnectError::get)
                    .map(|reason| {
                        Error::Connect {
                            target: target(),
                            reason,
                        }
                        .to_string()
                    }),
            },
        }
    }

    /// The names in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The URL the pool was built for, when [`TenantPool::connect_with`] built it.
    pub(crate) fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The underlying bb8 pool.
    pub fn pool(&self) -> &Pool<AsyncPgConnection> {
        &self.pool
    }

    /// Checks out a connection outside any scope: no transaction, the login role, no
    /// tenant (so, on marked tables, no rows). The recycle check runs first, so a
    /// connection that some earlier code left with a role switched or a tenant set is
    /// replaced, not handed out. A failure is an [`Error`] that says why
    /// ([`Error::PoolTimedOut`] with the last connection error, if any).
    pub async fn unscoped(&self) -> Result<PooledConnection<'_, AsyncPgConnection>, Error> {
        self.pool.get().await.map_err(|e| self.checkout_error(e))
    }

    /// Checks out a connection and begins a transaction as `tenant`, in one round trip.
    ///
    /// An invalid id is an [`Error::InvalidTenantId`] before any checkout.
    pub async fn tenant(&self, tenant: impl TenantId) -> Result<TenantConnection, Error> {
        let tenant = self.config.tenant(tenant)?;
        self.begin(Scope::Tenant(tenant)).await
    }

    /// Checks out a connection and begins an admin transaction: every tenant's rows.
    pub async fn admin(&self) -> Result<TenantConnection, Error> {
        self.begin(Scope::Admin).await
    }

    /// Checks out a connection without the recycle check and begins `scope`'s transaction.
    ///
    /// The begin batch sets the role and the tenant setting itself (the admin one clears
    /// the setting), overriding whatever session-level `SET ROLE` or `set_config(.., false)`
    /// earlier code left behind, and both end with the transaction: so these checkouts send
    /// no statement before the batch (see benches/PERFORMANCE.md). A plain checkout
    /// ([`TenantPool::unscoped`], `pool().get()`, `verify`) still runs the check.
    ///
    /// When the batch fails, the connection is never handed back in the state it leaves:
    /// a `ROLLBACK` ends the transaction block the batch opened, or found left aborted by
    /// raw SQL, and the begin is tried once more on the same connection (a left-over block
    /// was the cause: it now succeeds; the batch itself is wrong, say a missing role: the
    /// error is returned, the connection clean). A connection that does not answer the
    /// `ROLLBACK` is lost (the server restarted, the backend was terminated): it is
    /// discarded and the begin retried on another, as often as the pool has connections.
    /// [`crate::transaction::Begin`] decides all of this.
    ///
    /// The transaction's span (see [`crate::trace`]) begins before the checkout.
    async fn begin(&self, scope: Scope) -> Result<TenantConnection, Error> {
        let trace = TransactionSpan::begin(&self.config, &scope);
        let batches = Batches::new(&self.config, &scope);
        let mut conn = self
            .check_out_and_begin(&batches, &trace)
            .instrument(trace.span().clone())
            .await
            .inspect_err(|error| trace.failed(error))?;
        footprint::began(conn.instrumentation());
        Ok(TenantConnection {
            conn: Some(conn),
            scope,
            batches,
            trace,
        })
    }

    /// [`TenantPool::begin`]'s checkouts and begin batches.
    async fn check_out_and_begin(
        &self,
        batches: &Batches,
        trace: &TransactionSpan,
    ) -> Result<PooledConnection<'static, AsyncPgConnection>, Error> {
        let mut begin = Begin::new(self.pool.config().max_size);
        loop {
            let mut conn = SCOPED_CHECKOUT
                .scope((), self.pool.get_owned())
                .await
                .map_err(|e| self.checkout_error(e))?;
            trace.checked_out();
            match begin_on(&mut conn, batches, &mut begin).await? {
                None => return Ok(conn),
                // bb8 closes it: its transaction manager is broken.
                Some(lost) => trace::lost_connection_discarded(&lost),
            }
        }
    }

    /// Runs `f` in a transaction as `tenant`: commits when it returns `Ok`, rolls back when
    /// it returns `Err` (or panics, or the future is dropped).
    pub fn transaction<'a, R, E, F>(
        &'a self,
        tenant: impl TenantId,
        f: F,
    ) -> impl Future<Output = Result<R, E>> + Send + 'a
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, E>
            + ScopedFn<&'r mut AsyncPgConnection, Result<R, E>, Fut: Send>
            + Send
            + 'a,
        E: From<Error> + Send + 'a,
        R: Send + 'a,
    {
        let scope = self.config.tenant(tenant).map(Scope::Tenant);
        async move {
            let scope = scope.map_err(Error::from)?;
            self.run(scope, f).await
        }
    }

    /// Runs `f` in an admin transaction, like [`TenantPool::transaction`].
    pub fn admin_transaction<'a, R, E, F>(
        &'a self,
        f: F,
    ) -> impl Future<Output = Result<R, E>> + Send + 'a
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, E>
            + ScopedFn<&'r mut AsyncPgConnection, Result<R, E>, Fut: Send>
            + Send
            + 'a,
        E: From<Error> + Send + 'a,
        R: Send + 'a,
    {
        self.run(Scope::Admin, f)
    }

    async fn run<R, E, F>(&self, scope: Scope, f: F) -> Result<R, E>
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, E>
            + ScopedFn<&'r mut AsyncPgConnection, Result<R, E>, Fut: Send>
            + Send,
        E: From<Error> + Send,
        R: Send,
    {
        let mut conn = self.begin(scope).await?;
        let span = conn.trace.span().clone();
        async move {
            let result = f(&mut conn).await;
            // `finish` works on the pooled connection itself, taken out of `conn` first: if
            // this future is dropped during COMMIT or ROLLBACK, the connection goes back to
            // bb8 with its transaction manager marked broken and is closed, instead of
            // `conn`'s drop sending a rollback after a statement of unknown outcome.
            match conn.conn.take() {
                Some(mut pooled) => {
                    let footprint = footprint::footprint(pooled.instrumentation());
                    finish(
                        &mut pooled,
                        &conn.batches,
                        footprint,
                        result,
                        &mut conn.trace,
                    )
                    .await
                }
                None => result,
            }
        }
        .instrument(span)
        .await
    }

    /// Compares the live database with every `#[with_rls]` table linked into the binary;
    /// see [`crate::verify`].
    pub async fn verify(&self) -> Result<VerifyReport, Error> {
        let mut conn = self.unscoped().await?;
        let (tables, shared) = crate::verify::linked_tables();
        let catalog = crate::catalog::read(&mut conn, &self.config, &tables, &shared, &[]).await?;
        crate::verify::compare(&self.config, &tables, &catalog).into_result()
    }
}

/// Sends `batches`' begin on `conn` as `begin` says (see [`crate::sync::begin`], its
/// blocking twin): `Err` when it did not begin; `Ok(Some(error))` when the connection is
/// lost and must be replaced.
async fn begin_on(
    conn: &mut AsyncPgConnection,
    batches: &Batches,
    begin: &mut Begin,
) -> Result<Option<DieselError>, Error> {
    loop {
        let error = match AnsiTransactionManager::begin_transaction_sql(conn, batches.begin()).await
        {
            Ok(()) => return Ok(None),
            Err(error) => error,
        };
        let rollback = conn.batch_execute(batches.sql(Batch::EndBlock)).await;
        if let Some(stopped) = begin.failed(error, &rollback) {
            if stopped.discard {
                AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
            }
            return stopped.outcome();
        }
    }
}

/// Ends the transaction on `conn` as `ending`, sending what [`End`] says (see
/// [`crate::sync::end`], its blocking twin).
async fn end(
    conn: &mut AsyncPgConnection,
    batches: &Batches,
    ending: Ending,
    footprint: Footprint,
) -> Ended {
    let depth = AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth();
    let (mut end, mut step) = End::start(ending, depth, footprint);
    loop {
        match step {
            EndStep::Send(batch) => {
                step = end.answered(conn.batch_execute(batches.sql(batch)).await);
            }
            EndStep::Done(ended) => {
                ended.settle(AnsiTransactionManager::transaction_manager_status_mut(conn));
                return ended;
            }
        }
    }
}

/// Commits after `Ok`, rolls back after `Err`, as diesel-async's `transaction`, and ends
/// `trace`; `footprint` is what the transaction's statements left on the session.
async fn finish<R, E>(
    conn: &mut AsyncPgConnection,
    batches: &Batches,
    footprint: Footprint,
    result: Result<R, E>,
    trace: &mut TransactionSpan,
) -> Result<R, E>
where
    E: From<Error>,
{
    let ending = if result.is_ok() {
        Ending::Commit
    } else {
        Ending::Rollback
    };
    let ended = end(conn, batches, ending, footprint).await;
    trace.ended(&ended);
    crate::sync::transaction_result(result, ended.result)
}

/// A pooled connection inside an open tenant (or admin) transaction.
///
/// It is a diesel-async connection, as bb8's pooled connection is: pass `&mut conn`
/// wherever diesel-async wants one; nested `.transaction()` calls become savepoints. End it
/// with [`commit`](TenantConnection::commit) or [`rollback`](TenantConnection::rollback).
/// Dropped without either, it is rolled back on the Tokio runtime before it returns to the
/// pool (outside a runtime it is closed instead), and when it had written, a `WARN` event
/// says that its writes are lost. Either way no later checkout sees its role or tenant.
/// The closure form, [`TenantPool::transaction`], commits on `Ok` and cannot forget to:
/// prefer it.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel::sql_types::Text;
/// use diesel_async::RunQueryDsl;
///
/// #[derive(QueryableByName)]
/// struct Name {
///     #[diesel(sql_type = Text)]
///     name: String,
/// }
///
/// # async fn run(pool: tenants_core::TenantPool) -> Result<(), tenants_core::Error> {
/// let mut conn = pool.tenant("acme").await?;
/// let names: Vec<Name> = diesel::sql_query("SELECT name FROM todo_item").load(&mut conn).await?;
/// diesel::sql_query("DELETE FROM todo_item").execute(&mut conn).await?;
/// conn.commit().await?; // without it, the delete is rolled back (and logged as a warning)
/// # Ok(()) }
/// ```
pub struct TenantConnection {
    /// `Some` until `commit`/`rollback` or drop takes it.
    conn: Option<PooledConnection<'static, AsyncPgConnection>>,
    scope: Scope,
    batches: Batches,
    trace: TransactionSpan,
}

impl std::fmt::Debug for TenantConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConnection")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TenantConnection {
    /// The tenant this transaction runs as; `None` for an admin transaction.
    pub fn tenant(&self) -> Option<&Tenant> {
        self.scope.tenant()
    }

    /// The scope this transaction runs in.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Commits the transaction and returns the connection to the pool, reset: its held
    /// cursors, temporary tables, `LISTEN`s, session settings and advisory locks are gone
    /// (a connection left with an SQL `PREPARE`d statement is closed instead).
    ///
    /// [`Error::RolledBack`] when PostgreSQL did not commit because a statement in the
    /// transaction had failed; [`Error::ScopeEnded`] when a raw `COMMIT` or `ROLLBACK`
    /// ended the scope before (the connection is discarded); the server's error when
    /// `COMMIT` itself was refused (a deferred constraint, a serialization failure).
    pub async fn commit(mut self) -> Result<(), Error> {
        self.end(true).await
    }

    /// Rolls the transaction back and returns the connection to the pool.
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.end(false).await
    }

    /// Commits (`commit`) or rolls back, and ends the span.
    async fn end(&mut self, commit: bool) -> Result<(), Error> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let ending = if commit {
            Ending::Commit
        } else {
            Ending::Rollback
        };
        let footprint = footprint::footprint(conn.instrumentation());
        let ended = end(&mut conn, &self.batches, ending, footprint).await;
        self.trace.ended(&ended);
        ended.result
    }
}

impl Deref for TenantConnection {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        // `conn` is only taken by methods that consume `self` and by `Drop`.
        self.conn
            .as_ref()
            .expect("TenantConnection used after it ended")
    }
}

impl DerefMut for TenantConnection {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        self.conn
            .as_mut()
            .expect("TenantConnection used after it ended")
    }
}

impl Drop for TenantConnection {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.trace.discarded();
        // Returning the connection with its transaction open would make bb8 close it (the
        // transaction manager reports it broken); rolling back first keeps it for reuse.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let batches = std::mem::take(&mut self.batches);
                runtime.spawn(
                    async move {
                        let ended = end(&mut conn, &batches, Ending::Drop, Footprint::Unknown);
                        trace::dropped(&ended.await);
                    }
                    .instrument(self.trace.span().clone()),
                );
            }
            Err(_) => drop(conn),
        }
    }
}

/// Tenant- and admin-scoped transactions on an [`AsyncPgConnection`] you manage yourself.
pub trait AsyncTenantTransactionExt: Send {
    /// Runs `f` in a transaction of `scope` with the names of `config`: commits on `Ok`,
    /// rolls back on `Err`.
    fn scoped_transaction<'a, R, E, F>(
        &'a mut self,
        config: &'a Config,
        scope: Scope,
        f: F,
    ) -> impl Future<Output = Result<R, E>> + Send + 'a
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, E>
            + ScopedFn<&'r mut AsyncPgConnection, Result<R, E>, Fut: Send>
            + Send
            + 'a,
        E: From<Error> + Send + 'a,
        R: Send + 'a;

    /// Runs `f` as tenant `tenant` with the default [`Config`]. Like the sync form, `f`
    /// returns `Result<R, tenants_core::Error>`, so `Ok(..?)` needs no annotation; use
    /// [`AsyncTenantTransactionExt::scoped_transaction`] for an error type of your own.
    ///
    /// ```no_run
    /// use diesel::prelude::*;
    /// use diesel_async::{AsyncPgConnection, RunQueryDsl};
    /// use tenants_core::AsyncTenantTransactionExt;
    ///
    /// # async fn run(conn: &mut AsyncPgConnection) -> Result<(), tenants_core::Error> {
    /// let n = conn
    ///     .tenant_transaction("acme", async |c| {
    ///         Ok(diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("1"))
    ///             .get_result::<i64>(c)
    ///             .await?)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    fn tenant_transaction<'a, R, F>(
        &'a mut self,
        tenant: impl TenantId,
        f: F,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'a
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, Error>
            + ScopedFn<&'r mut AsyncPgConnection, Result<R, Error>, Fut: Send>
            + Send
            + 'a,
        R: Send + 'a;
}

static DEFAULT_CONFIG: std::sync::LazyLock<Config> = std::sync::LazyLock::new(Config::default);

impl AsyncTenantTransactionExt for AsyncPgConnection {
    async fn scoped_transaction<'a, R, E, F>(
        &'a mut self,
        config: &'a Config,
        scope: Scope,
        f: F,
    ) -> Result<R, E>
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, E>
            + ScopedFn<&'r mut AsyncPgConnection, Result<R, E>, Fut: Send>
            + Send
            + 'a,
        E: From<Error> + Send + 'a,
        R: Send + 'a,
    {
        let mut trace = TransactionSpan::begin(config, &scope);
        let span = trace.span().clone();
        async move {
            let batches = Batches::new(config, &scope);
            // A connection of your own: nothing to replace it with when it is lost.
            if let Err(error) = begin_on(self, &batches, &mut Begin::new(0)).await {
                trace.failed(&error);
                return Err(error.into());
            }
            let result = f(&mut *self).await;
            // A connection of the caller's own: no watch reads its statements.
            finish(self, &batches, Footprint::Unknown, result, &mut trace).await
        }
        .instrument(span)
        .await
    }

    fn tenant_transaction<'a, R, F>(
        &'a mut self,
        tenant: impl TenantId,
        f: F,
    ) -> impl Future<Output = Result<R, Error>> + Send + 'a
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> Result<R, Error>
            + ScopedFn<&'r mut AsyncPgConnection, Result<R, Error>, Fut: Send>
            + Send
            + 'a,
        R: Send + 'a,
    {
        let scope = DEFAULT_CONFIG.tenant(tenant).map(Scope::Tenant);
        async move {
            let scope = scope?;
            self.scoped_transaction(&DEFAULT_CONFIG, scope, f).await
        }
    }
}
