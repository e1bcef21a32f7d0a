//! Citus mode. On PostgreSQL: the roles' login ability. On the Citus coordinator that
//! `TENANTS_CITUS_URL` names (`#[ignore]`d: CI has no cluster; run them with `cargo test
//! --workspace -- --ignored citus`), each test in a fresh Citus database: the isolation
//! suite, the soak, routing, co-located tables, a multi-shard admin read, and what
//! `verify` reports about distribution, co-location and propagation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tenants_core::catalog::{self, Distribution};
use tenants_core::plan::{self, PlanOptions};
use tenants_core::policy::{self, Change, QualifiedName};
use tenants_core::registry::{RlsTable, TenantSqlType};
use tenants_core::verify::{self, Finding};
use tenants_core::{Config, ScopedDsl};
use tenants_tests::{TestDb, batch_locked};

use crate::common::{Login, Server, create_marked_table};
use crate::isolation::{items_int8, items_text, items_uuid, run_on};
use crate::scoped::explain;

/// Roles only the login-ability test uses (roles are cluster-wide).
const LOGIN_TEST_USER: &str = "tenants_test_login_user";
const LOGIN_TEST_ADMIN: &str = "tenants_test_login_admin";

fn marked(name: &'static str) -> RlsTable {
    RlsTable {
        schema: "public",
        name,
        tenant_column: "tenant",
        sql_type: TenantSqlType::Text,
    }
}

async fn findings(
    db: &TestDb,
    config: &Config,
    tables: &[RlsTable],
    shared: &[QualifiedName],
) -> Vec<Finding> {
    let mut conn = AsyncPgConnection::establish(&db.url())
        .await
        .expect("connect");
    let marked = verify::marked_tables(tables);
    let catalog = catalog::read(&mut conn, config, &marked, shared, &[])
        .await
        .expect("read the catalog");
    verify::compare(config, &marked, &catalog).findings
}

/// Citus mode wants our roles to log in (Citus reaches the workers as the current role);
/// outside it a role that can is reported. `tenants generate` mends the first.
#[tokio::test]
async fn citus_mode_reports_roles_that_cannot_log_in_and_the_plan_lets_them() {
    let db = TestDb::new();
    let mut conn = db.connect();
    let plain = Config::default()
        .with_tenant_role(LOGIN_TEST_USER)
        .and_then(|c| c.with_admin_role(LOGIN_TEST_ADMIN))
        .expect("names");
    let citus = plain.clone().with_citus(true);
    batch_locked(
        &mut conn,
        &format!(
            "DROP ROLE IF EXISTS {LOGIN_TEST_USER}; DROP ROLE IF EXISTS {LOGIN_TEST_ADMIN};
             CREATE ROLE {LOGIN_TEST_USER} NOLOGIN; CREATE ROLE {LOGIN_TEST_ADMIN} NOLOGIN;"
        ),
    );
    let cannot = |role: &str| Finding::RoleCannotLogin { role: role.into() };
    let can = |role: &str| Finding::RoleCanLogin { role: role.into() };

    let found = findings(&db, &citus, &[], &[]).await;
    assert!(
        found.contains(&cannot(LOGIN_TEST_USER)) && found.contains(&cannot(LOGIN_TEST_ADMIN)),
        "{found:?}"
    );
    assert!(
        !findings(&db, &plain, &[], &[])
            .await
            .contains(&can(LOGIN_TEST_USER))
    );

    // The plan lets them log in; applied, Citus mode finds nothing more to say about them
    // and outside it they are a warning.
    conn.batch_execute("CREATE TABLE t (id int, tenant text NOT NULL)")
        .expect("table");
    let tables = verify::marked_tables(&[marked("t")]);
    let mut async_conn = AsyncPgConnection::establish(&db.url())
        .await
        .expect("connect");
    let catalog = catalog::read(&mut async_conn, &citus, &tables, &[], &[])
        .await
        .expect("catalog");
    let planned = plan::plan(&citus, &tables, &catalog, &PlanOptions::default()).expect("plan");
    for role in [LOGIN_TEST_USER, LOGIN_TEST_ADMIN] {
        assert!(
            planned
                .changes
                .contains(&Change::AllowLogin { role: role.into() }),
            "{:?}",
            planned.changes
        );
    }
    let up = policy::render_up(&citus, &planned.changes);
    assert!(
        up.contains(&format!("ALTER ROLE \"{LOGIN_TEST_USER}\" LOGIN;")),
        "{up}"
    );
    batch_locked(&mut conn, &up);
    let found = findings(&db, &citus, &[marked("t")], &[]).await;
    assert!(
        !found
            .iter()
            .any(|f| matches!(f, Finding::RoleCannotLogin { .. })),
        "{found:?}"
    );
    let found = findings(&db, &plain, &[marked("t")], &[]).await;
    assert!(
        found.contains(&can(LOGIN_TEST_USER)) && found.contains(&can(LOGIN_TEST_ADMIN)),
        "{found:?}"
    );
    batch_locked(&mut conn, &policy::render_down(&citus, &planned.changes));
}

