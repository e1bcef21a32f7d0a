//! The typed tenant filter: `todo_item::table.scoped(&conn)?` is `todo_item::table
//! .filter(todo_item::tenant.eq(<the scope's tenant>))`, with the tenant parsed into the
//! tenant column's Rust type and no SQL written by hand.
//!
//! RLS already keeps other tenants' rows out; the explicit filter is what lets the planner
//! do better than the policy alone. On PostgreSQL it is the same plan as the hand-written
//! filter. On Citus it is what routes a query to the one shard holding the tenant: a policy
//! does not route, so without it every query fans out to every shard.
//!
//! `#[with_rls]` on a `diesel::table!` implements [`TenantTable`] for the table; the
//! method, from [`ScopedDsl`], compiles exactly for marked tables:
//!
//! ```
//! # #[tenants_core::with_rls]
//! # diesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }
//! use diesel::prelude::*;
//! use tenants_core::{ScopedDsl, Tenant};
//!
//! # fn main() -> Result<(), tenants_core::Error> {
//! let acme = Tenant::new("acme")?;
//! let query = todo_item::table.scoped(&acme)?.select(todo_item::name);
//! let sql = diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string();
//! assert_eq!(
//!     sql,
//!     r#"SELECT "todo_item"."name" FROM "todo_item" WHERE ("todo_item"."tenant" = $1) -- binds: ["acme"]"#
//! );
//! # Ok(())
//! # }
//! ```

use diesel::dsl::{Eq, Filter};
use diesel::expression::AsExpression;
use diesel::query_dsl::methods::FilterDsl;
use diesel::sql_types::{Int4, Int8, SingleValue, Text, Uuid};
use diesel::{Column, Expression, ExpressionMethods, Table};

use crate::error::Error;
use crate::registry::TenantSqlType;
use crate::scope::Scope;
use crate::tenant::{InvalidTenantId, Tenant};

/// A tenant column's SQL type, and the Rust type a tenant id becomes to be compared with
/// it (so that the filter binds a `uuid` as a `uuid`, an `int8` as an `int8`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a supported tenant column type",
    label = "the tenant column must be Text, VarChar, Int4, Int8 or Uuid",
    note = "#[with_rls] supports tenant columns of SQL type Text, VarChar, Int4 (Integer), Int8 (BigInt) and Uuid"
)]
pub trait TenantValue: crate::__private::TenantColumnType + SingleValue + Sized {
    /// The Rust type of a value of this SQL type.
    type Value: AsExpression<Self> + Send;
    /// `tenant` as a value of this type; [`InvalidTenantId::WrongType`] when it is not one.
    fn parse(tenant: &Tenant) -> Result<Self::Value, InvalidTenantId>;
}

impl TenantValue for Text {
    type Value = String;
    fn parse(tenant: &Tenant) -> Result<String, InvalidTenantId> {
        Ok(tenant.as_str().to_string())
    }
}

impl TenantValue for Int4 {
    type Value = i32;
    fn parse(tenant: &Tenant) -> Result<i32, InvalidTenantId> {
        typed(tenant, TenantSqlType::Int4)?
            .as_str()
            .parse()
            .map_err(|_| wrong_type(TenantSqlType::Int4))
    }
}

impl TenantValue for Int8 {
    type Value = i64;
    fn parse(tenant: &Tenant) -> Result<i64, InvalidTenantId> {
        typed(tenant, TenantSqlType::Int8)?
            .as_str()
            .parse()
            .map_err(|_| wrong_type(TenantSqlType::Int8))
    }
}

impl TenantValue for Uuid {
    type Value = uuid::Uuid;
    fn parse(tenant: &Tenant) -> Result<uuid::Uuid, InvalidTenantId> {
        uuid::Uuid::try_parse(typed(tenant, TenantSqlType::Uuid)?.as_str())
            .map_err(|_| wrong_type(TenantSqlType::Uuid))
    }
}

/// `tenant` checked as a value of `sql_type` and made canonical, by the one check the
/// whole crate uses ([`Tenant::of_type`]).
fn typed(tenant: &Tenant, sql_type: TenantSqlType) -> Result<Tenant, InvalidTenantId> {
    Tenant::of_type(tenant, sql_type)
}

fn wrong_type(expected: TenantSqlType) -> InvalidTenantId {
    InvalidTenantId::WrongType { expected }
}

