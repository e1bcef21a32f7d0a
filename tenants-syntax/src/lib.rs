//! Parses and validates `#[with_rls]` items.
//!
//! Shared by the `#[with_rls]` macro (`tenants-derive`) and the `tenants` CLI, the way
//! diesel shares `diesel_table_macro_syntax` between its macros and diesel_cli: one parser,
//! so the CLI finds exactly the tables the compiler accepts.
//!
//! Parsing only: nothing here generates code. Every error is a [`syn::Error`] spanned at
//! the offending token, its message followed by a `help:` line.
//!
//! ```
//! use tenants_syntax::{MarkedItem, RlsArgs, TenantSqlType, parse_marked};
//!
//! let item: syn::Item = syn::parse_quote! {
//!     diesel::table! { todo_item (id) { id -> Int4, name -> Text, org_id -> Uuid } }
//! };
//! let args: RlsArgs = syn::parse_quote!(column = org_id);
//! let MarkedItem::Table(table) = parse_marked(&args, &item)? else { unreachable!() };
//! assert_eq!((table.schema.as_str(), table.name.as_str()), ("public", "todo_item"));
//! assert_eq!(table.column_sql_name, "org_id");
//! assert_eq!(table.sql_type, TenantSqlType::Uuid);
//! # Ok::<(), syn::Error>(())
//! ```

mod args;
mod model;
mod shared;
mod table;
mod use_form;

use std::fmt::Display;

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;

pub use args::{DEFAULT_TENANT_COLUMN, RlsArgs};
pub use model::{MarkedStruct, parse_struct};
pub use shared::{SharedTable, is_shared_attribute, parse_shared, parse_shared_tokens};
pub use table::{MarkedTable, is_table_macro, parse_table, table_body_parses};
pub use use_form::{MarkedUse, parse_use};

/// The schema of a table whose `table!` names none.
pub const DEFAULT_SCHEMA: &str = "public";

/// The SQL types a tenant column may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TenantSqlType {
    /// `text` (Diesel `Text`)
    Text,
    /// `varchar` (Diesel `VarChar` / `Varchar`)
    VarChar,
    /// `int4` (Diesel `Int4` / `Integer`)
    Int4,
    /// `int8` (Diesel `Int8` / `BigInt`)
    Int8,
    /// `uuid` (Diesel `Uuid`)
    Uuid,
}

impl TenantSqlType {
    /// The type for a Diesel SQL type name as written in `table!` (`Text`, `Integer`, ...).
    pub fn from_diesel_name(name: &str) -> Option<Self> {
        match name {
            "Text" => Some(Self::Text),
            "VarChar" | "Varchar" => Some(Self::VarChar),
            "Int4" | "Integer" => Some(Self::Int4),
            "Int8" | "BigInt" => Some(Self::Int8),
            "Uuid" => Some(Self::Uuid),
            _ => None,
        }
    }

    /// The PostgreSQL type name, as `format_type` prints it for a column of this type.
    pub fn pg_name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::VarChar => "character varying",
            Self::Int4 => "integer",
            Self::Int8 => "bigint",
            Self::Uuid => "uuid",
        }
    }
}

/// An item marked `#[with_rls]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per marked item, never stored in bulk"
)]
pub enum MarkedItem {
    /// `#[with_rls]` on a `diesel::table!` invocation.
    Table(MarkedTable),
    /// `#[with_rls]` on a model struct carrying `#[diesel(table_name = ...)]`.
    Struct(MarkedStruct),
    /// `#[with_rls]` on a `use` of a `table!` module declared elsewhere.
    Use(MarkedUse),
}

impl MarkedItem {
    /// The table's PostgreSQL schema (`public` for the struct and use forms, whose path
    /// cannot say).
    pub fn schema(&self) -> &str {
        match self {
            Self::Table(table) => &table.schema,
            Self::Struct(model) => &model.schema,
            Self::Use(marked) => &marked.schema,
        }
    }

    /// The table's SQL name; for the struct and use forms, the last segment of the path.
    pub fn table_name(&self) -> &str {
        match self {
            Self::Table(table) => &table.name,
            Self::Struct(model) => &model.name,
            Self::Use(marked) => &marked.name,
        }
    }

    /// The tenant column's SQL name; for the struct form, the column's Rust name, unraw
    /// (the two differ only when `table!` gives the column a `#[sql_name]`).
    pub fn tenant_column(&self) -> String {
        match self {
            Self::Table(table) => table.column_sql_name.clone(),
            Self::Struct(model) => model.column.unraw().to_string(),
            Self::Use(marked) => marked.column.unraw().to_string(),
        }
    }

    /// The tenant column's SQL type, when the item tells it (the table form).
    pub fn sql_type(&self) -> Option<TenantSqlType> {
        match self {
            Self::Table(table) => Some(table.sql_type),
            Self::Struct(_) | Self::Use(_) => None,
        }
    }
}

