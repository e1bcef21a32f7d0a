//! A multi-tenant todo service: the Rust counterpart of sqlalchemy-tenants' FastAPI example.
//!
//! Each request carries an HS256 JWT naming its tenant; [`auth::Tenant`] verifies it and
//! [`db::Db`] (`tenants_core::axum::TenantDb`) hands the handler a connection inside a
//! transaction scoped to that tenant, committed when the handler succeeds. PostgreSQL's
//! Row-Level Security keeps tenants apart even where a query forgot its
//! `WHERE tenant = ...`.
//!
//! At start-up the service creates its database if missing, applies its embedded
//! migrations, and refuses to start when `TenantPool::verify` finds the database out of
//! line with the `#[with_rls]` tables. The binary is a thin wrapper around [`main`].

pub mod auth;
pub mod db;
pub mod error;
pub mod routes;
pub mod settings;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use tenants_core::TenantPool;

use crate::auth::JwtAuth;
use crate::settings::{Settings, TenantFilter, redact_url};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tenant-scoped pool: verified at start-up, then the request transactions'.
    pub pool: TenantPool,
    /// The token verifier.
    pub auth: Arc<JwtAuth>,
    /// Whether queries filter by tenant themselves.
    pub tenant_filter: TenantFilter,
}

impl FromRef<AppState> for Arc<JwtAuth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// Why the service did not start (or stopped serving).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// An environment variable is unusable.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// The database could not be reached.
    #[error(
        "cannot connect to the database at {url}: {message}\nhint: is PostgreSQL running? Set DATABASE_URL or the POSTGRES_* variables (see examples/todo-api/README.md)"
    )]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The driver's message.
        message: String,
    },
    /// A migration failed.
    #[error("cannot apply the migrations: {0}")]
    Migrations(String),
    /// `verify()` found the database out of line with the `#[with_rls]` tables.
    #[error(
        "refusing to start: the database does not enforce Row-Level Security as the #[with_rls] tables require:\n{0}hint: the database was changed after its migrations ran; restore what is listed (the SQL is in examples/todo-api/migrations/2026-11-25-000001_tenants_rls/up.sql)"
    )]
    Drift(tenants_core::VerifyReport),
    /// `verify()` itself failed.
    #[error("cannot verify the database: {0}")]
    Verify(tenants_core::Error),
    /// The listening socket.
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        /// The `BIND` value.
        bind: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// A start-up task panicked or was cancelled.
    #[error("start-up task failed: {0}")]
    Task(String),
    /// The demo tokens could not be made.
    #[error("cannot issue the demo tokens: {0}")]
    Tokens(String),
}

impl StartupError {
    pub(crate) fn connect(url: &str, error: impl std::fmt::Display) -> Self {
        StartupError::Connect {
            url: redact_url(url),
            message: error.to_string().trim().to_string(),
        }
    }
}

/// The process entry point: logging, settings, a Tokio runtime, then [`serve`]. Errors go
/// to stderr and make the exit code non-zero (2 for bad settings, 1 otherwise).
pub fn main() -> ExitCode {
    init_tracing();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("todo-api: invalid settings: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("todo-api: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("todo-api: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prepares the database, verifies it, and serves until `shutdown` completes; then lets
/// in-flight requests finish.
///
/// Prints `listening on http://ADDR` on stdout once the socket is bound (with `BIND`'s
/// port 0, the port the OS picked).
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    tracing::info!(?settings, "starting");
    let (url, database, login) = (
        settings.database_url.clone(),
        settings.database.clone(),
        settings.serving_login.clone(),
    );
    let applied = tokio::task::spawn_blocking(move || {
        db::prepare_database(&url, database.as_deref(), login.as_deref())
    })
    .await
    .map_err(|e| StartupError::Task(e.to_string()))??;
    for version in &applied {
        tracing::info!(%version, "applied migration");
    }

    let pool = db::pool(&settings)
        .await
        .map_err(|e| StartupError::connect(&settings.serving_url, e))?;
    // `verify` logs each warning itself.
    match pool.verify().await {
        Ok(_) => {}
        Err(tenants_core::Error::Drift(report)) => return Err(StartupError::Drift(report)),
        Err(e) if e.is_unavailable() => {
            return Err(StartupError::connect(&settings.serving_url, e));
        }
        Err(e) => return Err(StartupError::Verify(e)),
    }
    if settings.tenant_filter == TenantFilter::RlsOnly {
        tracing::warn!(
            "TENANT_FILTER=rls-only: queries carry no tenant filter; Row-Level Security alone isolates tenants"
        );
    }

    let (auth, demo) = match &settings.jwt_secret {
        Some(secret) => {
            if secret.len() < 32 {
                tracing::warn!("JWT_SECRET is shorter than 32 bytes; use a longer random secret");
            }
            (
                JwtAuth::new(secret, settings.jwt_audience.as_deref()),
                false,
            )
        }
        None => {
            let mut secret = [0_u8; 32];
            getrandom::fill(&mut secret).map_err(|e| StartupError::Tokens(e.to_string()))?;
            (
                JwtAuth::new(&secret, settings.jwt_audience.as_deref()),
                true,
            )
        }
    };
    let state = AppState {
        pool,
        auth: Arc::new(auth),
        tenant_filter: settings.tenant_filter,
    };

    let listener = tokio::net::TcpListener::bind(&settings.bind)
        .await
        .map_err(|source| StartupError::Bind {
            bind: settings.bind.clone(),
            source,
        })?;
    let address = listener.local_addr().map_err(StartupError::Serve)?;
    if demo {
        print_demo_tokens(&state.auth, &format!("http://{address}"))?;
    }
    println!("listening on http://{address}");
    tracing::info!(%address, "listening");

    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartupError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints two ready tokens (tenants `acme` and `globex`) and example requests.
fn print_demo_tokens(auth: &JwtAuth, base: &str) -> Result<(), StartupError> {
    let ttl = Duration::from_secs(24 * 3600);
    let issue = |tenant| {
        auth.issue(tenant, ttl)
            .map_err(|e| StartupError::Tokens(e.to_string()))
    };
    let acme = issue("acme")?;
    let globex = issue("globex")?;
    println!(
        "JWT_SECRET is not set: tokens are signed with a random secret that lives as long as this process.
Two tokens, valid for 24 hours:

export ACME_TOKEN={acme}
export GLOBEX_TOKEN={globex}

Then try:

curl -s -X POST {base}/todos -H \"Authorization: Bearer $ACME_TOKEN\" -H 'content-type: application/json' -d '{{\"name\": \"write the report\"}}'
curl -s {base}/todos -H \"Authorization: Bearer $ACME_TOKEN\"
curl -s {base}/todos -H \"Authorization: Bearer $GLOBEX_TOKEN\"   # globex sees none of acme's todos
"
    );
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(%e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(%e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
