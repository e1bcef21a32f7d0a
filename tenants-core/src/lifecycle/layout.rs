//! What the catalog says about the marked tables that the lifecycle needs: their columns
//! and the foreign keys among them, and the order those keys impose. One statement each,
//! whatever the number of tables.

use diesel::QueryableByName;
use diesel::sql_types::{Array, Bool, Int4, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::{LifecycleError, db};
use crate::catalog::MarkedTable;
use crate::policy::QualifiedName;
use crate::tenant::quote_ident;

/// A column of a marked table.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub(super) struct Column {
    /// 0-based index of the table in the list asked about.
    #[diesel(sql_type = Int4)]
    table_index: i32,
    /// The column's name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Its type as `format_type` prints it, usable as a cast target.
    #[diesel(sql_type = Text)]
    pub type_name: String,
    /// `GENERATED ALWAYS AS (...) STORED`: computed, never inserted.
    #[diesel(sql_type = Bool)]
    pub generated: bool,
    /// An identity column: inserting a value needs `OVERRIDING SYSTEM VALUE`.
    #[diesel(sql_type = Bool)]
    pub identity: bool,
    /// 1-based position in the primary key.
    #[diesel(sql_type = Nullable<Int4>)]
    pub pk_position: Option<i32>,
    /// The sequence a serial or identity column draws from, as PostgreSQL names it.
    #[diesel(sql_type = Nullable<Text>)]
    pub sequence: Option<String>,
}

/// A marked table with its live columns.
#[derive(Debug, Clone)]
pub(super) struct Table {
    /// Where it is and its tenant column.
    pub marked: MarkedTable,
    /// Its columns in table order.
    pub columns: Vec<Column>,
}

impl Table {
    /// `"schema"."name"`.
    pub fn sql_name(&self) -> String {
        self.marked.table.to_string()
    }

    /// The primary key's columns, quoted, in key order.
    pub fn primary_key(&self) -> Vec<&Column> {
        let mut key: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| c.pk_position.is_some())
            .collect();
        key.sort_by_key(|c| c.pk_position);
        key
    }

    /// `ORDER BY` the primary key, or nothing for a table without one.
    pub fn order_by(&self) -> String {
        let key: Vec<String> = self
            .primary_key()
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        if key.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", key.join(", "))
        }
    }
}

/// A foreign key from one marked table to another.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
struct ForeignKey {
    /// 0-based index of the referencing table.
    #[diesel(sql_type = Int4)]
    child: i32,
    /// 0-based index of the referenced table.
    #[diesel(sql_type = Int4)]
    parent: i32,
    /// The constraint, schema-qualified and quoted.
    #[diesel(sql_type = Text)]
    name: String,
    /// Whether `SET CONSTRAINTS ... DEFERRED` can move its check to the commit.
    #[diesel(sql_type = Bool)]
    deferrable: bool,
}

/// The marked tables in parent-before-child order, and the foreign keys that had to be
/// deferred to find that order (the deferrable constraints of cycles).
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// Parents before children.
    pub tables: Vec<Table>,
    /// Constraints to `SET CONSTRAINTS ... DEFERRED` before writing.
    pub deferred: Vec<String>,
}

