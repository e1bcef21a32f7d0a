//! Tenant-scoped transactions over an r2d2 pool of diesel's synchronous `PgConnection`s:
//! the sync counterpart of [`TenantPool`](crate::TenantPool), with the same checkout rules.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use diesel::PgConnection;
use diesel::connection::{
    AnsiTransactionManager, CacheSize, Connection, SimpleConnection, TransactionManager,
};
use diesel::r2d2::{self, ConnectionManager, ManageConnection, Pool, PooledConnection};

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
use crate::transaction::{Batches, Begin, Ending};
use crate::verify::VerifyReport;

thread_local! {
    /// Set while [`SyncTenantPool`] checks out a connection for a tenant or admin
    /// transaction, whose begin batch makes the clean check unnecessary (see
    /// [`SyncTenantPool::tenant`]). r2d2 runs `is_valid` on the thread that checks out.
    static SCOPED_CHECKOUT: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread's checkout as scoped until dropped, even by a panic.
struct ScopedCheckout;

impl ScopedCheckout {
    fn begin() -> Self {
        SCOPED_CHECKOUT.set(true);
        ScopedCheckout
    }
}

impl Drop for ScopedCheckout {
    fn drop(&mut self) {
        SCOPED_CHECKOUT.set(false);
    }
}

/// diesel's r2d2 [`ConnectionManager`] for `PgConnection`, whose checkout test is the clean
/// check of [`TenantPool::manager_config`](crate::TenantPool::manager_config).
///
/// A wrapper because r2d2's only hook on checkout is `ManageConnection::is_valid`, which
/// diesel's manager spends on `SELECT 1` (its `CustomizeConnection` sees connections only
/// when they are opened and closed). This one sends the clean check instead, in the same
/// single round trip, and otherwise is diesel's manager: connections are opened by it, and
/// one returned in an open or broken transaction, or during a panic, is closed
/// (`has_broken`).
#[derive(Debug)]
pub struct SyncConnectionManager {
    diesel: ConnectionManager<PgConnection>,
    check: Check,
    statement_cache: bool,
    /// Run once per new connection: [`session_start_check_sql`].
    start_check: String,
    connect_error: LastConnectError,
}

/// The clean check in the form the statement cache allows.
#[derive(Debug)]
enum Check {
    /// A cached prepared statement, executed without being parsed or planned again.
    Prepared(CleanCheck),
    /// A simple-protocol statement (no prepared statement, so it works behind any
    /// PgBouncer); it fails when not clean.
    Simple(String),
}

impl SyncConnectionManager {
    /// A manager for `database_url` checking connections against `config`'s names; with
    /// [`Config::with_statement_cache`] off, connections cache no prepared statement and
    /// the check is a simple-protocol statement (as behind PgBouncer < 1.21).
    pub fn new(database_url: impl Into<String>, config: &Config) -> Self {
        Self {
            diesel: ConnectionManager::new(database_url),
            check: if config.statement_cache() {
                Check::Prepared(CleanCheck(Arc::from(clean_check_prepared_sql(config))))
            } else {
                Check::Simple(clean_check_sql(config))
            },
            statement_cache: config.statement_cache(),
            start_check: session_start_check_sql(config),
            connect_error: LastConnectError::default(),
        }
    }
}

impl ManageConnection for SyncConnectionManager {
    type Connection = PgConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<PgConnection, r2d2::Error> {
        let opened = self.diesel.connect().and_then(|mut conn| {
            conn.batch_execute(&self.start_check)
                .map_err(r2d2::Error::QueryError)?;
            Ok(conn)
        });
        self.connect_error
            .record(opened.as_ref().err().map(ToString::to_string));
        let mut conn = opened.inspect_err(|reason| {
            tracing::warn!(%reason, "cannot open a pooled connection");
        })?;
        if !self.statement_cache {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        // What lets a transaction that left nothing end with `COMMIT` alone.
        conn.set_instrumentation(Watch::new(ReadAt::Start));
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), r2d2::Error> {
        if SCOPED_CHECKOUT.get() {
            return Ok(());
        }
        let clean = match &self.check {
            Check::Prepared(prepared) => {
                clean_check_verdict(diesel::RunQueryDsl::get_result(prepared.clone(), conn))
            }
            Check::Simple(sql) => conn.batch_execute(sql),
        };
        clean.map_err(|error| {
            trace::dirty_connection_discarded(&error);
            r2d2::Error::QueryError(error)
        })
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        self.diesel.has_broken(conn)
    }
}

/// What `database_url` points at, for errors: database, host, port and user, as the async
/// pool names them (read by the driver's own parser, which needs the `async` feature).
#[cfg(feature = "async")]
fn describe_target(database_url: &str) -> String {
    crate::connect::describe_target(database_url).unwrap_or_else(|_| "the database".into())
}

/// What `database_url` points at, for errors: without the `async` feature there is no
/// connection-string parser, and libpq's reason names the host and port.
#[cfg(not(feature = "async"))]
fn describe_target(_database_url: &str) -> String {
    "the database".into()
}

/// libpq's message on one line: it ends with a newline and puts its hint on a line of its
/// own (`..failed: Connection refused\n\tIs the server running..`).
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An r2d2 pool whose connections are handed out inside tenant or admin transactions.
///
/// ```no_run
/// use diesel::RunQueryDsl;
/// use tenants_core::SyncTenantPool;
///
/// # fn run() -> Result<(), tenants_core::Error> {
/// let pool = SyncTenantPool::connect("postgres://app@localhost/app")?;
/// let mut conn = pool.tenant("acme")?;
/// diesel::sql_query("DELETE FROM todo_item").execute(&mut *conn)?; // acme's rows only
/// conn.commit()?;
///
/// let deleted = pool.transaction("acme", |conn| {
///     Ok::<_, tenants_core::Error>(diesel::sql_query("DELETE FROM todo_item").execute(conn)?)
/// })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SyncTenantPool {
    pool: Pool<SyncConnectionManager>,
    config: Arc<Config>,
    /// The manager's record of failed connection attempts; `None` for a pool given to
    /// [`SyncTenantPool::new`].
    connect_error: Option<LastConnectError>,
}

impl std::fmt::Debug for SyncTenantPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("SyncTenantPool")
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .field("config", &self.config)
            .finish()
    }
}

