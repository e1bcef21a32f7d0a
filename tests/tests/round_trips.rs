//! A tenant transaction costs no extra round trip: its begin is one batch.

use std::sync::{Arc, Mutex};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::prelude::*;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tenants_core::policy;
use tenants_core::{AsyncTenantTransactionExt, Config, Error, TenantPool, TenantTransactionExt};
use tenants_tests::{TestDb, batch_locked};

/// Records the text of every query the connection sends.
#[derive(Clone, Default)]
struct Queries(Arc<Mutex<Vec<String>>>);

impl Instrumentation for Queries {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            self.0.lock().expect("lock").push(query.to_string());
        }
    }
}

impl Queries {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

fn prepared_db() -> TestDb {
    let db = TestDb::new();
    let mut conn = db.connect();
    let config = Config::default();
    batch_locked(
        &mut conn,
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    db
}

const BEGIN: &str =
    r#"BEGIN; SET LOCAL ROLE "tenants_user"; SET LOCAL "tenants.current_tenant" = E'acme'"#;

/// The commit is one message: the guard, `COMMIT`, and the reset of the session after it.
fn assert_commit_batch(sent: &str) {
    assert!(
        sent.starts_with("SELECT current_setting(CASE WHEN current_user = E'tenants_user'")
            && sent.contains("; COMMIT; CLOSE ALL; "),
        "{sent}"
    );
}

#[test]
fn sync_tenant_transaction_sends_as_many_queries_as_a_plain_one() {
    let db = prepared_db();
    let mut conn = db.connect();
    let queries = Queries::default();
    conn.set_instrumentation(queries.clone());

    let one = || diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>());
    conn.transaction(|conn| diesel::RunQueryDsl::get_result::<i32>(one(), conn))
        .expect("plain");
    let plain = queries.take();
    conn.tenant_transaction("acme", |conn| {
        diesel::RunQueryDsl::get_result::<i32>(one(), conn).map_err(Error::from)
    })
    .expect("tenant");
    let tenant = queries.take();

    assert_eq!(plain.len(), 3, "{plain:?}");
    assert_eq!(tenant.len(), plain.len(), "{tenant:?}");
    assert_eq!(tenant[0], BEGIN);
    assert_commit_batch(&tenant[2]);
}

#[tokio::test]
async fn async_tenant_transaction_sends_as_many_queries_as_a_plain_one() {
    let db = prepared_db();
    let mut conn = AsyncPgConnection::establish(&db.url())
        .await
        .expect("connect");
    let queries = Queries::default();
    conn.set_instrumentation(queries.clone());

    let one = || diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>());
    conn.transaction(async |conn| one().get_result::<i32>(conn).await)
        .await
        .expect("plain");
    let plain = queries.take();
    conn.tenant_transaction("acme", async |conn| {
        one().get_result::<i32>(conn).await.map_err(Error::from)
    })
    .await
    .expect("tenant");
    let tenant = queries.take();

    assert_eq!(plain.len(), 3, "{plain:?}");
    assert_eq!(tenant.len(), plain.len(), "{tenant:?}");
    assert_eq!(tenant[0], BEGIN);
    assert_commit_batch(&tenant[2]);
}

#[tokio::test]
async fn pool_begin_is_one_batch_and_nested_transactions_are_savepoints() {
    let db = prepared_db();
    let queries = Queries::default();
    let mut manager_config = TenantPool::manager_config(&Config::default());
    let recorder = queries.clone();
    manager_config.custom_setup = Box::new(move |url| {
        let recorder = recorder.clone();
        Box::pin(async move {
            let mut conn = AsyncPgConnection::establish(url).await?;
            conn.set_instrumentation(recorder);
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(db.url(), manager_config);
    let pool = TenantPool::new(
        bb8::Pool::builder()
            .max_size(1)
            .build(manager)
            .await
            .expect("pool"),
        Config::default(),
    );
    queries.take();

    let mut conn = pool.tenant("acme").await.expect("tenant");
    conn.transaction(async |conn| {
        diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>())
            .get_result::<i32>(conn)
            .await
    })
    .await
    .expect("nested");
    conn.commit().await.expect("commit");
    let sent = queries.take();
    let begin = sent
        .iter()
        .position(|q| q.starts_with("BEGIN"))
        .expect("a begin");
    assert_eq!(sent[begin], BEGIN);
    assert_eq!(
        sent[begin + 1..begin + 4],
        [
            "SAVEPOINT diesel_savepoint_1",
            "SELECT $1 -- binds: [1]",
            "RELEASE SAVEPOINT diesel_savepoint_1",
        ]
    );
    assert_eq!(sent.len(), begin + 5, "{sent:?}");
    assert_commit_batch(&sent[begin + 4]);
    // Nothing before the begin: a tenant checkout runs no recycle check, the batch sets
    // role and tenant itself (benches/PERFORMANCE.md).
    assert_eq!(begin, 0, "{sent:?}");

    // A plain checkout runs the check, in place of diesel-async's default `SELECT 1`.
    let plain = pool.unscoped().await.expect("plain checkout");
    drop(plain);
    let sent = queries.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("SELECT current_user = session_user"),
        "{sent:?}"
    );
}

thread_local! {
    /// The statements this thread's pooled connections sent, while recording.
    static RECORDED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// diesel's default instrumentation for every connection made from now on, in every test
/// of this binary: records on the threads that asked for it ([`recorded_on_this_thread`])
/// and does nothing elsewhere. The pools' own instrumentation forwards to it.
fn record_on_this_thread() {
    fn recorder() -> Option<Box<dyn Instrumentation>> {
        Some(Box::new(|event: InstrumentationEvent<'_>| {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                RECORDED.with(|recorded| {
                    if let Some(recorded) = recorded.borrow_mut().as_mut() {
                        recorded.push(query.to_string());
                    }
                });
            }
        }))
    }
    diesel::connection::set_default_instrumentation(recorder).expect("default instrumentation");
    RECORDED.with(|recorded| *recorded.borrow_mut() = Some(Vec::new()));
}