// ---------------------------------------------------------------------------------------
// On the Citus coordinator.

#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_isolation_suite_text() {
    for login in [Login::Superuser, Login::Owner, Login::App] {
        run_on(items_text::kind(), login, Server::Citus).await;
    }
}

#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_isolation_suite_int8() {
    for login in [Login::Superuser, Login::Owner, Login::App] {
        run_on(items_int8::kind(), login, Server::Citus).await;
    }
}

#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_isolation_suite_uuid() {
    for login in [Login::Superuser, Login::Owner, Login::App] {
        run_on(items_uuid::kind(), login, Server::Citus).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_soak_through_tenant_pool() {
    crate::soak::soak_pool_of_two(Server::Citus, 2_000).await;
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// `Task Count: n` of a Citus plan.
fn tasks(plan: &[String]) -> usize {
    plan.iter()
        .find_map(|l| l.trim().strip_prefix("Task Count: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a Citus plan:\n{}", plan.join("\n")))
}

async fn explain_sql(conn: &mut AsyncPgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(format!("EXPLAIN {sql}"))
        .load::<PlanLine>(conn)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
        .into_iter()
        .map(|l| l.line)
        .collect()
}

/// A Citus database with `items_text` and `notes` (both distributed by tenant, hence
/// co-located) under the contract in Citus mode, seeded with `tenants` tenants.
async fn two_tables(tenants: usize) -> (TestDb, tenants_core::TenantPool) {
    let server = Server::Citus;
    let db = server.db();
    let mut conn = db.connect();
    let config = server.config();
    for table in ["items_text", "notes"] {
        create_marked_table(
            &mut conn,
            &config,
            Login::App,
            table,
            "text",
            TenantSqlType::Text,
        );
    }
    conn.batch_execute(&format!(
        "INSERT INTO items_text (name, tenant) SELECT 'item ' || i, 't' || (i % {tenants}) FROM generate_series(0, {}) i",
        tenants * 3 - 1
    ))
    .expect("seed");
    let pool = server.pool(&db, Login::App, 2).await;
    (db, pool)
}

/// The typed tenant filter routes to one shard; without it the policy alone fans out.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_scoped_query_routes_to_one_shard() {
    use items_text::items_text as t;
    let (_db, pool) = two_tables(10).await;
    let mut conn = pool.tenant("t3").await.expect("tenant");
    let scoped = t::table.scoped(&conn).expect("scoped").select(t::name);
    let plan = explain(&mut conn, scoped).await;
    assert_eq!(tasks(&plan), 1, "{}", plan.join("\n"));
    let names: Vec<String> = t::table
        .scoped(&conn)
        .expect("scoped")
        .select(t::name)
        .order(t::id)
        .load(&mut conn)
        .await
        .expect("scoped load");
    assert_eq!(names, ["item 3", "item 13", "item 23"]);
    let unfiltered = explain(&mut conn, t::table.select(t::name)).await;
    assert!(tasks(&unfiltered) > 1, "{}", unfiltered.join("\n"));
    conn.rollback().await.expect("rollback");
}

/// One tenant transaction writes and joins two co-located tables: routed to one node,
/// committed, invisible to the other tenant.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_tenant_transaction_over_two_colocated_tables() {
    let (db, pool) = two_tables(4).await;
    let mut conn = pool.tenant("t1").await.expect("tenant");
    diesel::sql_query("INSERT INTO notes (name, tenant) VALUES ('note of t1', 't1')")
        .execute(&mut conn)
        .await
        .expect("insert a note");
    diesel::sql_query("UPDATE items_text SET name = name || ' (noted)' WHERE tenant = 't1'")
        .execute(&mut conn)
        .await
        .expect("update items");
    let join = "SELECT count(*) AS n FROM items_text i JOIN notes n ON n.tenant = i.tenant WHERE i.tenant = 't1'";
    let plan = explain_sql(&mut conn, join).await;
    assert_eq!(tasks(&plan), 1, "{}", plan.join("\n"));
    let joined = diesel::sql_query(join)
        .get_result::<N>(&mut conn)
        .await
        .expect("join");
    assert_eq!(joined.n, 3);
    conn.commit().await.expect("commit");

    let mut other = pool.tenant("t2").await.expect("tenant");
    let notes = diesel::sql_query("SELECT count(*) AS n FROM notes")
        .get_result::<N>(&mut other)
        .await
        .expect("notes of t2");
    assert_eq!(notes.n, 0, "another tenant sees no note");
    other.rollback().await.expect("rollback");
    let mut admin = db.connect();
    let noted = tenants_tests::count(
        &mut admin,
        "SELECT count(*) AS n FROM items_text WHERE name LIKE '%(noted)' AND tenant = 't1'",
    );
    assert_eq!(noted, 3, "both writes committed together");
}

