//! A PgBouncer in transaction mode in front of the test server, started per test.

use std::net::TcpListener;
use std::path::PathBuf;
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
        // pgbouncer refuses to run as root; the postgres user runs it, so it must own the dir.
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        assert!(
            matches!(chown, Ok(s) if s.success()),
            "cannot chown {}",
            dir.display()
        );
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--", "pgbouncer", "-d"])
            .arg(dir.join("pgbouncer.ini"))
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start pgbouncer: {e}\nhint: apt-get install pgbouncer (.ci/run does)"
                )
            });
        assert!(
            status.success(),
            "pgbouncer did not start: see {}/pgbouncer.log",
            dir.display()
        );
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
