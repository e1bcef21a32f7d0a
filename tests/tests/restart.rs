//! The server restarted while the pool is idle: the pool recovers without a process
//! restart.
//!
//! Its own test binary: cargo runs test binaries one after another, so restarting the
//! shared server here disturbs no other test. The restart command is
//! `TENANTS_TEST_RESTART` (default: `pg_ctlcluster --skip-systemctl-redirect 15 main
//! restart`, the local Debian cluster CI uses).

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::Integer;
use diesel_async::RunQueryDsl;
use tenants_core::{Config, TenantPool, policy};
use tenants_tests::{TestDb, batch_locked};

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

fn restart_server() {
    let command = std::env::var("TENANTS_TEST_RESTART")
        .unwrap_or_else(|_| "pg_ctlcluster --skip-systemctl-redirect 15 main restart".into());
    let status = std::process::Command::new("sh")
        .args(["-c", &command])
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    assert!(
        status.success(),
        "`{command}` failed ({status}); set TENANTS_TEST_RESTART to the command that restarts the server of DATABASE_URL"
    );
}

#[tokio::test]
async fn the_pool_recovers_after_a_server_restart() {
    let db = TestDb::new();
    let config = Config::default();
    batch_locked(
        &mut db.connect(),
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    let pool = TenantPool::connect_with(&db.url(), config, bb8::Pool::builder().max_size(2))
        .await
        .expect("pool");
    let mut conn = pool.tenant("acme").await.expect("tenant");
    let before = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .await
        .expect("pid")
        .pid;
    conn.commit().await.expect("commit");

    restart_server();
    // The server takes a moment to accept connections again; the pool keeps trying
    // within its connection timeout (30 s), so the first checkout after may wait.
    let started = Instant::now();
    let mut conn = loop {
        match pool.tenant("acme").await {
            Ok(conn) => break conn,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the pool did not recover within 60 s: {e}"),
        }
    };
    let after = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(&mut conn)
        .await
        .expect("a query on a new connection")
        .pid;
    assert_ne!(after, before, "a new backend");
    conn.commit().await.expect("commit");
}
