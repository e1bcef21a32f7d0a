#![deny(warnings)]
#![forbid(unsafe_code)]
//! `column = ...`, a schema, `#[sql_name]` on the table and on the column, a raw identifier.
//!
//! The crate denies warnings and forbids unsafe code: the generated code must not trip them.

use tenants_core::registry::{RlsTable, TenantSqlType};

pub mod schema {
    #[tenants_core::with_rls(column = org_id)]
    diesel::table! {
        use diesel::sql_types::*;

        /// Invoices, one row per invoice.
        #[sql_name = "invoices"]
        billing.invoice (id) {
            id -> Int8,
            #[sql_name = "organisation_id"]
            org_id -> Uuid,
            total -> Int8,
        }
    }

    #[tenants_core::with_rls(column = r#type)]
    diesel::table! {
        kinds (id) {
            id -> Int4,
            r#type -> diesel::sql_types::Int8,
        }
    }
}

fn main() {
    let _ = (schema::invoice::table, schema::invoice::org_id, schema::kinds::r#type);
    assert_eq!(
        tenants_core::registry::tables(),
        [
            RlsTable {
                schema: "billing",
                name: "invoices",
                tenant_column: "organisation_id",
                sql_type: TenantSqlType::Uuid,
            },
            RlsTable {
                schema: "public",
                name: "kinds",
                tenant_column: "type",
                sql_type: TenantSqlType::Int8,
            },
        ]
    );
}
