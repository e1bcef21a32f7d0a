//! What the library tells `tracing`, captured by a subscriber (`tenants_tests::capture`):
//! one `transaction` span per tenant or admin transaction, whatever begins it, with its
//! scope, tenant (unless the config omits it), checkout wait, outcome and duration, nested
//! in the caller's span; and the warn events of discarded connections, inside a span.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel_async::RunQueryDsl;
use tenants_core::{
    AsyncTenantTransactionExt, Config, Error, Scope, SyncTenantPool, Tenant, TenantPool,
    TenantTransactionExt, policy,
};
use tenants_tests::capture::{Capture, CapturedSpan};
use tenants_tests::{TestDb, batch_locked};
use tracing::Instrument;

use crate::common::session_of;

/// A fresh database with our roles, and a pool of `size` with `config` and `timeout`.
async fn prepared(config: Config, size: u32, timeout: Duration) -> (TestDb, TenantPool) {
    let db = TestDb::new();
    batch_locked(
        &mut db.connect(),
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    let pool = TenantPool::connect_with(
        &db.url(),
        config,
        bb8::Pool::builder()
            .max_size(size)
            .connection_timeout(timeout),
    )
    .await
    .expect("pool");
    (db, pool)
}

async fn default_pool() -> (TestDb, TenantPool) {
    prepared(Config::default(), 2, Duration::from_secs(30)).await
}

/// The one `transaction` span captured.
fn the_transaction(capture: &Capture) -> CapturedSpan {
    let spans = capture.spans_named("transaction");
    assert_eq!(spans.len(), 1, "one transaction span: {spans:#?}");
    spans.into_iter().next().expect("one span")
}

/// A field holding milliseconds, as a number.
fn millis(span: &CapturedSpan, field: &str) -> f64 {
    let text = span
        .fields
        .get(field)
        .unwrap_or_else(|| panic!("no {field} in {span:#?}"));
    let value: f64 = text
        .parse()
        .unwrap_or_else(|e| panic!("{field} = {text:?}: {e}"));
    assert!(value.is_finite() && value >= 0.0, "{field} = {value}");
    value
}

fn field<'a>(span: &'a CapturedSpan, name: &str) -> Option<&'a str> {
    span.fields.get(name).map(String::as_str)
}

/// Scope, tenant, outcome, target and level of a pool transaction, its timings, its parent
/// (the caller's `request` span) and its end: the span closes once the transaction has.
#[tokio::test]
async fn a_committed_tenant_transaction_is_one_span_inside_the_callers() {
    let (_db, pool) = default_pool().await;
    let capture = Capture::new();
    let _guard = capture.install();
    async {
        let mut conn = pool.tenant("acme").await.expect("tenant");
        session_of(&mut conn).await.expect("query");
        assert!(
            !transaction_closed(&capture),
            "the span lives as long as the transaction"
        );
        conn.commit().await.expect("commit");
    }
    .instrument(tracing::info_span!("request"))
    .await;

    let span = the_transaction(&capture);
    assert_eq!(span.target, "tenants::transaction");
    assert_eq!(span.level, tracing::Level::INFO);
    assert_eq!(field(&span, "scope"), Some("tenant"));
    assert_eq!(field(&span, "tenant"), Some("acme"));
    assert_eq!(field(&span, "outcome"), Some("commit"));
    assert_eq!(field(&span, "error"), None);
    let waited = millis(&span, "checkout_wait_ms");
    let lasted = millis(&span, "duration_ms");
    assert!(waited <= lasted, "wait {waited} within duration {lasted}");
    assert!(span.closed, "closed after the commit");
    let parent = capture.span(span.parent.expect("a parent span"));
    assert_eq!(parent.name, "request");
}

/// Rollback, drop without commit, and the admin scope (no tenant field).
#[tokio::test]
async fn rollback_drop_and_admin_are_told_apart() {
    let (_db, pool) = default_pool().await;
    let capture = Capture::new();
    let _guard = capture.install();

    let conn = pool.tenant("acme").await.expect("tenant");
    conn.rollback().await.expect("rollback");
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "outcome"), Some("rollback"));
    assert!(span.closed);
    capture.clear();

    let mut conn = pool.tenant("globex").await.expect("tenant");
    session_of(&mut conn).await.expect("query");
    drop(conn);
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "tenant"), Some("globex"));
    assert_eq!(field(&span, "outcome"), Some("discarded"));
    millis(&span, "duration_ms");
    // The rollback that follows the drop runs inside the span, on the runtime.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !transaction_closed(&capture) {
        assert!(tokio::time::Instant::now() < deadline, "span never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    capture.clear();

    let conn = pool.admin().await.expect("admin");
    conn.commit().await.expect("commit");
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "scope"), Some("admin"));
    assert_eq!(
        field(&span, "tenant"),
        None,
        "an admin transaction has no tenant"
    );
    assert_eq!(field(&span, "outcome"), Some("commit"));
}

