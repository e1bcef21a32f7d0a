use tenants_core::{ScopedDsl, Tenant};

diesel::table! {
    todo_item (id) {
        id -> Int4,
        tenant -> Text,
    }
}

fn main() {
    let tenant = Tenant::new("acme").expect("valid id");
    let _ = todo_item::table.scoped(&tenant);
}
