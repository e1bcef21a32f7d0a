//! The `#[with_rls]` attribute macro. Use it through `tenants_core::with_rls`, which
//! re-exports it: the code it generates names `::tenants_core` paths.

mod shared;
mod with_rls;

use proc_macro::TokenStream;

/// Marks a Diesel table as isolated per tenant by PostgreSQL Row-Level Security.
///
/// Put it on the `diesel::table!` invocation declaring the table, on a `use` of that
/// table's module, or on a model struct carrying `#[diesel(table_name = ...)]`. The item is re-emitted untouched; the table is
/// validated at compile time and registered in `tenants_core::registry::tables()`, from
/// which the `tenants` CLI writes the policies and `verify` checks the database.
///
/// # Options
///
/// - `column = <ident>`: the tenant column (its Rust name in `table!`); default `tenant`.
///
/// # The table form
///
/// ```
/// use tenants_core::with_rls;
///
/// #[with_rls]
/// diesel::table! {
///     todo_item (id) {
///         id -> Int4,
///         name -> Text,
///         tenant -> Text,
///     }
/// }
///
/// #[with_rls(column = org_id)]
/// diesel::table! {
///     #[sql_name = "invoices"]
///     billing.invoice (id) {
///         id -> Int8,
///         org_id -> Uuid,
///     }
/// }
///
/// fn main() {
///     let tables = tenants_core::registry::tables();
///     assert_eq!(tables[0].schema, "billing");
///     assert_eq!(tables[0].name, "invoices");
///     assert_eq!(tables[0].tenant_column, "org_id");
///     assert_eq!(tables[1].name, "todo_item");
/// }
/// ```
///
/// The tenant column must exist, be `NOT NULL` (not `Nullable<_>`) and have one of the
/// SQL types `Text`, `VarChar` (`Varchar`), `Int4` (`Integer`), `Int8` (`BigInt`) or
/// `Uuid`; the registered entry carries the table's schema, its SQL name (`#[sql_name]`)
/// and the column's SQL name.
///
/// # The struct form
///
/// For a `schema.rs` that `diesel print-schema` rewrites, mark a model struct instead:
///
/// ```
/// # diesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }
/// use tenants_core::with_rls;
///
/// #[with_rls]
/// #[derive(diesel::Insertable)]
/// #[diesel(table_name = todo_item)]
/// struct NewTodoItem<'a> {
///     name: &'a str,
///     #[diesel(column_name = tenant)]
///     owner: &'a str,
/// }
/// ```
///
/// The compiler checks that the column exists in the Diesel schema, that its SQL type is
/// one of the above, and that the field's type matches it. The entry's schema is `public`
/// and its name the last segment of the `table_name` path: put the attribute on the
/// `table!` of a table in another schema or with a `#[sql_name]`.
///
/// # The use form
///
/// To keep the marks out of the `schema.rs` that `diesel print-schema` (and `diesel
/// migration run` with `[print_schema] file`) rewrites, mark a `use` of the table's module
/// in a file of your own:
///
/// ```
/// mod schema {
///     // As `diesel print-schema` writes it: no mark.
///     diesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }
///     diesel::table! { invoice (id) { id -> Int8, org_id -> Uuid } }
/// }
///
/// mod rls {
///     use tenants_core::with_rls;
///
///     #[with_rls]
///     pub use crate::schema::todo_item;
///     #[with_rls(column = org_id)]
///     pub use crate::schema::invoice;
/// }
///
/// fn main() {
///     let tables = tenants_core::registry::tables();
///     assert_eq!((tables[0].name, tables[0].tenant_column), ("invoice", "org_id"));
///     assert_eq!(tables[1].name, "todo_item");
/// }
/// ```
///
/// The compiler checks the column against Diesel's declaration (it exists, is not
/// `Nullable`, has a tenant type). As for the struct form, the entry's schema is `public`
/// and its name the module's: a table in another schema or with a `#[sql_name]` is marked
/// on its `table!`.
///
/// # Errors
///
/// A mistake gives one compile error, pointing at the offending token, with a `help:`
/// line; the item is still emitted, so its other uses do not fail as well.
#[proc_macro_attribute]
pub fn with_rls(attr: TokenStream, item: TokenStream) -> TokenStream {
    with_rls::expand(attr.into(), item.into()).into()
}

/// Declares a Diesel table readable by every tenant: shared lookup or reference data
/// (countries, plans, currencies) that is not under Row-Level Security.
///
/// Tenant transactions run as the tenant role, which may read only what is granted to it:
/// a marked table through its policies, a `#[shared]` table through the `SELECT` grant
/// that `tenants generate` writes and `verify` checks. Any other table gives the tenant
/// `permission denied`.
///
/// ```
/// use tenants_core::shared;
///
/// #[shared]
/// diesel::table! {
///     countries (code) {
///         code -> Text,
///         name -> Text,
///     }
/// }
///
/// fn main() {
///     let shared = tenants_core::registry::shared_tables();
///     assert_eq!((shared[0].schema, shared[0].name), ("public", "countries"));
/// }
/// ```
///
/// A table is either `#[with_rls]` or `#[shared]`, never both; `#[shared]` takes no
/// arguments and goes on a `diesel::table!` only.
#[proc_macro_attribute]
pub fn shared(attr: TokenStream, item: TokenStream) -> TokenStream {
    shared::expand(attr.into(), item.into()).into()
}
