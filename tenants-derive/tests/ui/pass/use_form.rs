//! The use form: the marks live outside the `schema.rs` that `diesel print-schema` writes.

mod schema {
    diesel::table! {
        todo_item (id) {
            id -> Int4,
            name -> Text,
            tenant -> Text,
        }
    }
    diesel::table! {
        invoice (id) {
            id -> Int8,
            org_id -> Uuid,
        }
    }
}

mod rls {
    #[tenants_core::with_rls]
    pub use crate::schema::todo_item;
    #[tenants_core::with_rls(column = org_id)]
    pub use crate::schema::invoice as invoices;
}

fn main() {
    use tenants_core::registry::{self, TenantSqlType};
    let tables = registry::tables();
    let found: Vec<_> = tables
        .iter()
        .map(|t| (t.schema, t.name, t.tenant_column, t.sql_type))
        .collect();
    assert_eq!(
        found,
        [
            ("public", "invoice", "org_id", TenantSqlType::Uuid),
            ("public", "todo_item", "tenant", TenantSqlType::Text),
        ]
    );
    // The typed tenant filter works on a table marked by its `use`.
    let tenant = tenants_core::Tenant::new("acme").expect("tenant");
    let _query = tenants_core::ScopedDsl::scoped(rls::todo_item::table, &tenant).expect("scoped");
    let _ = rls::invoices::table;
}
