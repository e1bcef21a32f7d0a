//! `purge`: deletes a tenant's rows from every marked table, children before parents.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Int4};
use diesel_async::RunQueryDsl;

use super::layout::Layout;
use super::{LifecycleError, TableRows, db, tenant_for};
use crate::catalog::MarkedTable;
use crate::pool::TenantPool;
use crate::tenant::TenantId;

/// Whether [`purge_tenant`] deletes or only counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    /// Count what would be deleted and change nothing.
    DryRun,
    /// Delete, and commit.
    Delete,
}

/// What a purge deleted, or would delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// The tenant.
    pub tenant: String,
    /// Whether rows were deleted (`false` for a dry run).
    pub deleted: bool,
    /// Rows per table, children before parents (the order of the deletes).
    pub tables: Vec<TableRows>,
}

impl PurgeReport {
    /// Rows in all tables.
    pub fn total(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Int4)]
    table_index: i32,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Deletes `tenant`'s rows from every table of `tables` in one tenant transaction (RLS
/// restricts every `DELETE` to the tenant's rows), children before parents in the order
/// of the foreign keys among them. A cycle of foreign keys is deferred to the commit when
/// its constraints are deferrable, and is [`LifecycleError::ForeignKeyCycle`] otherwise.
/// [`PurgeMode::DryRun`] counts the same rows in the same transaction and rolls back.
///
/// ```no_run
/// # async fn run(pool: &tenants_core::TenantPool) -> Result<(), tenants_core::lifecycle::LifecycleError> {
/// use tenants_core::lifecycle::{self, PurgeMode};
/// use tenants_core::{registry, verify};
/// let tables = verify::marked_tables(&registry::tables());
/// let report = lifecycle::purge_tenant(pool, &tables, "acme", PurgeMode::Delete).await?;
/// println!("deleted {} rows", report.total());
/// # Ok(()) }
/// ```
pub async fn purge_tenant(
    pool: &TenantPool,
    tables: &[MarkedTable],
    tenant: impl TenantId,
    mode: PurgeMode,
) -> Result<PurgeReport, LifecycleError> {
    let tenant = tenant_for(pool.config(), tables, tenant)?;
    let mut conn = pool.tenant(&tenant).await?;
    let layout = Layout::read(&mut conn, tables).await?;
    let children_first: Vec<_> = layout.tables.iter().rev().collect();
    let mut counts = Vec::with_capacity(children_first.len());
    match mode {
        PurgeMode::DryRun => {
            if !children_first.is_empty() {
                let sql = children_first
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        format!(
                            "SELECT {i}::int4 AS table_index, count(*) AS n FROM {}",
                            t.sql_name()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                let mut rows = diesel::sql_query(sql)
                    .load::<Count>(&mut conn)
                    .await
                    .map_err(db("counting the tenant's rows"))?;
                rows.sort_by_key(|c| c.table_index);
                for (table, count) in children_first.iter().zip(rows) {
                    counts.push(TableRows {
                        table: table.marked.table.clone(),
                        rows: u64::try_from(count.n).unwrap_or(0),
                    });
                }
            }
            conn.rollback().await?;
        }
        PurgeMode::Delete => {
            layout.defer_cycles(&mut conn).await?;
            for table in &children_first {
                let n = diesel::sql_query(format!("DELETE FROM {}", table.sql_name()))
                    .execute(&mut conn)
                    .await
                    .map_err(db(format!("deleting from {}", table.marked.table)))?;
                counts.push(TableRows {
                    table: table.marked.table.clone(),
                    rows: n as u64,
                });
            }
            conn.commit().await?;
        }
    }
    Ok(PurgeReport {
        tenant: tenant.as_str().to_string(),
        deleted: mode == PurgeMode::Delete,
        tables: counts,
    })
}
