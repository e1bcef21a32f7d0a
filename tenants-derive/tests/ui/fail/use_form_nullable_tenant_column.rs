mod schema {
    diesel::table! {
        todo_item (id) {
            id -> Int4,
            org_id -> Nullable<Uuid>,
        }
    }
}

#[tenants_core::with_rls(column = org_id)]
use schema::todo_item;

fn main() {
    let _ = todo_item::table;
}
