//! `manifest.json`: what an export holds, and the checksum of each of its files.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::LifecycleError;
use crate::policy::QualifiedName;

/// The manifest's file name inside an export directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// [`Manifest::format`] of every export.
pub const FORMAT: &str = "tenants-export";
/// The version of the format this library writes: 2, table files in `COPY`'s text format.
/// It reads version 1 too (JSON lines, written before 0.2).
pub const FORMAT_VERSION: u32 = 2;
/// The longest line (row) of a table file an import reads, newline excluded: 16 MiB. A
/// longer line is [`LifecycleError::LineTooLong`], refused before it is read whole.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// What an export holds; see the [module documentation](super) for the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The library that wrote it, `tenants-core <version>`.
    pub tool: String,
    /// The tenant whose rows these are.
    pub tenant: String,
    /// The snapshot's time (`now()` of the export transaction), as PostgreSQL prints it.
    pub snapshot_at: String,
    /// The tables, parents before children.
    pub tables: Vec<TableExport>,
}

/// One table of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableExport {
    /// The schema.
    pub schema: String,
    /// The table.
    pub name: String,
    /// The tenant column.
    pub tenant_column: String,
    /// The file holding its rows, relative to the export directory.
    pub file: String,
    /// How many rows (lines) the file holds.
    pub rows: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// The columns, in table order.
    pub columns: Vec<ColumnExport>,
    /// The primary key's columns, in key order; the rows are sorted by it.
    pub primary_key: Vec<String>,
}

/// One column of an exported table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnExport {
    /// The column's name.
    pub name: String,
    /// Its type, as PostgreSQL's `format_type` prints it.
    #[serde(rename = "type")]
    pub type_name: String,
    /// A generated column: exported, but computed again by the target on import.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
}

impl TableExport {
    /// The table's name.
    pub fn table(&self) -> QualifiedName {
        QualifiedName::new(&self.schema, &self.name)
    }
}

/// How the rows of a table file are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowsFormat {
    /// Version 1: one JSON object of text values per line.
    JsonLines,
    /// Version 2: `COPY`'s text format (tab-separated, `\\N` for NULL, backslash escapes).
    CopyText,
}

impl Manifest {
    /// How its table files are written; `None` for a version this library does not read.
    pub(super) fn rows_format(&self) -> Option<RowsFormat> {
        match self.format_version {
            1 => Some(RowsFormat::JsonLines),
            FORMAT_VERSION => Some(RowsFormat::CopyText),
            _ => None,
        }
    }

    /// Reads `dir/manifest.json`, refusing another format or a newer version.
    pub fn read(dir: &Path) -> Result<Self, LifecycleError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| LifecycleError::Io {
            path: path.clone(),
            source,
        })?;
        let invalid = |message: String| LifecycleError::Manifest {
            path: path.clone(),
            message,
        };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(invalid(format!(
                "format is {:?}, expected {FORMAT:?}",
                manifest.format
            )));
        }
        if manifest.rows_format().is_none() {
            return Err(invalid(format!(
                "format version {} is not one this version reads (1 or {FORMAT_VERSION}); import it with the version that wrote it ({})",
                manifest.format_version, manifest.tool
            )));
        }
        for table in &manifest.tables {
            // A file name is a plain name inside the directory: no path can escape it.
            let plain = Path::new(&table.file).file_name() == Some(table.file.as_ref());
            if !plain || table.file == MANIFEST_FILE {
                return Err(invalid(format!(
                    "file {:?} of {} is not a plain file name",
                    table.file,
                    table.table()
                )));
            }
        }
        Ok(manifest)
    }

    /// Writes `dir/manifest.json` (pretty-printed, newline-terminated).
    pub fn write(&self, dir: &Path) -> Result<(), LifecycleError> {
        let path = dir.join(MANIFEST_FILE);
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| LifecycleError::Manifest {
                path: path.clone(),
                message: e.to_string(),
            })?;
        text.push('\n');
        let io = |source| LifecycleError::Io {
            path: path.clone(),
            source,
        };
        let mut file = create_private_file(&path).map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// The SHA-256 (lower-case hex) and the number of lines of the file at `path`.
pub fn file_sha256(path: &Path) -> Result<(String, u64), LifecycleError> {
    let io = |source| LifecycleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 16, std::fs::File::open(path).map_err(io)?);
    let mut hasher = Sha256::new();
    let mut lines = 0u64;
    loop {
        let chunk = reader.fill_buf().map_err(io)?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = chunk.len();
        reader.consume(n);
    }
    Ok((hex(&hasher.finalize()), lines))
}

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes and counts lines as it goes, so an export computes its checksum
/// without reading the file again.
pub(super) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    /// Lines written so far.
    pub lines: u64,
    path: PathBuf,
}

impl<W: std::io::Write> HashingWriter<W> {
    pub fn new(inner: W, path: PathBuf) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            lines: 0,
            path,
        }
    }

    /// Writes `chunk` (whole lines, as `COPY` sends them), counting its newlines.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), LifecycleError> {
        self.hasher.update(chunk);
        self.lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        self.inner
            .write_all(chunk)
            .map_err(|source| LifecycleError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Flushes and returns the inner writer and the hex SHA-256.
    pub fn finish(mut self) -> Result<(W, String), LifecycleError> {
        self.inner.flush().map_err(|source| LifecycleError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok((self.inner, hex(&self.hasher.finalize())))
    }
}

/// Creates the file at `path` for writing, readable and writable by its owner only
/// (`0600` on Unix): an export holds a tenant's data.
pub(super) fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates the directory at `path` (and its missing parents), usable by its owner only
/// (`0700` on Unix) when this call creates it.
pub(super) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Why a line of a table file could not be read.
pub(super) enum LineError {
    /// Reading failed.
    Io(std::io::Error),
    /// The line is longer than [`MAX_LINE_BYTES`].
    TooLong,
}

/// The lines of a table file, for an import (after its checksum was verified), each read
/// only up to [`MAX_LINE_BYTES`]: memory stays bounded whatever the file holds.
pub(super) struct Lines {
    reader: BufReader<std::fs::File>,
    buffer: Vec<u8>,
}

impl Lines {
    pub fn open(path: &Path) -> Result<Self, LifecycleError> {
        let file = std::fs::File::open(path).map_err(|source| LifecycleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, file),
            buffer: Vec::new(),
        })
    }

    /// The next line without its newline; `None` at the end of the file.
    pub fn next_line(&mut self) -> Option<Result<String, LineError>> {
        self.buffer.clear();
        let limit = MAX_LINE_BYTES as u64 + 1;
        match std::io::Read::take(&mut self.reader, limit).read_until(b'\n', &mut self.buffer) {
            Ok(0) => None,
            Ok(_) => {
                if self.buffer.last() == Some(&b'\n') {
                    self.buffer.pop();
                } else if self.buffer.len() > MAX_LINE_BYTES {
                    return Some(Err(LineError::TooLong));
                }
                Some(
                    String::from_utf8(std::mem::take(&mut self.buffer)).map_err(|e| {
                        LineError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                    }),
                )
            }
            Err(error) => Some(Err(LineError::Io(error))),
        }
    }
}

/// Whether the directory at `path` holds anything (false when it does not exist).
pub(super) fn non_empty_dir(path: &Path) -> Result<bool, LifecycleError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(LifecycleError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sha256_of_known_input() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
        let digest = Sha256::digest(b"abc");
        assert_eq!(
            hex(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
