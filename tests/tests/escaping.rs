//! The tenant literal round-trips every string PostgreSQL can store, and bad ids are
//! rejected before any I/O.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use proptest::prelude::*;
use tenants_core::policy;
use tenants_core::{Config, Error, InvalidTenantId, MAX_TENANT_ID_BYTES, TenantTransactionExt};
use tenants_tests::{TestDb, batch_locked};

use crate::common::{HOSTILE_IDS, assert_db_error};

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

fn current_tenant(conn: &mut PgConnection) -> QueryResult<String> {
    diesel::sql_query("SELECT current_setting('tenants.current_tenant') AS value")
        .get_result::<Setting>(conn)
        .map(|s| s.value)
}

fn prepared_db() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.connect();
    let config = Config::default();
    let up = policy::render_up(&config, &policy::setup(&config, &[], &[]));
    batch_locked(&mut conn, &up);
    (db, conn)
}

#[test]
fn arbitrary_strings_round_trip_through_current_setting() {
    let (_db, conn) = prepared_db();
    let conn = std::cell::RefCell::new(conn);
    // Under both meanings of a plain '...' literal: the E'' form must not care.
    for conforming in ["on", "off"] {
        conn.borrow_mut()
            .batch_execute(&format!("SET standard_conforming_strings = {conforming}"))
            .expect("set standard_conforming_strings");
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
        runner
            .run(&"[^\u{0}]{1,200}", |id| {
                let seen = conn
                    .borrow_mut()
                    .tenant_transaction(id.as_str(), |conn| {
                        current_tenant(conn).map_err(Error::from)
                    })
                    .map_err(|e| TestCaseError::fail(format!("{id:?}: {e}")))?;
                prop_assert_eq!(seen, id);
                Ok(())
            })
            .expect("round trip");
    }
    let mut conn = conn.into_inner();
    for id in HOSTILE_IDS {
        let seen = conn
            .tenant_transaction(id, |conn| current_tenant(conn).map_err(Error::from))
            .expect("fixed id");
        assert_eq!(seen, id);
    }
}

#[test]
fn invalid_ids_are_rejected_before_any_io() {
    let (_db, mut conn) = prepared_db();
    let long = "x".repeat(MAX_TENANT_ID_BYTES + 1);
    let cases: [(&str, InvalidTenantId); 3] = [
        ("", InvalidTenantId::Empty),
        ("a\0b", InvalidTenantId::ContainsNul { position: 1 }),
        (
            long.as_str(),
            InvalidTenantId::TooLong {
                len: MAX_TENANT_ID_BYTES + 1,
            },
        ),
    ];
    for (id, expected) in cases {
        let mut ran = false;
        let result: Result<(), Error> = conn.tenant_transaction(id, |_| {
            ran = true;
            Ok(())
        });
        match result {
            Err(Error::InvalidTenantId(got)) => assert_eq!(got, expected),
            other => panic!("{id:?}: expected a typed error, got {other:?}"),
        }
        assert!(!ran, "the closure must not run for {id:?}");
    }
    // Nothing was begun: the connection is outside any transaction and unscoped.
    assert_eq!(
        current_tenant(&mut conn).unwrap_or_default(),
        "",
        "no tenant was set"
    );
    // SAVEPOINT fails outside a transaction block: the server has none open.
    let savepoint = conn.batch_execute("SAVEPOINT probe");
    assert_db_error(
        &savepoint,
        "transaction block",
        "no transaction was left open",
    );
}
