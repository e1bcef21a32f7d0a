//! `import`: an export loaded into the (migrated) target database, in one tenant
//! transaction, parents before children.

use std::path::Path;

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};

use super::layout::{Column, Layout, Table};
use super::manifest::{LineError, Lines, MAX_LINE_BYTES, Manifest, TableExport, file_sha256};
use super::{LifecycleError, TEXT_FORMAT_SETTINGS, TableRows, db, tenant_for};
use crate::catalog::MarkedTable;
use crate::pool::TenantPool;
use crate::tenant::{Tenant, TenantId, quote_ident};

/// Rows per `INSERT` statement.
const BATCH_ROWS: usize = 5_000;
/// Bytes of values per `INSERT` statement, whichever limit comes first.
const BATCH_BYTES: usize = 4 << 20;

/// What an import loaded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// The tenant.
    pub tenant: String,
    /// Rows inserted per table, in the order they were loaded (parents first).
    pub tables: Vec<TableRows>,
    /// Sequences moved past the imported ids, as PostgreSQL names them.
    pub sequences_advanced: Vec<String>,
}

/// Loads the export in `dir` as `tenant` into the database of `pool`, whose `tables` are
/// marked. Before anything is written, every file's SHA-256 and row count is checked
/// against the manifest, and every exported table must be among `tables`, exist, and have
/// the same columns of the same types. Then, in one tenant transaction, the rows are
/// inserted parents before children with their ids kept (`OVERRIDING SYSTEM VALUE` for
/// identity columns); the sequences of serial and identity columns are advanced past the
/// imported ids. Any failure rolls everything back: a row of another tenant (refused by
/// the RLS policy), a key that already exists (a conflict is an error, never an
/// overwrite), a foreign key without its parent. The error names the table and the row.
///
/// Advancing a sequence needs `UPDATE` on it, which the tenant role does not have: that
/// one statement runs as the login role (`SET LOCAL ROLE NONE`, still inside the
/// transaction, switched back to the tenant role right after), and only when an imported
/// id is past the sequence.
pub async fn import_tenant(
    pool: &TenantPool,
    tables: &[MarkedTable],
    tenant: impl TenantId,
    dir: &Path,
) -> Result<ImportReport, LifecycleError> {
    let tenant = tenant_for(pool.config(), tables, tenant)?;
    let manifest = Manifest::read(dir)?;
    if manifest.tenant != tenant.as_str() {
        return Err(LifecycleError::TenantMismatch {
            exported: manifest.tenant,
            requested: tenant.as_str().to_string(),
        });
    }
    // The files first: nothing reaches the database from a damaged export.
    for table in &manifest.tables {
        verify_file(dir, table)?;
    }
    let mut marked = Vec::with_capacity(manifest.tables.len());
    for exported in &manifest.tables {
        let name = exported.table();
        let found = tables.iter().find(|t| t.table == name).ok_or_else(|| {
            LifecycleError::TableNotMarked {
                table: name.clone(),
            }
        })?;
        marked.push(found.clone());
    }

    let mut conn = pool.tenant(&tenant).await?;
    conn.batch_execute(TEXT_FORMAT_SETTINGS)
        .await
        .map_err(db("setting the text formats"))?;
    let layout = Layout::read(&mut conn, &marked).await?;
    let mut plan: Vec<(&Table, &TableExport)> = Vec::with_capacity(layout.tables.len());
    for table in &layout.tables {
        let exported = manifest
            .tables
            .iter()
            .find(|e| e.table() == table.marked.table)
            .ok_or_else(|| LifecycleError::TableNotMarked {
                table: table.marked.table.clone(),
            })?;
        compare_columns(table, exported)?;
        plan.push((table, exported));
    }
    layout.defer_cycles(&mut conn).await?;

    let mut loaded = Vec::with_capacity(plan.len());
    for (table, exported) in &plan {
        let rows = import_table(&mut conn, &tenant, table, &dir.join(&exported.file)).await?;
        loaded.push(TableRows {
            table: table.marked.table.clone(),
            rows,
        });
    }
    let sequences_advanced =
        advance_sequences(&mut conn, &layout.tables, pool.config().tenant_role()).await?;
    conn.commit().await?;
    Ok(ImportReport {
        tenant: tenant.as_str().to_string(),
        tables: loaded,
        sequences_advanced,
    })
}

