//! The users' test kit (`tenants_core::testing`): the isolation check covers every marked
//! table of the binary, reports a broken contract precisely and all at once, and fails by
//! name on a table without a row maker; a test database is migrated, dropped after a
//! passing test and kept after a failing one.

use diesel::connection::SimpleConnection;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use tenants_core::Config;
use tenants_core::registry::TenantSqlType;
use tenants_core::testing::{IsolationCheck, IsolationReport, Property, TestDatabase};
use tenants_tests::{TestDb, connect, count, database_url};

use crate::common::{Login, create_marked_table, pool};
use crate::isolation::{items_int4, items_int8, items_text, items_uuid, items_varchar};

/// One plain table: enough to see that migrations ran.
const KIT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("kit_migrations");

/// Every marked table of this binary (the isolation suite's five), created and under the
/// contract, logged in as the `DATABASE_URL` superuser.
fn every_marked_table(db: &TestDb) {
    let config = Config::default();
    let mut admin = db.connect();
    for (table, pg_type, sql_type) in [
        ("items_text", "text", TenantSqlType::Text),
        ("items_varchar", "varchar(64)", TenantSqlType::VarChar),
        ("items_int4", "int4", TenantSqlType::Int4),
        ("items_int8", "int8", TenantSqlType::Int8),
        ("items_uuid", "uuid", TenantSqlType::Uuid),
    ] {
        create_marked_table(
            &mut admin,
            &config,
            Login::Superuser,
            table,
            pg_type,
            sql_type,
        );
    }
}

/// The check with a row maker for every marked table.
fn full_check() -> IsolationCheck {
    IsolationCheck::new()
        .rows("items_text", items_text::make_row)
        .rows("public.items_varchar", items_varchar::make_row)
        .rows("items_int4", items_int4::make_row)
        .rows("items_int8", items_int8::make_row)
        .rows("items_uuid", items_uuid::make_row)
}

#[tokio::test]
async fn passes_on_every_marked_table() {
    let db = TestDb::new();
    every_marked_table(&db);
    let pool = pool(&db.url(), 1).await;
    full_check().run(&pool).await.expect("the contract holds");
}

/// The report of the check after `breakage`, run on every marked table.
async fn report_after(breakage: &str) -> IsolationReport {
    let db = TestDb::new();
    every_marked_table(&db);
    db.connect()
        .batch_execute(breakage)
        .expect("break the contract");
    let pool = pool(&db.url(), 1).await;
    full_check()
        .run(&pool)
        .await
        .expect_err("a broken contract fails the check")
}

#[tokio::test]
async fn reports_force_off_and_a_dropped_policy_precisely() {
    let report = report_after(
        "ALTER TABLE items_text NO FORCE ROW LEVEL SECURITY;
         DROP POLICY tenants_isolation ON items_int4;",
    )
    .await;
    assert_eq!(
        report.to_string(),
        "isolation check of 5 #[with_rls] tables: 8 failures
  public.items_int4: a tenant writes its own rows: tenant a (`1000000001`) cannot insert its own row: new row violates row-level security policy for table \"items_int4\"
  public.items_int4: a tenant writes its own rows: tenant b (`1000000002`) cannot insert its own row: new row violates row-level security policy for table \"items_int4\"
  public.items_int4: a tenant sees only its rows: tenant a (`1000000001`) sees 0 of its 1 row and 0 rows of other tenants (0 of tenant b (`1000000002`))
  public.items_int4: moving a row to another tenant is refused: nothing to move: tenant a (`1000000001`) sees none of its rows
  public.items_int4: a tenant sees only its rows: tenant b (`1000000002`) sees 0 of its 1 row and 0 rows of other tenants (0 of tenant a (`1000000001`))
  public.items_int4: moving a row to another tenant is refused: nothing to move: tenant b (`1000000002`) sees none of its rows
  public.items_text: no scope sees nothing: the table's owner sees 2 rows without a scope (FORCE ROW LEVEL SECURITY is off)
  public.items_text: no scope writes nothing: the table's owner without a scope: UPDATE touched 2 rows, DELETE touched 2 rows, INSERT for tenant a (`isolation-check-a`) succeeded (FORCE ROW LEVEL SECURITY is off)"
    );
}

