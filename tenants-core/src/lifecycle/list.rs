//! `list`: every tenant found in the marked tables, with its row counts.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Int4, Text};
use diesel_async::RunQueryDsl;

use super::{LifecycleError, TableRows, db, plain_name};
use crate::catalog::MarkedTable;
use crate::pool::TenantPool;
use crate::tenant::quote_ident;

/// Every tenant of the marked tables, sorted (numbers numerically, then text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantList {
    /// The tenants.
    pub tenants: Vec<TenantRows>,
}

/// One tenant's rows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantRows {
    /// The tenant id, as PostgreSQL prints the tenant column.
    pub tenant: String,
    /// Its rows in every marked table where it has some, in table order.
    pub tables: Vec<TableRows>,
    /// The sum.
    pub total: u64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Int4)]
    table_index: i32,
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Every tenant id found in `tables`, with its row count per table and in total, read in
/// one admin transaction with one statement: a `GROUP BY` per table, joined with
/// `UNION ALL`.
///
/// Cost: each table is read once, whole. With an index leading with the tenant column
/// (as `(tenant, id)`), PostgreSQL can answer from the index alone (an index-only scan,
/// after `VACUUM` has marked the pages all-visible); otherwise it is a sequential scan.
///
/// ```no_run
/// # async fn run(pool: &tenants_core::TenantPool) -> Result<(), tenants_core::lifecycle::LifecycleError> {
/// use tenants_core::{lifecycle, registry, verify};
/// let tables = verify::marked_tables(&registry::tables());
/// for tenant in lifecycle::list_tenants(pool, &tables).await?.tenants {
///     println!("{} {}", tenant.tenant, tenant.total);
/// }
/// # Ok(()) }
/// ```
pub async fn list_tenants(
    pool: &TenantPool,
    tables: &[MarkedTable],
) -> Result<TenantList, LifecycleError> {
    if tables.is_empty() {
        return Ok(TenantList {
            tenants: Vec::new(),
        });
    }
    let sql = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "SELECT {i}::int4 AS table_index, {column}::text AS tenant, count(*) AS n FROM {table} GROUP BY 2",
                column = quote_ident(&t.key.column),
                table = t.table
            )
        })
        .collect::<Vec<_>>()
        .join("\nUNION ALL\n");
    let mut conn = pool.admin().await?;
    let counts = diesel::sql_query(sql)
        .load::<Count>(&mut conn)
        .await
        .map_err(db("counting the rows of each tenant"))?;
    conn.commit().await?;

    let mut tenants: BTreeMap<String, Vec<(usize, u64)>> = BTreeMap::new();
    for count in counts {
        let Ok(index) = usize::try_from(count.table_index) else {
            continue;
        };
        tenants
            .entry(count.tenant)
            .or_default()
            .push((index, u64::try_from(count.n).unwrap_or(0)));
    }
    let mut tenants: Vec<TenantRows> = tenants
        .into_iter()
        .map(|(tenant, mut counts)| {
            counts.sort();
            let tables: Vec<TableRows> = counts
                .into_iter()
                .filter_map(|(i, rows)| {
                    Some(TableRows {
                        table: tables.get(i)?.table.clone(),
                        rows,
                    })
                })
                .collect();
            TenantRows {
                tenant,
                total: tables.iter().map(|t| t.rows).sum(),
                tables,
            }
        })
        .collect();
    tenants.sort_by(|a, b| tenant_order(&a.tenant, &b.tenant));
    Ok(TenantList { tenants })
}

/// Integers in numeric order first, then everything else in text order.
fn tenant_order(a: &str, b: &str) -> Ordering {
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// `id` as one unambiguous word of a terminal line: as it is when it holds only printable
/// characters other than whitespace, `"` and `\\`; otherwise quoted with Rust's escapes
/// (`"a\\nb"`, `"\\u{1b}[2J"`), so that a tenant id cannot move the cursor, rewrite the
/// screen, or pass for two columns or for another id.
pub fn display_tenant(id: &str) -> std::borrow::Cow<'_, str> {
    let plain = !id.is_empty()
        && id.chars().all(|c| {
            !c.is_whitespace() && !matches!(c, '"' | '\\') && c.escape_debug().next() == Some(c)
        });
    if plain {
        id.into()
    } else {
        format!("{id:?}").into()
    }
}

impl TenantList {
    /// The list as text: one line per tenant, `tenant  total  table=rows ...`, each id as
    /// [`display_tenant`] shows it.
    pub fn to_text(&self) -> String {
        let shown: Vec<_> = self
            .tenants
            .iter()
            .map(|t| display_tenant(&t.tenant))
            .collect();
        let width = shown.iter().map(|t| t.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (tenant, id) in self.tenants.iter().zip(&shown) {
            let tables: Vec<String> = tenant
                .tables
                .iter()
                .map(|t| format!("{}={}", plain_name(&t.table), t.rows))
                .collect();
            out.push_str(&format!(
                "{id:<width$}  {:>8}  {}\n",
                tenant.total,
                tables.join(" ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_separators_are_escaped() {
        assert_eq!(display_tenant("acme"), "acme");
        assert_eq!(display_tenant("ünïcode-42"), "ünïcode-42");
        assert_eq!(display_tenant("a\nb"), "\"a\\nb\"");
        assert_eq!(display_tenant("\u{1b}[2Jx"), "\"\\u{1b}[2Jx\"");
        assert_eq!(display_tenant("a b"), "\"a b\"");
        assert_eq!(display_tenant("\"q\""), "\"\\\"q\\\"\"");
        assert_eq!(display_tenant("back\\slash"), "\"back\\\\slash\"");
        assert_eq!(display_tenant("\u{202e}evil"), "\"\\u{202e}evil\"");
        assert_eq!(display_tenant("\r"), "\"\\r\"");
    }

    #[test]
    fn numbers_sort_numerically_before_text() {
        let mut ids = vec!["b", "10", "a", "9", "-1"];
        ids.sort_by(|a, b| tenant_order(a, b));
        assert_eq!(ids, vec!["-1", "9", "10", "a", "b"]);
    }
}
