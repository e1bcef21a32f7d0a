//! Where the database and the migrations are, resolved as diesel_cli resolves them.

use std::path::{Path, PathBuf};

use crate::Options;

/// Unusable settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// No database URL anywhere.
    #[error(
        "no database URL\nhint: pass --database-url, or set DATABASE_URL (in the environment or the crate's .env)"
    )]
    NoDatabaseUrl,
    /// `diesel.toml` exists but cannot be read.
    #[error("{path}: {message}")]
    DieselToml {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The resolved settings of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The database.
    pub database_url: String,
}

#[derive(serde::Deserialize)]
struct DieselToml {
    migrations_directory: Option<MigrationsDirectory>,
}

#[derive(serde::Deserialize)]
struct MigrationsDirectory {
    dir: PathBuf,
}

impl Settings {
    /// `--database-url`, else `DATABASE_URL`, else `DATABASE_URL` in `<crate>/.env`.
    pub fn resolve(options: &Options) -> Result<Self, SettingsError> {
        let crate_dir = crate_root(&options.crate_dir);
        let database_url = match &options.database_url {
            Some(url) => url.clone(),
            None => match std::env::var("DATABASE_URL") {
                Ok(url) => url,
                Err(_) => dotenv_url(&crate_dir).ok_or(SettingsError::NoDatabaseUrl)?,
            },
        };
        Ok(Self { database_url })
    }
}

/// Where migrations are written: `--migration-dir`, else `diesel.toml`'s
/// `[migrations_directory] dir`, else `migrations`, relative to the crate directory.
pub fn migration_dir(crate_dir: &Path, given: Option<PathBuf>) -> Result<PathBuf, SettingsError> {
    let crate_dir = crate_root(crate_dir);
    Ok(match given {
        Some(dir) => crate_dir.join(dir),
        None => crate_dir.join(diesel_toml_dir(&crate_dir)?),
    })
}

/// The crate `dir` belongs to: `dir` itself when it holds a `Cargo.toml` or a `src/`,
/// else its nearest ancestor holding a `Cargo.toml` (so `tenants` works from `src/` or
/// deeper, as diesel does); `dir` when there is none.
pub fn crate_root(dir: &Path) -> PathBuf {
    if dir.join("Cargo.toml").is_file() || dir.join("src").is_dir() {
        return dir.to_path_buf();
    }
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute
        .ancestors()
        .find(|d| d.join("Cargo.toml").is_file())
        .map_or_else(|| dir.to_path_buf(), Path::to_path_buf)
}

/// `DATABASE_URL` from the nearest `.env` in `crate_dir` or a parent directory, as diesel's
/// dotenv lookup finds it.
fn dotenv_url(crate_dir: &Path) -> Option<String> {
    let env_file = crate_dir
        .ancestors()
        .map(|d| d.join(".env"))
        .find(|f| f.is_file())?;
    dotenvy::from_path_iter(env_file)
        .ok()?
        .filter_map(Result::ok)
        .find(|(key, _)| key == "DATABASE_URL")
        .map(|(_, value)| value)
}

fn diesel_toml_dir(crate_dir: &Path) -> Result<PathBuf, SettingsError> {
    let path = crate_dir.join("diesel.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok("migrations".into()),
        Err(e) => {
            return Err(SettingsError::DieselToml {
                path,
                message: e.to_string(),
            });
        }
    };
    let toml: DieselToml = toml::from_str(&text).map_err(|e| SettingsError::DieselToml {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(toml
        .migrations_directory
        .map_or_else(|| "migrations".into(), |m| m.dir))
}