/// The closure forms: `Ok` commits, `Err` rolls back, and what the closure logs is inside
/// the transaction's span.
#[tokio::test]
async fn closure_transactions_trace_their_outcome_and_contain_the_closure() {
    let (_db, pool) = default_pool().await;
    let capture = Capture::new();
    let _guard = capture.install();

    pool.transaction("acme", async |conn| {
        tracing::info!("inside");
        session_of(conn).await.map_err(Error::from)
    })
    .await
    .expect("ok");
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "outcome"), Some("commit"));
    assert_eq!(field(&span, "tenant"), Some("acme"));
    let inside = capture
        .events()
        .into_iter()
        .find(|event| event.fields.get("message").map(String::as_str) == Some("inside"))
        .expect("the closure's event");
    assert_eq!(span_name(&capture, inside.span), Some("transaction"));
    capture.clear();

    let failed: Result<(), Error> = pool
        .admin_transaction(async |_| Err(Error::NotTenantScoped))
        .await;
    assert!(failed.is_err());
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "scope"), Some("admin"));
    assert_eq!(field(&span, "outcome"), Some("rollback"));
    assert_eq!(
        field(&span, "error"),
        None,
        "the closure's own error is the caller's"
    );
}

/// `Config::with_trace_tenant(false)`: no tenant id anywhere in what was captured, in every
/// form of transaction; the other fields stay.
#[tokio::test]
async fn with_trace_tenant_off_no_tenant_id_is_recorded() {
    const SECRET_ID: &str = "tenant-id-that-must-not-be-logged";
    let config = Config::default().with_trace_tenant(false);
    let (db, pool) = prepared(config.clone(), 2, Duration::from_secs(30)).await;
    let capture = Capture::new();
    let _guard = capture.install();

    pool.tenant(SECRET_ID)
        .await
        .expect("tenant")
        .commit()
        .await
        .expect("commit");
    pool.transaction(SECRET_ID, async |conn| {
        session_of(conn).await.map_err(Error::from)
    })
    .await
    .expect("closure");
    let mut own = tenants_core::establish(&db.url()).await.expect("connect");
    let scope = Scope::Tenant(Tenant::new(SECRET_ID).expect("id"));
    own.scoped_transaction(&config, scope.clone(), async |conn| {
        session_of(conn).await.map_err(Error::from)
    })
    .await
    .expect("async extension");
    db.connect()
        .scoped_transaction(&config, scope, |_| Ok::<_, Error>(()))
        .expect("sync extension");

    let spans = capture.spans_named("transaction");
    assert_eq!(spans.len(), 4, "{spans:#?}");
    for span in &spans {
        assert_eq!(field(span, "scope"), Some("tenant"));
        assert_eq!(field(span, "tenant"), None, "{span:#?}");
        assert_eq!(field(span, "outcome"), Some("commit"));
        millis(span, "duration_ms");
    }
    // What the library records. (The driver's own `log` records, forwarded by a
    // `LogTracer` another test of this process may have installed, show the begin batch's
    // SQL at DEBUG, the tenant's literal with it: that is the driver's statement log, which
    // a deployment that hides tenant ids keeps below DEBUG.)
    let ours: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|event| event.target.starts_with("tenants"))
        .collect();
    let everything = format!("{:?}{ours:?}", capture.spans());
    assert!(!everything.contains(SECRET_ID), "{everything}");
}

/// Transactions on a connection of your own, async and sync: same span, no checkout wait.
#[tokio::test]
async fn extension_trait_transactions_are_spans_too() {
    let (db, _pool) = default_pool().await;
    let capture = Capture::new();
    let _guard = capture.install();

    let mut own = tenants_core::establish(&db.url()).await.expect("connect");
    own.tenant_transaction("acme", async |conn| {
        session_of(conn).await.map_err(Error::from)
    })
    .await
    .expect("async");
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "tenant"), Some("acme"));
    assert_eq!(field(&span, "outcome"), Some("commit"));
    assert_eq!(field(&span, "checkout_wait_ms"), None, "no pool, no wait");
    millis(&span, "duration_ms");
    capture.clear();

    let mut sync = db.connect();
    let failed = sync.admin_transaction(|conn| {
        tracing::info!("inside");
        conn.batch_execute("SELECT 1")?;
        Err::<(), _>(Error::NotTenantScoped)
    });
    assert!(failed.is_err());
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "scope"), Some("admin"));
    assert_eq!(field(&span, "outcome"), Some("rollback"));
    let inside = capture.events().into_iter().next().expect("an event");
    assert_eq!(span_name(&capture, inside.span), Some("transaction"));
    capture.clear();

    sync.tenant_transaction("acme", |conn| Ok(conn.batch_execute("SELECT 1")?))
        .expect("sync commit");
    assert_eq!(field(&the_transaction(&capture), "outcome"), Some("commit"));
}

