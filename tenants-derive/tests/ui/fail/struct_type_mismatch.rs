diesel::table! {
    todo_item (id) {
        id -> Int4,
        tenant -> Text,
    }
}

#[tenants_core::with_rls]
#[derive(diesel::Queryable)]
#[diesel(table_name = todo_item)]
struct TodoTenant {
    tenant: i32,
}

fn main() {
    let _ = TodoTenant { tenant: 1 }.tenant;
}
