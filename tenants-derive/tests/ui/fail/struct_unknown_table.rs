diesel::table! {
    todo_item (id) {
        id -> Int4,
        tenant -> Text,
    }
}

#[tenants_core::with_rls]
#[derive(diesel::Insertable)]
#[diesel(table_name = todo_items)]
struct NewTodoItem {
    tenant: String,
}

fn main() {
    let _ = NewTodoItem { tenant: String::new() }.tenant;
}
