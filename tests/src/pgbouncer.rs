//! A PgBouncer in transaction mode in front of the test server, started per test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::database_url;

/// A running `pgbouncer` (Debian package) on a free loopback port, stopped on drop.
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer with `pool_mode = transaction` and `pool_size` server connections
    /// per database and user, accepting `users` (trust authentication, as the server).
    pub fn start(pool_size: u32, users: &[&str]) -> Self {
        let launcher = launcher().unwrap_or_else(|missing| panic!("{missing}"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("tenants-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let (host, server_port) = crate::host_and_port(&database_url());
        let auth: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.join("users.txt"), auth).expect("auth file");
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={host} port={server_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/users.txt\n\
                 pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n\
                 ignore_startup_parameters = extra_float_digits,options\n",
                dir = dir.display()
            ),
        )
        .expect("ini");
        let output = match &launcher {
            Launcher::Direct { pgbouncer } => Command::new(pgbouncer)
                .arg("-d")
                .arg(dir.join("pgbouncer.ini"))
                .output(),
            Launcher::AsPostgres { runuser, pgbouncer } => {
                // pgbouncer refuses to run as root; the postgres user runs it, so it must
                // own the dir.
                let chown = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .status();
                assert!(
                    matches!(chown, Ok(s) if s.success()),
                    "cannot chown {} to postgres (pgbouncer runs as postgres when the tests run as root)",
                    dir.display()
                );
                Command::new(runuser)
                    .args(["-u", "postgres", "--"])
                    .arg(pgbouncer)
                    .arg("-d")
                    .arg(dir.join("pgbouncer.ini"))
                    .output()
            }
        }
        .unwrap_or_else(|e| panic!("cannot start pgbouncer: {e}"));
        if !output.status.success() {
            let log = dir.join("pgbouncer.log");
            panic!(
                "pgbouncer did not start ({}): {}{}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim(),
                if log.is_file() {
                    format!("; see {}", log.display())
                } else {
                    String::new()
                }
            );
        }
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pgbouncer is not listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { dir, port }
    }

    /// The URL of `database` through PgBouncer, as `user`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }
}

/// How pgbouncer is started: as the current user, or (it refuses root) as `postgres`.
enum Launcher {
    Direct {
        pgbouncer: PathBuf,
    },
    AsPostgres {
        runuser: PathBuf,
        pgbouncer: PathBuf,
    },
}

/// What starting pgbouncer needs, or the one line saying what to install.
fn launcher() -> Result<Launcher, String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let pgbouncer = find("pgbouncer");
    let runuser = if root { find("runuser") } else { None };
    match (pgbouncer, runuser, root) {
        (Some(pgbouncer), _, false) => Ok(Launcher::Direct { pgbouncer }),
        (Some(pgbouncer), Some(runuser), true) => Ok(Launcher::AsPostgres { runuser, pgbouncer }),
        (None, _, false) => Err(
            "the PgBouncer tests need `pgbouncer` on PATH: install it (apt-get install pgbouncer), see README Prerequisites".into(),
        ),
        (pgbouncer, _, true) => Err(format!(
            "the PgBouncer tests need {} (run as root, pgbouncer is started as postgres): install {} (see README Prerequisites)",
            if pgbouncer.is_none() { "`pgbouncer` and `runuser`" } else { "`runuser`" },
            if pgbouncer.is_none() { "pgbouncer and util-linux (apt-get install pgbouncer util-linux)" } else { "util-linux (apt-get install util-linux)" }
        )),
    }
}

/// `program` on PATH, or in the sbin directories a non-root PATH often lacks.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| Path::is_file(candidate))
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