impl SyncTenantPool {
    /// A pool of default size (r2d2's 10) for `database_url`, with the default [`Config`].
    /// Fails, as [`SyncTenantPool::connect_with`] does, when no connection can be made.
    pub fn connect(database_url: &str) -> Result<Self, Error> {
        Self::connect_with(database_url, Config::default(), Pool::builder())
    }

    /// A pool built by `builder` for `database_url`, using `config`'s names and the checkout
    /// test of [`SyncConnectionManager`].
    ///
    /// Makes a first connection before it returns: a URL libpq cannot read, a server that
    /// is not there, a database that does not exist or refused credentials are an
    /// [`Error::Connect`] with libpq's reason (which names the host and port, the database
    /// or the user at fault), at once. Later, a checkout that times out is an
    /// [`Error::PoolTimedOut`] carrying the last failed attempt to connect, if any.
    ///
    /// Replaces `builder`'s error handler with r2d2's `NopErrorHandler`: the manager already
    /// logs each failed connection and each dirty checkout once, through `tracing`.
    pub fn connect_with(
        database_url: &str,
        config: Config,
        builder: r2d2::Builder<SyncConnectionManager>,
    ) -> Result<Self, Error> {
        let manager = SyncConnectionManager::new(database_url, &config);
        // Fail fast with the server's own reason. r2d2 takes no connection made outside it,
        // so this one only proves that the URL works, and is closed.
        let first = manager.connect().map_err(|error| Error::Connect {
            target: describe_target(database_url),
            reason: one_line(&error.to_string()),
        })?;
        drop(first);
        let connect_error = Some(manager.connect_error.clone());
        Ok(Self {
            // The pool opens its connections in the background.
            // The manager logs a failed connection and a dirty checkout itself, once, through
            // `tracing`; r2d2's default handler would log each again at ERROR.
            pool: builder
                .error_handler(Box::new(r2d2::NopErrorHandler))
                .build_unchecked(manager),
            config: Arc::new(config),
            connect_error,
        })
    }

    /// Wraps an existing pool; build it on a [`SyncConnectionManager`] made with the same
    /// `config`, and keep r2d2's `test_on_check_out` on (its default), or plain checkouts
    /// go unchecked.
    pub fn new(pool: Pool<SyncConnectionManager>, config: Config) -> Self {
        Self {
            pool,
            config: Arc::new(config),
            connect_error: None,
        }
    }

