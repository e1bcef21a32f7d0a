#[tenants_core::with_rls(colum = org_id)]
diesel::table! {
    todo_item (id) {
        id -> Int4,
        org_id -> Text,
    }
}

fn main() {
    let _ = todo_item::org_id;
}
