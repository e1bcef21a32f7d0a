#![deny(warnings)]
#![forbid(unsafe_code)]
//! Both forms in one binary: the registry lists each table once, sorted by schema and name.
//!
//! The crate denies warnings and forbids unsafe code: the generated code must not trip them.

use tenants_core::registry::{RlsTable, TenantSqlType, tables};
use tenants_core::with_rls;

mod schema {
    #[tenants_core::with_rls]
    diesel::table! {
        todo_item (id) {
            id -> Int4,
            tenant -> Text,
        }
    }

    #[tenants_core::with_rls(column = account)]
    diesel::table! {
        audit.event (id) {
            id -> Int8,
            account -> BigInt,
        }
    }

    diesel::table! {
        unmarked (id) {
            id -> Int4,
            tenant -> Text,
        }
    }
}

/// Marks a table already marked by its `table!`: still one entry.
#[with_rls]
#[derive(diesel::Queryable)]
#[diesel(table_name = schema::todo_item)]
struct TodoTenant {
    tenant: String,
}

fn main() {
    let _ = TodoTenant { tenant: String::new() }.tenant;
    let _ = schema::unmarked::table;
    assert_eq!(
        tables(),
        [
            RlsTable {
                schema: "audit",
                name: "event",
                tenant_column: "account",
                sql_type: TenantSqlType::Int8,
            },
            RlsTable {
                schema: "public",
                name: "todo_item",
                tenant_column: "tenant",
                sql_type: TenantSqlType::Text,
            },
        ]
    );
}