/// A COMMIT the server refuses (a deferred unique key) ends as a rollback, with its error.
#[tokio::test]
async fn a_refused_commit_is_a_rollback_with_its_error() {
    let (db, pool) = default_pool().await;
    db.connect()
        .batch_execute(
            "CREATE TABLE once (id int UNIQUE DEFERRABLE INITIALLY DEFERRED);
             GRANT INSERT ON once TO tenants_user;",
        )
        .expect("table");
    let capture = Capture::new();
    let _guard = capture.install();
    let mut conn = pool.tenant("acme").await.expect("tenant");
    diesel::sql_query("INSERT INTO once VALUES (1), (1)")
        .execute(&mut conn)
        .await
        .expect("deferred: accepted until COMMIT");
    let refused = conn.commit().await;
    assert!(refused.is_err(), "{refused:?}");
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "outcome"), Some("rollback"));
    let error = field(&span, "error").expect("the commit's error");
    assert!(error.contains("duplicate key"), "{error}");
}

/// `checkout_wait_ms` is the time spent waiting for a connection; a checkout that times out
/// ends the span as discarded, with the error and no wait recorded.
#[tokio::test]
async fn checkout_wait_and_timeout_are_recorded() {
    let (_db, pool) = prepared(Config::default(), 1, Duration::from_millis(2_000)).await;
    let capture = Capture::new();
    let _guard = capture.install();

    let held = pool.tenant("acme").await.expect("the only connection");
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.commit().await.expect("commit");
    };
    let (_, waiting) = tokio::join!(release, pool.tenant("globex"));
    waiting
        .expect("after the release")
        .commit()
        .await
        .expect("commit");
    let spans = capture.spans_named("transaction");
    let globex = spans
        .iter()
        .find(|span| field(span, "tenant") == Some("globex"))
        .expect("globex's span");
    let waited = millis(globex, "checkout_wait_ms");
    assert!(
        waited >= 250.0,
        "waited {waited} ms for the held connection"
    );
    capture.clear();

    let _held = pool.pool().get().await.expect("hold the only connection");
    let timed_out = pool.tenant("acme").await;
    assert!(
        matches!(timed_out, Err(Error::PoolTimedOut { .. })),
        "{timed_out:?}"
    );
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "outcome"), Some("discarded"));
    assert!(
        field(&span, "error")
            .is_some_and(|e| e.contains("timed out") || e.contains("no connection")),
        "{span:#?}"
    );
    assert_eq!(field(&span, "checkout_wait_ms"), None);
    assert!(span.closed);
}

/// A plain checkout that finds a dirty connection discards it with a warn event carrying
/// the outcome and the reason, inside the caller's span.
#[tokio::test]
async fn a_dirty_plain_checkout_is_a_warn_event_inside_the_callers_span() {
    let (_db, pool) = prepared(Config::default(), 1, Duration::from_secs(30)).await;
    {
        let mut conn = pool.pool().get().await.expect("checkout");
        diesel::sql_query("SET ROLE tenants_user")
            .execute(&mut conn)
            .await
            .expect("session-level role, behind the library's back");
    }
    let capture = Capture::new();
    let _guard = capture.install();
    let mut conn = pool
        .unscoped()
        .instrument(tracing::info_span!("request"))
        .await
        .expect("a clean replacement");
    let session = session_of(&mut conn).await.expect("session");
    assert_ne!(session.role, "tenants_user");

    assert_dirty_checkout_warned_inside_request(&capture);
}

/// A warn event of a discarded dirty connection, with its outcome and reason, inside the
/// `request` span.
fn assert_dirty_checkout_warned_inside_request(capture: &Capture) {
    let events = capture.events();
    let warned = events
        .iter()
        .find(|event| event.target == "tenants::checkout")
        .unwrap_or_else(|| panic!("no checkout event in {events:#?}"));
    assert_eq!(warned.level, tracing::Level::WARN);
    assert_eq!(
        warned.fields.get("outcome").map(String::as_str),
        Some("discarded")
    );
    assert!(warned.fields.get("error").is_some_and(|e| !e.is_empty()));
    assert_eq!(span_name(capture, warned.span), Some("request"));
}

