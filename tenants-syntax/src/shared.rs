//! `#[shared]` on a `diesel::table!` invocation: a table every tenant may read, not under
//! RLS (lookup and reference data).

use diesel_table_macro_syntax::TableDecl;
use proc_macro2::TokenStream;
use syn::ext::IdentExt;

use crate::{DEFAULT_SCHEMA, error_with_help, is_table_macro, is_with_rls_attribute};

/// A `diesel::table!` invocation declared `#[shared]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTable {
    /// The PostgreSQL schema: the one `table!` names, else `public`.
    pub schema: String,
    /// The table's SQL name.
    pub name: String,
}

/// Whether `attr` is `#[shared]` under any path (`shared`, `tenants_core::shared`).
pub fn is_shared_attribute(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "shared")
}

/// Parses and validates an item declared `#[shared]`: a `table!` invocation that is not
/// also marked `#[with_rls]` (a table is either isolated per tenant or shared by all).
pub fn parse_shared(item: &syn::Item) -> syn::Result<SharedTable> {
    let syn::Item::Macro(item) = item else {
        return Err(error_with_help(
            crate::item_name(item),
            "#[shared] goes on a `diesel::table!` invocation",
            "declare the shared (lookup) table's `diesel::table!` #[shared]",
        ));
    };
    if !is_table_macro(&item.mac) {
        return Err(error_with_help(
            &item.mac.path,
            "#[shared] goes on a `diesel::table!` invocation",
            "declare the shared (lookup) table's `diesel::table!` #[shared]",
        ));
    }
    if let Some(attr) = item.attrs.iter().find(|a| is_with_rls_attribute(a)) {
        return Err(error_with_help(
            attr,
            "a table cannot be both #[shared] and #[with_rls]",
            "keep #[with_rls] for rows that belong to one tenant, #[shared] for rows every tenant reads",
        ));
    }
    let decl: TableDecl = item.mac.parse_body()?;
    Ok(SharedTable {
        schema: decl
            .schema
            .as_ref()
            .map_or_else(|| DEFAULT_SCHEMA.to_owned(), |s| s.unraw().to_string()),
        name: decl.sql_name.clone(),
    })
}

/// [`parse_shared`] on the tokens an attribute macro receives; `#[shared]` takes no
/// arguments.
pub fn parse_shared_tokens(attr: TokenStream, item: TokenStream) -> syn::Result<SharedTable> {
    if let Some(first) = attr.into_iter().next() {
        return Err(error_with_help(
            first,
            "#[shared] takes no arguments",
            "write `#[shared]`",
        ));
    }
    let item: syn::Item = syn::parse2(item)?;
    parse_shared(&item)
}
