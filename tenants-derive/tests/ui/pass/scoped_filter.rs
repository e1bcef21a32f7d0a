#![deny(warnings)]
//! Every table marked `#[with_rls]` on its `table!` gets the typed tenant filter, the id
//! bound as the tenant column's type; marking a struct of it as well changes nothing.

use diesel::pg::Pg;
use diesel::prelude::*;
use tenants_core::{ScopedDsl, Tenant, with_rls};

#[with_rls]
diesel::table! {
    by_text (id) {
        id -> Int4,
        tenant -> Text,
    }
}

#[with_rls(column = org)]
diesel::table! {
    by_int4 (id) {
        id -> Int4,
        #[sql_name = "org_id"]
        org -> Integer,
    }
}

#[with_rls]
diesel::table! {
    by_int8 (id) {
        id -> Int4,
        tenant -> BigInt,
    }
}

#[with_rls]
diesel::table! {
    by_uuid (id) {
        id -> Int4,
        tenant -> Uuid,
    }
}

#[with_rls]
#[derive(Insertable)]
#[diesel(table_name = by_text)]
struct NewByText {
    tenant: String,
}

fn sql<Q: diesel::query_builder::QueryFragment<Pg>>(query: &Q) -> String {
    diesel::debug_query::<Pg, _>(query).to_string()
}

fn main() -> Result<(), tenants_core::Error> {
    let _ = NewByText { tenant: String::new() }.tenant;
    let tenant = |id: &str| Tenant::new(id);
    let text = by_text::table.scoped(&tenant("acme")?)?.select(by_text::id);
    assert_eq!(
        sql(&text),
        r#"SELECT "by_text"."id" FROM "by_text" WHERE ("by_text"."tenant" = $1) -- binds: ["acme"]"#
    );
    let int4 = by_int4::table.scoped(&tenant("+7")?)?.select(by_int4::id);
    assert_eq!(
        sql(&int4),
        r#"SELECT "by_int4"."id" FROM "by_int4" WHERE ("by_int4"."org_id" = $1) -- binds: [7]"#
    );
    let int8 = by_int8::table.scoped(&tenant("5000000001")?)?.select(by_int8::id);
    assert!(sql(&int8).ends_with("-- binds: [5000000001]"));
    let uuid = by_uuid::table
        .scoped(&tenant("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")?)?
        .select(by_uuid::id);
    assert!(sql(&uuid).ends_with("-- binds: [a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11]"));
    // Not a number: refused before any query.
    assert!(matches!(
        by_int8::table.scoped(&tenant("acme")?),
        Err(tenants_core::Error::InvalidTenantId(_))
    ));
    // It is a filter like any other: update and delete take it too.
    let delete = diesel::delete(by_text::table.scoped(&tenant("acme")?)?);
    assert_eq!(
        sql(&delete),
        r#"DELETE FROM "by_text" WHERE ("by_text"."tenant" = $1) -- binds: ["acme"]"#
    );
    Ok(())
}
