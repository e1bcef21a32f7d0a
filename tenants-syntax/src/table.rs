//! The table form: `#[with_rls]` on a `diesel::table!` invocation.

use diesel_table_macro_syntax::{ColumnDef, TableDecl};
use quote::ToTokens;
use syn::Ident;
use syn::ext::IdentExt;

use crate::{DEFAULT_SCHEMA, RlsArgs, TenantSqlType, error_with_help};

/// A `diesel::table!` invocation marked `#[with_rls]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedTable {
    /// The PostgreSQL schema: the one `table!` names (`schema.table { ... }`), else `public`.
    pub schema: String,
    /// The table's SQL name: its `#[sql_name = "..."]` when given, else the `table!` name.
    pub name: String,
    /// The Rust name of the table: the module `table!` generates.
    pub module: Ident,
    /// The Rust name of the tenant column in `table!`.
    pub column: Ident,
    /// The SQL name of the tenant column: its `#[sql_name = "..."]` when given, else its
    /// Rust name.
    pub column_sql_name: String,
    /// The SQL type of the tenant column.
    pub sql_type: TenantSqlType,
}

/// Whether `mac` invokes `table!` (`table!`, `diesel::table!`, ...): its path ends in `table`.
pub fn is_table_macro(mac: &syn::Macro) -> bool {
    mac.path
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "table")
}

/// Whether the body of a `table!` invocation is valid `table!` syntax.
pub fn table_body_parses(mac: &syn::Macro) -> bool {
    mac.parse_body::<TableDecl>().is_ok()
}

/// Parses and validates the body of a `table!` invocation marked `#[with_rls(args)]`.
pub fn parse_table(args: &RlsArgs, mac: &syn::Macro) -> syn::Result<MarkedTable> {
    let decl: TableDecl = mac.parse_body().map_err(|error| {
        syn::Error::new(
            error.span(),
            format!(
                "invalid `table!` syntax: {error}\nhelp: see the `diesel::table!` documentation, \
                 https://docs.diesel.rs/2.3.x/diesel/macro.table.html"
            ),
        )
    })?;
    let wanted = args.column_name();
    let Some(column) = decl
        .column_defs
        .iter()
        .find(|column| column.column_name.unraw() == wanted)
    else {
        let columns = decl
            .column_defs
            .iter()
            .map(|column| format!("`{}`", column.column_name.unraw()))
            .collect::<Vec<_>>()
            .join(", ");
        let help = if args.column.is_some() {
            format!("the columns of `{}` are {columns}", decl.table_name)
        } else {
            format!(
                "the columns of `{}` are {columns}; name the tenant column with \
                 #[with_rls(column = <ident>)]",
                decl.table_name
            )
        };
        let message = format!(
            "table `{}` has no tenant column `{wanted}`",
            decl.table_name.unraw()
        );
        return Err(match &args.column {
            Some(ident) => error_with_help(ident, message, help),
            None => error_with_help(&decl.table_name, message, help),
        });
    };
    let sql_type = classify_column_type(column)?;
    Ok(MarkedTable {
        schema: decl
            .schema
            .as_ref()
            .map_or_else(|| DEFAULT_SCHEMA.to_owned(), |s| s.unraw().to_string()),
        name: decl.sql_name.clone(),
        module: decl.table_name.clone(),
        column: column.column_name.clone(),
        column_sql_name: column.sql_name.clone(),
        sql_type,
    })
}

/// The tenant type of a `table!` column, or an error spanned at its type.
fn classify_column_type(column: &ColumnDef) -> syn::Result<TenantSqlType> {
    let name = column.column_name.unraw();
    let tpe = &column.tpe;
    let last = tpe.path.segments.last();
    if let Some(last) = last.filter(|_| tpe.qself.is_none()) {
        if last.ident == "Nullable" {
            let inner = match &last.arguments {
                syn::PathArguments::AngleBracketed(args) if args.args.len() == 1 => {
                    display_tokens(&args.args)
                }
                _ => "<type>".to_owned(),
            };
            return Err(error_with_help(
                tpe,
                format!("the tenant column `{name}` is nullable"),
                format!(
                    "declare it NOT NULL (`{name} -> {inner}`): a row without a tenant \
                     belongs to no tenant and no policy could ever show it"
                ),
            ));
        }
        if last.arguments.is_none()
            && let Some(sql_type) = TenantSqlType::from_diesel_name(&last.ident.to_string())
        {
            return Ok(sql_type);
        }
    }
    Err(error_with_help(
        tpe,
        format!(
            "the tenant column `{name}` has SQL type `{}`, which #[with_rls] does not support",
            display_tokens(tpe)
        ),
        "a tenant column is one of Text, VarChar (Varchar), Int4 (Integer), Int8 (BigInt), Uuid",
    ))
}

/// Tokens as a person writes them: `Nullable<Text>`, not `Nullable < Text >`.
pub(crate) fn display_tokens(tokens: &impl ToTokens) -> String {
    tokens
        .to_token_stream()
        .to_string()
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& '", "&'")
}
