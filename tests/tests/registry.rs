//! `registry::tables()` lists each marked table once, sorted.

use diesel::prelude::*;
use tenants_core::registry::{self, RlsTable, TenantSqlType};

use crate::isolation::items_text::items_text;
use crate::isolation::items_varchar::items_varchar;

// Marking models of already marked tables adds no entry; for `items_varchar` the struct
// form sees `Text` (Diesel's `VarChar` is an alias), and the table form's `VarChar` wins.
#[tenants_core::with_rls]
#[derive(Queryable, Selectable)]
#[diesel(table_name = items_text)]
#[expect(dead_code, reason = "declared for its registry entry only")]
pub struct TextItem {
    pub id: i32,
    pub name: String,
    pub tenant: String,
}

#[tenants_core::with_rls]
#[derive(Insertable)]
#[diesel(table_name = items_varchar)]
pub struct NewVarcharItem<'a> {
    pub name: &'a str,
    pub tenant: &'a str,
}

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