/// What this thread recorded since the last call.
fn recorded_on_this_thread() -> Vec<String> {
    RECORDED
        .with(|recorded| recorded.borrow_mut().as_mut().map(std::mem::take))
        .unwrap_or_default()
}

diesel::table! {
    notes (id) {
        id -> Int4,
        body -> Text,
    }
}

/// A database with `notes`, which the tenant role may read and write (no policy: these
/// tests look at what is sent, not at what is seen).
fn notes_db() -> TestDb {
    let db = prepared_db();
    batch_locked(
        &mut db.connect(),
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
         GRANT SELECT, INSERT ON notes TO tenants_user;
         GRANT USAGE ON SEQUENCE notes_id_seq TO tenants_user;",
    );
    db
}

/// The last statement sent: how the transaction ended.
fn ending(sent: &[String]) -> &str {
    sent.last().map(String::as_str).unwrap_or_default()
}

/// A transaction of the query builder's statements leaves nothing on the session: it ends
/// with `COMMIT` or `ROLLBACK` alone (and `DISCARD SEQUENCES` after a write), in one
/// message as before; any other statement brings back the guard and the reset.
#[tokio::test]
async fn query_builder_transactions_of_the_async_pool_end_with_commit_alone() {
    let db = notes_db();
    record_on_this_thread();
    let pool = TenantPool::connect_with(
        &db.url(),
        Config::default(),
        bb8::Pool::builder().max_size(1),
    )
    .await
    .expect("pool");
    let one = || diesel::select(1_i32.into_sql::<diesel::sql_types::Integer>());
    recorded_on_this_thread();

    let mut conn = pool.tenant("acme").await.expect("tenant");
    notes::table
        .select(notes::id)
        .load::<i32>(&mut conn)
        .await
        .expect("read");
    conn.commit().await.expect("commit");
    assert_eq!(ending(&recorded_on_this_thread()), "COMMIT");

    let mut conn = pool.tenant("acme").await.expect("tenant");
    diesel::insert_into(notes::table)
        .values(notes::body.eq("acme's"))
        .execute(&mut conn)
        .await
        .expect("write");
    conn.commit().await.expect("commit");
    assert_eq!(
        ending(&recorded_on_this_thread()),
        "COMMIT; DISCARD SEQUENCES"
    );

    let mut conn = pool.tenant("acme").await.expect("tenant");
    conn.transaction(async |conn| one().get_result::<i32>(conn).await)
        .await
        .expect("nested");
    conn.rollback().await.expect("rollback");
    let sent = recorded_on_this_thread();
    assert!(
        sent.contains(&"SAVEPOINT diesel_savepoint_1".to_string()),
        "{sent:?}"
    );
    assert_eq!(ending(&sent), "ROLLBACK");

    // The closure form ends the same way.
    pool.transaction("acme", async |conn| {
        diesel::insert_into(notes::table)
            .values(notes::body.eq("acme's"))
            .execute(conn)
            .await
            .map_err(Error::from)
    })
    .await
    .expect("closure");
    assert_eq!(
        ending(&recorded_on_this_thread()),
        "COMMIT; DISCARD SEQUENCES"
    );

    let mut conn = pool.tenant("acme").await.expect("tenant");
    diesel::sql_query("SET search_path = public")
        .execute(&mut conn)
        .await
        .expect("set");
    one().get_result::<i32>(&mut conn).await.expect("read");
    conn.commit().await.expect("commit");
    assert_commit_batch(ending(&recorded_on_this_thread()));
}

/// The same through the sync pool.
#[test]
fn query_builder_transactions_of_the_sync_pool_end_with_commit_alone() {
    let db = notes_db();
    record_on_this_thread();
    let pool = tenants_core::SyncTenantPool::connect_with(
        &db.url(),
        Config::default(),
        diesel::r2d2::Pool::builder().max_size(1),
    )
    .expect("pool");
    recorded_on_this_thread();

    let mut conn = pool.tenant("acme").expect("tenant");
    diesel::RunQueryDsl::load::<i32>(notes::table.select(notes::id), &mut conn).expect("read");
    conn.commit().expect("commit");
    assert_eq!(ending(&recorded_on_this_thread()), "COMMIT");

    let mut conn = pool.tenant("acme").expect("tenant");
    diesel::RunQueryDsl::execute(
        diesel::insert_into(notes::table).values(notes::body.eq("acme's")),
        &mut conn,
    )
    .expect("write");
    conn.commit().expect("commit");
    assert_eq!(
        ending(&recorded_on_this_thread()),
        "COMMIT; DISCARD SEQUENCES"
    );

    // The closure form ends the same way.
    pool.transaction("acme", |conn| {
        diesel::RunQueryDsl::load::<i32>(notes::table.select(notes::id), conn).map_err(Error::from)
    })
    .expect("closure");
    assert_eq!(ending(&recorded_on_this_thread()), "COMMIT");

    let mut conn = pool.tenant("acme").expect("tenant");
    diesel::RunQueryDsl::execute(diesel::sql_query("SET search_path = public"), &mut conn)
        .expect("set");
    conn.commit().expect("commit");
    assert_commit_batch(ending(&recorded_on_this_thread()));
}
