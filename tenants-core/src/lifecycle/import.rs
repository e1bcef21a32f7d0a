//! `import`: an export loaded into the (migrated) target database, in one tenant
//! transaction, parents before children.

use std::path::Path;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};

use super::layout::{Layout, Table};
use super::manifest::{Manifest, TableExport, file_sha256, lines};
use super::{LifecycleError, TEXT_FORMAT_SETTINGS, TableRows, db, tenant_for};
use crate::catalog::MarkedTable;
use crate::pool::TenantPool;
use crate::tenant::{Tenant, TenantId, quote_ident};

/// Rows per `INSERT` statement.
const BATCH_ROWS: usize = 5_000;
/// Bytes of JSON per `INSERT` statement, whichever limit comes first.
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
/// transaction), and only when an imported id is past the sequence.
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
    let sequences_advanced = advance_sequences(&mut conn, &layout.tables).await?;
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
async fn import_table(
    conn: &mut AsyncPgConnection,
    tenant: &Tenant,
    table: &Table,
    file: &Path,
) -> Result<u64, LifecycleError> {
    let inserted: Vec<_> = table.columns.iter().filter(|c| !c.generated).collect();
    let names: Vec<String> = inserted.iter().map(|c| quote_ident(&c.name)).collect();
    // Every value travels as text and is read by its type's input function (`::type`):
    // the inverse of the export's text form, exact for every type.
    let values: Vec<String> = inserted
        .iter()
        .map(|c| format!("r.{}::{}", quote_ident(&c.name), c.type_name))
        .collect();
    let record: Vec<String> = names.iter().map(|n| format!("{n} text")).collect();
    let overriding = if inserted.iter().any(|c| c.identity) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO {} ({}){overriding} SELECT {} FROM json_to_recordset($1::json) AS r({})",
        table.sql_name(),
        names.join(", "),
        values.join(", "),
        record.join(", ")
    );

    let mut total = 0u64;
    let mut batch = Batch::default();
    for line in lines(file)? {
        let line = line.map_err(|source| LifecycleError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        batch.push(line);
        if batch.rows.len() >= BATCH_ROWS || batch.bytes >= BATCH_BYTES {
            total += insert(conn, &sql, tenant, table, file, total, &batch).await?;
            batch = Batch::default();
        }
    }
    if !batch.rows.is_empty() {
        total += insert(conn, &sql, tenant, table, file, total, &batch).await?;
    }
    Ok(total)
}

#[derive(Default)]
struct Batch {
    rows: Vec<String>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 2;
        self.rows.push(line);
    }

    /// The rows as one JSON array, a row per line.
    fn json(&self) -> String {
        let mut out = String::with_capacity(self.bytes + 2);
        out.push('[');
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.push_str(",\n");
            }
            out.push_str(row);
        }
        out.push(']');
        out
    }
}

/// Inserts one batch, whose first row is row `before + 1` of `file`, inside a savepoint.
/// When the batch fails, the rows are inserted again one by one (each in its own
/// savepoint, kept when it succeeds, so a duplicate within the batch fails too) to name
/// the first refused row and the database's reason. Only the failure path pays for it; the
/// whole transaction is rolled back afterwards either way.
async fn insert(
    conn: &mut AsyncPgConnection,
    sql: &str,
    tenant: &Tenant,
    table: &Table,
    file: &Path,
    before: u64,
    batch: &Batch,
) -> Result<u64, LifecycleError> {
    let context = || format!("loading {}", table.marked.table);
    let batch_error = match in_savepoint(conn, sql, batch.json()).await {
        Ok(Ok(n)) => return Ok(n as u64),
        Ok(Err(error)) => error,
        Err(error) => return Err(db(context())(error)),
    };
    for (i, row) in batch.rows.iter().enumerate() {
        match in_savepoint(conn, sql, format!("[{row}]")).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                return Err(LifecycleError::RowRefused {
                    table: table.marked.table.clone(),
                    file: file.to_path_buf(),
                    row: before + i as u64 + 1,
                    reason: refusal(&error, row, &table.marked.key.column, tenant),
                });
            }
            Err(error) => return Err(db(context())(error)),
        }
    }
    Err(LifecycleError::RowRefused {
        table: table.marked.table.clone(),
        file: file.to_path_buf(),
        row: before + 1,
        reason: format!(
            "{} (in the batch of rows {}-{})",
            describe(&batch_error),
            before + 1,
            before + batch.rows.len() as u64
        ),
    })
}

/// Runs the insert of `rows` (a JSON array) in a savepoint: released on success, rolled
/// back on failure. The outer `Err` is a failure of the savepoint itself.
async fn in_savepoint(
    conn: &mut AsyncPgConnection,
    sql: &str,
    rows: String,
) -> Result<Result<usize, diesel::result::Error>, diesel::result::Error> {
    AnsiTransactionManager::begin_transaction(conn).await?;
    match diesel::sql_query(sql)
        .bind::<Text, _>(rows)
        .execute(conn)
        .await
    {
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

/// Why a row was refused: the database's words, and when the row's tenant column is not
/// the import's tenant (what the RLS policy refuses), both values.
fn refusal(error: &diesel::result::Error, row: &str, column: &str, tenant: &Tenant) -> String {
    let reason = describe(error);
    let value = serde_json::from_str::<serde_json::Value>(row)
        .ok()
        .and_then(|v| v.get(column).cloned());
    match value {
        Some(serde_json::Value::String(s)) if s == tenant.as_str() => reason,
        Some(value) => format!(
            "{reason} (its {column:?} is {value}, the import's tenant is {:?})",
            tenant.as_str()
        ),
        None => reason,
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
/// transaction. An insert by someone else that draws from the sequence meanwhile may
/// collide with an imported id: the key refuses it, nothing is overwritten.
async fn advance_sequences(
    conn: &mut AsyncPgConnection,
    tables: &[Table],
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
                        p.seqincrement > 0 AND m.max_id::numeric >= CASE WHEN s.is_called
                            THEN s.last_value::numeric + p.seqincrement ELSE s.last_value END AS behind,
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
    Ok(behind.into_iter().map(|s| s.sequence).collect())
}