    /// The names in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The underlying r2d2 pool.
    pub fn pool(&self) -> &Pool<SyncConnectionManager> {
        &self.pool
    }

    /// Checks out a connection outside any scope: no transaction, the login role, no
    /// tenant. The clean check runs first: a connection that earlier code left with a role
    /// switched, a tenant set or a transaction that wrote is closed and replaced, not
    /// handed out. A failure is an [`Error::PoolTimedOut`] with the last connection error,
    /// if any.
    pub fn unscoped(&self) -> Result<PooledConnection<SyncConnectionManager>, Error> {
        self.pool.get().map_err(|_| self.timed_out())
    }

    /// Checks out a connection and begins a transaction as `tenant`, in one round trip.
    ///
    /// An invalid id is an [`Error::InvalidTenantId`] before any checkout.
    pub fn tenant(&self, tenant: impl TenantId) -> Result<SyncTenantConnection, Error> {
        let tenant = self.config.tenant(tenant)?;
        self.begin(Scope::Tenant(tenant))
    }

    /// Checks out a connection and begins an admin transaction: every tenant's rows.
    pub fn admin(&self) -> Result<SyncTenantConnection, Error> {
        self.begin(Scope::Admin)
    }

    /// Runs `f` in a transaction as `tenant`: commits when it returns `Ok`, rolls back when
    /// it returns `Err`; a panic in `f` closes the connection, which rolls back.
    pub fn transaction<R, E, F>(&self, tenant: impl TenantId, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<R, E>,
        E: From<Error>,
    {
        let tenant = self.config.tenant(tenant).map_err(Error::from)?;
        self.run(Scope::Tenant(tenant), f)
    }

    /// Runs `f` in an admin transaction, like [`SyncTenantPool::transaction`].
    pub fn admin_transaction<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<R, E>,
        E: From<Error>,
    {
        self.run(Scope::Admin, f)
    }

    /// Compares the live database with every `#[with_rls]` table linked into the binary;
    /// see [`crate::verify`].
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let mut conn = self.unscoped()?;
        let (tables, shared) = crate::verify::linked_tables();
        let catalog = crate::catalog::read_sync(&mut conn, &self.config, &tables, &shared, &[])?;
        crate::verify::compare(&self.config, &tables, &catalog).into_result()
    }

