diesel::table! {
    todo_item (id) {
        id -> Int4,
        tenant -> Nullable<Text>,
    }
}

#[tenants_core::with_rls]
#[derive(diesel::Queryable)]
#[diesel(table_name = todo_item)]
struct TodoTenant {
    tenant: Option<String>,
}

fn main() {
    let _ = TodoTenant { tenant: None }.tenant;
}
