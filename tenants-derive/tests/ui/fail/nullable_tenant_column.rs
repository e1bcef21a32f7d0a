#[tenants_core::with_rls]
diesel::table! {
    todo_item (id) {
        id -> Int4,
        tenant -> Nullable<Text>,
    }
}

fn main() {
    let _ = todo_item::tenant;
}
