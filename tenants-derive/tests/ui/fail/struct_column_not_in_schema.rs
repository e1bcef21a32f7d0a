diesel::table! {
    todo_item (id) {
        id -> Int4,
        name -> Text,
    }
}

#[tenants_core::with_rls]
#[derive(diesel::Queryable)]
#[diesel(table_name = todo_item)]
struct TodoTenant {
    name: String,
    tenant: String,
}

fn main() {
    let _ = TodoTenant { name: String::new(), tenant: String::new() }.tenant;
}
