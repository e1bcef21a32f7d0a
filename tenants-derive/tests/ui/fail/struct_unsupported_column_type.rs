diesel::table! {
    todo_item (id) {
        id -> Int4,
        tenant -> Bool,
    }
}

#[tenants_core::with_rls]
#[derive(diesel::Queryable)]
#[diesel(table_name = todo_item)]
struct TodoTenant {
    tenant: bool,
}

fn main() {
    let _ = TodoTenant { tenant: true }.tenant;
}