/// The file of `table` has the manifest's checksum and row count.
fn verify_file(dir: &Path, table: &TableExport) -> Result<(), LifecycleError> {
    let file = dir.join(&table.file);
    let (sha256, rows) = file_sha256(&file)?;
    if sha256 != table.sha256 {
        return Err(LifecycleError::Checksum {
            table: table.table(),
            file,
            expected: table.sha256.clone(),
            actual: sha256,
        });
    }
    if rows != table.rows {
        return Err(LifecycleError::RowCount {
            table: table.table(),
            file,
            expected: table.rows,
            actual: rows,
        });
    }
    Ok(())
}

/// The export's columns and tenant column are the target's: same names, same types.
fn compare_columns(table: &Table, exported: &TableExport) -> Result<(), LifecycleError> {
    let mut differences = Vec::new();
    if exported.tenant_column != table.marked.key.column {
        differences.push(format!(
            "tenant column is {:?} in the export, {:?} here",
            exported.tenant_column, table.marked.key.column
        ));
    }
    for column in &table.columns {
        match exported.columns.iter().find(|e| e.name == column.name) {
            None => differences.push(format!(
                "column {:?} is missing from the export",
                column.name
            )),
            Some(e) if e.type_name != column.type_name => differences.push(format!(
                "column {:?} is {} in the export, {} here",
                column.name, e.type_name, column.type_name
            )),
            Some(_) => {}
        }
    }
    for e in &exported.columns {
        if !table.columns.iter().any(|c| c.name == e.name) {
            differences.push(format!("column {:?} does not exist here", e.name));
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(LifecycleError::ColumnMismatch {
            table: table.marked.table.clone(),
            differences: differences.join("; "),
        })
    }
}

/// Inserts the rows of `file` into `table` in batches; returns how many.
///
/// Each line is parsed here (a JSON object of strings and nulls, exactly the table's
/// columns) and each batch travels as one text array per column, unnested and cast by the
/// server: parsing JSON on the server (`json_to_recordset`) took twice as long.
async fn import_table(
    conn: &mut AsyncPgConnection,
    tenant: &Tenant,
    table: &Table,
    file: &Path,
) -> Result<u64, LifecycleError> {
    let inserted: Vec<&Column> = table.columns.iter().filter(|c| !c.generated).collect();
    let names: Vec<String> = inserted.iter().map(|c| quote_ident(&c.name)).collect();
    // Every value travels as text and is read by its type's input function (`::type`):
    // the inverse of the export's text form, exact for every type.
    let values: Vec<String> = inserted
        .iter()
        .map(|c| format!("r.{}::{}", quote_ident(&c.name), c.type_name))
        .collect();
    let arrays: Vec<String> = (1..=inserted.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let overriding = if inserted.iter().any(|c| c.identity) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {} ({names}){overriding} SELECT {} FROM unnest({}) AS r({names})",
        table.sql_name(),
        values.join(", "),
        arrays.join(", "),
        names = names.join(", "),
    );
    let tenant_index = inserted
        .iter()
        .position(|c| c.name == table.marked.key.column);
    let insert = Insert {
        sql: &sql,
        tenant,
        tenant_index,
        table,
        file,
    };

    let mut total = 0u64;
    let mut batch = Batch::new(inserted.len());
    let mut lines = Lines::open(file)?;
    let mut i = 0usize;
    while let Some(line) = lines.next_line() {
        let line = line.map_err(|error| match error {
            LineError::Io(source) => LifecycleError::Io {
                path: file.to_path_buf(),
                source,
            },
            LineError::TooLong => LifecycleError::LineTooLong {
                table: table.marked.table.clone(),
                file: file.to_path_buf(),
                row: i as u64 + 1,
                limit: MAX_LINE_BYTES,
            },
        })?;
        let row =
            parse_row(&line, table, &inserted).map_err(|reason| LifecycleError::RowRefused {
                table: table.marked.table.clone(),
                file: file.to_path_buf(),
                row: i as u64 + 1,
                reason,
            })?;
        batch.push(row);
        if batch.rows >= BATCH_ROWS || batch.bytes >= BATCH_BYTES {
            total += insert.batch(conn, total, &batch).await?;
            batch = Batch::new(inserted.len());
        }
        i += 1;
    }
    if batch.rows > 0 {
        total += insert.batch(conn, total, &batch).await?;
    }
    Ok(total)
}

/// One row of a table file: an object with a string or null for each of the table's
/// columns and nothing else. Returns the values of the `inserted` columns, in order.
fn parse_row(
    line: &str,
    table: &Table,
    inserted: &[&Column],
) -> Result<Vec<Option<String>>, String> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut values = Vec::with_capacity(inserted.len());
    for column in inserted {
        match object.remove(&column.name) {
            Some(serde_json::Value::String(s)) => values.push(Some(s)),
            Some(serde_json::Value::Null) => values.push(None),
            Some(other) => {
                return Err(format!(
                    "column {:?} is {other}, not a string or null",
                    column.name
                ));
            }
            None => return Err(format!("column {:?} is missing", column.name)),
        }
    }
    // Generated columns are exported for the reader and computed again by the target.
    for column in table.columns.iter().filter(|c| c.generated) {
        object.remove(&column.name);
    }
    if let Some(extra) = object.keys().next() {
        return Err(format!("column {extra:?} does not exist in the table"));
    }
    Ok(values)
}

