mod schema {
    diesel::table! { todo_item (id) { id -> Int4, tenant -> Text } }
}

#[tenants_core::with_rls]
use schema::todo_items;

fn main() {}
