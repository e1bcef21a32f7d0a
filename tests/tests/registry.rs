//! `registry::tables()` lists each marked table once, sorted.

use tenants_core::registry::{self, RlsTable, TenantSqlType};

#[test]
fn lists_every_marked_table_of_the_binary_once_sorted() {
    let tables = registry::tables();
    let ours: Vec<&RlsTable> = tables
        .iter()
        .filter(|t| t.name.starts_with("items_"))
        .collect();
    let expected = [
        ("items_int4", TenantSqlType::Int4),
        ("items_int8", TenantSqlType::Int8),
        ("items_text", TenantSqlType::Text),
        ("items_uuid", TenantSqlType::Uuid),
        ("items_varchar", TenantSqlType::VarChar),
    ];
    assert_eq!(ours.len(), expected.len(), "{tables:?}");
    for (table, (name, sql_type)) in ours.iter().zip(expected) {
        assert_eq!(
            **table,
            RlsTable {
                schema: "public",
                name,
                tenant_column: "tenant",
                sql_type
            }
        );
    }
    let mut sorted = tables.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(tables, sorted);
}
