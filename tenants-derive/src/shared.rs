//! Expansion of `#[shared]`.

use proc_macro2::TokenStream;
use quote::quote;

/// The original item, followed by the registration of its table as shared; on an error,
/// the original item and one `compile_error!`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let generated = match tenants_syntax::parse_shared_tokens(attr, item.clone()) {
        Ok(table) => {
            let (schema, name) = (&table.schema, &table.name);
            quote! {
                ::tenants_core::__private::inventory::submit! {
                    ::tenants_core::registry::SharedTable { schema: #schema, name: #name }
                }
            }
        }
        Err(error) => error.into_compile_error(),
    };
    quote! {
        #item
        #generated
    }
}
