#[tenants_core::with_rls]
diesel::table! {
    todo_item (id) {
        id -> Int4,
        tenant -> ,
    }
}

fn main() {}
