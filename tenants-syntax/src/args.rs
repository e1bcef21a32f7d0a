//! The arguments of `#[with_rls(...)]`.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, Token};

use crate::error_with_help;

/// The tenant column assumed when `#[with_rls]` names none.
pub const DEFAULT_TENANT_COLUMN: &str = "tenant";

/// The arguments of `#[with_rls(...)]`: nothing, or `column = <ident>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RlsArgs {
    /// The tenant column given with `column = <ident>`; `None` means [`DEFAULT_TENANT_COLUMN`].
    pub column: Option<Ident>,
}

impl RlsArgs {
    /// The name of the tenant column, unraw (`r#type` is `type`): the one given with
    /// `column = <ident>`, else [`DEFAULT_TENANT_COLUMN`].
    pub fn column_name(&self) -> String {
        match &self.column {
            Some(column) => column.unraw().to_string(),
            None => DEFAULT_TENANT_COLUMN.to_owned(),
        }
    }

    /// Reads the arguments of a `#[with_rls]` / `#[with_rls(...)]` attribute found on an
    /// item, as the CLI does when it walks a crate's sources.
    pub fn from_attribute(attr: &syn::Attribute) -> syn::Result<Self> {
        match &attr.meta {
            syn::Meta::Path(_) => Ok(Self::default()),
            syn::Meta::List(list) => list.parse_args(),
            syn::Meta::NameValue(meta) => Err(error_with_help(
                meta,
                "#[with_rls = ...] is not a valid form of the attribute",
                "write #[with_rls] or #[with_rls(column = <ident>)]",
            )),
        }
    }
}

impl Parse for RlsArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Self::default();
        while !input.is_empty() {
            let name = input.call(Ident::parse_any)?;
            if name == "column" {
                if args.column.is_some() {
                    return Err(error_with_help(
                        &name,
                        "duplicate option `column`",
                        "a table has one tenant column: give `column = <ident>` once",
                    ));
                }
                input.parse::<Token![=]>()?;
                if input.peek(syn::LitStr) {
                    let lit: syn::LitStr = input.parse()?;
                    return Err(error_with_help(
                        &lit,
                        "expected the tenant column as an identifier, found a string",
                        format!("write `column = {}`", lit.value()),
                    ));
                }
                args.column = Some(input.call(Ident::parse_any)?);
            } else {
                return Err(error_with_help(
                    &name,
                    format!("unknown option `{name}`"),
                    "the only option is `column = <ident>`, e.g. #[with_rls(column = org_id)]",
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}
