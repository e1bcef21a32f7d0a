#[tenants_core::with_rls(column = org_id)]
diesel::table! {
    invoice (id) {
        id -> Int4,
        organisation -> Int4,
    }
}

fn main() {
    let _ = invoice::organisation;
}
