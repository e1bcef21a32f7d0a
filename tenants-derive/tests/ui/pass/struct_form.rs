#![deny(warnings)]
#![forbid(unsafe_code)]
//! The struct form: paths, derives on either side, `column_name`, borrowed and generic fields.
//!
//! The crate denies warnings and forbids unsafe code: the generated code must not trip them.

use diesel::prelude::*;
use tenants_core::registry::{RlsTable, TenantSqlType};
use tenants_core::with_rls;

pub mod schema {
    // Not marked: as `diesel print-schema` writes it.
    diesel::table! {
        todo_item (id) {
            id -> Int4,
            name -> Text,
            tenant -> Text,
        }
    }

    diesel::table! {
        invoice (id) {
            id -> Int4,
            org_id -> Int4,
            owner -> BigInt,
        }
    }
}

use schema::todo_item;

/// A full path, derives before and after the attribute, and an owned field.
#[derive(Queryable, Selectable)]
#[with_rls]
#[diesel(table_name = crate::schema::todo_item)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct TodoItem {
    pub id: i32,
    pub name: String,
    pub tenant: String,
}

/// A borrowed field, renamed with `column_name`, the same table marked twice.
#[with_rls]
#[derive(Insertable)]
#[diesel(table_name = todo_item)]
pub struct NewTodoItem<'a> {
    pub name: &'a str,
    #[diesel(column_name = tenant)]
    pub owner: &'a str,
}

/// A custom column.
#[with_rls(column = org_id)]
#[derive(Insertable)]
#[diesel(table_name = schema::invoice)]
pub struct NewInvoice {
    pub org_id: i32,
    pub owner: i64,
}

/// A generic struct: the field type cannot be checked, the column still is.
#[with_rls(column = owner)]
#[derive(Queryable)]
#[diesel(table_name = schema::invoice)]
pub struct InvoiceOwner<T> {
    pub owner: T,
}

fn main() {
    let _: diesel::helper_types::AsSelect<TodoItem, diesel::pg::Pg> = TodoItem::as_select();
    let _ = NewTodoItem { name: "a", owner: "b" }.name;
    let _ = NewInvoice { org_id: 7, owner: 1 }.owner;
    let _ = InvoiceOwner { owner: 1_i64 }.owner;
    assert_eq!(
        tenants_core::registry::tables(),
        [
            RlsTable {
                schema: "public",
                name: "invoice",
                tenant_column: "org_id",
                sql_type: TenantSqlType::Int4,
            },
            RlsTable {
                schema: "public",
                name: "invoice",
                tenant_column: "owner",
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
