//! Pool hygiene under load: commits, rollbacks, drops, panics and cancellations at every
//! await point, mixed over 50 tenants and admin transactions on a pool of 2.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Error, TenantPool};
use tenants_tests::TestDb;

use crate::common::{Login, Server, create_marked_table};

const TENANTS: u64 = 50;
pub const PANIC_MARKER: &str = "soak: intended panic";

#[derive(QueryableByName)]
pub struct Row {
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub tenant: String,
}

#[derive(QueryableByName)]
pub struct Session {
    #[diesel(sql_type = Text)]
    pub role: String,
    #[diesel(sql_type = Text)]
    pub login: String,
    #[diesel(sql_type = Text)]
    pub tenant: String,
}

pub const SESSION: &str = "SELECT current_user::text AS role, session_user::text AS login,
    coalesce(current_setting('tenants.current_tenant', true), '') AS tenant";

/// Drops the inner future after it has been polled `polls` times without finishing:
/// a cancellation at whichever await point that is.
struct CancelAfter<F> {
    inner: Pin<Box<F>>,
    polls: u32,
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            return Poll::Ready(None);
        }
        self.polls -= 1;
        self.inner.as_mut().poll(cx).map(Some)
    }
}

/// xorshift: deterministic per task, no dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Violations seen, with the first few described.
#[derive(Default)]
pub struct Violations {
    count: AtomicUsize,
    first: Mutex<Vec<String>>,
}

impl Violations {
    pub fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().expect("lock");
        if first.len() < 10 {
            first.push(what);
        }
    }
}

async fn check_rows(
    conn: &mut AsyncPgConnection,
    table: &str,
    tenant: &str,
    v: &Violations,
) -> Result<(), Error> {
    let rows = diesel::sql_query(format!("SELECT name, tenant FROM \"{table}\""))
        .load::<Row>(conn)
        .await?;
    for row in rows {
        if row.tenant != tenant || !row.name.starts_with(&format!("{tenant}-")) {
            v.record(format!("as {tenant} saw {}/{}", row.tenant, row.name));
        }
    }
    let session = diesel::sql_query(SESSION)
        .get_result::<Session>(conn)
        .await?;
    if session.role != "tenants_user" || session.tenant != tenant {
        v.record(format!(
            "as {tenant} ran as {}/{}",
            session.role, session.tenant
        ));
    }
    Ok(())
}

