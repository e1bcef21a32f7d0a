//! `import`: an export loaded into the (migrated) target database, in one tenant
//! transaction, parents before children, at `COPY` speed with the policies intact.
//!
//! `COPY FROM` is refused for a table under RLS (PostgreSQL cannot apply `WITH CHECK` to
//! it), so each table file is copied into a temporary table first, created in the tenant's
//! transaction (`ON COMMIT DROP`: it cannot outlive it, and a temporary table has no RLS to
//! refuse the `COPY`), whose columns have the target's types: every value is read by its
//! type's input function there, and a malformed one is refused with its line. Then one
//! `INSERT ... SELECT` moves the rows into the table, as the tenant role: the policies'
//! `WITH CHECK` judges every row, as for any insert.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::ToSql;

use super::layout::{Column, Layout, Table};
use super::manifest::{
    LineError, Lines, MAX_LINE_BYTES, Manifest, RowsFormat, TableExport, file_sha256,
};
use super::session::{Session, pg, to_diesel};
use super::{LifecycleError, TEXT_FORMAT_SETTINGS, TableRows, tenant_for};
use crate::catalog::MarkedTable;
use crate::pool::TenantPool;
use crate::tenant::{Tenant, TenantId, escape_literal, quote_ident};

/// Bytes of a table file sent per `COPY` message.
const CHUNK_BYTES: usize = 1 << 16;
/// The temporary table each table file is copied into.
const STAGING: &str = "tenants_import";
/// The staging rows numbered in file order, made only to find a refused row.
const NUMBERED: &str = "tenants_import_numbered";
/// The line-number column of [`NUMBERED`].
const LINE: &str = "tenants_import_line";

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
/// the same columns of the same types. Then, in one tenant transaction on a connection of
/// the import's own (opened from the pool's URL: the pool must come from
/// [`TenantPool::connect_with`]), each table file is copied into a temporary table and
/// inserted from there (see the [module documentation](crate::lifecycle)), parents before children,
/// with its ids kept (`OVERRIDING SYSTEM VALUE` for identity columns); the sequences of
/// serial and identity columns are advanced past the imported ids. Any failure rolls
/// everything back: a row of another tenant (refused by the RLS policy), a key that already
/// exists (a conflict is an error, never an overwrite), a foreign key without its parent, a
/// malformed value. The error names the table and the row (its line in the file).
///
/// Exports of format version 1 (JSON lines) are read too, each line converted to the
/// `COPY` text form on the way.
///
/// Advancing a sequence needs `UPDATE` on it, which the tenant role does not have: that
/// one statement runs as the login role (`SET LOCAL ROLE NONE`, still inside the
/// transaction, switched back to the tenant role right after), and only when an imported
/// id is past the sequence. Temporary tables need the `TEMPORARY` privilege on the
/// database, which PostgreSQL grants to `PUBLIC` by default.
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
    let format = manifest
        .rows_format()
        .ok_or_else(|| LifecycleError::Manifest {
            path: dir.join(super::MANIFEST_FILE),
            message: format!("format version {} is not readable", manifest.format_version),
        })?;
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

    let layout = {
        let mut conn = pool.tenant(&tenant).await?;
        let layout = Layout::read(&mut conn, &marked).await?;
        conn.commit().await?;
        layout
    };
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

    let session = Session::begin(pool, &tenant, None).await?;
    session
        .batch(TEXT_FORMAT_SETTINGS, "setting the text formats")
        .await?;
    if let Some(sql) = layout.defer_sql() {
        session.batch(&sql, super::layout::DEFER_CONTEXT).await?;
    }
    let citus_tables = citus_tables(&session, &layout.tables).await?;
    let mut loaded = Vec::with_capacity(plan.len());
    for (table, exported) in &plan {
        let load = Load {
            session: &session,
            tenant: &tenant,
            table,
            exported,
            file: &dir.join(&exported.file),
            format,
            values: citus_tables.contains(&table.marked.table),
        };
        let rows = load.run().await?;
        loaded.push(TableRows {
            table: table.marked.table.clone(),
            rows,
        });
    }
    let sequences_advanced =
        advance_sequences(&session, &layout.tables, pool.config().tenant_role()).await?;
    session.commit().await?;
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

/// One table file on its way into its table.
struct Load<'a> {
    session: &'a Session,
    tenant: &'a Tenant,
    table: &'a Table,
    exported: &'a TableExport,
    file: &'a Path,
    format: RowsFormat,
    /// Move the rows with multi-row `INSERT ... VALUES` instead of `INSERT ... SELECT`:
    /// for a Citus table, where an `INSERT ... SELECT` from a local table is executed as a
    /// `COPY` into the shards, which PostgreSQL refuses under RLS.
    values: bool,
}

