mod schema {
    diesel::table! {
        todo_item (id) {
            id -> Int4,
            name -> Text,
        }
    }
}

#[tenants_core::with_rls]
use schema::todo_item;

fn main() {
    let _ = todo_item::table;
}