impl Layout {
    /// Reads the columns of `tables` and the foreign keys among them, and orders them.
    /// A table the database lacks is [`LifecycleError::TableMissing`].
    pub async fn read(
        conn: &mut AsyncPgConnection,
        tables: &[MarkedTable],
    ) -> Result<Self, LifecycleError> {
        let schemas: Vec<&str> = tables.iter().map(|t| t.table.schema.as_str()).collect();
        let names: Vec<&str> = tables.iter().map(|t| t.table.name.as_str()).collect();
        let columns = diesel::sql_query(
            "SELECT (t.i - 1)::int4 AS table_index, a.attname::text AS name,
                    format_type(a.atttypid, a.atttypmod) AS type_name,
                    a.attgenerated <> '' AS generated, a.attidentity <> '' AS identity,
                    array_position(pk.conkey, a.attnum)::int4 AS pk_position,
                    pg_get_serial_sequence(c.oid::regclass::text, a.attname) AS sequence
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(schema, name, i)
             JOIN pg_namespace n ON n.nspname = t.schema
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
             ORDER BY t.i, a.attnum",
        )
        .bind::<Array<Text>, _>(&schemas)
        .bind::<Array<Text>, _>(&names)
        .load::<Column>(conn)
        .await
        .map_err(db("reading the columns of the marked tables"))?;
        let keys = diesel::sql_query(
            "SELECT (ci.i - 1)::int4 AS child, (pi.i - 1)::int4 AS parent,
                    quote_ident(cn.nspname) || '.' || quote_ident(con.conname) AS name,
                    con.condeferrable AS deferrable
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS ci(schema, name, i)
             JOIN pg_namespace cn ON cn.nspname = ci.schema
             JOIN pg_class c ON c.relnamespace = cn.oid AND c.relname = ci.name
             JOIN pg_constraint con ON con.conrelid = c.oid AND con.contype = 'f'
             JOIN pg_class p ON p.oid = con.confrelid
             JOIN pg_namespace pn ON pn.oid = p.relnamespace
             JOIN unnest($1::text[], $2::text[]) WITH ORDINALITY AS pi(schema, name, i)
               ON pi.schema = pn.nspname AND pi.name = p.relname
             ORDER BY 1, 2, 3",
        )
        .bind::<Array<Text>, _>(&schemas)
        .bind::<Array<Text>, _>(&names)
        .load::<ForeignKey>(conn)
        .await
        .map_err(db("reading the foreign keys among the marked tables"))?;

        let mut found: Vec<Table> = tables
            .iter()
            .map(|marked| Table {
                marked: marked.clone(),
                columns: Vec::new(),
            })
            .collect();
        for column in columns {
            if let Some(table) = usize::try_from(column.table_index)
                .ok()
                .and_then(|i| found.get_mut(i))
            {
                table.columns.push(column);
            }
        }
        if let Some(missing) = found.iter().find(|t| t.columns.is_empty()) {
            return Err(LifecycleError::TableMissing {
                table: missing.marked.table.clone(),
            });
        }
        let edges: Vec<Edge> = keys
            .into_iter()
            .filter_map(|k| {
                Some(Edge {
                    parent: usize::try_from(k.parent).ok()?,
                    child: usize::try_from(k.child).ok()?,
                    name: k.name,
                    deferrable: k.deferrable,
                })
            })
            .collect();
        let names: Vec<QualifiedName> = found.iter().map(|t| t.marked.table.clone()).collect();
        let order = order(&names, &edges)?;
        let mut slots: Vec<Option<Table>> = found.into_iter().map(Some).collect();
        let tables = order
            .tables
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .collect();
        Ok(Self {
            tables,
            deferred: order.deferred,
        })
    }

    /// Defers the constraints of cycles to the commit, when there are any.
    pub async fn defer_cycles(&self, conn: &mut AsyncPgConnection) -> Result<(), LifecycleError> {
        match self.defer_sql() {
            Some(sql) => conn.batch_execute(&sql).await.map_err(db(DEFER_CONTEXT)),
            None => Ok(()),
        }
    }

    /// The statement deferring the constraints of cycles, when there are any.
    pub fn defer_sql(&self) -> Option<String> {
        (!self.deferred.is_empty())
            .then(|| format!("SET CONSTRAINTS {} DEFERRED", self.deferred.join(", ")))
    }
}

/// What [`Layout::defer_sql`] is run for, in errors.
pub(super) const DEFER_CONTEXT: &str = "deferring the foreign keys of a cycle";

/// A foreign key between two tables, by index; self-references are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Edge {
    pub parent: usize,
    pub child: usize,
    pub name: String,
    pub deferrable: bool,
}

/// The result of [`order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Order {
    /// Table indexes, parents before children.
    pub tables: Vec<usize>,
    /// Constraints that must be deferred for that order to hold.
    pub deferred: Vec<String>,
}