impl Load<'_> {
    /// Copies the file into the staging table, inserts it into the table; returns the rows.
    async fn run(&self) -> Result<u64, LifecycleError> {
        let name = &self.table.marked.table;
        let context = format!("loading {name}");
        self.session
            .batch(
                &format!(
                    "CREATE TEMPORARY TABLE {STAGING} (LIKE {}) ON COMMIT DROP",
                    self.table.sql_name()
                ),
                &context,
            )
            .await?;
        // The file's columns, in the file's order (the manifest's).
        let columns: Vec<String> = self
            .exported
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let copy = format!("COPY {STAGING} ({}) FROM STDIN", columns.join(", "));
        let copied = match self.format {
            RowsFormat::CopyText => {
                let mut file = std::fs::File::open(self.file).map_err(|source| self.io(source))?;
                let mut buffer = vec![0u8; CHUNK_BYTES];
                self.session
                    .copy_in(&copy, || {
                        match std::io::Read::read(&mut file, &mut buffer) {
                            Ok(0) => None,
                            Ok(n) => Some(Ok(Bytes::copy_from_slice(&buffer[..n]))),
                            Err(source) => Some(Err(self.io(source))),
                        }
                    })
                    .await?
            }
            RowsFormat::JsonLines => {
                let mut lines = Lines::open(self.file)?;
                let mut row = 0u64;
                let columns: Vec<&str> = self
                    .exported
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                self.session
                    .copy_in(&copy, || self.json_chunk(&mut lines, &mut row, &columns))
                    .await?
            }
        };
        copied.map_err(|error| self.copy_refused(error))?;

        let insert = Insert::new(self.table);
        self.session
            .batch("SAVEPOINT tenants_import", &context)
            .await?;
        let moved = if self.values {
            self.number_rows(&context).await?;
            let total = self.numbered_rows(&context).await?;
            let mut moved = Ok(0);
            let mut low = 1;
            while low <= total {
                let high = (low + VALUES_ROWS - 1).min(total);
                match insert.range(self.session, low, high, true).await? {
                    Ok(n) => moved = moved.map(|m| m + n),
                    Err(error) => {
                        moved = Err(error);
                        break;
                    }
                }
                low = high + 1;
            }
            moved
        } else {
            self.session.execute(&insert.all_staged(), &[]).await
        };
        let rows = match moved {
            Ok(rows) => rows,
            Err(error) => {
                self.session
                    .batch("ROLLBACK TO SAVEPOINT tenants_import", &context)
                    .await?;
                return Err(self.find_refused(error, &insert).await);
            }
        };
        // Every row of the file, once: the batches of a Citus table are counted, not assumed.
        if rows != self.exported.rows {
            self.session
                .batch("ROLLBACK TO SAVEPOINT tenants_import", &context)
                .await?;
            return Err(LifecycleError::RowsMoved {
                table: self.exported.table(),
                expected: self.exported.rows,
                actual: rows,
            });
        }
        self.session
            .batch(
                &format!(
                    "RELEASE SAVEPOINT tenants_import; DROP TABLE {STAGING}; DROP TABLE IF EXISTS {NUMBERED}"
                ),
                &context,
            )
            .await?;
        Ok(rows)
    }

    /// Numbers the staging rows in file order (`ctid` order: one `COPY` into a new table
    /// appends them in order) into [`NUMBERED`], once.
    async fn number_rows(&self, context: &str) -> Result<(), LifecycleError> {
        self.session
            .batch(
                &format!(
                    "CREATE TEMPORARY TABLE IF NOT EXISTS {NUMBERED} ON COMMIT DROP AS
                       SELECT row_number() OVER (ORDER BY ctid) AS {LINE}, * FROM {STAGING}"
                ),
                context,
            )
            .await
    }

    /// How many rows [`NUMBERED`] holds.
    async fn numbered_rows(&self, context: &str) -> Result<i64, LifecycleError> {
        Ok(self
            .session
            .query(&format!("SELECT count(*) FROM {NUMBERED}"), &[], context)
            .await?
            .first()
            .map_or(0, |row| row.get::<_, i64>(0)))
    }

    /// The next chunk of a version-1 file: its lines converted to `COPY` text rows.
    fn json_chunk(
        &self,
        lines: &mut Lines,
        row: &mut u64,
        columns: &[&str],
    ) -> Option<Result<Bytes, LifecycleError>> {
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
        while chunk.len() < CHUNK_BYTES {
            let Some(line) = lines.next_line() else {
                break;
            };
            *row += 1;
            let line = match line {
                Ok(line) => line,
                Err(LineError::Io(source)) => return Some(Err(self.io(source))),
                Err(LineError::TooLong) => {
                    return Some(Err(LifecycleError::LineTooLong {
                        table: self.table.marked.table.clone(),
                        file: self.file.to_path_buf(),
                        row: *row,
                        limit: MAX_LINE_BYTES,
                    }));
                }
            };
            match parse_row(&line, columns) {
                Ok(values) => copy_text_row(&mut chunk, &values),
                Err(reason) => return Some(Err(self.refused(*row, reason))),
            }
        }
        (!chunk.is_empty()).then(|| Ok(chunk.freeze()))
    }

    /// The server refused the `COPY` into the staging table: a value its column's type does
    /// not read, a missing or extra field, a null in a `NOT NULL` column. PostgreSQL names
    /// the line in the error's context (`COPY tenants_import, line 3, column id: "x"`).
    fn copy_refused(&self, error: tokio_postgres::Error) -> LifecycleError {
        let line = error
            .as_db_error()
            .and_then(|db| db.where_())
            .and_then(copy_line);
        match line {
            Some(row) => self.refused(row, describe(&to_diesel(error))),
            None => pg(&format!("loading {}", self.table.marked.table))(error),
        }
    }

    /// The `INSERT` from the staging table failed: finds the first row that fails, in file
    /// order, by bisection over the rows numbered in file order (savepoints keep the rows
    /// before it, so a duplicate within the file fails too), about 2·log2(n) statements.
    async fn find_refused(
        &self,
        batch_error: tokio_postgres::Error,
        insert: &Insert,
    ) -> LifecycleError {
        match self.bisect(insert).await {
            Ok(Some((row, error))) => {
                let tenant = self.tenant_of(row).await;
                let mut reason = describe(&to_diesel(error));
                let column = &self.table.marked.key.column;
                match tenant {
                    Some(Some(value)) if value == self.tenant.as_str() => {}
                    Some(value) => reason.push_str(&format!(
                        " (its {column:?} is {}, the import's tenant is {:?})",
                        value.map_or_else(|| "null".to_string(), |v| format!("{v:?}")),
                        self.tenant.as_str()
                    )),
                    None => {}
                }
                self.refused(row, reason)
            }
            Ok(None) => self.refused(
                1,
                format!(
                    "{} (the rows fail together, not one by one)",
                    describe(&to_diesel(batch_error))
                ),
            ),
            Err(error) => error,
        }
    }

    /// The first line whose insert fails after the lines before it were inserted, with
    /// its error; `None` when every line inserts on its own.
    async fn bisect(
        &self,
        insert: &Insert,
    ) -> Result<Option<(u64, tokio_postgres::Error)>, LifecycleError> {
        let context = format!("finding the refused row of {}", self.table.marked.table);
        self.number_rows(&context).await?;
        let (mut low, mut high) = (1i64, self.numbered_rows(&context).await?);
        let mut last_error = None;
        while low <= high {
            let middle = if low == high {
                low
            } else {
                low + (high - low) / 2
            };
            self.session
                .batch("SAVEPOINT tenants_find", &context)
                .await?;
            match insert.range(self.session, low, middle, self.values).await? {
                Ok(_) => {
                    self.session
                        .batch("RELEASE SAVEPOINT tenants_find", &context)
                        .await?;
                    low = middle + 1;
                }
                Err(error) => {
                    self.session
                        .batch("ROLLBACK TO SAVEPOINT tenants_find", &context)
                        .await?;
                    if low == middle {
                        return Ok(Some((low as u64, error)));
                    }
                    last_error = Some(error);
                    high = middle;
                }
            }
        }
        Ok(last_error.map(|error| (low as u64, error)))
    }

    /// The tenant column of line `row`, as text: `Some(None)` for a null.
    async fn tenant_of(&self, row: u64) -> Option<Option<String>> {
        let sql = format!(
            "SELECT {}::text FROM {NUMBERED} WHERE {LINE} = $1",
            quote_ident(&self.table.marked.key.column)
        );
        let line = i64::try_from(row).ok()?;
        let rows = self.session.query(&sql, &[&line], "").await.ok()?;
        rows.first().map(|r| r.get::<_, Option<String>>(0))
    }

    fn refused(&self, row: u64, reason: String) -> LifecycleError {
        LifecycleError::RowRefused {
            table: self.table.marked.table.clone(),
            file: self.file.to_path_buf(),
            row,
            reason,
        }
    }

    fn io(&self, source: std::io::Error) -> LifecycleError {
        LifecycleError::Io {
            path: self.file.to_path_buf(),
            source,
        }
    }
}

