//! Hostile tenant ids, escape attempts from inside a tenant transaction, and constraint
//! side channels: each outcome is the documented one (SECURITY.md).

use diesel::QueryableByName;
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, Error, InvalidTenantId, TenantPool, policy};
use tenants_tests::{TestDb, batch_locked, ensure_login_role};

use crate::common::{HOSTILE_IDS, Login, assert_db_error, create_marked_table};

#[derive(QueryableByName)]
struct Tenants {
    #[diesel(sql_type = Text)]
    tenants: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Every visible row's tenant (as text, distinct, sorted) and the row count.
async fn visible(
    conn: &mut diesel_async::AsyncPgConnection,
    table: &str,
) -> Result<(String, i64), Error> {
    let row = diesel::sql_query(format!(
        "SELECT coalesce(string_agg(DISTINCT tenant::text, ','), '') AS tenants, count(*) AS n FROM \"{table}\""
    ))
    .get_result::<Tenants>(conn)
    .await?;
    Ok((row.tenants, row.n))
}

/// The table's content as the superuser sees it, to prove nothing changed.
fn fingerprint(db: &TestDb, table: &str) -> String {
    tenants_tests::text(
        &mut db.connect(),
        &format!(
            "SELECT coalesce(string_agg(format('%s|%s|%s', id, name, tenant), ',' ORDER BY id), '') AS value FROM \"{table}\""
        ),
    )
}

async fn prepared(table: &str, pg_type: &str, sql_type: TenantSqlType, seed: &str) -> TestDb {
    let db = TestDb::new();
    let mut conn = db.connect();
    create_marked_table(
        &mut conn,
        &Config::default(),
        Login::App,
        table,
        pg_type,
        sql_type,
    );
    conn.batch_execute(&format!(
        "INSERT INTO \"{table}\" (name, tenant) VALUES {seed}"
    ))
    .expect("seed");
    db
}

#[tokio::test]
async fn hostile_text_ids_see_exactly_their_literal_tenant() {
    let table = "hostile_text";
    let db = prepared(
        table,
        "text",
        TenantSqlType::Text,
        "('a1', 'acme'), ('a2', 'acme'), ('g1', 'globex'), ('q1', ''''), ('b1', '\\')",
    )
    .await;
    let before = fingerprint(&db, table);
    let pool = crate::common::pool(&Login::App.url(&db), 2).await;

    let check = |id: String| {
        let pool = &pool;
        async move {
            match pool.tenant(id.as_str()).await {
                Ok(mut conn) => {
                    let (tenants, n) = visible(&mut conn, table).await.expect("select");
                    // Whatever the id, a write as it cannot land on another tenant's rows.
                    let moved = diesel::sql_query(format!(
                        "UPDATE \"{table}\" SET name = name || '!' WHERE tenant <> '{}'",
                        id.replace('\'', "''")
                    ))
                    .execute(&mut conn)
                    .await
                    .expect("update others");
                    conn.rollback().await.expect("rollback");
                    assert_eq!(moved, 0, "{id:?} updated another tenant's rows");
                    if n > 0 {
                        assert_eq!(tenants, id, "{id:?} saw {tenants:?}");
                    }
                    n
                }
                Err(Error::InvalidTenantId(_)) => -1,
                Err(other) => panic!("{id:?}: {other}"),
            }
        }
    };
    for id in HOSTILE_IDS {
        let expected = match id {
            "'" | "\\" => 1,
            _ => 0,
        };
        assert_eq!(check(id.to_string()).await, expected, "{id:?}");
    }
    assert_eq!(check("x".repeat(10 * 1024)).await, -1, "10 KB is rejected");
    assert_eq!(check("ac\0me".into()).await, -1);
    assert_eq!(check(String::new()).await, -1);
    assert_eq!(check("acme".into()).await, 2);

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    let ids = proptest::string::string_regex("[^\u{0}]{1,64}").expect("regex");
    let samples: Vec<String> = (0..200)
        .map(|_| ids.new_tree(&mut runner).expect("sample").current())
        .collect();
    for id in samples {
        let n = check(id.clone()).await;
        assert!(
            n == 0 || (n == 2 && id == "acme") || (n == 1 && (id == "'" || id == "\\")),
            "{id:?}: {n}"
        );
    }
    assert_eq!(fingerprint(&db, table), before, "nothing changed");
}

#[tokio::test]
async fn ids_of_the_wrong_type_are_typed_errors_before_any_io() {
    for (table, pg_type, sql_type, good, seed) in [
        (
            "hostile_int4",
            "int4",
            TenantSqlType::Int4,
            "1",
            "('a', 1), ('b', 2)",
        ),
        (
            "hostile_uuid",
            "uuid",
            TenantSqlType::Uuid,
            "00000000-0000-0000-0000-000000000001",
            "('a', '00000000-0000-0000-0000-000000000001'), ('b', '00000000-0000-0000-0000-000000000002')",
        ),
    ] {
        let db = prepared(table, pg_type, sql_type, seed).await;
        let before = fingerprint(&db, table);
        let config = Config::default().with_tenant_type(sql_type);
        let pool = TenantPool::connect_with(
            &Login::App.url(&db),
            config,
            bb8::Pool::builder().max_size(1),
        )
        .await
        .expect("pool");
        // The only connection is held: an id that got as far as a checkout would hang.
        let held = pool.pool().get().await.expect("hold");
        for id in [
            "not-a-uuid",
            "2147483648",
            "99999999999999999999",
            "1 OR 1=1",
            "'1'",
            "１",
        ] {
            let result =
                tokio::time::timeout(std::time::Duration::from_secs(5), pool.tenant(id)).await;
            assert!(
                matches!(
                    result,
                    Ok(Err(Error::InvalidTenantId(
                        InvalidTenantId::WrongType { .. }
                    )))
                ),
                "{table}: {id:?} gave {result:?}"
            );
        }
        drop(held);
        let mut conn = pool.tenant(good).await.expect("a valid id");
        assert_eq!(visible(&mut conn, table).await.expect("select").1, 1);
        conn.rollback().await.expect("rollback");
        assert_eq!(fingerprint(&db, table), before);
    }
}

/// A login role that is a member of the tenant role only: the recommended deployment.
const MEMBER: &str = "tenants_test_tenant_member";

async fn recommended_deployment() -> (TestDb, TenantPool) {
    let db = TestDb::new();
    let mut conn = db.connect();
    let config = Config::default();
    ensure_login_role(&mut conn, MEMBER);
    batch_locked(
        &mut conn,
        &policy::render_up(&config, &policy::setup(&config, &[], &[])),
    );
    batch_locked(
        &mut conn,
        &format!("REVOKE tenants_admin FROM {MEMBER}; GRANT tenants_user TO {MEMBER}"),
    );
    create_marked_table(
        &mut conn,
        &config,
        Login::Superuser,
        "escape",
        "text",
        TenantSqlType::Text,
    );
    conn.batch_execute(
        "INSERT INTO escape (name, tenant) VALUES ('a1', 'acme'), ('a2', 'acme'), ('a3', 'acme'), ('g1', 'globex'), ('g2', 'globex')",
    )
    .expect("seed");
    let pool = crate::common::pool(&db.url_as(MEMBER), 1).await;
    (db, pool)
}

#[tokio::test]
async fn escape_attempts_inside_a_tenant_transaction() {
    let (_db, pool) = recommended_deployment().await;

    // RESET ROLE: back to the login role, which inherits the tenant role's privileges;
    // the tenant setting still holds, so the policies still show acme's rows only.
    let mut conn = pool.tenant("acme").await.expect("tenant");
    diesel::sql_query("RESET ROLE")
        .execute(&mut conn)
        .await
        .expect("reset role");
    assert_eq!(
        visible(&mut conn, "escape").await.expect("select"),
        ("acme".into(), 3)
    );
    conn.rollback().await.expect("rollback");

    // SET LOCAL ROLE to the admin role: refused, the login role is not a member.
    let mut conn = pool.tenant("acme").await.expect("tenant");
    let refused = diesel::sql_query("SET LOCAL ROLE tenants_admin")
        .execute(&mut conn)
        .await;
    assert_db_error(
        &refused,
        "permission denied",
        "SET LOCAL ROLE to the admin role",
    );
    conn.rollback().await.expect("rollback");

    // set_config to another tenant: allowed. Code that runs arbitrary SQL can switch
    // tenant; that is the documented limit of the threat model.
    let mut conn = pool.tenant("acme").await.expect("tenant");
    diesel::sql_query("SELECT set_config('tenants.current_tenant', 'globex', true)")
        .execute(&mut conn)
        .await
        .expect("set_config");
    assert_eq!(
        visible(&mut conn, "escape").await.expect("select"),
        ("globex".into(), 2)
    );
    conn.rollback().await.expect("rollback");

    // A raw COMMIT ends the scope: what follows runs as the login role with no tenant,
    // and sees nothing.
    let mut conn = pool.tenant("acme").await.expect("tenant");
    diesel::sql_query("COMMIT")
        .execute(&mut conn)
        .await
        .expect("raw commit");
    assert_eq!(
        visible(&mut conn, "escape").await.expect("select"),
        (String::new(), 0)
    );
    let written = diesel::sql_query("INSERT INTO escape (name, tenant) VALUES ('x', 'acme')")
        .execute(&mut conn)
        .await;
    assert!(written.is_err(), "an unscoped write fails: {written:?}");
    drop(conn);

    // And the pool hands out a clean connection afterwards.
    let mut conn = pool.tenant("globex").await.expect("tenant");
    assert_eq!(
        visible(&mut conn, "escape").await.expect("select"),
        ("globex".into(), 2)
    );
    conn.rollback().await.expect("rollback");
}

#[tokio::test]
async fn unique_constraints_without_the_tenant_column_are_a_side_channel() {
    let db = TestDb::new();
    let mut conn = db.connect();
    let config = Config::default();
    for table in ["global_unique", "tenant_unique"] {
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
        "ALTER TABLE global_unique ADD UNIQUE (name);
         ALTER TABLE tenant_unique ADD UNIQUE (tenant, name);
         INSERT INTO global_unique (name, tenant) VALUES ('ceo@acme.example', 'acme');
         INSERT INTO tenant_unique (name, tenant) VALUES ('ceo@acme.example', 'acme');",
    )
    .expect("tables");
    let pool = crate::common::pool(&db.url(), 1).await;

    // globex cannot see acme's row, yet inserting the same value fails: the unique
    // violation reveals that some tenant holds it.
    let mut globex = pool.tenant("globex").await.expect("tenant");
    assert_eq!(
        visible(&mut globex, "global_unique")
            .await
            .expect("select")
            .1,
        0
    );
    let leaked = diesel::sql_query(
        "INSERT INTO global_unique (name, tenant) VALUES ('ceo@acme.example', 'globex')",
    )
    .execute(&mut globex)
    .await;
    assert!(
        matches!(
            &leaked,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        ),
        "{leaked:?}"
    );
    globex.rollback().await.expect("rollback");

    // With the tenant column in the constraint, the insert succeeds: nothing revealed.
    let mut globex = pool.tenant("globex").await.expect("tenant");
    let inserted = diesel::sql_query(
        "INSERT INTO tenant_unique (name, tenant) VALUES ('ceo@acme.example', 'globex')",
    )
    .execute(&mut globex)
    .await
    .expect("no conflict across tenants");
    assert_eq!(inserted, 1);
    globex.rollback().await.expect("rollback");
}
