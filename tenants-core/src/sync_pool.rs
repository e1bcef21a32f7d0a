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
use crate::scope::Scope;
use crate::tenant::{Tenant, TenantId};
use crate::trace::{self, TransactionSpan};
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
    pub fn connect_with(
        database_url: &str,
        config: Config,
        builder: r2d2::Builder<SyncConnectionManager>,
    ) -> Result<Self, Error> {
        let manager = SyncConnectionManager::new(database_url, &config);
        // Fail fast with the server's own reason. r2d2 takes no connection made outside it,
        // so this one only proves that the URL works, and is closed.
        let first = manager.connect().map_err(|error| Error::Connect {
            target: "the database".into(),
            reason: error.to_string(),
        })?;
        drop(first);
        let connect_error = Some(manager.connect_error.clone());
        Ok(Self {
            // The pool opens its connections in the background.
            pool: builder.build_unchecked(manager),
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
            Some(mut pooled) => crate::sync::finish(&mut pooled, result, &mut conn.trace),
            None => result,
        }
    }

    /// Checks out a connection without the clean check and begins `scope`'s transaction,
    /// as [`TenantPool`](crate::TenantPool) does: the begin batch sets the role and the
    /// tenant setting itself (the admin one clears the setting), overriding whatever
    /// session-level `SET ROLE` or `set_config(.., false)` earlier code left behind.
    ///
    /// When the batch fails, the connection is never handed back in the state it leaves:
    /// a `ROLLBACK` ends the transaction block the batch opened, or found left aborted by
    /// raw SQL, and the begin is tried once more on the same connection. A connection that
    /// does not answer the `ROLLBACK` is lost: it is discarded and the begin retried on
    /// another, as often as the pool has connections.
    ///
    /// The transaction's span (see [`crate::trace`]) begins before the checkout.
    fn begin(&self, scope: Scope) -> Result<SyncTenantConnection, Error> {
        let trace = TransactionSpan::begin(&self.config, &scope);
        let conn = trace
            .span()
            .in_scope(|| self.check_out_and_begin(&scope, &trace))
            .inspect_err(|error| trace.failed(error))?;
        Ok(SyncTenantConnection {
            conn: Some(conn),
            scope,
            trace,
        })
    }

    /// [`SyncTenantPool::begin`]'s checkout and begin batch, with their retries.
    fn check_out_and_begin(
        &self,
        scope: &Scope,
        trace: &TransactionSpan,
    ) -> Result<PooledConnection<SyncConnectionManager>, Error> {
        let sql = scope.begin_sql(&self.config);
        let mut lost_left = self.pool.max_size();
        loop {
            let mut conn = {
                let _scoped = ScopedCheckout::begin();
                self.pool.get().map_err(|_| self.timed_out())?
            };
            trace.checked_out();
            let mut rolled_back = false;
            let error = loop {
                let error = match AnsiTransactionManager::begin_transaction_sql(&mut *conn, &sql) {
                    Ok(()) => return Ok(conn),
                    Err(error) => error,
                };
                if conn.batch_execute("ROLLBACK").is_err() {
                    break error;
                }
                if rolled_back {
                    return Err(error.into());
                }
                rolled_back = true;
            };
            // Lost: `has_broken` closes a connection whose transaction manager is in error.
            AnsiTransactionManager::transaction_manager_status_mut(&mut *conn).set_in_error();
            drop(conn);
            if lost_left == 0 {
                return Err(error.into());
            }
            lost_left -= 1;
            trace::lost_connection_discarded(&error);
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
/// Pass it to diesel as `&mut *conn` (it dereferences to [`PgConnection`]); nested
/// `.transaction()` calls become savepoints. End it with
/// [`commit`](SyncTenantConnection::commit) or [`rollback`](SyncTenantConnection::rollback).
/// Dropped without either, it is rolled back before it returns to the pool (during a
/// panic, or when the rollback fails, the connection is closed instead). Either way no
/// later checkout sees its role or tenant.
pub struct SyncTenantConnection {
    /// `Some` until `commit`/`rollback` or drop takes it.
    conn: Option<PooledConnection<SyncConnectionManager>>,
    scope: Scope,
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

    /// Commits the transaction and returns the connection to the pool.
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
        let ended = if commit {
            AnsiTransactionManager::commit_transaction(&mut *conn)
        } else {
            AnsiTransactionManager::rollback_transaction(&mut *conn)
        };
        self.trace.ended(
            commit,
            &ended,
            AnsiTransactionManager::transaction_manager_status_mut(&mut *conn),
        );
        Ok(ended?)
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
        if let Err(error) = AnsiTransactionManager::rollback_transaction(&mut *conn) {
            trace::dropped_rollback_failed(&error);
            AnsiTransactionManager::transaction_manager_status_mut(&mut *conn).set_in_error();
        }
    }
}
