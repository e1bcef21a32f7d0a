//! `export`: a tenant's rows of every marked table, in one snapshot, into a new directory.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::layout::{Layout, Table};
use super::manifest::{
    ColumnExport, FORMAT, FORMAT_VERSION, HashingWriter, Manifest, TableExport, create_private_dir,
    create_private_file, non_empty_dir,
};
use super::session::Session;
use super::{LifecycleError, TEXT_FORMAT_SETTINGS, plain_name, tenant_for};
use crate::catalog::MarkedTable;
use crate::pool::TenantPool;
use crate::tenant::{Tenant, TenantId, escape_literal, quote_ident};

/// What [`export_tenant`] does for a tenant without a single row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyExport {
    /// Refuse ([`LifecycleError::NoRows`]) and write nothing: an id without rows is most
    /// likely mistyped, and an empty export handed over as "the customer's data" is a
    /// silent failure.
    Refuse,
    /// Write the export all the same (every table file empty).
    Write,
}

/// Exports `tenant`'s rows of every table in `tables` into the directory `out`, which
/// must not exist or be empty; returns the manifest written. A tenant without any row is
/// refused unless `empty` is [`EmptyExport::Write`].
///
/// All tables are read in one `REPEATABLE READ`, read-only tenant transaction (one
/// snapshot; RLS guarantees no other tenant's row is read), each with
/// `COPY (SELECT ...) TO STDOUT` on a connection of the export's own (opened from the
/// pool's URL: the pool must come from [`TenantPool::connect_with`]). The files go to a temporary
/// sibling directory first, renamed to `out` at the end: a failure leaves nothing behind.
/// The directory and its files are created readable by their owner only (`0700`/`0600`
/// on Unix): they hold the tenant's data.
///
/// ```no_run
/// # async fn run(pool: &tenants_core::TenantPool) -> Result<(), tenants_core::lifecycle::LifecycleError> {
/// use tenants_core::{lifecycle, registry, verify};
/// let tables = verify::marked_tables(&registry::tables());
/// let out = "acme-export".as_ref();
/// let manifest = lifecycle::export_tenant(pool, &tables, "acme", out, lifecycle::EmptyExport::Refuse).await?;
/// # let _ = manifest;
/// # Ok(()) }
/// ```
pub async fn export_tenant(
    pool: &TenantPool,
    tables: &[MarkedTable],
    tenant: impl TenantId,
    out: &Path,
    empty: EmptyExport,
) -> Result<Manifest, LifecycleError> {
    let tenant = tenant_for(pool.config(), tables, tenant)?;
    if non_empty_dir(out)? {
        return Err(LifecycleError::OutputNotEmpty(out.to_path_buf()));
    }
    // The layout first, in a short transaction of its own on the pool: a table the
    // database lacks is refused before any file is written.
    let layout = {
        let mut conn = pool.tenant(&tenant).await?;
        let layout = Layout::read(&mut conn, tables).await?;
        conn.commit().await?;
        layout
    };
    let staging = Staging::create(out)?;

    // One snapshot for every table: the isolation level goes into the begin batch's BEGIN.
    let session = Session::begin(
        pool,
        &tenant,
        Some("ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
    )
    .await?;
    session
        .batch(TEXT_FORMAT_SETTINGS, "setting the text formats")
        .await?;
    let snapshot_at: String = session
        .query("SELECT now()::text", &[], "reading the snapshot's time")
        .await?
        .first()
        .map(|row| row.get(0))
        .unwrap_or_default();
    let mut exported = Vec::with_capacity(layout.tables.len());
    for (i, table) in layout.tables.iter().enumerate() {
        exported.push(export_table(&session, &tenant, table, i + 1, &staging.path).await?);
    }
    session.commit().await?;
    if empty == EmptyExport::Refuse && exported.iter().all(|t| t.rows == 0) {
        return Err(LifecycleError::NoRows {
            tenant: tenant.as_str().to_string(),
        });
    }

    let manifest = Manifest {
        format: FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        tool: concat!("tenants-core ", env!("CARGO_PKG_VERSION")).to_string(),
        tenant: tenant.as_str().to_string(),
        snapshot_at,
        tables: exported,
    };
    manifest.write(&staging.path)?;
    staging.publish(out)?;
    Ok(manifest)
}

/// Writes one table's rows with `COPY (SELECT ...) TO STDOUT`, streamed to the file as the
/// server sends them, and returns its manifest entry. The `SELECT` runs in the tenant's
/// transaction, so the policies apply to it as to any query; its explicit tenant filter
/// (the policy's own condition) lets Citus send it to the tenant's shard alone.
async fn export_table(
    session: &Session,
    tenant: &Tenant,
    table: &Table,
    position: usize,
    dir: &Path,
) -> Result<TableExport, LifecycleError> {
    let name = &table.marked.table;
    let file = format!("{position:02}-{}.tsv", file_safe(&plain_name(name)));
    let path = dir.join(&file);
    let created = create_private_file(&path).map_err(|source| LifecycleError::Io {
        path: path.clone(),
        source,
    })?;
    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 16, created), path.clone());
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let key = &table.marked.key.column;
    let key_type = table
        .columns
        .iter()
        .find(|c| &c.name == key)
        .map_or("text", |c| c.type_name.as_str());
    let sql = format!(
        "COPY (SELECT {} FROM {} WHERE {} = {}::{key_type}{}) TO STDOUT",
        columns.join(", "),
        table.sql_name(),
        quote_ident(key),
        escape_literal(tenant.as_str()),
        table.order_by()
    );
    session
        .copy_out(&sql, &format!("reading {name}"), |chunk| {
            writer.write(chunk)
        })
        .await?;
    let rows = writer.lines;
    let (buffered, sha256) = writer.finish()?;
    let created = buffered.into_inner().map_err(|e| LifecycleError::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    created.sync_all().map_err(|source| LifecycleError::Io {
        path: path.clone(),
        source,
    })?;

    Ok(TableExport {
        schema: name.schema.clone(),
        name: name.name.clone(),
        tenant_column: table.marked.key.column.clone(),
        file,
        rows,
        sha256,
        columns: table
            .columns
            .iter()
            .map(|c| ColumnExport {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
                generated: c.generated,
            })
            .collect(),
        primary_key: table.primary_key().iter().map(|c| c.name.clone()).collect(),
    })
}

/// `name` with everything but ASCII letters, digits, `.`, `_` and `-` replaced by `_`:
/// a file name on any system (the manifest keeps the real name).
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The temporary sibling directory an export is written to; removed on drop unless
/// published.
struct Staging {
    path: PathBuf,
    published: bool,
}

impl Staging {
    fn create(out: &Path) -> Result<Self, LifecycleError> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into());
        let path = parent.join(format!(".{base}.tmp-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|source| LifecycleError::Io {
                path: path.clone(),
                source,
            })?;
        }
        create_private_dir(&path).map_err(|source| LifecycleError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            published: false,
        })
    }

    /// Renames the directory to `out` (replacing `out` when it is an empty directory).
    fn publish(mut self, out: &Path) -> Result<(), LifecycleError> {
        if non_empty_dir(out)? {
            return Err(LifecycleError::OutputNotEmpty(out.to_path_buf()));
        }
        std::fs::rename(&self.path, out).map_err(|source| LifecycleError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        self.published = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: the export failed and reports why; a leftover temporary
            // directory is named after the export and removed by the next attempt.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
