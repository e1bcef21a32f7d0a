//! Expansion of `#[with_rls]`.

use proc_macro2::{Group, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use tenants_syntax::{MarkedItem, MarkedStruct, MarkedTable, MarkedUse, TenantSqlType};

/// The original item, followed by the registration of its table; on an error, the original
/// item and one `compile_error!`, so that the item's other uses still resolve (except for a
/// `table!` body that does not parse: that declares nothing, so only the error is emitted).
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let generated = match tenants_syntax::parse_marked_tokens(attr, item.clone()) {
        Ok(MarkedItem::Table(table)) => expand_table(&table),
        Ok(MarkedItem::Struct(model)) => expand_struct(&model),
        Ok(MarkedItem::Use(marked)) => expand_use(&marked),
        Err(error) if is_malformed_table(item.clone()) => {
            // diesel's own error for it would be a confusing "missing `fn`", and an
            // unparsable `table!` declares nothing anyway: ours replaces it.
            return error.into_compile_error();
        }
        Err(error) => error.into_compile_error(),
    };
    quote! {
        #item
        #generated
    }
}

/// Whether `item` is a `table!` invocation whose body is not valid `table!` syntax.
fn is_malformed_table(item: TokenStream) -> bool {
    match syn::parse2::<syn::Item>(item) {
        Ok(syn::Item::Macro(item)) => {
            tenants_syntax::is_table_macro(&item.mac)
                && !tenants_syntax::table_body_parses(&item.mac)
        }
        _ => false,
    }
}

/// Table form: every fact is known from the `table!` tokens. The table also gets the
/// typed tenant filter (`todo_item::table.scoped(&conn)`), through `TenantTable`.
fn expand_table(table: &MarkedTable) -> TokenStream {
    let MarkedTable {
        schema,
        name,
        module,
        column,
        column_sql_name,
        sql_type,
    } = table;
    let sql_type = sql_type_variant(*sql_type);
    quote! {
        ::tenants_core::__private::inventory::submit! {
            ::tenants_core::registry::RlsTable {
                schema: #schema,
                name: #name,
                tenant_column: #column_sql_name,
                sql_type: ::tenants_core::registry::TenantSqlType::#sql_type,
            }
        }
        impl ::tenants_core::__private::TenantTable for #module::table {
            type TenantColumn = #module::#column;
        }
    }
}

/// Struct form: the column's existence, SQL type and name come from the Diesel schema, so
/// the compiler checks them. Each is named once, with the user's spans, so that a mistake
/// gives one error, on the field's type or on the column's name:
///
/// ```text
/// const _: () = {
///     type __TenantsColumn = todo_item::tenant;
///     const __TENANTS_SQL_TYPE: TenantSqlType = assert_tenant_field::<__TenantsColumn, &'static str>();
///     inventory::submit! { RlsTable { ..., sql_type: __TENANTS_SQL_TYPE } }
/// };
/// ```
fn expand_struct(model: &MarkedStruct) -> TokenStream {
    let MarkedStruct {
        generics,
        table_path,
        schema,
        name,
        field_ty,
        column,
        ..
    } = model;
    let alias = quote_spanned!(column.span()=> __TenantsColumn);
    let sql_type = if mentions_type_parameter(field_ty, generics) {
        // A generic field type cannot be named outside the struct; the column is still checked.
        quote_spanned! {column.span()=>
            ::tenants_core::__private::column_sql_type::<#alias>()
        }
    } else {
        let field_ty = static_lifetimes(quote!(#field_ty));
        quote_spanned! {field_ty.span()=>
            ::tenants_core::__private::assert_tenant_field::<#alias, #field_ty>()
        }
    };
    quote! {
        const _: () = {
            type #alias = #table_path::#column;
            const __TENANTS_SQL_TYPE: ::tenants_core::registry::TenantSqlType = #sql_type;
            ::tenants_core::__private::inventory::submit! {
                ::tenants_core::registry::RlsTable {
                    schema: #schema,
                    name: #name,
                    tenant_column: <#alias as ::tenants_core::__private::diesel::Column>::NAME,
                    sql_type: __TENANTS_SQL_TYPE,
                }
            }
        };
    }
}

/// Use form: the `use` brings the `table!` module into scope, so the column's existence,
/// SQL type and SQL name come from Diesel's own declaration, checked by the compiler (one
/// error, on the column's name or on the `use`). The table gets the typed tenant filter
/// too.
fn expand_use(marked: &MarkedUse) -> TokenStream {
    let MarkedUse {
        binding,
        schema,
        name,
        column,
    } = marked;
    // Every fact goes through the `TenantTable` impl, spanned at the column: a column
    // that is missing or of the wrong type is that impl's one error.
    let table = quote_spanned!(column.span()=> #binding::table);
    quote! {
        impl ::tenants_core::__private::TenantTable for #table {
            type TenantColumn = #binding::#column;
        }
        ::tenants_core::__private::inventory::submit! {
            ::tenants_core::registry::RlsTable {
                schema: #schema,
                name: #name,
                tenant_column: <<#table as ::tenants_core::__private::TenantTable>::TenantColumn
                    as ::tenants_core::__private::diesel::Column>::NAME,
                sql_type: ::tenants_core::__private::marked_sql_type::<#table>(),
            }
        }
    }
}

/// The `TenantSqlType` variant naming `sql_type`.
fn sql_type_variant(sql_type: TenantSqlType) -> syn::Ident {
    let name = match sql_type {
        TenantSqlType::Text => "Text",
        TenantSqlType::VarChar => "VarChar",
        TenantSqlType::Int4 => "Int4",
        TenantSqlType::Int8 => "Int8",
        TenantSqlType::Uuid => "Uuid",
    };
    syn::Ident::new(name, proc_macro2::Span::call_site())
}

/// `tokens` with every lifetime (`&'a str`, `Cow<'a, str>`) made `'static`, spans kept, so
/// that a field type can be named outside its struct.
fn static_lifetimes(tokens: TokenStream) -> TokenStream {
    let mut after_quote = false;
    tokens
        .into_iter()
        .map(|token| {
            let token = match token {
                TokenTree::Ident(ident) if after_quote => {
                    TokenTree::Ident(proc_macro2::Ident::new("static", ident.span()))
                }
                TokenTree::Group(group) => {
                    let mut new = Group::new(group.delimiter(), static_lifetimes(group.stream()));
                    new.set_span(group.span());
                    TokenTree::Group(new)
                }
                other => other,
            };
            after_quote = matches!(&token, TokenTree::Punct(p) if p.as_char() == '\'');
            token
        })
        .collect()
}

/// Whether `ty` mentions a type or const parameter of the struct, which cannot be named
/// outside it.
fn mentions_type_parameter(ty: &syn::Type, generics: &syn::Generics) -> bool {
    fn idents(tokens: TokenStream, found: &mut dyn FnMut(&proc_macro2::Ident) -> bool) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => found(&ident),
            TokenTree::Group(group) => idents(group.stream(), found),
            _ => false,
        })
    }
    let params: Vec<&syn::Ident> = generics
        .params
        .iter()
        .filter_map(|param| match param {
            syn::GenericParam::Type(param) => Some(&param.ident),
            syn::GenericParam::Const(param) => Some(&param.ident),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    !params.is_empty() && idents(quote!(#ty), &mut |ident| params.contains(&ident))
}
