diesel::table! {
    todo_item (id) {
        id -> Int4,
        name -> Text,
        tenant -> Text,
    }
}

#[tenants_core::with_rls]
#[derive(diesel::Insertable)]
#[diesel(table_name = todo_item)]
struct NewTodoItem {
    name: String,
}

fn main() {
    let _ = NewTodoItem { name: String::new() }.name;
}
