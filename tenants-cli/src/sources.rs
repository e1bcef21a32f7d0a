//! Finds the `#[with_rls]` tables of a crate by parsing its sources (the crate is not
//! built), with the parser the macro itself uses.

use std::path::{Path, PathBuf};

use tenants_core::policy::QualifiedName;
use tenants_core::registry::TenantSqlType;

/// A source file that cannot be read or parsed, or an item marked wrongly.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The crate has no `src/` directory.
    #[error(
        "{0}: no src/ directory here\nhint: point --crate-dir at the crate holding the #[with_rls] items"
    )]
    NoSources(PathBuf),
    /// A file or directory could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file is not valid Rust, or a `#[with_rls]` item in it is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// Two marks of one table disagree on its tenant column.
    #[error(
        "{table} is marked twice with different tenant columns: \"{first}\" and \"{second}\"\nhint: mark the table once, or give both marks the same column"
    )]
    Conflict {
        /// The table.
        table: QualifiedName,
        /// One column.
        first: String,
        /// The other.
        second: String,
    },
}

/// A marked table as the sources say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The table.
    pub table: QualifiedName,
    /// Its tenant column.
    pub column: String,
    /// Its tenant column's type; `None` for a table marked only through a struct (the
    /// type lives in the schema, which the struct form does not parse).
    pub sql_type: Option<TenantSqlType>,
}

/// What the sources of a crate mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// The `#[with_rls]` tables, once each, sorted.
    pub tables: Vec<Marked>,
    /// The `#[shared]` tables, once each, sorted.
    pub shared: Vec<QualifiedName>,
    /// The `src/` directory they were read from.
    pub src: PathBuf,
}

impl Marks {
    /// What was found where, stated by every command that compares: zero marks is the
    /// likeliest sign of marks lost to `diesel print-schema`.
    pub fn summary(&self) -> String {
        format!(
            "tenants: {} #[with_rls] table(s) and {} #[shared] table(s) in {}",
            self.tables.len(),
            self.shared.len(),
            self.src.display()
        )
    }
}

/// Every table marked in `crate_dir/src`, once each, sorted; tables without a schema of
/// their own (`public`) are placed in `default_schema`.
pub fn marks(crate_dir: &Path, default_schema: &str) -> Result<Marks, SourceError> {
    let crate_dir = crate::settings::crate_root(crate_dir);
    let src = crate_dir.join("src");
    if !src.is_dir() {
        return Err(SourceError::NoSources(crate_dir));
    }
    let mut files = Vec::new();
    collect_rs_files(&src, &mut files)?;
    files.sort();

    let mut marked: Vec<Marked> = Vec::new();
    let mut shared: Vec<QualifiedName> = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|error| SourceError::Io {
            path: path.clone(),
            error,
        })?;
        let file = syn::parse_file(&text).map_err(|e| parse_error(&path, &e))?;
        let marks = tenants_syntax::file_marks(&file);
        for table in marks.shared {
            let table = table.map_err(|e| parse_error(&path, &e))?;
            let schema = match table.schema.as_str() {
                "public" => default_schema,
                schema => schema,
            };
            shared.push(QualifiedName::new(schema, table.name));
        }
        for item in marks.marked {
            let item = item.map_err(|e| parse_error(&path, &e))?;
            let schema = match item.schema() {
                "public" => default_schema,
                schema => schema,
            };
            let found = Marked {
                table: QualifiedName::new(schema, item.table_name()),
                column: item.tenant_column(),
                sql_type: item.sql_type(),
            };
            match marked.iter_mut().find(|m| m.table == found.table) {
                None => marked.push(found),
                Some(existing) if existing.column != found.column => {
                    return Err(SourceError::Conflict {
                        table: found.table,
                        first: existing.column.clone(),
                        second: found.column,
                    });
                }
                // The table form knows the type; a struct of the same table adds nothing.
                Some(existing) => existing.sql_type = existing.sql_type.or(found.sql_type),
            }
        }
    }
    marked.sort_by(|a, b| a.table.cmp(&b.table));
    shared.sort();
    shared.dedup();
    Ok(Marks {
        tables: marked,
        shared,
        src,
    })
}

fn parse_error(path: &Path, error: &syn::Error) -> SourceError {
    let start = error.span().start();
    SourceError::Parse {
        path: path.to_path_buf(),
        line: start.line,
        column: start.column + 1,
        message: error.to_string(),
    }
}

fn collect_rs_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let io = |error| SourceError::Io {
        path: dir.to_path_buf(),
        error,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_rs_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}
