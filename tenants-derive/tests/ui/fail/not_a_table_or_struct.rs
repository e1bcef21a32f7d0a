#[tenants_core::with_rls]
enum Tenant {
    Acme,
}

fn main() {
    let _ = Tenant::Acme;
}
