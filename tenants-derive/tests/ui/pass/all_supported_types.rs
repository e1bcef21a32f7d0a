#![deny(warnings)]
#![forbid(unsafe_code)]
//! Every supported tenant column type, under each of its Diesel names.
//!
//! The crate denies warnings and forbids unsafe code: the generated code must not trip them.

use tenants_core::registry::TenantSqlType;
use tenants_core::with_rls;

#[with_rls]
diesel::table! { t_text (id) { id -> Int4, tenant -> Text } }
#[with_rls]
diesel::table! { t_varchar_camel (id) { id -> Int4, tenant -> VarChar } }
#[with_rls]
diesel::table! { t_varchar (id) { id -> Int4, #[max_length = 64] tenant -> Varchar } }
#[with_rls]
diesel::table! { t_integer (id) { id -> Int4, tenant -> Integer } }
#[with_rls]
diesel::table! { t_int4 (id) { id -> Int4, tenant -> Int4 } }
#[with_rls]
diesel::table! { t_bigint (id) { id -> Int4, tenant -> BigInt } }
#[with_rls]
diesel::table! { t_int8 (id) { id -> Int4, tenant -> Int8 } }
#[with_rls]
diesel::table! { t_uuid (id) { id -> Int4, tenant -> Uuid } }
#[with_rls]
diesel::table! { t_qualified (id) { id -> Int4, tenant -> diesel::sql_types::Text } }

fn main() {
    let types: Vec<(&str, TenantSqlType)> = tenants_core::registry::tables()
        .iter()
        .map(|table| (table.name, table.sql_type))
        .collect();
    assert_eq!(
        types,
        [
            ("t_bigint", TenantSqlType::Int8),
            ("t_int4", TenantSqlType::Int4),
            ("t_int8", TenantSqlType::Int8),
            ("t_integer", TenantSqlType::Int4),
            ("t_qualified", TenantSqlType::Text),
            ("t_text", TenantSqlType::Text),
            ("t_uuid", TenantSqlType::Uuid),
            ("t_varchar", TenantSqlType::VarChar),
            ("t_varchar_camel", TenantSqlType::VarChar),
        ]
    );
}
