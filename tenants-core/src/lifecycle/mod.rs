//! The tenant lifecycle: which tenants exist and how big they are ([`list_tenants`]), hand a
//! tenant its data ([`export_tenant`]), load it into another database ([`import_tenant`]),
//! and delete it for good ([`purge_tenant`]), across every marked table at once.
//!
//! Every operation on one tenant runs inside that tenant's own transaction, so the RLS
//! policies guarantee it cannot read or write another tenant's rows: an export cannot leak
//! them, an import of a file holding one is refused by PostgreSQL, a purge cannot delete
//! them. Only [`list_tenants`] reads as admin.
//!
//! The tables come as [`MarkedTable`]s: from the registry with
//! [`crate::verify::marked_tables`]`(&`[`crate::registry::tables`]`())`, or from the
//! sources as the `tenants` CLI finds them. Their order between each other comes from the
//! catalog's foreign keys among them: parents before children for an import, children
//! before parents for a purge.
//!
//! # The export format
//!
//! A directory holding `manifest.json` ([`Manifest`]) and one file per table,
//! `NN-<schema>.<table>.tsv`, in parent-before-child order. Each table file is what
//! `COPY (SELECT <columns> FROM <table> ORDER BY <primary key>) TO STDOUT` writes in its
//! text format, with settings that make every value's text form unambiguous whatever the
//! server's defaults: one line per row, the columns in table order separated by tabs,
//! `\N` for SQL `NULL`, backslash escapes for tabs, newlines and backslashes; each value
//! in PostgreSQL's text form (read back by the column's input function, so every type
//! round-trips exactly, a `json` null included). The manifest records the format version
//! ([`FORMAT_VERSION`], 2), the tool version, the tenant, the snapshot's time, and per
//! table its schema, name, tenant column, columns with their types, primary key, row count
//! and the SHA-256 of its file. Version 1 exports (one JSON object of text values per line,
//! `.jsonl`) still import.
//!
//! Export and import run `COPY` on a connection of their own, opened from the pool's URL
//! (diesel-async has no `COPY`; see `session.rs`), inside the tenant's transaction:
//! the export's `COPY (SELECT ...)` is a query the policies apply to, and the import copies
//! into a temporary table and inserts from there, so that `WITH CHECK` judges every row
//! (PostgreSQL refuses `COPY FROM` into a table under RLS).
//!
//! The checksums detect a damaged or edited file; they are not a signature (whoever can
//! edit a file can edit the manifest). What keeps an import from writing another tenant's
//! rows is RLS: the rows are inserted in the tenant's transaction, and the policy's
//! `WITH CHECK` refuses any other tenant's row.
//!
//! File I/O is blocking (`std::fs`) in these async functions: they are meant for tools and
//! jobs, not for the request path of a server.

mod export;
mod import;
mod layout;
mod list;
mod manifest;
mod purge;
mod session;

use std::path::PathBuf;

use crate::catalog::MarkedTable;
use crate::config::Config;
use crate::error::Error;
use crate::policy::QualifiedName;
use crate::registry::TenantSqlType;
use crate::tenant::{InvalidTenantId, Tenant, TenantId};

pub use export::{EmptyExport, export_tenant};
pub use import::{ImportReport, import_tenant};
pub use list::{TenantList, TenantRows, display_tenant, list_tenants};
pub use manifest::{
    ColumnExport, FORMAT, FORMAT_VERSION, MANIFEST_FILE, MAX_LINE_BYTES, Manifest, TableExport,
    file_sha256,
};
pub use purge::{PurgeMode, PurgeReport, purge_tenant};

/// Rows of one table: what export, import and purge report per table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableRows {
    /// The table.
    #[serde(serialize_with = "serialize_name")]
    pub table: QualifiedName,
    /// How many rows.
    pub rows: u64,
}

fn serialize_name<S: serde::Serializer>(name: &QualifiedName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&plain_name(name))
}

/// `schema.table` without quotes: for keys in JSON output and file names.
pub fn plain_name(name: &QualifiedName) -> String {
    format!("{}.{}", name.schema, name.name)
}