/// Rows to insert, as one array per column.
struct Batch {
    columns: Vec<Vec<Option<String>>>,
    rows: usize,
    bytes: usize,
}

impl Batch {
    fn new(columns: usize) -> Self {
        Self {
            columns: vec![Vec::with_capacity(BATCH_ROWS); columns],
            rows: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        for (column, value) in self.columns.iter_mut().zip(row) {
            self.bytes += value.as_ref().map_or(0, String::len) + 8;
            column.push(value);
        }
        self.rows += 1;
    }

    /// Row `i` alone, as single-element arrays.
    fn row(&self, i: usize) -> Vec<Vec<Option<String>>> {
        self.columns
            .iter()
            .map(|column| vec![column.get(i).cloned().flatten()])
            .collect()
    }
}

/// The insert statement of one table and what its errors name.
struct Insert<'a> {
    sql: &'a str,
    tenant: &'a Tenant,
    tenant_index: Option<usize>,
    table: &'a Table,
    file: &'a Path,
}

impl Insert<'_> {
    /// Inserts one batch, whose first row is row `before + 1` of the file, inside a
    /// savepoint. When the batch fails, its rows are inserted again one by one (each in
    /// its own savepoint, kept when it succeeds, so a duplicate within the batch fails
    /// too) to name the first refused row and the database's reason. Only the failure path
    /// pays for it; the whole transaction is rolled back afterwards either way.
    async fn batch(
        &self,
        conn: &mut AsyncPgConnection,
        before: u64,
        batch: &Batch,
    ) -> Result<u64, LifecycleError> {
        let context = || format!("loading {}", self.table.marked.table);
        let batch_error = match self.in_savepoint(conn, &batch.columns).await {
            Ok(Ok(n)) => return Ok(n as u64),
            Ok(Err(error)) => error,
            Err(error) => return Err(db(context())(error)),
        };
        for i in 0..batch.rows {
            match self.in_savepoint(conn, &batch.row(i)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    let tenant_value = self
                        .tenant_index
                        .and_then(|t| batch.columns.get(t))
                        .and_then(|column| column.get(i).cloned());
                    return Err(self.refused(before + i as u64 + 1, &error, tenant_value));
                }
                Err(error) => return Err(db(context())(error)),
            }
        }
        Err(LifecycleError::RowRefused {
            table: self.table.marked.table.clone(),
            file: self.file.to_path_buf(),
            row: before + 1,
            reason: format!(
                "{} (in the batch of rows {}-{})",
                describe(&batch_error),
                before + 1,
                before + batch.rows as u64
            ),
        })
    }

    /// Runs the insert of `columns` in a savepoint: released on success, rolled back on
    /// failure. The outer `Err` is a failure of the savepoint itself.
    async fn in_savepoint(
        &self,
        conn: &mut AsyncPgConnection,
        columns: &[Vec<Option<String>>],
    ) -> Result<Result<usize, diesel::result::Error>, diesel::result::Error> {
        let mut query = diesel::sql_query(self.sql).into_boxed();
        for column in columns {
            query = query.bind::<Array<Nullable<Text>>, _>(column);
        }
        AnsiTransactionManager::begin_transaction(conn).await?;
        match query.execute(conn).await {
            Ok(n) => {
                AnsiTransactionManager::commit_transaction(conn).await?;
                Ok(Ok(n))
            }
            Err(error) => {
                AnsiTransactionManager::rollback_transaction(conn).await?;
                Ok(Err(error))
            }
        }
    }

    /// Row `row` was refused: the database's words, and when its tenant column is not the
    /// import's tenant (what the RLS policy refuses), both values.
    fn refused(
        &self,
        row: u64,
        error: &diesel::result::Error,
        tenant_value: Option<Option<String>>,
    ) -> LifecycleError {
        let mut reason = describe(error);
        let column = &self.table.marked.key.column;
        match tenant_value {
            Some(Some(value)) if value == self.tenant.as_str() => {}
            Some(value) => reason.push_str(&format!(
                " (its {column:?} is {}, the import's tenant is {:?})",
                value.map_or_else(|| "null".to_string(), |v| format!("{v:?}")),
                self.tenant.as_str()
            )),
            None => {}
        }
        LifecycleError::RowRefused {
            table: self.table.marked.table.clone(),
            file: self.file.to_path_buf(),
            row,
            reason,
        }
    }
}

