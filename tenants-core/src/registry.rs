//! The link-time registry of every table marked `#[with_rls]`.
//!
//! Each `#[with_rls]` item submits one [`RlsTable`] through [`inventory`]; the entries of
//! every crate linked into the binary are collected here. The link order is unspecified, so
//! [`tables`] sorts by schema and table before anything is rendered from them.

pub use tenants_syntax::TenantSqlType;

/// One table whose rows are isolated per tenant by Row-Level Security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RlsTable {
    /// The PostgreSQL schema holding the table (`public` unless `table!` names one).
    pub schema: &'static str,
    /// The table's SQL name (`#[sql_name]` when given, else the `table!` name).
    pub name: &'static str,
    /// The SQL name of the column holding the tenant id.
    pub tenant_column: &'static str,
    /// The SQL type of the tenant column; the policy casts the setting to it.
    pub sql_type: TenantSqlType,
}

inventory::collect!(RlsTable);

/// Every table marked `#[with_rls]` in the crates linked into this binary, each once,
/// sorted by schema, then table name.
///
/// A table marked twice with the same column (for example both its `table!` and a model
/// struct) is listed once.
pub fn tables() -> Vec<RlsTable> {
    let mut tables: Vec<RlsTable> = inventory::iter::<RlsTable>.into_iter().copied().collect();
    tables.sort();
    tables.dedup_by(|later, earlier| {
        let same_column = (later.schema, later.name, later.tenant_column)
            == (earlier.schema, earlier.name, earlier.tenant_column);
        // Diesel's `VarChar` is an alias of `Text`, so a marked struct reports `Text` where
        // its `table!` says `VarChar`; the more precise entry wins. (Sorted: Text first.)
        if same_column
            && earlier.sql_type == TenantSqlType::Text
            && later.sql_type == TenantSqlType::VarChar
        {
            earlier.sql_type = TenantSqlType::VarChar;
            return true;
        }
        later == earlier
    });
    tables
}

/// The type every marked table's tenant column shares, when they agree (`Text` and
/// `VarChar` count as one: both accept any id): what [`Config::tenant`](crate::Config::tenant)
/// checks tenant ids against unless [`Config::with_tenant_type`](crate::Config::with_tenant_type)
/// says otherwise. `None` when nothing is marked, or when the columns disagree (a `uuid`
/// column and an `int8` one): then no id suits every table, and the type must be set.
///
/// Read from the registry once per process: the registry is fixed at link time.
pub fn tenant_type() -> Option<TenantSqlType> {
    static TYPE: std::sync::OnceLock<Option<TenantSqlType>> = std::sync::OnceLock::new();
    *TYPE.get_or_init(|| shared_type(tables().iter().map(|t| t.sql_type)))
}

/// The one type of `types`, textual ones counted as one; `None` when empty or mixed.
fn shared_type(types: impl IntoIterator<Item = TenantSqlType>) -> Option<TenantSqlType> {
    let textual = |t: TenantSqlType| match t {
        TenantSqlType::VarChar => TenantSqlType::Text,
        other => other,
    };
    let mut types = types.into_iter().map(textual);
    let first = types.next()?;
    types.all(|t| t == first).then_some(first)
}

/// A table every tenant may read although it is not under RLS: shared lookup or reference
/// data (countries, plans, currencies). Declared with `#[shared]`; the CLI grants our roles
/// `SELECT` on it and `verify` checks the grant. Tenant transactions run as the tenant role,
/// which can read nothing else that is not marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedTable {
    /// The PostgreSQL schema holding the table.
    pub schema: &'static str,
    /// The table's SQL name.
    pub name: &'static str,
}

inventory::collect!(SharedTable);

/// Every table declared `#[shared]` in the crates linked into this binary, each once,
/// sorted by schema, then table name.
pub fn shared_tables() -> Vec<SharedTable> {
    let mut tables: Vec<SharedTable> = inventory::iter::<SharedTable>
        .into_iter()
        .copied()
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use TenantSqlType::*;

    #[test]
    fn the_shared_type_is_the_one_all_columns_agree_on() {
        assert_eq!(shared_type([]), None);
        assert_eq!(shared_type([Uuid, Uuid]), Some(Uuid));
        assert_eq!(shared_type([Text, VarChar]), Some(Text));
        assert_eq!(shared_type([Uuid, Text]), None);
        assert_eq!(shared_type([Int4, Int8]), None);
    }
}
