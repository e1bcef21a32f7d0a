//! The use form: `#[with_rls]` on a `use` of a `diesel::table!` module declared elsewhere
//! (`#[with_rls] use crate::schema::todo_item;`), so that the mark lives outside the
//! `schema.rs` that `diesel print-schema` rewrites.

use syn::Ident;
use syn::ext::IdentExt;

use crate::{DEFAULT_SCHEMA, RlsArgs, error_with_help};

/// A `use` of a `table!` module marked `#[with_rls]`, validated as far as its own tokens
/// allow: whether the tenant column exists and has a tenant type the compiler checks
/// against Diesel's own column types (the macro names them); the CLI reads the rest here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedUse {
    /// The name the `use` brings into scope: the module, or its `as` rename.
    pub binding: Ident,
    /// The PostgreSQL schema assumed for the table: `public` (the path does not say).
    pub schema: String,
    /// The table's name: the module's name (the last segment of the path), unraw.
    pub name: String,
    /// The tenant column's Rust name in the `table!` module.
    pub column: Ident,
}

/// Parses and validates a `use` marked `#[with_rls(args)]`: one path to one `table!`
/// module (`use crate::schema::todo_item;`, `use super::schema::todo_item as items;`).
pub fn parse_use(args: &RlsArgs, item: &syn::ItemUse) -> syn::Result<MarkedUse> {
    let mut tree = &item.tree;
    let (original, binding) = loop {
        match tree {
            syn::UseTree::Path(path) => tree = &path.tree,
            syn::UseTree::Name(name) => break (name.ident.clone(), name.ident.clone()),
            syn::UseTree::Rename(rename) => break (rename.ident.clone(), rename.rename.clone()),
            syn::UseTree::Glob(_) | syn::UseTree::Group(_) => {
                return Err(error_with_help(
                    &item.tree,
                    "#[with_rls] on a `use` marks one table: the `use` must name one `table!` module",
                    "write one marked `use` per table, e.g. `#[with_rls] use crate::schema::todo_item;`",
                ));
            }
        }
    };
    if original == "self" || original == "crate" || original == "super" {
        return Err(error_with_help(
            &item.tree,
            "#[with_rls] on a `use` must name a `table!` module",
            "name the module `diesel::table!` declares, e.g. `#[with_rls] use crate::schema::todo_item;`",
        ));
    }
    let column = match &args.column {
        Some(column) => column.clone(),
        None => Ident::new(&args.column_name(), binding.span()),
    };
    Ok(MarkedUse {
        binding,
        schema: DEFAULT_SCHEMA.to_owned(),
        name: original.unraw().to_string(),
        column,
    })
}