    fn run<R, E, F>(&self, scope: Scope, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<R, E>,
        E: From<Error>,
    {
        let mut conn = self.begin(scope)?;
        let _inside = conn.trace.span().clone().entered();
        let result = f(&mut conn);
        match conn.conn.take() {
            Some(mut pooled) => {
                let footprint = footprint::footprint(pooled.instrumentation());
                crate::sync::finish(
                    &mut pooled,
                    &conn.batches,
                    footprint,
                    result,
                    &mut conn.trace,
                )
            }
            None => result,
        }
    }

    /// Checks out a connection without the clean check and begins `scope`'s transaction,
    /// as [`TenantPool`](crate::TenantPool) does: the begin batch sets the role and the
    /// tenant setting itself (the admin one clears the setting), overriding whatever
    /// session-level `SET ROLE` or `set_config(.., false)` earlier code left behind.
    ///
    /// A failed begin is retried as [`crate::transaction::Begin`] decides: once after a
    /// `ROLLBACK` on the same connection, and on another one while connections are lost.
    ///
    /// The transaction's span (see [`crate::trace`]) begins before the checkout.
    fn begin(&self, scope: Scope) -> Result<SyncTenantConnection, Error> {
        let trace = TransactionSpan::begin(&self.config, &scope);
        let batches = Batches::new(&self.config, &scope);
        let mut conn = trace
            .span()
            .in_scope(|| self.check_out_and_begin(&batches, &trace))
            .inspect_err(|error| trace.failed(error))?;
        footprint::began(conn.instrumentation());
        Ok(SyncTenantConnection {
            conn: Some(conn),
            scope,
            batches,
            trace,
        })
    }

    /// [`SyncTenantPool::begin`]'s checkouts and begin batches.
    fn check_out_and_begin(
        &self,
        batches: &Batches,
        trace: &TransactionSpan,
    ) -> Result<PooledConnection<SyncConnectionManager>, Error> {
        let mut begin = Begin::new(self.pool.max_size());
        loop {
            let mut conn = {
                let _scoped = ScopedCheckout::begin();
                self.pool.get().map_err(|_| self.timed_out())?
            };
            trace.checked_out();
            match crate::sync::begin(&mut conn, batches, &mut begin)? {
                None => return Ok(conn),
                // Closed by `has_broken`: its transaction manager is broken.
                Some(lost) => trace::lost_connection_discarded(&lost),
            }
        }
    }

    /// r2d2 fails a checkout only by timing out.
    fn timed_out(&self) -> Error {
        Error::PoolTimedOut {
            waited: self.pool.connection_timeout(),
            last_connect_error: self
                .connect_error
                .as_ref()
                .and_then(LastConnectError::get)
                .map(|reason| {
                    Error::Connect {
                        target: "the database".into(),
                        reason,
                    }
                    .to_string()
                }),
        }
    }
}

/// A pooled `PgConnection` inside an open tenant (or admin) transaction.
///
/// It is a diesel connection, as r2d2's `PooledConnection` is: pass `&mut conn` wherever
/// diesel wants one; nested `.transaction()` calls become savepoints. End it with
/// [`commit`](SyncTenantConnection::commit) or [`rollback`](SyncTenantConnection::rollback).
/// Dropped without either, it is rolled back before it returns to the pool (during a
/// panic, or when the rollback fails, the connection is closed instead), and when it had
/// written, a `WARN` event says that its writes are lost. Either way no later checkout sees
/// its role or tenant. The closure form, [`SyncTenantPool::transaction`], commits on `Ok`
/// and cannot forget to: prefer it.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel::sql_types::Text;
///
/// #[derive(QueryableByName)]
/// struct Name {
///     #[diesel(sql_type = Text)]
///     name: String,
/// }
///
/// # fn run(pool: tenants_core::SyncTenantPool) -> Result<(), tenants_core::Error> {
/// let mut conn = pool.tenant("acme")?;
/// let names: Vec<Name> = diesel::sql_query("SELECT name FROM todo_item").load(&mut conn)?;
/// diesel::sql_query("DELETE FROM todo_item").execute(&mut conn)?;
/// conn.commit()?; // without it, the delete is rolled back (and logged as a warning)
/// # Ok(()) }
/// ```
pub struct SyncTenantConnection {
    /// `Some` until `commit`/`rollback` or drop takes it.
    conn: Option<PooledConnection<SyncConnectionManager>>,
    scope: Scope,
    batches: Batches,
    trace: TransactionSpan,
}

impl std::fmt::Debug for SyncTenantConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncTenantConnection")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl SyncTenantConnection {
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
    pub fn commit(mut self) -> Result<(), Error> {
        self.end(true)
    }

    /// Rolls the transaction back and returns the connection to the pool.
    pub fn rollback(mut self) -> Result<(), Error> {
        self.end(false)
    }

    /// Commits (`commit`) or rolls back, and ends the span.
    fn end(&mut self, commit: bool) -> Result<(), Error> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let ending = if commit {
            Ending::Commit
        } else {
            Ending::Rollback
        };
        let footprint = footprint::footprint(conn.instrumentation());
        let ended = crate::sync::end(&mut conn, &self.batches, ending, footprint);
        self.trace.ended(&ended);
        ended.result
    }
}

impl Deref for SyncTenantConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        // `conn` is only taken by methods that consume `self` and by `Drop`.
        self.conn
            .as_ref()
            .expect("SyncTenantConnection used after it ended")
    }
}

impl DerefMut for SyncTenantConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("SyncTenantConnection used after it ended")
    }
}

// `SyncTenantConnection` is a diesel connection, as r2d2's `PooledConnection` is: every
// method goes to the `PgConnection` inside the open transaction, so `query.load(&mut conn)`
// works without `&mut *conn`. (Implementing `Connection` outside diesel needs diesel's
// `i-implement-a-third-party-backend-and-opt-into-breaking-changes` feature, which
// diesel-async enables too; the `sync` feature turns it on.)

impl SimpleConnection for SyncTenantConnection {
    fn batch_execute(&mut self, query: &str) -> diesel::QueryResult<()> {
        (**self).batch_execute(query)
    }
}

