//! The service's own migrations under the kit's isolation check (`tenants_core::testing`):
//! every `#[with_rls]` table of the service keeps tenants apart, property by property, as
//! the HTTP tests show route by route; and the kit serves as the hardened deployment does.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tenants_core::testing::{IsolationCheck, SERVING_LOGIN, TestDatabase};
use todo_api::db::{MIGRATIONS, todo_item};

#[tokio::test]
async fn the_migrations_keep_every_marked_table_isolated() {
    let db = TestDatabase::new(MIGRATIONS).expect("a migrated test database");
    let pool = db.pool().await.expect("a pool");
    IsolationCheck::new()
        .rows("todo_item", async |conn, tenant| {
            diesel::insert_into(todo_item::table)
                .values((
                    todo_item::name.eq("isolation check"),
                    todo_item::tenant.eq(tenant.as_str()),
                ))
                .execute(conn)
                .await
        })
        .privileged_url(db.url())
        .admin_pool(db.admin_pool().await.expect("an admin pool"))
        .assert(&pool)
        .await;
}

/// The kit's pool logs in as the hardened serving login: `verify()` passes for tenant
/// transactions without a warning, and outside a scope every statement on a marked table
/// (`EXPLAIN` and `LIMIT 0` included) fails with `permission denied`, whose error tells to
/// open a tenant transaction; inside one, the same statements work.
#[tokio::test]
async fn the_kit_serves_through_a_login_that_fails_loudly_outside_a_scope() {
    let db = TestDatabase::new(MIGRATIONS).expect("a migrated test database");
    let pool = db.pool().await.expect("a pool");
    let report = pool
        .verify()
        .await
        .expect("the hardened login passes verify");
    assert_eq!(report.findings, [], "{report}");
    let admin = db.admin_pool().await.expect("an admin pool");
    let report = admin.verify().await.expect("the admin login passes verify");
    assert_eq!(report.findings, [], "{report}");

    let statements = [
        "SELECT count(*) FROM todo_item",
        "SELECT * FROM todo_item LIMIT 0",
        "EXPLAIN SELECT * FROM todo_item",
        "INSERT INTO todo_item (name, tenant) VALUES ('x', 'acme')",
    ];
    let mut unscoped = pool.unscoped().await.expect("a plain checkout");
    let login: String = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::Text>(
        "current_user::text",
    ))
    .get_result(&mut unscoped)
    .await
    .expect("current_user");
    assert_eq!(login, SERVING_LOGIN);
    for sql in statements {
        let error = diesel::sql_query(sql)
            .execute(&mut unscoped)
            .await
            .expect_err(sql);
        assert!(
            error
                .to_string()
                .starts_with("permission denied for table todo_item"),
            "{sql}: {error}"
        );
        let shown = tenants_core::Error::from(error).to_string();
        assert!(
            shown.contains("open a tenant transaction"),
            "{sql}: {shown}"
        );
    }
    drop(unscoped);
    let mut scoped = pool.tenant("acme").await.expect("a tenant transaction");
    for sql in statements {
        diesel::sql_query(sql)
            .execute(&mut scoped)
            .await
            .unwrap_or_else(|e| panic!("{sql} in a tenant transaction: {e}"));
    }
    scoped.rollback().await.expect("rollback");
}