/// The name of the span at `index`, if any.
fn span_name(capture: &Capture, index: Option<usize>) -> Option<&'static str> {
    index.map(|index| capture.span(index).name)
}

/// A tenant checkout whose idle connection died is retried on another; the warn event
/// about the discarded connection is inside the transaction's span.
#[tokio::test]
async fn a_lost_connection_discarded_by_a_begin_warns_inside_its_span() {
    let (db, pool) = prepared(Config::default(), 1, Duration::from_secs(30)).await;
    let mut conn = pool.tenant("acme").await.expect("tenant");
    let pid = session_of(&mut conn).await.expect("session").pid;
    conn.commit().await.expect("commit");
    tenants_tests::count(
        &mut db.connect(),
        &format!("SELECT count(*) AS n FROM (SELECT pg_terminate_backend({pid}, 5000)) t"),
    );
    let capture = Capture::new();
    let _guard = capture.install();
    pool.tenant("acme")
        .await
        .expect("begun on a new connection")
        .commit()
        .await
        .expect("commit");
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "outcome"), Some("commit"));
    let events = capture.events();
    let warned = events
        .iter()
        .find(|event| event.level == tracing::Level::WARN)
        .unwrap_or_else(|| panic!("no warning in {events:#?}"));
    assert_eq!(warned.target, "tenants::transaction");
    assert_eq!(span_name(&capture, warned.span), Some("transaction"));
}

/// The sync pool's transactions carry the same spans: a commit inside the caller's span
/// with its checkout wait, a drop, a closure's rollback containing what it logs, the tenant
/// omitted on request; its dirty plain checkout warns inside the caller's span.
#[test]
fn the_sync_pool_traces_as_the_async_one() {
    let db = TestDb::new();
    let config = Config::default();
    batch_locked(
        &mut db.connect(),
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    let pool = |config: Config| {
        SyncTenantPool::connect_with(&db.url(), config, diesel::r2d2::Pool::builder().max_size(1))
            .expect("sync pool")
    };
    let sync = pool(config);
    let capture = Capture::new();
    let _guard = capture.install();

    tracing::info_span!("request").in_scope(|| {
        let mut conn = sync.tenant("acme").expect("tenant");
        conn.batch_execute("SELECT 1").expect("query");
        conn.commit().expect("commit");
    });
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "scope"), Some("tenant"));
    assert_eq!(field(&span, "tenant"), Some("acme"));
    assert_eq!(field(&span, "outcome"), Some("commit"));
    assert!(millis(&span, "checkout_wait_ms") <= millis(&span, "duration_ms"));
    assert_eq!(capture.span(span.parent.expect("a parent")).name, "request");
    assert!(span.closed);
    capture.clear();

    drop(sync.tenant("globex").expect("tenant"));
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "outcome"), Some("discarded"));
    assert!(span.closed, "the rollback after the drop is done");
    capture.clear();

    let failed = sync.admin_transaction(|_| {
        tracing::info!("inside");
        Err::<(), _>(Error::NotTenantScoped)
    });
    assert!(failed.is_err());
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "scope"), Some("admin"));
    assert_eq!(field(&span, "outcome"), Some("rollback"));
    let inside = capture
        .events()
        .into_iter()
        .next()
        .expect("the closure's event");
    assert_eq!(span_name(&capture, inside.span), Some("transaction"));
    capture.clear();

    pool(Config::default().with_trace_tenant(false))
        .transaction("acme", |conn| {
            Ok::<_, Error>(conn.batch_execute("SELECT 1")?)
        })
        .expect("closure commit");
    let span = the_transaction(&capture);
    assert_eq!(field(&span, "tenant"), None);
    assert_eq!(field(&span, "outcome"), Some("commit"));
    capture.clear();

    {
        let mut conn = sync.unscoped().expect("plain checkout");
        conn.batch_execute("SET ROLE tenants_user")
            .expect("session role");
    }
    tracing::info_span!("request").in_scope(|| sync.unscoped().expect("a clean replacement"));
    assert_dirty_checkout_warned_inside_request(&capture);
}

/// Whether the one transaction span so far has closed.
fn transaction_closed(capture: &Capture) -> bool {
    capture
        .spans_named("transaction")
        .iter()
        .any(|span| span.closed)
}