impl diesel::connection::ConnectionSealed for SyncTenantConnection {}

impl Connection for SyncTenantConnection {
    type Backend = diesel::pg::Pg;
    type TransactionManager = InnerTransactionManager;

    /// A tenant connection comes from [`SyncTenantPool::tenant`] or
    /// [`SyncTenantPool::admin`] only.
    fn establish(_: &str) -> diesel::ConnectionResult<Self> {
        Err(diesel::ConnectionError::BadConnection(
            "a SyncTenantConnection comes from SyncTenantPool::tenant or ::admin".into(),
        ))
    }

    fn execute_returning_count<T>(&mut self, source: &T) -> diesel::QueryResult<usize>
    where
        T: diesel::query_builder::QueryFragment<diesel::pg::Pg> + diesel::query_builder::QueryId,
    {
        (**self).execute_returning_count(source)
    }

    fn transaction_state(&mut self) -> &mut AnsiTransactionManager {
        (**self).transaction_state()
    }

    fn instrumentation(&mut self) -> &mut dyn diesel::connection::Instrumentation {
        (**self).instrumentation()
    }

    fn set_instrumentation(&mut self, instrumentation: impl diesel::connection::Instrumentation) {
        (**self).set_instrumentation(instrumentation);
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        (**self).set_prepared_statement_cache_size(size);
    }
}

impl<B> diesel::connection::LoadConnection<B> for SyncTenantConnection
where
    PgConnection: diesel::connection::LoadConnection<B>,
{
    type Cursor<'conn, 'query> =
        <PgConnection as diesel::connection::LoadConnection<B>>::Cursor<'conn, 'query>;
    type Row<'conn, 'query> =
        <PgConnection as diesel::connection::LoadConnection<B>>::Row<'conn, 'query>;

    fn load<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> diesel::QueryResult<Self::Cursor<'conn, 'query>>
    where
        T: diesel::query_builder::Query
            + diesel::query_builder::QueryFragment<diesel::pg::Pg>
            + diesel::query_builder::QueryId
            + 'query,
        diesel::pg::Pg: diesel::expression::QueryMetadata<T::SqlType>,
    {
        <PgConnection as diesel::connection::LoadConnection<B>>::load(&mut **self, source)
    }
}

impl<Changes, Output> diesel::query_dsl::UpdateAndFetchResults<Changes, Output>
    for SyncTenantConnection
where
    PgConnection: diesel::query_dsl::UpdateAndFetchResults<Changes, Output>,
{
    fn update_and_fetch(&mut self, changeset: Changes) -> diesel::QueryResult<Output> {
        (**self).update_and_fetch(changeset)
    }
}

/// The transaction manager of [`SyncTenantConnection`]: diesel's, on the `PgConnection`
/// inside, so that `conn.transaction(..)` on a tenant connection is a savepoint of the
/// tenant transaction.
#[doc(hidden)]
#[derive(Debug)]
pub struct InnerTransactionManager;

impl TransactionManager<SyncTenantConnection> for InnerTransactionManager {
    type TransactionStateData = AnsiTransactionManager;

    fn begin_transaction(conn: &mut SyncTenantConnection) -> diesel::QueryResult<()> {
        AnsiTransactionManager::begin_transaction(&mut **conn)
    }

    fn rollback_transaction(conn: &mut SyncTenantConnection) -> diesel::QueryResult<()> {
        AnsiTransactionManager::rollback_transaction(&mut **conn)
    }

    fn commit_transaction(conn: &mut SyncTenantConnection) -> diesel::QueryResult<()> {
        AnsiTransactionManager::commit_transaction(&mut **conn)
    }

    fn transaction_manager_status_mut(
        conn: &mut SyncTenantConnection,
    ) -> &mut diesel::connection::TransactionManagerStatus {
        AnsiTransactionManager::transaction_manager_status_mut(&mut **conn)
    }
}

impl Drop for SyncTenantConnection {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.trace.discarded();
        // During a panic the pool closes the connection (`has_broken`), which ends the
        // transaction on the server: no statement is sent on a connection in unknown state.
        if std::thread::panicking() {
            return;
        }
        let _inside = self.trace.span().enter();
        let ended = crate::sync::end(&mut conn, &self.batches, Ending::Drop, Footprint::Unknown);
        trace::dropped(&ended);
    }
}