/// Parses and validates an item marked `#[with_rls(args)]`: a `table!` invocation or a
/// model struct.
pub fn parse_marked(args: &RlsArgs, item: &syn::Item) -> syn::Result<MarkedItem> {
    match item {
        syn::Item::Macro(item) if is_table_macro(&item.mac) => {
            parse_table(args, &item.mac).map(MarkedItem::Table)
        }
        syn::Item::Struct(item) => parse_struct(args, item).map(MarkedItem::Struct),
        syn::Item::Use(item) => parse_use(args, item).map(MarkedItem::Use),
        _ => Err(error_with_help(
            item_name(item),
            "#[with_rls] goes on a `diesel::table!` invocation, on a `use` of its module, or \
             on a struct with #[diesel(table_name = ...)]",
            "mark the `diesel::table!` declaring the table, a `use` of it \
             (`#[with_rls] use crate::schema::todo_item;`), or a model struct of it",
        )),
    }
}

/// [`parse_marked`] on the tokens an attribute macro receives: the attribute's arguments
/// and the item.
pub fn parse_marked_tokens(attr: TokenStream, item: TokenStream) -> syn::Result<MarkedItem> {
    let args: RlsArgs = syn::parse2(attr)?;
    let item: syn::Item = syn::parse2(item)?;
    parse_marked(&args, &item)
}

/// Whether `attr` is `#[with_rls]` under any path (`with_rls`, `tenants_core::with_rls`).
pub fn is_with_rls_attribute(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "with_rls")
}

/// The marks of one source file.
#[derive(Debug, Default)]
pub struct FileMarks {
    /// Items marked `#[with_rls]`, in source order.
    pub marked: Vec<syn::Result<MarkedItem>>,
    /// Tables declared `#[shared]`, in source order.
    pub shared: Vec<syn::Result<SharedTable>>,
}

/// Every item of `file` marked `#[with_rls]` or `#[shared]`, in source order, inline
/// modules and function bodies included: what the CLI collects from each `.rs` file of a
/// crate.
pub fn file_marks(file: &syn::File) -> FileMarks {
    struct Collector(Vec<syn::Result<MarkedItem>>, Vec<syn::Result<SharedTable>>);

    impl<'ast> syn::visit::Visit<'ast> for Collector {
        fn visit_item(&mut self, item: &'ast syn::Item) {
            let attrs: &[syn::Attribute] = match item {
                syn::Item::Macro(item) => &item.attrs,
                syn::Item::Struct(item) => &item.attrs,
                syn::Item::Enum(item) => &item.attrs,
                syn::Item::Union(item) => &item.attrs,
                syn::Item::Fn(item) => &item.attrs,
                syn::Item::Const(item) => &item.attrs,
                syn::Item::Static(item) => &item.attrs,
                syn::Item::Type(item) => &item.attrs,
                syn::Item::Use(item) => &item.attrs,
                _ => &[],
            };
            if let Some(attr) = attrs.iter().find(|attr| is_with_rls_attribute(attr)) {
                self.0
                    .push(RlsArgs::from_attribute(attr).and_then(|args| parse_marked(&args, item)));
            }
            if attrs.iter().any(is_shared_attribute) {
                self.1.push(parse_shared(item));
            }
            syn::visit::visit_item(self, item);
        }
    }

    let mut collector = Collector(Vec::new(), Vec::new());
    syn::visit::Visit::visit_file(&mut collector, file);
    FileMarks {
        marked: collector.0,
        shared: collector.1,
    }
}

/// The error for `tokens`: `message`, then a `help:` line.
pub(crate) fn error_with_help(
    tokens: impl ToTokens,
    message: impl Display,
    help: impl Display,
) -> syn::Error {
    syn::Error::new_spanned(tokens, format!("{message}\nhelp: {help}"))
}

/// The tokens to point at for an item that is neither form: its name when it has one.
pub(crate) fn item_name(item: &syn::Item) -> TokenStream {
    match item {
        syn::Item::Enum(item) => item.ident.to_token_stream(),
        syn::Item::Union(item) => item.ident.to_token_stream(),
        syn::Item::Fn(item) => item.sig.ident.to_token_stream(),
        syn::Item::Const(item) => item.ident.to_token_stream(),
        syn::Item::Static(item) => item.ident.to_token_stream(),
        syn::Item::Type(item) => item.ident.to_token_stream(),
        syn::Item::Trait(item) => item.ident.to_token_stream(),
        syn::Item::Mod(item) => item.ident.to_token_stream(),
        syn::Item::Macro(item) => item.mac.path.to_token_stream(),
        other => other.to_token_stream(),
    }
}

#[cfg(test)]
mod tests;
