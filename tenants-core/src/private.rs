//! Paths used by the code `#[with_rls]` generates. Not public API: only the macro names
//! these items, so users of the macro need no dependency besides `tenants-core`.

pub use diesel;
pub use inventory;

pub use crate::scoped::TenantTable;

use crate::registry::TenantSqlType;

/// Maps a Diesel SQL type to the tenant column type it can hold.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a supported tenant column type",
    label = "the tenant column must be Text, VarChar, Int4, Int8 or Uuid",
    note = "#[with_rls] supports tenant columns of SQL type Text, VarChar, Int4 (Integer), Int8 (BigInt) and Uuid"
)]
pub trait TenantColumnType {
    /// The tenant type the policy casts the setting to.
    const SQL_TYPE: TenantSqlType;
}

impl TenantColumnType for diesel::sql_types::Text {
    const SQL_TYPE: TenantSqlType = TenantSqlType::Text;
}
impl TenantColumnType for diesel::sql_types::Int4 {
    const SQL_TYPE: TenantSqlType = TenantSqlType::Int4;
}
impl TenantColumnType for diesel::sql_types::Int8 {
    const SQL_TYPE: TenantSqlType = TenantSqlType::Int8;
}
impl TenantColumnType for diesel::sql_types::Uuid {
    const SQL_TYPE: TenantSqlType = TenantSqlType::Uuid;
}

/// Implemented when a model field of type `Self` can hold the tenant column's SQL type `ST`.
#[diagnostic::on_unimplemented(
    message = "the tenant field's type `{Self}` does not match the tenant column's SQL type `{ST}`",
    label = "this field must hold the tenant column's SQL type `{ST}`",
    note = "the tenant column is declared in the Diesel schema named by #[diesel(table_name = ...)]"
)]
pub trait TenantField<ST> {}

impl<F, ST> TenantField<ST> for F
where
    ST: diesel::sql_types::SingleValue,
    F: diesel::expression::AsExpression<ST> + ?Sized,
{
}

/// The tenant type of column `C`, read from its Diesel SQL type at compile time.
pub const fn column_sql_type<C>() -> TenantSqlType
where
    C: diesel::Column,
    C::SqlType: TenantColumnType,
{
    <C::SqlType as TenantColumnType>::SQL_TYPE
}

/// Compiles only when field type `F` matches column `C`'s SQL type, a supported tenant type;
/// returns that type, as [`column_sql_type`] does.
///
/// One call checks both, so a column of an unsupported type is reported once.
pub const fn assert_tenant_field<C, F>() -> TenantSqlType
where
    C: diesel::Column,
    C::SqlType: TenantColumnType,
    F: TenantField<C::SqlType> + ?Sized,
{
    <C::SqlType as TenantColumnType>::SQL_TYPE
}

/// The tenant type of table `T`'s tenant column, read from its [`TenantTable`] impl: the
/// use form's registry entry, so that a column of the wrong type is one error, the impl's.
pub const fn marked_sql_type<T: TenantTable>() -> TenantSqlType {
    <<T::TenantColumn as diesel::Expression>::SqlType as TenantColumnType>::SQL_TYPE
}