/// Everything that stops a lifecycle operation. Whatever the error, nothing was written
/// to the database (the transaction is rolled back) and an export left no directory.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A pool, connection or tenant id error of the runtime.
    #[error("{0}")]
    Tenants(#[from] Error),
    /// The tenant id is not a value of a marked table's tenant column type.
    #[error("invalid tenant id for {table}: {source}")]
    TenantType {
        /// The table whose tenant column cannot hold it.
        table: QualifiedName,
        /// Why.
        source: InvalidTenantId,
    },
    /// A statement failed.
    #[error("{context}: {source}")]
    Database {
        /// What was being done, naming the table.
        context: String,
        /// The database's error.
        source: diesel::result::Error,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `export` refuses to write into a directory that holds anything.
    #[error(
        "{} is not empty\nhint: export into a new or empty directory; nothing was written",
        .0.display()
    )]
    OutputNotEmpty(PathBuf),
    /// The tenant has no row in any marked table: most likely a mistyped id. Nothing was
    /// written.
    #[error(
        "tenant {tenant:?} has no rows in the marked tables; nothing was written\nhint: check the id (`tenants list` shows every tenant with rows), or export it anyway (--allow-empty, EmptyExport::Write)"
    )]
    NoRows {
        /// The tenant asked for.
        tenant: String,
    },
    /// A line of a table file is longer than [`MAX_LINE_BYTES`]: it is refused before it
    /// is read whole, so a damaged or hostile file cannot exhaust memory.
    #[error(
        "{table}: row {row} of {} is longer than {limit} bytes\nhint: the file is damaged, or a row of the export is larger than an import reads; nothing was imported",
        file.display()
    )]
    LineTooLong {
        /// The table.
        table: QualifiedName,
        /// Its file.
        file: PathBuf,
        /// The row's 1-based line number in the file.
        row: u64,
        /// [`MAX_LINE_BYTES`].
        limit: usize,
    },
    /// The pool was built by [`crate::TenantPool::new`] from a bb8 pool: export and import
    /// open a connection of their own for `COPY`, and need the URL.
    #[error(
        "export and import need the database URL, which a pool built by TenantPool::new does not know\nhint: build the pool with TenantPool::connect_with"
    )]
    NoDatabaseUrl,
    /// `manifest.json` is not a manifest this version reads.
    #[error("{}: not a tenants export manifest: {message}", path.display())]
    Manifest {
        /// The manifest's path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The export belongs to another tenant than the one asked for.
    #[error(
        "the export holds tenant {exported:?}, not {requested:?}\nhint: import it with --tenant {exported:?}"
    )]
    TenantMismatch {
        /// The manifest's tenant.
        exported: String,
        /// The tenant asked for.
        requested: String,
    },
    /// A table of the export is not among the marked tables of the target.
    #[error(
        "{table} is in the export but not marked #[with_rls] here\nhint: import into a database of the same application, or mark the table"
    )]
    TableNotMarked {
        /// The table.
        table: QualifiedName,
    },
    /// A marked table does not exist in the database.
    #[error("{table} does not exist in the database\nhint: run the migrations first")]
    TableMissing {
        /// The table.
        table: QualifiedName,
    },
    /// The export's columns of a table differ from the target's.
    #[error(
        "{table}: the export's columns differ from the database's: {differences}\nhint: migrate the target to the schema the export was taken from"
    )]
    ColumnMismatch {
        /// The table.
        table: QualifiedName,
        /// Each difference, `;`-separated.
        differences: String,
    },
    /// A table file's SHA-256 is not the manifest's.
    #[error(
        "{table}: {} has SHA-256 {actual}, the manifest says {expected}: the file was changed or damaged",
        file.display()
    )]
    Checksum {
        /// The table.
        table: QualifiedName,
        /// Its file.
        file: PathBuf,
        /// The manifest's checksum.
        expected: String,
        /// The file's.
        actual: String,
    },
    /// A table file has another number of rows than the manifest says.
    #[error("{table}: {} holds {actual} rows, the manifest says {expected}", file.display())]
    RowCount {
        /// The table.
        table: QualifiedName,
        /// Its file.
        file: PathBuf,
        /// The manifest's count.
        expected: u64,
        /// The file's.
        actual: u64,
    },
    /// The database refused a row of an import.
    #[error("{table}: row {row} of {} refused: {reason}", file.display())]
    RowRefused {
        /// The table.
        table: QualifiedName,
        /// Its file.
        file: PathBuf,
        /// The row's 1-based line number in the file.
        row: u64,
        /// Why (the database's message and detail).
        reason: String,
    },
    /// An import moved another number of rows into a table than its file holds (a defect
    /// of the import's own statements, never of the data): nothing is written.
    #[error(
        "{table}: {actual} rows inserted where the export holds {expected}; nothing was imported"
    )]
    RowsMoved {
        /// The table.
        table: QualifiedName,
        /// The export's count (the manifest's, which the file matched).
        expected: u64,
        /// The rows the inserts reported.
        actual: u64,
    },
    /// The foreign keys among the marked tables form a cycle of constraints that are not
    /// deferrable: no order of the tables satisfies them.
    #[error(
        "the foreign keys among the marked tables form a cycle: {}\nhint: make one of its constraints DEFERRABLE",
        .cycle.iter().map(ToString::to_string).collect::<Vec<_>>().join(" -> ")
    )]
    ForeignKeyCycle {
        /// The tables of the cycle, the first repeated at the end.
        cycle: Vec<QualifiedName>,
    },
    /// Advancing a sequence past the imported ids needs `UPDATE` on it.
    #[error(
        "cannot advance sequence {sequence} past the imported ids: the login role {role:?} lacks UPDATE on it\nhint: GRANT UPDATE ON SEQUENCE {sequence} TO \"{role}\", or import as the tables' owner; nothing was imported"
    )]
    SequencePrivilege {
        /// The sequence, as PostgreSQL names it.
        sequence: String,
        /// The login role.
        role: String,
    },
}

/// The context of a database error: what was being done.
fn db(context: impl Into<String>) -> impl FnOnce(diesel::result::Error) -> LifecycleError {
    let context = context.into();
    move |source| LifecycleError::Database { context, source }
}

/// `id` as a tenant of every table: accepted by each tenant column's type, in the
/// canonical form of the typed ones (what PostgreSQL prints for the value).
fn tenant_for(
    config: &Config,
    tables: &[MarkedTable],
    id: impl TenantId,
) -> Result<Tenant, LifecycleError> {
    let mut tenant = config.tenant(id).map_err(Error::from)?;
    for table in tables {
        let typed = Tenant::of_type(&tenant, table.key.sql_type).map_err(|source| {
            LifecycleError::TenantType {
                table: table.table.clone(),
                source,
            }
        })?;
        if !matches!(
            table.key.sql_type,
            TenantSqlType::Text | TenantSqlType::VarChar
        ) {
            tenant = typed;
        }
    }
    Ok(tenant)
}

/// Session settings that make every value's text form unambiguous whatever the server's
/// defaults (dates in ISO, intervals in ISO 8601, bytea in hex, floats exact), so an
/// export reads back the same on any server. Transaction-local.
const TEXT_FORMAT_SETTINGS: &str = "SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'iso_8601'; SET LOCAL bytea_output = 'hex'; SET LOCAL extra_float_digits = 3";
