#[tenants_core::with_rls]
diesel::table! {
    todo_item (id) {
        id -> Int4,
        name -> Text,
    }
}

fn main() {
    // The table is still declared: no cascade of "cannot find todo_item".
    let _ = todo_item::table;
}
