//! A fixture crate in a temporary directory, a fresh database, and the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use tenants_tests::TestDb;

/// A login role only the CLI tests grant our roles to (`--grant-to`), so that no other
/// test changes its memberships.
pub const GRANTEE: &str = "tenants_test_cli_grantee";

/// The one-table fixture many tests start from: `todo_item`, its migration and its mark.
pub const TODO_UP: &str =
    "CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, tenant text NOT NULL);";
/// [`TODO_UP`]'s down migration.
pub const TODO_DOWN: &str = "DROP TABLE todo_item;";
/// `todo_item` marked `#[with_rls]`.
pub const TODO_MARKED: &str = "#[tenants_core::with_rls]\ndiesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }\n";

/// A crate directory with `src/` and `migrations/`, and a database for it.
pub struct Fixture {
    pub dir: PathBuf,
    pub db: TestDb,
}

/// What a run of `tenants` did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Its standard output as lines of whitespace-separated words (`tenants list`'s
    /// columns).
    pub fn words(&self) -> Vec<Vec<&str>> {
        self.stdout
            .lines()
            .map(|line| line.split_whitespace().collect())
            .collect()
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Fixture {
    /// An empty crate and database named after the running test.
    pub fn new() -> Self {
        Self::with_db(TestDb::new())
    }

    /// An empty crate and database named after the running test and `suffix`.
    pub fn new_named(suffix: &str) -> Self {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("unnamed");
        Self::with_db(TestDb::named(&format!("{test}_{suffix}")))
    }

    /// An empty crate and a fresh Citus database (on the coordinator
    /// `TENANTS_CITUS_URL` names) named after the running test and `suffix`.
    pub fn citus_named(suffix: &str) -> Self {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("unnamed");
        Self::with_db(TestDb::citus_named(&format!("{test}_{suffix}")))
    }

    fn with_db(db: TestDb) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(db.name());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clean fixture dir");
        }
        std::fs::create_dir_all(dir.join("src")).expect("fixture dir");
        Self { dir, db }
    }

    /// Drops `roles` if an earlier run left them (roles are cluster-wide: tests that need
    /// roles of their own name them and start without them).
    pub fn drop_roles(&self, roles: &[&str]) {
        let sql: String = roles
            .iter()
            .map(|role| format!("DROP ROLE IF EXISTS {role};"))
            .collect();
        tenants_tests::batch_locked(&mut self.db.connect(), &sql);
    }

    /// Replaces `src/lib.rs`.
    pub fn source(&self, text: &str) {
        std::fs::write(self.dir.join("src/lib.rs"), text).expect("write source");
    }

    /// Adds a hand-written migration, as `diesel migration generate` would lay it out.
    pub fn migration(&self, name: &str, up: &str, down: &str) {
        let dir = self.dir.join("migrations").join(name);
        std::fs::create_dir_all(&dir).expect("migration dir");
        std::fs::write(dir.join("up.sql"), up).expect("up.sql");
        std::fs::write(dir.join("down.sql"), down).expect("down.sql");
    }

    /// The migration directories, sorted.
    pub fn migrations(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("migrations")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Runs `tenants <args> --crate-dir <dir> --database-url <db>`.
    pub fn tenants(&self, args: &[&str]) -> Run {
        self.tenants_at(&self.db.url(), args)
    }

    /// Runs `tenants` against another URL.
    pub fn tenants_at(&self, url: &str, args: &[&str]) -> Run {
        let dir = self.dir.to_str().expect("utf-8 path");
        Command::new(env!("CARGO_BIN_EXE_tenants"))
            .args(args)
            .args(["--crate-dir", dir, "--database-url", url])
            .env_remove("DATABASE_URL")
            .output()
            .expect("run tenants")
            .into()
    }

    /// Runs the real diesel CLI in the crate's directory against its database (an empty
    /// `diesel.toml`: every setting its default) and returns what it printed; a failure,
    /// or a CLI that is not installed, fails the test with how to install it.
    pub fn diesel(&self, args: &[&str]) -> String {
        let dir = self.dir.to_str().expect("utf-8 path");
        std::fs::write(self.dir.join("diesel.toml"), "").expect("diesel.toml");
        let mut command = Command::new("diesel");
        command
            .args(args)
            .args(["--database-url", &self.db.url()])
            .args(["--config-file", &format!("{dir}/diesel.toml")]);
        if args.first() == Some(&"migration") {
            command.args(["--migration-dir", &format!("{dir}/migrations")]);
        }
        let output = command
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run the diesel CLI ({e}): install it with `cargo install diesel_cli --no-default-features --features postgres`")
            });
        assert!(
            output.status.success(),
            "diesel {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Applies pending migrations, as `diesel migration run` does.
    pub fn migrate(&self) {
        let migrations =
            FileBasedMigrations::from_path(self.dir.join("migrations")).expect("migrations dir");
        self.db
            .connect()
            .run_pending_migrations(migrations)
            .expect("run migrations");
    }

    /// Reverts every applied migration, newest first, as `diesel migration redo --all`'s
    /// first half does.
    pub fn revert_all(&self) {
        let migrations =
            FileBasedMigrations::from_path(self.dir.join("migrations")).expect("migrations dir");
        self.db
            .connect()
            .revert_all_migrations(migrations)
            .expect("revert migrations");
    }

    /// RLS flags, policies, privileges and [`GRANTEE`]'s memberships in our roles, as one
    /// text: what the migrations change.
    pub fn catalog_snapshot(&self) -> String {
        #[derive(QueryableByName)]
        struct Snapshot {
            #[diesel(sql_type = Text)]
            snapshot: String,
        }
        let mut conn = self.db.connect();
        conn.batch_execute("SELECT 1").expect("connect");
        diesel::sql_query(
            "SELECT concat_ws(E'\\n',
               (SELECT string_agg(format('%s rls=%s force=%s acl=%s', c.relname, c.relrowsecurity,
                        c.relforcerowsecurity, c.relacl), E'\\n' ORDER BY c.relname)
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S')
                   AND c.relname NOT LIKE '\\_\\_diesel%'),
               (SELECT string_agg(format('policy %s.%s %s %s %s %s', tablename, policyname, roles, cmd,
                        qual, with_check), E'\\n' ORDER BY tablename, policyname) FROM pg_policies),
               (SELECT string_agg(format('member %s of %s', u.rolname, g.rolname), E'\\n' ORDER BY 1)
                  FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
                 WHERE g.rolname IN ('tenants_user', 'tenants_admin') AND u.rolname = $1),
               (SELECT format('schema public acl=%s', nspacl) FROM pg_namespace WHERE nspname = 'public')
             ) AS snapshot",
        )
        .bind::<Text, _>(GRANTEE)
        .get_result::<Snapshot>(&mut conn)
        .expect("snapshot")
        .snapshot
    }
}