/// The database's message with its detail, on one line.
fn describe(error: &diesel::result::Error) -> String {
    match error {
        diesel::result::Error::DatabaseError(_, info) => match info.details() {
            Some(detail) => format!("{}: {detail}", info.message()),
            None => info.message().to_string(),
        },
        other => other.to_string(),
    }
}

#[derive(QueryableByName)]
struct SequenceState {
    #[diesel(sql_type = Text)]
    sequence: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    max_id: Option<i64>,
    #[diesel(sql_type = Bool)]
    behind: bool,
    #[diesel(sql_type = Bool)]
    updatable: bool,
    #[diesel(sql_type = Text)]
    login: String,
}

/// Moves each serial or identity sequence past the largest id the tenant now has, when
/// its next value is not already past it. The tenant's rows suffice: every other row's id
/// came from the sequence (or from an earlier import that advanced it). `setval` needs
/// `UPDATE` on the sequence, which the tenant role lacks and the login role has when it
/// owns the tables: that statement runs after `SET LOCAL ROLE NONE`, in the same
/// transaction, and the tenant role is set again right after it. An insert by someone else that draws from the sequence meanwhile may
/// collide with an imported id: the key refuses it, nothing is overwritten.
async fn advance_sequences(
    conn: &mut AsyncPgConnection,
    tables: &[Table],
    tenant_role: &str,
) -> Result<Vec<String>, LifecycleError> {
    let mut behind = Vec::new();
    for table in tables {
        for column in &table.columns {
            let Some(sequence) = &column.sequence else {
                continue;
            };
            // As the tenant: RLS shows its own rows, which is all that is needed. The
            // sequence name comes from pg_get_serial_sequence, quoted by the server.
            let state = diesel::sql_query(format!(
                "SELECT $1 AS sequence, m.max_id::int8 AS max_id,
                        coalesce(p.seqincrement > 0 AND m.max_id::numeric >= CASE WHEN s.is_called
                            THEN s.last_value::numeric + p.seqincrement ELSE s.last_value END,
                            false) AS behind,
                        has_sequence_privilege(session_user, $1, 'UPDATE') AS updatable,
                        session_user::text AS login
                 FROM {sequence} s
                 JOIN pg_sequence p ON p.seqrelid = $1::regclass
                 CROSS JOIN (SELECT max({column}) AS max_id FROM {table}) m",
                column = quote_ident(&column.name),
                table = table.sql_name(),
            ))
            .bind::<Text, _>(sequence)
            .get_result::<SequenceState>(conn)
            .await
            .map_err(db(format!("reading sequence {sequence}")))?;
            if state.behind {
                behind.push(state);
            }
        }
    }
    if let Some(s) = behind.iter().find(|s| !s.updatable) {
        return Err(LifecycleError::SequencePrivilege {
            sequence: s.sequence.clone(),
            role: s.login.clone(),
        });
    }
    if behind.is_empty() {
        return Ok(Vec::new());
    }
    conn.batch_execute("SET LOCAL ROLE NONE")
        .await
        .map_err(db("switching to the login role to advance sequences"))?;
    for s in &behind {
        if let Some(max) = s.max_id {
            diesel::sql_query("SELECT setval($1::regclass, $2)")
                .bind::<Text, _>(&s.sequence)
                .bind::<BigInt, _>(max)
                .execute(conn)
                .await
                .map_err(db(format!("advancing sequence {}", s.sequence)))?;
        }
    }
    // Back to the tenant role at once: whatever still runs in this transaction (deferred
    // constraint triggers fire at the commit) runs as the tenant, never as the login role,
    // which may be the owner or a superuser and would see every tenant.
    conn.batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(tenant_role)))
        .await
        .map_err(db(
            "switching back to the tenant role after advancing sequences",
        ))?;
    Ok(behind.into_iter().map(|s| s.sequence).collect())
}