/// An admin transaction reads every tenant's rows across every shard.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_admin_reads_across_shards() {
    let (_db, pool) = two_tables(20).await;
    let mut admin = pool.admin().await.expect("admin");
    let plan = explain_sql(&mut admin, "SELECT count(*) FROM items_text").await;
    assert!(tasks(&plan) > 1, "{}", plan.join("\n"));
    let all = diesel::sql_query("SELECT count(DISTINCT tenant) AS n FROM items_text")
        .get_result::<N>(&mut admin)
        .await
        .expect("admin count");
    assert_eq!(all.n, 20);
    admin.commit().await.expect("commit");
    // The same without a scope: nothing, or refused by the workers (where the login
    // role's memberships are unknown: see the isolation suite). Closed either way.
    let mut plain = pool.unscoped().await.expect("checkout");
    match diesel::sql_query("SELECT count(*) AS n FROM items_text")
        .get_result::<N>(&mut plain)
        .await
    {
        Ok(none) => assert_eq!(none.n, 0),
        Err(error) => assert!(error.to_string().contains("permission denied"), "{error}"),
    }
}

/// Counts the statements a connection sends.
#[derive(Clone, Default)]
struct Statements(Arc<AtomicUsize>);

impl Instrumentation for Statements {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { .. } = event {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn statements_to_read(db: &TestDb, config: &Config, tables: &[RlsTable]) -> usize {
    let mut conn = AsyncPgConnection::establish(&db.url())
        .await
        .expect("connect");
    let count = Statements::default();
    conn.set_instrumentation(count.clone());
    let marked = verify::marked_tables(tables);
    catalog::read(&mut conn, config, &marked, &[], &[])
        .await
        .expect("read");
    AtomicUsize::load(&count.0, Ordering::Relaxed)
}

/// A database under the Citus contract verifies clean; the catalog is read in a fixed
/// number of statements, one more than on PostgreSQL (Citus's metadata).
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_coordinator_under_the_contract_verifies_clean() {
    let (db, pool) = two_tables(2).await;
    let config = Server::Citus.config();
    let tables = [marked("items_text"), marked("notes")];
    let found = findings(&db, &config, &tables, &[]).await;
    assert!(
        found
            .iter()
            .all(|f| matches!(f, Finding::LoginBypassesRls { .. })),
        "{found:?}"
    );
    drop(pool);
    let plain_db = TestDb::new();
    let on_citus = statements_to_read(&db, &config, &tables).await;
    let on_citus_one = statements_to_read(&db, &config, &tables[..1]).await;
    let on_postgres = statements_to_read(&plain_db, &Config::default(), &tables).await;
    assert_eq!(on_citus, on_citus_one, "fixed whatever the tables");
    assert_eq!(on_citus, on_postgres + 1, "one more: the distribution");
}

/// A marked table that is local, a reference table or distributed by another column; one
/// not co-located; a shared table that is not a reference table: each reported.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_reports_distribution_colocation_and_shared_tables() {
    let server = Server::Citus;
    let db = server.db();
    let config = server.config();
    let mut conn = db.connect();
    for table in ["by_tenant", "by_tenant_too", "apart"] {
        create_marked_table(
            &mut conn,
            &config,
            Login::Superuser,
            table,
            "text",
            TenantSqlType::Text,
        );
    }
    conn.batch_execute(
        "SELECT update_distributed_table_colocation('apart', colocate_with => 'none');
         CREATE TABLE local_one (id int, tenant text NOT NULL);
         CREATE TABLE as_reference (id int, tenant text NOT NULL);
         SELECT create_reference_table('as_reference');
         CREATE TABLE by_id (id int PRIMARY KEY, tenant text NOT NULL);
         SELECT create_distributed_table('by_id', 'id');
         CREATE TABLE countries (code text PRIMARY KEY);
         CREATE TABLE plans (code text PRIMARY KEY);
         SELECT create_reference_table('plans');",
    )
    .expect("distribute");
    let tables = [
        "apart",
        "as_reference",
        "by_id",
        "by_tenant",
        "by_tenant_too",
        "local_one",
    ]
    .map(marked);
    let shared = [
        QualifiedName::new("public", "countries"),
        QualifiedName::new("public", "plans"),
    ];
    let found = findings(&db, &config, &tables, &shared).await;
    let table = |name: &str| QualifiedName::new("public", name);
    let citus: Vec<&Finding> = found
        .iter()
        .filter(|f| {
            matches!(
                f,
                Finding::NotDistributedByTenant { .. }
                    | Finding::NotColocated { .. }
                    | Finding::SharedNotReference { .. }
                    | Finding::CitusModeOff { .. }
            )
        })
        .collect();
    let expected = [
        Finding::NotColocated {
            table: table("apart"),
            with: table("by_tenant"),
        },
        Finding::NotDistributedByTenant {
            table: table("as_reference"),
            column: "tenant".into(),
            actual: Distribution::Reference,
        },
        Finding::NotDistributedByTenant {
            table: table("by_id"),
            column: "tenant".into(),
            actual: Distribution::Hash {
                column: "id".into(),
                colocation: match citus.iter().find_map(|f| match f {
                    Finding::NotDistributedByTenant {
                        actual: Distribution::Hash { colocation, .. },
                        ..
                    } => Some(*colocation),
                    _ => None,
                }) {
                    Some(group) => group,
                    None => panic!("by_id not reported: {found:?}"),
                },
            },
        },
        Finding::NotDistributedByTenant {
            table: table("local_one"),
            column: "tenant".into(),
            actual: Distribution::Local,
        },
        Finding::SharedNotReference {
            table: table("countries"),
            actual: Distribution::Local,
        },
    ];
    assert_eq!(citus, expected.iter().collect::<Vec<_>>(), "{found:?}");
    for finding in &expected {
        assert_eq!(finding.severity(), tenants_core::Severity::Warning);
        assert!(finding.hint().contains("SELECT "), "{}", finding.hint());
    }
}

/// Outside Citus mode, on a coordinator whose marked tables live on the workers: reported
/// whatever the database sets `citus.propagate_set_commands` to, and generate refuses.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_reports_citus_mode_off_on_a_coordinator() {
    let (db, _pool) = two_tables(1).await;
    let plain = Config::default();
    let tables = [marked("items_text"), marked("notes")];
    let report = |found: &[Finding]| {
        found
            .iter()
            .filter(|f| matches!(f, Finding::CitusModeOff { .. }))
            .cloned()
            .collect::<Vec<_>>()
    };
    let found = findings(&db, &plain, &tables, &[]).await;
    assert_eq!(
        report(&found),
        [Finding::CitusModeOff {
            value: "none".into()
        }]
    );
    let mut conn = AsyncPgConnection::establish(&db.url())
        .await
        .expect("connect");
    let marked = verify::marked_tables(&tables);
    let catalog = catalog::read(&mut conn, &plain, &marked, &[], &[])
        .await
        .expect("catalog");
    match plan::plan(&plain, &marked, &catalog, &PlanOptions::default()) {
        Err(plan::PlanError::Blocked(findings)) => assert!(
            findings.contains(&Finding::CitusModeOff {
                value: "none".into()
            }),
            "{findings:?}"
        ),
        other => panic!("expected generate to refuse: {other:?}"),
    }
    // Set by the database, Citus mode off is still reported: the plain begin batch would
    // be re-sent whole to every worker connection. In Citus mode there is nothing to say.
    db.connect()
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET citus.propagate_set_commands = 'local'",
            db.name()
        ))
        .expect("alter database");
    assert_eq!(
        report(&findings(&db, &plain, &tables, &[]).await),
        [Finding::CitusModeOff {
            value: "local".into()
        }]
    );
    assert_eq!(
        report(&findings(&db, &Server::Citus.config(), &tables, &[]).await),
        []
    );
}
