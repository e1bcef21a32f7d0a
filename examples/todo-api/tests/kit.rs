//! The service's own migrations under the kit's isolation check (`tenants_core::testing`):
//! every `#[with_rls]` table of the service keeps tenants apart, property by property, as
//! the HTTP tests show route by route.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tenants_core::testing::{IsolationCheck, TestDatabase};
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
        .assert(&pool)
        .await;
}
