//! Start-up, restart and shutdown: the database is created and migrated, drift is refused,
//! bad settings are reported, data survives a restart, SIGTERM stops gracefully.

use std::str::FromStr;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use reqwest::{Method, StatusCode};
use tenants_tests::{connect, database_url};

use crate::common::{Launch, test_db, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_data_and_sigterm_stops_gracefully() {
    let db = test_db();
    let acme = token("acme");
    let globex = token("globex");

    let service = Launch::db(&db).start();
    service.create(&acme, "survive the restart").await;
    service.create(&globex, "globex too").await;
    let status = service.stop();
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");

    let service = Launch::db(&db).start();
    assert!(
        service.prints("todo_api: listening"),
        "{}",
        service.output()
    );
    assert!(
        !service.output().contains("applied migration"),
        "nothing left to migrate"
    );
    assert_eq!(service.names(&acme).await, ["survive the restart"]);
    assert_eq!(service.names(&globex).await, ["globex too"]);
    service.create(&acme, "after the restart").await;
    assert_eq!(
        service.names(&acme).await,
        ["survive the restart", "after the restart"]
    );
    let output = service.output();
    let status = service.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        output.contains("listening on http://127.0.0.1:"),
        "{output}"
    );
}

#[test]
fn it_refuses_to_start_on_a_database_that_does_not_enforce_rls() {
    let db = test_db();
    // Migrate, then break the contract behind the service's back.
    drop(Launch::db(&db).start());
    let mut conn = db.connect();
    conn.batch_execute("ALTER TABLE todo_item DISABLE ROW LEVEL SECURITY")
        .expect("disable RLS");

    let (status, output) = Launch::db(&db).run_to_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("refusing to start"), "{output}");
    assert!(
        output.contains(r#""public"."todo_item": row level security is not enabled"#),
        "{output}"
    );
    assert!(!output.contains("listening on"), "{output}");

    // Another kind of drift, reported by name as well.
    conn.batch_execute(
        "ALTER TABLE todo_item ENABLE ROW LEVEL SECURITY;
         DROP POLICY tenants_isolation ON todo_item;",
    )
    .expect("drop the policy");
    let (status, output) = Launch::db(&db).run_to_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(r#""public"."todo_item": policy "tenants_isolation" is missing"#),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_variables_configure_it_and_it_creates_its_database() {
    let db = test_db();
    // Start from no database at all.
    connect(&database_url())
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name()))
        .expect("drop the test database");

    let server = tokio_postgres::Config::from_str(&database_url()).expect("DATABASE_URL parses");
    let host = match server.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the tests need a TCP DATABASE_URL, found {other:?}"),
    };
    let port = server.get_ports().first().copied().unwrap_or(5432);
    let user = server.get_user().unwrap_or("postgres").to_string();
    // With trust authentication the password is not checked, but it must survive the URL
    // without breaking it; a real one is used when DATABASE_URL has one.
    let password = server
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "p@ss:w/rd?#%2F é".to_string());

    let service = Launch::new("")
        .without("DATABASE_URL")
        .env("POSTGRES_SERVER", &host)
        .env("POSTGRES_PORT", &port.to_string())
        .env("POSTGRES_USER", &user)
        .env("POSTGRES_PASSWORD", &password)
        .env("POSTGRES_DB", db.name())
        .start();
    assert!(
        service.prints("todo_api: listening"),
        "{}",
        service.output()
    );
    let output = service.output();
    assert!(output.contains("created the database"), "{output}");
    assert!(!output.contains(&password), "the password is never printed");
    let acme = token("acme");
    service.create(&acme, "in a brand new database").await;
    assert_eq!(service.names(&acme).await, ["in a brand new database"]);
    assert_eq!(crate::common::all_rows(&db).len(), 1);
}

#[test]
fn bad_settings_stop_it_with_a_message_and_a_non_zero_exit() {
    let db = test_db();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = taken.local_addr().expect("its address").to_string();
    let in_use = format!("cannot listen on {taken}");
    let cases = [
        (
            "POOL_MAX_SIZE",
            "many",
            2,
            "POOL_MAX_SIZE: expected a whole number",
        ),
        (
            "POOL_TIMEOUT_SECONDS",
            "0",
            2,
            "POOL_TIMEOUT_SECONDS: must be at least 1",
        ),
        (
            "POSTGRES_STATEMENT_TIMEOUT_SECONDS",
            "-1",
            2,
            "POSTGRES_STATEMENT_TIMEOUT_SECONDS",
        ),
        (
            "TENANT_FILTER",
            "off",
            2,
            "TENANT_FILTER: expected `explicit` or `rls-only`",
        ),
        ("BIND", "localhost", 2, "BIND: expected host:port"),
        ("BIND", taken.as_str(), 1, in_use.as_str()),
        (
            "DATABASE_URL",
            "postgres://postgres:hunter2@127.0.0.1:1/todo_api",
            1,
            "cannot connect to the database at postgres://postgres:***@127.0.0.1:1/todo_api",
        ),
    ];
    for (var, value, code, message) in cases {
        let (status, output) = Launch::db(&db)
            .env(var, value)
            .run_to_exit(Duration::from_secs(60));
        assert_eq!(status.code(), Some(code), "{var}={value}: {output}");
        assert!(output.contains(message), "{var}={value}: {output}");
        assert!(
            !output.contains("hunter2"),
            "passwords are never printed: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_it_prints_ready_tokens() {
    let db = test_db();
    let service = Launch::db(&db).without("JWT_SECRET").start();
    let output = service.output();
    let printed = |var: &str| {
        output
            .lines()
            .find_map(|line| line.strip_prefix(&format!("export {var}=")))
            .unwrap_or_else(|| panic!("no {var} line in:\n{output}"))
            .to_string()
    };
    let acme = printed("ACME_TOKEN");
    let globex = printed("GLOBEX_TOKEN");
    assert!(
        output.contains(&format!("curl -s {}/todos", service.base())),
        "{output}"
    );

    service.create(&acme, "from a printed token").await;
    assert_eq!(service.names(&acme).await, ["from a printed token"]);
    assert!(service.names(&globex).await.is_empty());
    // The secret is random: a token signed with a known secret is refused.
    let reply = service
        .call(Method::GET, "/todos", Some(&token("acme")), None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
