//! A pool that cannot connect says so at once, naming the server and the real cause, and
//! never the password.

use std::time::{Duration, Instant};

use tenants_core::{Config, Error, TenantPool};
use tenants_tests::{TestDb, database_url, url_with, url_with_password};

use crate::common::session_of;

/// `TenantPool::connect(url)`'s error, and how long it took.
async fn connect_error(url: &str) -> (Error, Duration) {
    let started = Instant::now();
    match TenantPool::connect(url).await {
        Ok(_) => panic!("connecting to {url} succeeded"),
        Err(error) => (error, started.elapsed()),
    }
}

fn assert_fast(elapsed: Duration, what: &str) {
    assert!(
        elapsed < Duration::from_millis(500),
        "{what}: took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_refused_at_once_naming_host_port_database_and_user() {
    let (error, elapsed) = connect_error("postgres://app@127.0.0.1:1/shop").await;
    assert_fast(elapsed, "closed port");
    let text = error.to_string();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(
        text.starts_with(r#"cannot connect to the database "shop" on 127.0.0.1:1 as user "app": "#),
        "{text}"
    );
    assert!(text.contains("Connection refused (os error 111)"), "{text}");
}

#[tokio::test]
async fn a_missing_database_is_the_servers_message() {
    let url = url_with(&database_url(), None, Some("tenants_no_such_database"));
    let (error, elapsed) = connect_error(&url).await;
    assert_fast(elapsed, "missing database");
    match &error {
        Error::Connect { target, reason } => {
            assert!(
                target.starts_with(r#"the database "tenants_no_such_database" on "#),
                "{target}"
            );
            assert_eq!(
                reason,
                r#"database "tenants_no_such_database" does not exist"#
            );
        }
        other => panic!("expected Error::Connect, got {other:?}"),
    }
}

#[tokio::test]
async fn a_string_that_is_no_url_is_refused_without_io() {
    let (error, elapsed) = connect_error("notaurl").await;
    assert_fast(elapsed, "notaurl");
    let text = error.to_string();
    assert!(
        text.starts_with("cannot connect to the database: the database URL is not valid ("),
        "{text}"
    );
    assert!(
        text.contains("expected postgres://user[:password]@host[:port]/database"),
        "{text}"
    );
}

#[tokio::test]
async fn the_password_never_appears() {
    let password = "s3cret-Pa55";
    for url in [
        format!("postgres://app:{password}@127.0.0.1:1/shop"),
        url_with_password(
            &url_with(&database_url(), None, Some("tenants_no_such_database")),
            password,
        ),
        format!("postgres://app:{password}@127.0.0.1:notaport/shop"),
    ] {
        let (error, elapsed) = connect_error(&url).await;
        assert_fast(elapsed, &url);
        for text in [
            error.to_string(),
            format!("{error:?}"),
            format!("{error:#?}"),
        ] {
            assert!(!text.contains(password), "{text}");
        }
    }
}

/// After the server side goes away (here: the database is dropped under an idle pool),
/// a checkout that times out says why instead of a bare timeout; so does `verify`.
#[tokio::test]
async fn a_checkout_that_times_out_keeps_the_last_connect_error() {
    let db = TestDb::new();
    let pool = TenantPool::connect_with(
        &db.url(),
        Config::default(),
        bb8::Pool::builder()
            .max_size(1)
            .connection_timeout(Duration::from_secs(1)),
    )
    .await
    .expect("pool");
    let mut plain = pool.pool().get().await.expect("checkout");
    session_of(&mut plain)
        .await
        .expect("a working connection first");
    drop(plain);
    // WITH (FORCE) also ends the pool's idle connection.
    diesel::connection::SimpleConnection::batch_execute(
        &mut tenants_tests::connect(&database_url()),
        &format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name()),
    )
    .expect("drop the database under the pool");
    for (what, error) in [
        ("tenant", pool.tenant("acme").await.map(drop)),
        ("verify", pool.verify().await.map(drop)),
    ] {
        match error {
            Err(Error::PoolTimedOut {
                waited,
                last_connect_error: Some(last),
            }) => {
                assert_eq!(waited, Duration::from_secs(1));
                assert!(
                    last.ends_with(&format!(
                        "database \"{}\" does not exist (is PostgreSQL running there, and is the URL right?)",
                        db.name()
                    )),
                    "{what}: {last}"
                );
            }
            other => panic!("{what}: expected a timeout with its cause, got {other:?}"),
        }
    }
}
