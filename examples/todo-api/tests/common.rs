//! The harness: a fresh database per test, the real `todo-api` binary on an ephemeral
//! port, tokens, and an HTTP client.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use diesel::connection::SimpleConnection;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tenants_core::policy::{self, Grantee, RoleGrant};
use tenants_core::{Config, Purpose};
use tenants_tests::{TestDb, batch_locked, connect, database_url};

/// The secret the tests' services verify tokens with.
pub const SECRET: &str = "todo-api-integration-tests-secret-0123456789";

/// How long a service may take to start (create its database, migrate, verify, bind).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Every variable the service (or libpq) reads: none leaks in from the test's environment.
const SERVICE_VARS: &[&str] = &[
    "DATABASE_URL",
    "POSTGRES_SERVER",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "POSTGRES_STATEMENT_TIMEOUT_SECONDS",
    "BIND",
    "JWT_SECRET",
    "JWT_AUDIENCE",
    "POOL_MAX_SIZE",
    "POOL_TIMEOUT_SECONDS",
    "TENANT_FILTER",
    "RUST_LOG",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
];

/// Creates the tenant and admin roles, grants them to the `DATABASE_URL` user and makes the
/// service's serving login once, under the harness's creation lock. Roles are cluster-wide: without this, services starting at
/// the same time in different test databases would race to create them in their migration.
fn ensure_roles() {
    static ROLES: Once = Once::new();
    ROLES.call_once(|| {
        let config = Config::default();
        let changes = policy::setup(&config, &[], &[RoleGrant::both(Grantee::CurrentUser)]);
        let sql = policy::render_up(&config, &changes)
            + &policy::serving_login(&config, todo_api::settings::SERVING_LOGIN, Purpose::Tenant);
        batch_locked(&mut connect(&database_url()), &sql);
    });
}

/// A fresh database named after the running test (`todo_api::module::test`).
pub fn test_db() -> TestDb {
    ensure_roles();
    let thread = thread::current();
    TestDb::named(&format!("todo_api::{}", thread.name().unwrap_or("unnamed")))
}

/// How to launch the service: its environment.
#[derive(Debug, Clone)]
pub struct Launch {
    envs: Vec<(String, Option<String>)>,
}

impl Launch {
    /// Against `database_url`, on an ephemeral port, verifying tokens with [`SECRET`].
    pub fn new(database_url: &str) -> Self {
        Self { envs: Vec::new() }
            .env("DATABASE_URL", database_url)
            .env("BIND", "127.0.0.1:0")
            .env("JWT_SECRET", SECRET)
            .env("RUST_LOG", "info,todo_api=debug")
    }

    /// Against the database of `db`.
    pub fn db(db: &TestDb) -> Self {
        Self::new(&db.url())
    }

    /// Sets `var`.
    pub fn env(mut self, var: &str, value: &str) -> Self {
        self.envs.retain(|(k, _)| k != var);
        self.envs.push((var.to_string(), Some(value.to_string())));
        self
    }

    /// Leaves `var` unset.
    pub fn without(mut self, var: &str) -> Self {
        self.envs.retain(|(k, _)| k != var);
        self.envs.push((var.to_string(), None));
        self
    }

    fn spawn(&self) -> Spawned {
        let mut command = Command::new(env!("CARGO_BIN_EXE_todo-api"));
        for var in SERVICE_VARS {
            command.env_remove(var);
        }
        for (var, value) in &self.envs {
            match value {
                Some(value) => command.env(var, value),
                None => command.env_remove(var),
            };
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn todo-api");
        let output = Arc::new(Mutex::new(String::new()));
        let (listening_tx, listening_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = [
            collect(stdout, output.clone(), Some(listening_tx)),
            collect(stderr, output.clone(), None),
        ];
        Spawned {
            child,
            output,
            listening: listening_rx,
            readers,
        }
    }

    /// Starts the service and waits for its `listening on http://...` line.
    pub fn start(self) -> Service {
        let Spawned {
            child,
            output,
            listening,
            ..
        } = self.spawn();
        let mut service = Service {
            child,
            output,
            base: String::new(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
        };
        match listening.recv_timeout(START_TIMEOUT) {
            Ok(base) => service.base = base,
            Err(_) => {
                // Exited, or too slow: give its output a moment to arrive, then fail.
                let status = wait_timeout(&mut service.child, Duration::from_secs(2));
                panic!(
                    "todo-api did not start (exit: {status:?}); its output:\n{}",
                    service.output()
                );
            }
        }
        service
    }

    /// Runs the service until it exits by itself (start-up failures), within `timeout`;
    /// returns its exit status and its stdout and stderr.
    pub fn run_to_exit(self, timeout: Duration) -> (ExitStatus, String) {
        let Spawned {
            mut child,
            output,
            readers,
            ..
        } = self.spawn();
        let status = wait_timeout(&mut child, timeout);
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "todo-api was expected to exit but still ran after {timeout:?}; its output:\n{}",
                output.lock().map(|o| o.clone()).unwrap_or_default()
            );
        };
        // The readers finish at EOF, once the process is gone.
        for reader in readers {
            let _ = reader.join();
        }
        let output = output.lock().map(|o| o.clone()).unwrap_or_default();
        (status, output)
    }
}

/// A spawned process and the threads collecting its output.
struct Spawned {
    child: Child,
    output: Arc<Mutex<String>>,
    listening: mpsc::Receiver<String>,
    readers: [thread::JoinHandle<()>; 2],
}

/// Appends every line of `stream` to `output`; sends the URL of a `listening on` line.
fn collect(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
    listening: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut output) = output.lock() {
                output.push_str(&line);
                output.push('\n');
            }
            if let (Some(tx), Some(url)) = (&listening, line.strip_prefix("listening on ")) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    })
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(25)),
            _ => return None,
        }
    }
}