#[tokio::test]
async fn detects_every_property() {
    let report = report_after(
        "ALTER POLICY tenants_isolation ON items_varchar USING (true) WITH CHECK (true);
         DROP POLICY tenants_admin ON items_int8;",
    )
    .await;
    let found: Vec<(&str, Property)> = report
        .failures()
        .iter()
        .map(|f| (f.table.as_str(), f.property))
        .collect();
    let leaky_both_ways = [
        Property::SeesOnlyOwnRows,
        Property::FilterByOtherTenant,
        Property::CrossTenantUpdate,
        Property::CrossTenantDelete,
        Property::CrossTenantInsert,
        Property::MoveToOtherTenant,
    ];
    // Probed as tenant a, then as tenant b.
    let mut expected = vec![("public.items_int8", Property::AdminSeesAll)];
    expected.extend(leaky_both_ways.map(|p| ("public.items_varchar", p)));
    expected.extend(leaky_both_ways.map(|p| ("public.items_varchar", p)));
    expected.push(("public.items_varchar", Property::NoScopeSeesNothing));
    expected.push(("public.items_varchar", Property::NoScopeWritesNothing));
    assert_eq!(found, expected, "{report}");
    assert!(
        report.to_string().contains(
            "public.items_varchar: cross-tenant INSERT is refused: tenant a (`isolation-check-a`) inserted a row for tenant b (`isolation-check-b`)"
        ),
        "{report}"
    );
}

#[tokio::test]
async fn a_marked_table_without_a_row_maker_fails_by_name() {
    let db = TestDb::new();
    every_marked_table(&db);
    let pool = pool(&db.url(), 1).await;
    let report = IsolationCheck::new()
        .rows("items_text", items_text::make_row)
        .rows("items_varchar", items_varchar::make_row)
        .rows("items_int4", items_int4::make_row)
        .rows("items_int8", items_int8::make_row)
        .rows("items_uid", items_uuid::make_row)
        .run(&pool)
        .await
        .expect_err("a table is left out");
    let found: Vec<String> = report.failures().iter().map(|f| f.to_string()).collect();
    assert_eq!(
        found,
        [
            "items_uid: row maker: a row maker for a table that is not #[with_rls] (or not checked)",
            "public.items_uuid: row maker: no row maker; every #[with_rls] table needs one: `.rows(\"public.items_uuid\", ...)`",
        ]
    );
}

/// Whether database `name` exists on the server.
fn exists(name: &str) -> bool {
    count(
        &mut connect(&database_url()),
        &format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"),
    ) == 1
}

#[test]
fn a_test_database_is_migrated_dropped_after_a_pass_and_kept_after_a_failure() {
    let passed = std::thread::Builder::new()
        .name("kit::passing_test".into())
        .spawn(|| {
            let db = TestDatabase::new(KIT_MIGRATIONS).expect("test database");
            let rows = count(
                &mut db.connect().expect("connect"),
                "SELECT count(*) AS n FROM kit_table",
            );
            assert_eq!(rows, 0, "the migration created the table");
            assert!(exists(db.name()));
            db.name().to_string()
        })
        .expect("spawn")
        .join()
        .expect("the passing test passes");
    assert_eq!(
        passed,
        tenants_core::testing::database_name("tenants-tests", "kit::passing_test")
    );
    assert!(
        passed.starts_with("tenants_tests_kit__passing_test_"),
        "named after the package, the test and the run: {passed}"
    );
    assert!(!exists(&passed), "dropped after the test passed");

    let (name_tx, name_rx) = std::sync::mpsc::channel();
    let failed = std::thread::Builder::new()
        .name("kit::failing_test".into())
        .spawn(move || {
            let db = TestDatabase::new(KIT_MIGRATIONS).expect("test database");
            name_tx.send(db.name().to_string()).expect("send name");
            panic!("the test fails");
        })
        .expect("spawn")
        .join();
    assert!(failed.is_err(), "the failing test failed");
    let kept = name_rx.recv().expect("name");
    assert!(exists(&kept), "kept after the test failed");
    connect(&database_url())
        .batch_execute(&format!("DROP DATABASE \"{kept}\" WITH (FORCE)"))
        .expect("clean up");
}
