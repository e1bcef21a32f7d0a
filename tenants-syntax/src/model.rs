//! The struct form: `#[with_rls]` on a model struct carrying `#[diesel(table_name = ...)]`.

use proc_macro2::TokenTree;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, Token};

use crate::{DEFAULT_SCHEMA, RlsArgs, error_with_help};

/// A model struct marked `#[with_rls]`, validated as far as its own tokens allow.
///
/// Whether [`column`](Self::column) exists in the table and has a tenant type the struct
/// cannot tell: the macro leaves that to the compiler, the CLI to the `table!` it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedStruct {
    /// The struct's name.
    pub ident: Ident,
    /// The struct's generic parameters.
    pub generics: syn::Generics,
    /// The table as `#[diesel(table_name = ...)]` names it: `todo_item`,
    /// `crate::schema::todo_item`, ...
    pub table_path: syn::Path,
    /// The PostgreSQL schema assumed for the table: `public` (the path does not say).
    pub schema: String,
    /// The table's name as far as the path tells: its last segment, unraw.
    pub name: String,
    /// The field holding the tenant.
    pub field: Ident,
    /// The type of [`field`](Self::field), as written.
    pub field_ty: syn::Type,
    /// The tenant column's Rust name in the `table!` module: the field's
    /// `#[diesel(column_name = ...)]` when given, else the field's name.
    pub column: Ident,
}

/// Parses and validates a model struct marked `#[with_rls(args)]`.
pub fn parse_struct(args: &RlsArgs, item: &syn::ItemStruct) -> syn::Result<MarkedStruct> {
    let syn::Fields::Named(fields) = &item.fields else {
        return Err(error_with_help(
            &item.ident,
            format!(
                "#[with_rls] needs a struct with named fields; `{}` has none",
                item.ident
            ),
            "put #[with_rls] on a model struct such as `struct TodoItem { tenant: String, ... }`, \
             or on the `diesel::table!` invocation",
        ));
    };
    let Some(table_path) =
        find_diesel_option(&item.attrs, "table_name", syn::Path::parse_mod_style)?
    else {
        return Err(error_with_help(
            &item.ident,
            format!("struct `{}` has no #[diesel(table_name = ...)]", item.ident),
            "#[with_rls] reads the table from it: add #[diesel(table_name = <table>)], \
             or put #[with_rls] on the `diesel::table!` invocation",
        ));
    };
    let wanted = args.column_name();
    let mut columns = Vec::new();
    for field in &fields.named {
        let Some(ident) = &field.ident else { continue };
        let column = match find_diesel_option(&field.attrs, "column_name", parse_column_name)? {
            Some(column) => column,
            None => ident.clone(),
        };
        if column.unraw() == wanted {
            let name = table_path
                .segments
                .last()
                .map(|segment| segment.ident.unraw().to_string())
                .unwrap_or_default();
            return Ok(MarkedStruct {
                ident: item.ident.clone(),
                generics: item.generics.clone(),
                table_path,
                schema: DEFAULT_SCHEMA.to_owned(),
                name,
                field: ident.clone(),
                field_ty: field.ty.clone(),
                column,
            });
        }
        columns.push(format!("`{}`", column.unraw()));
    }
    let message = format!(
        "struct `{}` has no field for the tenant column `{wanted}`",
        item.ident
    );
    let help = format!(
        "add a field `{wanted}` (or one with #[diesel(column_name = {wanted})]){}; \
         the struct maps the columns {}",
        if args.column.is_some() {
            ""
        } else {
            ", or name the tenant column with #[with_rls(column = <ident>)]"
        },
        if columns.is_empty() {
            "(none)".to_owned()
        } else {
            columns.join(", ")
        }
    );
    Err(match &args.column {
        Some(column) => error_with_help(column, message, help),
        None => error_with_help(&item.ident, message, help),
    })
}

/// `column_name = ident` or, as diesel also accepts, `column_name = "ident"`.
fn parse_column_name(input: ParseStream) -> syn::Result<Ident> {
    if input.peek(syn::LitStr) {
        let lit: syn::LitStr = input.parse()?;
        let mut ident = syn::parse_str::<Ident>(&lit.value())
            .or_else(|_| syn::parse_str::<Ident>(&format!("r#{}", lit.value())))
            .map_err(|_| syn::Error::new(lit.span(), "expected a column name"))?;
        ident.set_span(lit.span());
        Ok(ident)
    } else {
        input.call(Ident::parse_any)
    }
}

/// The value of `name = <value>` in the `#[diesel(...)]` attributes, the first if several.
///
/// Other diesel options (`check_for_backend(...)`, `serialize_as = Foo<A, B>`, ...) are
/// skipped token by token: their syntax is diesel's business, not ours.
fn find_diesel_option<T>(
    attrs: &[syn::Attribute],
    name: &str,
    parse_value: fn(ParseStream) -> syn::Result<T>,
) -> syn::Result<Option<T>> {
    for attr in attrs {
        let syn::Meta::List(list) = &attr.meta else {
            continue;
        };
        if !list.path.is_ident("diesel") {
            continue;
        }
        let scan = |input: ParseStream| -> syn::Result<Option<T>> {
            let mut at_option_start = true;
            while !input.is_empty() {
                if at_option_start
                    && input.peek(Ident::peek_any)
                    && input.peek2(Token![=])
                    && input.fork().call(Ident::parse_any)? == name
                {
                    input.call(Ident::parse_any)?;
                    input.parse::<Token![=]>()?;
                    let value = parse_value(input)?;
                    input.parse::<proc_macro2::TokenStream>()?;
                    return Ok(Some(value));
                }
                let token: TokenTree = input.parse()?;
                at_option_start = matches!(&token, TokenTree::Punct(p) if p.as_char() == ',');
            }
            Ok(None)
        };
        if let Some(value) = scan.parse2(list.tokens.clone())? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}
