#![deny(warnings)]
#![forbid(unsafe_code)]
//! `#[with_rls]` on a `diesel::table!` with the default `tenant` column.
//!
//! The crate denies warnings and forbids unsafe code: the generated code must not trip them.

use tenants_core::registry::{RlsTable, TenantSqlType};
use tenants_core::with_rls;

#[with_rls]
diesel::table! {
    todo_item (id) {
        id -> Int4,
        name -> Text,
        tenant -> Text,
    }
}

fn main() {
    // The item is untouched: the schema module works as usual.
    let _query = todo_item::table.select((todo_item::id, todo_item::tenant));
    assert_eq!(
        tenants_core::registry::tables(),
        [RlsTable {
            schema: "public",
            name: "todo_item",
            tenant_column: "tenant",
            sql_type: TenantSqlType::Text,
        }]
    );
}

use diesel::QueryDsl;