/// One operation of kind `kind` for `tenant`.
async fn operation(
    pool: TenantPool,
    admins: TenantPool,
    table: &'static str,
    kind: u64,
    tenant: String,
    n: u64,
    v: Arc<Violations>,
) -> Result<(), Error> {
    let insert =
        format!("INSERT INTO \"{table}\" (name, tenant) VALUES ('{tenant}-{n}', '{tenant}')");
    match kind {
        // read, commit
        0 | 1 => {
            let mut conn = pool.tenant(tenant.as_str()).await?;
            check_rows(&mut conn, table, &tenant, &v).await?;
            conn.commit().await
        }
        // insert, commit
        2 => {
            let mut conn = pool.tenant(tenant.as_str()).await?;
            diesel::sql_query(insert).execute(&mut conn).await?;
            conn.commit().await
        }
        // insert, roll back
        3 => {
            let mut conn = pool.tenant(tenant.as_str()).await?;
            diesel::sql_query(format!(
                "INSERT INTO \"{table}\" (name, tenant) VALUES ('{tenant}-lost', '{tenant}')"
            ))
            .execute(&mut conn)
            .await?;
            conn.rollback().await
        }
        // insert, then dropped mid-way
        4 => {
            let mut conn = pool.tenant(tenant.as_str()).await?;
            diesel::sql_query(format!(
                "INSERT INTO \"{table}\" (name, tenant) VALUES ('{tenant}-dropped', '{tenant}')"
            ))
            .execute(&mut conn)
            .await?;
            drop(conn);
            Ok(())
        }
        // the closure form, whose closure fails after checking
        5 => {
            let v2 = v.clone();
            let result: Result<(), Error> = pool
                .transaction(tenant.as_str(), async |conn| {
                    check_rows(conn, table, &tenant, &v2).await?;
                    Err(Error::Database(diesel::result::Error::RollbackTransaction))
                })
                .await;
            match result {
                Err(Error::Database(diesel::result::Error::RollbackTransaction)) => Ok(()),
                other => other,
            }
        }
        // the closure panics inside the transaction
        6 => {
            let _: Result<(), Error> = pool
                .transaction(tenant.as_str(), async |conn| {
                    diesel::sql_query(insert).execute(conn).await?;
                    panic!("{PANIC_MARKER}");
                })
                .await;
            Ok(())
        }
        // admin: sees every tenant
        7 => {
            let mut conn = admins.admin().await?;
            let session = diesel::sql_query(SESSION)
                .get_result::<Session>(&mut conn)
                .await?;
            if session.role != "tenants_admin" || !session.tenant.is_empty() {
                v.record(format!("admin ran as {}/{}", session.role, session.tenant));
            }
            let rows = diesel::sql_query(format!("SELECT name, tenant FROM \"{table}\""))
                .load::<Row>(&mut conn)
                .await?;
            if rows
                .iter()
                .any(|r| !r.name.starts_with(&format!("{}-", r.tenant)))
            {
                v.record("admin saw a row written under the wrong tenant".into());
            }
            conn.commit().await
        }
        // a plain checkout: must be clean. (Its query runs in a plain transaction: behind
        // PgBouncer < 1.21 a prepared statement outside a transaction may reach another
        // server between its parse and its execution.)
        _ => {
            let mut conn = pool.unscoped().await?;
            let session = diesel_async::AsyncConnection::transaction(&mut conn, async |c| {
                diesel::sql_query(SESSION).get_result::<Session>(c).await
            })
            .await?;
            if session.role != session.login || !session.tenant.is_empty() {
                v.record(format!(
                    "checkout was dirty: {}/{}",
                    session.role, session.tenant
                ));
            }
            Ok(())
        }
    }
}

pub fn silence_intended_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let intended = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|s| s == PANIC_MARKER);
            if !intended {
                default(info);
            }
        }));
    });
}

/// What a soak saw.
pub struct Outcome {
    /// Rows or sessions that were not what the scope promised.
    pub violations: Arc<Violations>,
    /// Errors nobody expected (the run stops at the first).
    pub errors: usize,
    /// Errors the caller declared tolerable (counted, not fatal).
    pub tolerated: usize,
}

/// Runs `ops` operations over `tasks` tasks, admin transactions on `admins` (the pool
/// itself, or the hardened deployment's admin pool). An error for which `tolerate` is true
/// is counted in [`Outcome::tolerated`]; any other stops the run.
pub async fn soak_tolerating(
    pool: &TenantPool,
    admins: &TenantPool,
    table: &'static str,
    ops: u64,
    tasks: u64,
    tolerate: fn(&Error) -> bool,
) -> Outcome {
    silence_intended_panics();
    let violations = Arc::new(Violations::default());
    let errors = Arc::new(AtomicUsize::new(0));
    let tolerated = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (pool, admins, v, errors, tolerated) = (
            pool.clone(),
            admins.clone(),
            violations.clone(),
            errors.clone(),
            tolerated.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (task + 1));
            for i in 0..ops / tasks {
                // Stop at the first unexpected error: it is reported, and waiting out pool
                // timeouts for the remaining operations would only look like a hang.
                if AtomicUsize::load(&errors, Ordering::Relaxed) > 0 {
                    break;
                }
                let tenant = format!("t{}", rng.next(TENANTS));
                let kind = rng.next(10);
                let op = operation(
                    pool.clone(),
                    admins.clone(),
                    table,
                    kind,
                    tenant,
                    task * 1_000_000 + i,
                    v.clone(),
                );
                // Every fifth operation is cancelled after 1 to 6 polls: at checkout, begin,
                // a query, or commit.
                let cancel_after = if rng.next(5) == 0 {
                    1 + rng.next(6) as u32
                } else {
                    u32::MAX
                };
                let run = tokio::spawn(CancelAfter {
                    inner: Box::pin(op),
                    polls: cancel_after,
                });
                match run.await {
                    Ok(Some(Err(e))) if tolerate(&e) => {
                        tolerated.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(Err(e))) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: unexpected error: {e}");
                    }
                    Ok(_) => {}
                    Err(join) if join.is_panic() => {}
                    Err(join) => panic!("soak task failed: {join}"),
                }
            }
        }));
    }
    let all = async {
        for handle in handles {
            handle.await.expect("soak task");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(300), all)
        .await
        .expect("the soak finishes within 5 minutes");
    Outcome {
        violations,
        errors: AtomicUsize::load(&errors, Ordering::Relaxed),
        tolerated: AtomicUsize::load(&tolerated, Ordering::Relaxed),
    }
}