/// A running `todo-api` process, killed when dropped; its output is printed if the test
/// fails.
pub struct Service {
    child: Child,
    output: Arc<Mutex<String>>,
    base: String,
    client: reqwest::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "--- todo-api (pid {}, {}) output ---\n{}--- end ---",
                self.child.id(),
                if running { "was running" } else { "had exited" },
                self.output()
            );
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body; `Null` when empty.
    pub body: Value,
}

impl Reply {
    /// The body's `error` code.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

impl Service {
    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Whether the process prints `needle` within a few seconds (its logs trail its
    /// replies).
    pub fn prints(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.output().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
        true
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path`, with `token` as bearer token when given.
    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// `method path` with `token` and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let builder = self.req(method, path, token);
        let builder = match body {
            Some(body) => builder.json(&body),
            None => builder,
        };
        send(builder).await
    }

    /// Creates a todo; asserts 201 and returns its id.
    pub async fn create(&self, token: &str, name: &str) -> i64 {
        let reply = self
            .call(
                Method::POST,
                "/todos",
                Some(token),
                Some(json!({ "name": name })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(reply.body["name"], name);
        reply.body["id"].as_i64().expect("an id")
    }

    /// The names `GET /todos` lists for `token`, in order; asserts 200.
    pub async fn names(&self, token: &str) -> Vec<String> {
        let reply = self.call(Method::GET, "/todos", Some(token), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        reply
            .body
            .as_array()
            .expect("a list")
            .iter()
            .map(|item| item["name"].as_str().expect("a name").to_string())
            .collect()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status.
    pub fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        wait_timeout(&mut self.child, Duration::from_secs(20)).unwrap_or_else(|| {
            panic!(
                "todo-api did not stop within 20 s of SIGTERM; its output:\n{}",
                self.output()
            )
        })
    }
}

/// Sends `builder` and reads the reply.
pub async fn send(builder: RequestBuilder) -> Reply {
    let response = builder.send().await.expect("HTTP request");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("HTTP body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// `claims` signed with `secret` by `algorithm`.
pub fn sign_with(algorithm: jsonwebtoken::Algorithm, claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign token")
}

/// `claims` signed with [`SECRET`], HS256.
pub fn sign(claims: &Value) -> String {
    sign_with(jsonwebtoken::Algorithm::HS256, claims, SECRET.as_bytes())
}

/// A valid token for `tenant`, expiring in an hour.
pub fn token(tenant: &str) -> String {
    sign(&json!({ "tenant": tenant, "exp": now() + 3600 }))
}

/// Runs `sql` on the server's maintenance database.
fn admin(sql: &str) {
    connect(&database_url())
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Makes `db` unreachable: refuses new connections and ends the open ones.
pub fn take_down(db: &TestDb) {
    let name = db.name();
    admin(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
    ));
}

/// Undoes [`take_down`].
pub fn bring_up(db: &TestDb) {
    admin(&format!(
        "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
        db.name()
    ));
}

/// Waits until `n` sessions of database `database` wait for a lock.
pub fn wait_for_lock_waiters(database: &str, n: i64) {
    let mut conn = connect(&database_url());
    let sql = format!(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{database}' AND wait_event_type = 'Lock'"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while tenants_tests::count(&mut conn, &sql) < n {
        assert!(
            Instant::now() < deadline,
            "no session of {database} waited for the lock"
        );
        thread::sleep(Duration::from_millis(25));
    }
}

/// `(tenant, name)` of every row, by id, read as the superuser (RLS does not apply).
pub fn all_rows(db: &TestDb) -> Vec<(String, String)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        tenant: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    diesel::sql_query("SELECT tenant, name FROM todo_item ORDER BY id")
        .load::<Row>(&mut db.connect())
        .expect("read todo_item")
        .into_iter()
        .map(|r| (r.tenant, r.name))
        .collect()
}
