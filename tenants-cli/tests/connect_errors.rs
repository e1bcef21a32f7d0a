//! A database that cannot be reached is one line naming database, host, port and user with
//! the real cause (never the password), exit code 2, and nothing written.

use tenants_tests::{database_url, url_with};

use crate::fixture::{Fixture, TODO_MARKED};

const HINT: &str = "; is PostgreSQL running there, and is --database-url / DATABASE_URL right?";

/// Runs `tenants check` against `url` and returns its one line of stderr.
fn check_error(fx: &Fixture, url: &str) -> String {
    let run = fx.tenants_at(url, &["check"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(fx.migrations().is_empty());
    run.stderr.trim_end().to_string()
}

#[test]
fn each_connection_error_names_the_target_and_the_cause() {
    let fx = Fixture::new();
    fx.source(TODO_MARKED);
    let missing = url_with(&database_url(), None, Some("tenants_no_such_database"));
    let cases = [
        (
            "postgres://app:s3cret-Pa55@127.0.0.1:1/shop".to_string(),
            r#"error: cannot connect to the database "shop" on 127.0.0.1:1 as user "app": error connecting to server: Connection refused (os error 111)"#.to_string(),
        ),
        (
            missing,
            r#": database "tenants_no_such_database" does not exist"#.to_string(),
        ),
        (
            "notaurl".to_string(),
            "error: cannot connect to the database: the database URL is not valid (".to_string(),
        ),
    ];
    for (url, expected) in cases {
        let line = check_error(&fx, &url);
        assert!(line.contains(&expected), "{url}: {line}");
        assert!(
            line.starts_with("error: cannot connect to the database"),
            "{url}: {line}"
        );
        assert!(line.ends_with(HINT), "{url}: {line}");
        assert!(!line.contains("s3cret"), "{url}: {line}");
    }
}