/// Seeds `table` of `db` on `server` with two rows per tenant.
pub fn seed(server: Server<'_>, db: &TestDb, table: &str, login: Login) {
    let mut conn = db.connect();
    create_marked_table(
        &mut conn,
        &server.config(),
        login,
        table,
        "text",
        TenantSqlType::Text,
    );
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "INSERT INTO \"{table}\" (name, tenant)
             SELECT format('t%s-seed%s', t, k), format('t%s', t) FROM generate_series(0, {}) t, generate_series(1, 2) k",
            TENANTS - 1
        )),
        &mut conn,
    )
    .expect("seed");
}

pub fn assert_clean(outcome: &Outcome) {
    let (violations, errors) = (&outcome.violations, outcome.errors);
    let count = AtomicUsize::load(&violations.count, Ordering::Relaxed);
    assert_eq!(
        count,
        0,
        "violations: {:?}",
        violations.first.lock().expect("lock")
    );
    assert_eq!(errors, 0, "unexpected errors (see stderr)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_of_two_stays_clean_through_20000_mixed_operations() {
    soak_pool_of_two(Server::Direct, 20_000).await;
}

/// `ops` mixed operations over a pool of two on `server`: no violation and no error, and
/// afterwards the pool serves and the data holds only rows written under their tenant.
pub async fn soak_pool_of_two(server: Server<'_>, ops: u64) {
    let db = server.db();
    // The hardened deployment: tenant transactions through the serving login (tenant
    // role only, not inheriting it), admin ones through the admin login. (On Citus the
    // non-owner login of both roles: the hardened logins are not made LOGIN on workers.)
    let (login, admin_login) = match server {
        Server::Citus => (Login::App, Login::App),
        _ => (Login::Hardened, Login::HardenedAdmin),
    };
    seed(server, &db, "soak", login);
    let pool = server.pool(&db, login, 2).await;
    let admins = server.pool(&db, admin_login, 1).await;
    let started = std::time::Instant::now();
    let outcome = soak_tolerating(&pool, &admins, "soak", ops, 32, |_| false).await;
    eprintln!("soak: {ops} operations in {:?}", started.elapsed());
    assert_clean(&outcome);
    assert_eq!(outcome.tolerated, 0);
    // The pool still serves, and the data holds only rows written under their tenant.
    let mut conn = pool.tenant("t7").await.expect("tenant after soak");
    let rows = diesel::sql_query("SELECT name, tenant FROM soak")
        .load::<Row>(&mut conn)
        .await
        .expect("rows");
    assert_after_soak("t7", &rows);
    conn.commit().await.expect("commit");
}

/// What `tenant` reads after a soak: its seed rows at least, only rows written under it,
/// and none that was rolled back, dropped or written by a closure that panicked.
pub fn assert_after_soak(tenant: &str, rows: &[Row]) {
    assert!(
        rows.len() >= 2
            && rows
                .iter()
                .all(|r| r.tenant == tenant && r.name.starts_with(&format!("{tenant}-")))
    );
    assert!(
        !rows.iter().any(|r| ["-lost", "-dropped", "-panicked"]
            .iter()
            .any(|end| r.name.ends_with(end))),
        "rolled back, dropped and panicked writes are gone"
    );
}
