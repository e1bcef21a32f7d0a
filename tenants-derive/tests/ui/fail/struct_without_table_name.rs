#[tenants_core::with_rls]
#[derive(Debug)]
struct TodoItem {
    tenant: String,
}

fn main() {
    let _ = TodoItem { tenant: String::new() }.tenant;
}