/// Whatever knows the tenant a query runs for: a [`TenantConnection`](crate::TenantConnection)
/// or [`SyncTenantConnection`](crate::SyncTenantConnection), a [`Scope`], the
/// [`Tenant`] given to `TenantPool::transaction` and `tenant_transaction`, or (feature
/// `axum`) the request's `TenantDb`.
pub trait TenantScope {
    /// The tenant; `None` for an admin scope.
    fn scope_tenant(&self) -> Option<&Tenant>;
}

impl TenantScope for Tenant {
    fn scope_tenant(&self) -> Option<&Tenant> {
        Some(self)
    }
}

impl TenantScope for Scope {
    fn scope_tenant(&self) -> Option<&Tenant> {
        self.tenant()
    }
}

#[cfg(feature = "async")]
impl TenantScope for crate::pool::TenantConnection {
    fn scope_tenant(&self) -> Option<&Tenant> {
        self.tenant()
    }
}

#[cfg(feature = "sync")]
impl TenantScope for crate::sync_pool::SyncTenantConnection {
    fn scope_tenant(&self) -> Option<&Tenant> {
        self.tenant()
    }
}

#[cfg(feature = "axum")]
impl<T> TenantScope for crate::axum::TenantDb<T> {
    fn scope_tenant(&self) -> Option<&Tenant> {
        Some(self.tenant())
    }
}

/// The SQL type of `T`'s tenant column.
type TenantSqlTypeOf<T> = <<T as TenantTable>::TenantColumn as Expression>::SqlType;

/// `T`'s tenant column equal to a tenant id.
pub type TenantFilter<T> =
    Eq<<T as TenantTable>::TenantColumn, <TenantSqlTypeOf<T> as TenantValue>::Value>;

/// What [`ScopedDsl::scoped`] returns: `T` filtered by its tenant column.
pub type ScopedQuery<T> = Filter<T, TenantFilter<T>>;

/// A table marked `#[with_rls]`, and its tenant column. `#[with_rls]` on a `diesel::table!`
/// implements it; the struct form cannot (the table may be declared in another crate, or
/// marked as well).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not marked #[with_rls]: it has no tenant column to filter by",
    label = "`scoped` filters tables marked #[with_rls] only",
    note = "put #[tenants_core::with_rls] on the `diesel::table!` declaring it (a marked model struct registers the table but does not give it `scoped`)"
)]
pub trait TenantTable: Table + Sized {
    /// The tenant column.
    type TenantColumn: Column<Table = Self>
        + Default
        + ExpressionMethods
        + Expression<SqlType: TenantValue>;
}

/// The typed tenant filter on every Diesel table; it compiles for tables marked
/// `#[with_rls]` only. Import it (`use tenants_core::ScopedDsl;`) to call `scoped`.
pub trait ScopedDsl: Table + Sized {
    /// This table filtered by the tenant of `scope`: `WHERE <tenant column> = $1`, the id
    /// bound as the column's type. Chain it like any Diesel query, or pass it to
    /// `diesel::update` and `diesel::delete`.
    ///
    /// [`Error::NotTenantScoped`] for an admin scope; [`Error::InvalidTenantId`] when the
    /// tenant id is not a value of the column's type. Nothing is sent either way.
    fn scoped<S>(self, scope: &S) -> Result<ScopedQuery<Self>, Error>
    where
        S: TenantScope + ?Sized,
        Self: TenantTable + FilterDsl<TenantFilter<Self>>,
    {
        let tenant = scope.scope_tenant().ok_or(Error::NotTenantScoped)?;
        let value = <TenantSqlTypeOf<Self> as TenantValue>::parse(tenant)?;
        Ok(self.filter(Self::TenantColumn::default().eq(value)))
    }
}

impl<T: Table> ScopedDsl for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_values_of_the_column_type() -> Result<(), InvalidTenantId> {
        let id = |text: &str| Tenant::new(text);
        assert_eq!(Text::parse(&id("o'hara")?)?, "o'hara");
        assert_eq!(Int4::parse(&id("+42")?)?, 42);
        assert_eq!(Int8::parse(&id("-5000000001")?)?, -5_000_000_001);
        assert_eq!(
            Uuid::parse(&id("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")?)?,
            uuid::Uuid::from_u128(0xa0eebc99_9c0b_4ef8_bb6d_6bb9bd380a11)
        );
        assert_eq!(
            Int4::parse(&id("2147483648")?),
            Err(wrong_type(TenantSqlType::Int4))
        );
        assert_eq!(
            Uuid::parse(&id("acme")?),
            Err(wrong_type(TenantSqlType::Uuid))
        );
        Ok(())
    }
}