/// Orders `names.len()` tables parents first (ties in index order). When the foreign keys
/// form cycles, the deferrable constraints among the tables left over are deferred and
/// the rest ordered again; a cycle of constraints none of which can be deferred is
/// [`LifecycleError::ForeignKeyCycle`].
pub(super) fn order(names: &[QualifiedName], edges: &[Edge]) -> Result<Order, LifecycleError> {
    let edges: Vec<&Edge> = edges.iter().filter(|e| e.parent != e.child).collect();
    let (tables, left) = topological(names.len(), &edges);
    if left.is_empty() {
        return Ok(Order {
            tables,
            deferred: Vec::new(),
        });
    }
    let in_left = |i: usize| left.contains(&i);
    let (deferrable, kept): (Vec<&Edge>, Vec<&Edge>) = edges
        .iter()
        .partition(|e| e.deferrable && in_left(e.parent) && in_left(e.child));
    let (tables, left) = topological(names.len(), &kept);
    if left.is_empty() {
        let mut deferred: Vec<String> = deferrable.iter().map(|e| e.name.clone()).collect();
        deferred.sort();
        deferred.dedup();
        return Ok(Order { tables, deferred });
    }
    Err(LifecycleError::ForeignKeyCycle {
        cycle: find_cycle(&left, &kept)
            .into_iter()
            .filter_map(|i| names.get(i).cloned())
            .collect(),
    })
}

/// Kahn's algorithm: the tables in order, and those left over (in or behind a cycle).
fn topological(n: usize, edges: &[&Edge]) -> (Vec<usize>, Vec<usize>) {
    let mut parents = vec![0usize; n];
    for e in edges {
        parents[e.child] += 1;
    }
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    // Lowest index first among the ready ones: a stable, predictable order.
    while let Some(next) = (0..n).find(|&i| !done[i] && parents[i] == 0) {
        done[next] = true;
        out.push(next);
        for e in edges.iter().filter(|e| e.parent == next) {
            parents[e.child] -= 1;
        }
    }
    let left = (0..n).filter(|&i| !done[i]).collect();
    (out, left)
}

/// A cycle among `left` (each of which has a parent in `left`: Kahn's leftovers), as
/// table indexes with the first repeated at the end.
fn find_cycle(left: &[usize], edges: &[&Edge]) -> Vec<usize> {
    let Some(&start) = left.first() else {
        return Vec::new();
    };
    // Walk to a parent inside `left` until a table repeats: that stretch is a cycle.
    let mut path = vec![start];
    let mut current = start;
    loop {
        let Some(parent) = edges
            .iter()
            .find(|e| e.child == current && left.contains(&e.parent))
            .map(|e| e.parent)
        else {
            return path;
        };
        if let Some(at) = path.iter().position(|&i| i == parent) {
            // The walk goes child -> parent; print it parent -> child, as the keys point.
            let mut cycle: Vec<usize> = path[at..].to_vec();
            cycle.push(parent);
            cycle.reverse();
            return cycle;
        }
        path.push(parent);
        current = parent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<QualifiedName> {
        (0..n)
            .map(|i| QualifiedName::new("public", format!("t{i}")))
            .collect()
    }

    fn edge(parent: usize, child: usize, deferrable: bool) -> Edge {
        Edge {
            parent,
            child,
            name: format!("fk_{child}_{parent}"),
            deferrable,
        }
    }

    #[test]
    fn parents_come_first_and_self_references_are_ignored() -> Result<(), LifecycleError> {
        // t0 -> t2 -> t1, t0 -> t1, t1 references itself.
        let edges = [
            edge(0, 2, false),
            edge(2, 1, false),
            edge(0, 1, false),
            edge(1, 1, false),
        ];
        let order = order(&names(3), &edges)?;
        assert_eq!(order.tables, vec![0, 2, 1]);
        assert!(order.deferred.is_empty());
        Ok(())
    }

    #[test]
    fn a_deferrable_cycle_is_deferred() -> Result<(), LifecycleError> {
        // t1 <-> t2 (one side deferrable), t3 child of t2.
        let edges = [edge(1, 2, true), edge(2, 1, false), edge(2, 3, false)];
        let order = order(&names(4), &edges)?;
        assert_eq!(order.tables, vec![0, 2, 1, 3]);
        assert_eq!(order.deferred, vec!["fk_2_1".to_string()]);
        Ok(())
    }

    #[test]
    fn a_cycle_without_deferrable_keys_is_an_error_naming_it() {
        let edges = [edge(0, 1, false), edge(1, 2, false), edge(2, 1, false)];
        match order(&names(3), &edges) {
            Err(LifecycleError::ForeignKeyCycle { cycle }) => {
                let names: Vec<&str> = cycle.iter().map(|n| n.name.as_str()).collect();
                assert_eq!(names, vec!["t1", "t2", "t1"]);
            }
            other => panic!("expected a cycle error, got {other:?}"),
        }
    }
}