/// Rows per multi-row `INSERT ... VALUES` of a Citus table.
const VALUES_ROWS: i64 = 1_000;

/// The statements that move staged rows into one table.
struct Insert {
    /// `INSERT INTO t (columns) [OVERRIDING SYSTEM VALUE]`.
    head: String,
    /// The inserted columns, quoted.
    names: String,
    /// `SELECT string_agg(format('(%L::type, ...)', c1::text, ...), ', ')` over a range of
    /// [`NUMBERED`]: the rows as a `VALUES` list, quoted by the server (`%L`).
    values_of_range: String,
}

impl Insert {
    fn new(table: &Table) -> Self {
        let inserted: Vec<&Column> = table.columns.iter().filter(|c| !c.generated).collect();
        let names: Vec<String> = inserted.iter().map(|c| quote_ident(&c.name)).collect();
        let overriding = if inserted.iter().any(|c| c.identity) {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let head = format!(
            "INSERT INTO {} ({}){overriding}",
            table.sql_name(),
            names.join(", ")
        );
        // `%` in a type name would be a format directive: doubled.
        let row_format: Vec<String> = inserted
            .iter()
            .map(|c| format!("%L::{}", c.type_name.replace('%', "%%")))
            .collect();
        let texts: Vec<String> = inserted
            .iter()
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect();
        let values_of_range = format!(
            "SELECT string_agg(format({}, {}), ', ' ORDER BY {LINE}) FROM {NUMBERED} WHERE {LINE} BETWEEN $1 AND $2",
            escape_literal(&format!("({})", row_format.join(", "))),
            texts.join(", ")
        );
        Self {
            head,
            names: names.join(", "),
            values_of_range,
        }
    }

    /// Every staged row, in one statement.
    fn all_staged(&self) -> String {
        format!("{} SELECT {} FROM {STAGING}", self.head, self.names)
    }

    /// Inserts the numbered rows `low..=high`: with `INSERT ... SELECT`, or with the rows
    /// fetched as a `VALUES` list and sent back in one `INSERT ... VALUES` (`values`).
    async fn range(
        &self,
        session: &Session,
        low: i64,
        high: i64,
        values: bool,
    ) -> Result<Result<u64, tokio_postgres::Error>, LifecycleError> {
        let params: [&(dyn ToSql + Sync); 2] = [&low, &high];
        if !values {
            let sql = format!(
                "{} SELECT {} FROM {NUMBERED} WHERE {LINE} BETWEEN $1 AND $2",
                self.head, self.names
            );
            return Ok(session.execute(&sql, &params).await);
        }
        let rows = session
            .query(&self.values_of_range, &params, "reading the staged rows")
            .await?;
        let Some(list) = rows.first().and_then(|row| row.get::<_, Option<String>>(0)) else {
            return Ok(Ok(0));
        };
        Ok(session
            .execute(&format!("{} VALUES {list}", self.head), &[])
            .await)
    }
}

/// The tables among `tables` that Citus manages (distributed or reference), read from the
/// Citus catalog; none on a server without Citus.
async fn citus_tables(
    session: &Session,
    tables: &[Table],
) -> Result<Vec<crate::policy::QualifiedName>, LifecycleError> {
    let context = "reading which tables Citus manages";
    let has_citus: bool = session
        .query(
            "SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
            &[],
            context,
        )
        .await?
        .first()
        .is_some_and(|row| row.get(0));
    if !has_citus {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for table in tables {
        let managed: bool = session
            .query(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1::text::regclass)",
                &[&table.sql_name()],
                context,
            )
            .await?
            .first()
            .is_some_and(|row| row.get(0));
        if managed {
            found.push(table.marked.table.clone());
        }
    }
    Ok(found)
}

/// The line number in the context of a `COPY` error: `COPY t, line 3, column id: "x"`.
fn copy_line(context: &str) -> Option<u64> {
    let rest = context.split(", line ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Appends one row in `COPY`'s text format: tab-separated, `\\N` for NULL, backslash,
/// newline, carriage return and tab escaped.
fn copy_text_row(out: &mut BytesMut, values: &[Option<String>]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.put_u8(b'\t');
        }
        match value {
            None => out.put_slice(b"\\N"),
            Some(value) => {
                for byte in value.bytes() {
                    match byte {
                        b'\\' => out.put_slice(b"\\\\"),
                        b'\n' => out.put_slice(b"\\n"),
                        b'\r' => out.put_slice(b"\\r"),
                        b'\t' => out.put_slice(b"\\t"),
                        other => out.put_u8(other),
                    }
                }
            }
        }
    }
    out.put_u8(b'\n');
}

/// One row of a version-1 table file: an object with a string or null for each of the
/// file's `columns` and nothing else. Returns the values in `columns`' order.
fn parse_row(line: &str, columns: &[&str]) -> Result<Vec<Option<String>>, String> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut values = Vec::with_capacity(columns.len());
    for column in columns {
        match object.remove(*column) {
            Some(serde_json::Value::String(s)) => values.push(Some(s)),
            Some(serde_json::Value::Null) => values.push(None),
            Some(other) => {
                return Err(format!(
                    "column {column:?} is {other}, not a string or null"
                ));
            }
            None => return Err(format!("column {column:?} is missing")),
        }
    }
    if let Some(extra) = object.keys().next() {
        return Err(format!("column {extra:?} does not exist in the table"));
    }
    Ok(values)
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

/// Moves each serial or identity sequence past the largest id the tenant now has, when
/// its next value is not already past it. The tenant's rows suffice: every other row's id
/// came from the sequence (or from an earlier import that advanced it). `setval` needs
/// `UPDATE` on the sequence, which the tenant role lacks and the login role has when it
/// owns the tables: that statement runs after `SET LOCAL ROLE NONE`, in the same
/// transaction, and the tenant role is set again right after it. An insert by someone else
/// that draws from the sequence meanwhile may collide with an imported id: the key refuses
/// it, nothing is overwritten.
async fn advance_sequences(
    session: &Session,
    tables: &[Table],
    tenant_role: &str,
) -> Result<Vec<String>, LifecycleError> {
    struct Behind {
        sequence: String,
        max_id: Option<i64>,
        updatable: bool,
        login: String,
    }
    let mut behind = Vec::new();
    for table in tables {
        for column in &table.columns {
            let Some(sequence) = &column.sequence else {
                continue;
            };
            // As the tenant: RLS shows its own rows, which is all that is needed. The
            // sequence name comes from pg_get_serial_sequence, quoted by the server.
            let context = format!("reading sequence {sequence}");
            let rows = session
                .query(
                    &format!(
                        "SELECT m.max_id::int8,
                            coalesce(p.seqincrement > 0 AND m.max_id::numeric >= CASE WHEN s.is_called
                                THEN s.last_value::numeric + p.seqincrement ELSE s.last_value END,
                                false),
                            has_sequence_privilege(session_user, $1::text, 'UPDATE'),
                            session_user::text
                         FROM {sequence} s
                         JOIN pg_sequence p ON p.seqrelid = $1::text::regclass
                         CROSS JOIN (SELECT max({column}) AS max_id FROM {table}) m",
                        column = quote_ident(&column.name),
                        table = table.sql_name(),
                    ),
                    &[sequence],
                    &context,
                )
                .await?;
            if let Some(row) = rows.first()
                && row.get::<_, bool>(1)
            {
                behind.push(Behind {
                    sequence: sequence.clone(),
                    max_id: row.get(0),
                    updatable: row.get(2),
                    login: row.get(3),
                });
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
    session
        .batch(
            "SET LOCAL ROLE NONE",
            "switching to the login role to advance sequences",
        )
        .await?;
    for s in &behind {
        if let Some(max) = s.max_id {
            session
                .query(
                    "SELECT setval($1::text::regclass, $2)",
                    &[&s.sequence, &max],
                    &format!("advancing sequence {}", s.sequence),
                )
                .await?;
        }
    }
    // Back to the tenant role at once: whatever still runs in this transaction (deferred
    // constraint triggers fire at the commit) runs as the tenant, never as the login role,
    // which may be the owner or a superuser and would see every tenant.
    session
        .batch(
            &format!("SET LOCAL ROLE {}", quote_ident(tenant_role)),
            "switching back to the tenant role after advancing sequences",
        )
        .await?;
    Ok(behind.into_iter().map(|s| s.sequence).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_reads_back() {
        let mut out = BytesMut::new();
        copy_text_row(
            &mut out,
            &[
                Some("a\tb\\c\nd\re".into()),
                None,
                Some(String::new()),
                Some("\\N".into()),
            ],
        );
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd\\re\t\\N\t\t\\\\N\n");
    }

    #[test]
    fn the_line_of_a_copy_error() {
        assert_eq!(
            copy_line("COPY tenants_import, line 3, column id: \"x\""),
            Some(3)
        );
        assert_eq!(copy_line("COPY tenants_import, line 12"), Some(12));
        assert_eq!(copy_line("SQL statement"), None);
    }
}
