mod schema {
    diesel::table! { todo_item (id) { id -> Int4, tenant -> Text } }
    diesel::table! { project (id) { id -> Int4, tenant -> Text } }
}

#[tenants_core::with_rls]
use schema::{project, todo_item};

fn main() {
    let _ = (todo_item::table, project::table);
}
