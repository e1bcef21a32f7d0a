//! `--citus`: switching modes writes the migration that replaces one policy form with the
//! other (on PostgreSQL); `generate --full --citus` for the example service applies on a
//! Citus coordinator and its isolation cases hold there through `TenantPool` (ignored
//! without `TENANTS_CITUS_URL`).

use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl as _;
use tenants_core::{Config, ScopedDsl, TenantPool};
use tenants_tests::TestDb;

use crate::fixture::{Fixture, Run, TODO_DOWN, TODO_MARKED, TODO_UP};

/// Roles only this test uses: Citus mode makes them LOGIN, which the shared default roles
/// of the other tests must never become.
const USER: &str = "tenants_test_citus_mode_user";
const ADMIN: &str = "tenants_test_citus_mode_admin";

#[test]
fn switching_citus_mode_writes_the_replacing_migration() {
    let fx = Fixture::new();
    fx.drop_roles(&[USER, ADMIN]);
    fx.migration("2026-01-01-000000_create", TODO_UP, TODO_DOWN);
    fx.migrate();
    fx.source(TODO_MARKED);
    let names = [
        "--tenant-role",
        USER,
        "--admin-role",
        ADMIN,
        "--setting",
        "citus_mode.tenant",
    ];
    let run = |args: &[&str]| fx.tenants(&[args, &names[..]].concat());
    let generated = run(&["generate", "--name", "plain"]);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    fx.migrate();
    assert_eq!(run(&["check"]).code, 0);

    // Citus mode: the subquery form differs, the roles cannot log in.
    let check: Run = run(&["check", "--citus"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains("policy \"tenants_isolation\" differs")
            && check
                .stdout
                .contains(&format!("role \"{USER}\" cannot log in")),
        "{}",
        check.stdout
    );
    let diff = run(&["diff", "--citus"]);
    let (up, down) = diff.stdout.split_once("-- down.sql").expect("up and down");
    for expected in [
        "DROP POLICY \"tenants_isolation\" ON \"public\".\"todo_item\";",
        "USING      (\"tenant\" = NULLIF(current_setting('citus_mode.tenant', true), '')::text)",
        "USING (current_user = 'tenants_test_citus_mode_admin')",
        &format!("ALTER ROLE \"{USER}\" LOGIN;"),
    ] {
        assert!(up.contains(expected), "up.sql lacks {expected}:\n{up}");
    }
    assert!(
        !up.contains("(SELECT NULLIF") && !up.contains("(SELECT current_user)"),
        "{up}"
    );
    assert!(
        down.contains(
            "(tenant = ( SELECT NULLIF(current_setting('citus_mode.tenant'::text, true), ''::text) AS \"nullif\"))"
        ) && down.contains(&format!("ALTER ROLE \"{USER}\" NOLOGIN;")),
        "down.sql restores the subquery form:\n{down}"
    );
    let generated = run(&["generate", "--citus", "--name", "to_citus"]);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    fx.migrate();
    assert_eq!(run(&["check", "--citus"]).code, 0);
    // Logging in as our roles is now possible: audit lists it, whatever the mode.
    let audit = run(&["audit", "--citus"]);
    assert!(
        audit.stdout.contains(&format!("role {USER}: can log in"))
            && audit.stdout.contains(&format!("role {ADMIN}: can log in")),
        "{}",
        audit.stdout
    );

    // The inline form isolates on PostgreSQL too, begin batch prefix included.
    isolated_through_tenant_pool(
        &fx.db.url(),
        Config::default()
            .with_tenant_role(USER)
            .and_then(|c| c.with_admin_role(ADMIN))
            .and_then(|c| c.with_setting("citus_mode.tenant"))
            .expect("names")
            .with_citus(true),
    );

    // And back: the subquery form again; the roles' login is only a warning.
    let check = run(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    let generated = run(&["generate", "--name", "back"]);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    fx.migrate();
    let check = run(&["check"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains(&format!("warning: role \"{USER}\" can log in")),
        "{}",
        check.stdout
    );
    fx.revert_all();
}

/// Citus mode is the server's: `--citus` for a command that acts on rows is refused on a
/// server without Citus (most likely the wrong server), with the reason, changing nothing;
/// for the contract it stays a choice (writing the Citus form in a development database).
#[test]
fn row_commands_refuse_citus_on_a_server_without_citus() {
    let fx = Fixture::new();
    fx.migration("2026-01-01-000000_create", TODO_UP, TODO_DOWN);
    fx.migrate();
    fx.source(TODO_MARKED);
    let out = fx.dir.join("export");
    for args in [
        &[
            "export",
            "--citus",
            "--tenant",
            "acme",
            "--out",
            out.to_str().expect("utf-8"),
        ][..],
        &["purge", "--citus", "--tenant", "acme", "--yes"][..],
        &["list", "--citus"][..],
    ] {
        let run = fx.tenants(args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("--citus, but the database")
                && run.stderr.contains("is not a Citus coordinator"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert!(!out.exists(), "nothing written");
    let diff = fx.tenants(&["diff", "--citus"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(
        diff.stdout.contains("NULLIF(current_setting("),
        "{}",
        diff.stdout
    );
}

#[tenants_core::with_rls]
diesel::table! {
    todo_item (id) {
        id -> Int4,
        name -> Text,
        tenant -> Text,
    }
}

/// The example service's isolation cases, through `TenantPool` with `config`, on the
/// database `url` whose `todo_item` is under the contract: each tenant writes and sees its
/// own todos, another tenant's id answers as a missing one, a tricky id stays a value, and
/// the admin sees all. `pool.verify()` passes first.
fn isolated_through_tenant_pool(url: &str, config: Config) {
    // One superuser pool for tenant and admin transactions: the fixture's login, allowed
    // on purpose (the hardened logins are the kit's and the example's).
    let config = config
        .with_purpose(tenants_core::Purpose::TenantAndAdmin)
        .with_bypassing_login(true);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = TenantPool::connect_with(url, config, bb8::Pool::builder().max_size(2))
            .await
            .expect("pool");
        let report = pool.verify().await.expect("verify passes");
        assert!(report.is_ok(), "{report}");
        let tricky = r"acme' OR '1'='1 \";
        let mut ids = Vec::new();
        for (tenant, name) in [
            ("acme", "acme 1"),
            ("acme", "acme 2"),
            ("globex", "globex 1"),
            (tricky, "tricky 1"),
        ] {
            let mut conn = pool.tenant(tenant).await.expect("tenant");
            let id: i32 = diesel::insert_into(todo_item::table)
                .values((todo_item::name.eq(name), todo_item::tenant.eq(tenant)))
                .returning(todo_item::id)
                .get_result(&mut *conn)
                .await
                .expect("insert");
            conn.commit().await.expect("commit");
            ids.push(id);
        }
        for (tenant, expected) in [
            ("acme", vec!["acme 1", "acme 2"]),
            ("globex", vec!["globex 1"]),
            (tricky, vec!["tricky 1"]),
        ] {
            let mut conn = pool.tenant(tenant).await.expect("tenant");
            let scoped: Vec<String> = todo_item::table
                .scoped(&conn)
                .expect("scoped")
                .select(todo_item::name)
                .order(todo_item::id)
                .load(&mut *conn)
                .await
                .expect("scoped load");
            let by_rls_alone: Vec<String> = todo_item::table
                .select(todo_item::name)
                .order(todo_item::id)
                .load(&mut *conn)
                .await
                .expect("load");
            assert_eq!(scoped, expected, "{tenant}");
            assert_eq!(by_rls_alone, expected, "{tenant}, RLS alone");
            conn.rollback().await.expect("rollback");
        }
        // globex's todo, by id, as acme: missing for every route.
        let globex_id = ids[2];
        let mut conn = pool.tenant("acme").await.expect("tenant");
        let found = todo_item::table
            .find(globex_id)
            .select(todo_item::name)
            .load::<String>(&mut *conn)
            .await
            .expect("get");
        let patched = diesel::update(todo_item::table.find(globex_id))
            .set(todo_item::name.eq("stolen"))
            .execute(&mut *conn)
            .await
            .expect("patch");
        let deleted = diesel::delete(todo_item::table.find(globex_id))
            .execute(&mut *conn)
            .await
            .expect("delete");
        assert_eq!((found.len(), patched, deleted), (0, 0, 0));
        conn.commit().await.expect("commit");
        let mut admin = pool.admin().await.expect("admin");
        let all: i64 = todo_item::table
            .count()
            .get_result(&mut *admin)
            .await
            .expect("admin count");
        assert_eq!(all, 4);
        admin.rollback().await.expect("rollback");
    });
}

/// The example's table as Citus wants it: the tenant column in the primary key, the table
/// distributed by it.
const CITUS_TABLE_UP: &str = "
CREATE TABLE todo_item (id serial, name text NOT NULL, tenant text NOT NULL, PRIMARY KEY (tenant, id));
SELECT create_distributed_table('todo_item', 'tenant');";

#[test]
#[ignore = "needs TENANTS_CITUS_URL"]
fn citus_generate_full_applies_on_the_coordinator_and_the_example_isolates() {
    let db = TestDb::citus();
    db.connect()
        .batch_execute(CITUS_TABLE_UP)
        .expect("create and distribute");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/todo-api");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(db.name());
    if out.exists() {
        std::fs::remove_dir_all(&out).expect("clean output dir");
    }
    let run: Run = std::process::Command::new(env!("CARGO_BIN_EXE_tenants"))
        .args([
            "generate",
            "--full",
            "--citus",
            "--grant-to",
            "CURRENT_USER",
            "--crate-dir",
        ])
        .arg(&example)
        .arg("--migration-dir")
        .arg(&out)
        .args(["--database-url", &db.url()])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run tenants")
        .into();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let up = std::fs::read_to_string(Path::new(run.stdout.trim()).join("up.sql")).expect("up.sql");
    // Applied as diesel applies a migration: the whole file in one batch.
    db.connect()
        .batch_execute(&up)
        .expect("the migration applies on the coordinator");
    isolated_through_tenant_pool(&db.url(), Config::default().with_citus(true));
    // And `tenants check --citus` agrees.
    let check: Run = std::process::Command::new(env!("CARGO_BIN_EXE_tenants"))
        .args(["check", "--citus", "--crate-dir"])
        .arg(&example)
        .args(["--database-url", &db.url()])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run tenants")
        .into();
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
}

// ---------------------------------------------------------------------------------------
// Migrations as diesel applies them (each in one transaction), on any cluster state.

/// A reference table (`#[shared]`) and a distributed marked table with a foreign key into
/// it, as Citus wants them: the tenant column in the primary key.
const FK_TABLES_UP: &str = "
CREATE TABLE plans (code text PRIMARY KEY);
SELECT create_reference_table('plans');
CREATE TABLE projects (id serial, tenant text NOT NULL, plan text NOT NULL REFERENCES plans (code), PRIMARY KEY (tenant, id));
SELECT create_distributed_table('projects', 'tenant');";
const FK_TABLES_DOWN: &str = "DROP TABLE projects; DROP TABLE plans;";
/// The same tables, not yet known to Citus.
const LOCAL_TABLES_UP: &str = "
CREATE TABLE plans (code text PRIMARY KEY);
CREATE TABLE projects (id serial, tenant text NOT NULL, plan text NOT NULL REFERENCES plans (code), PRIMARY KEY (tenant, id));";
/// Distributes [`LOCAL_TABLES_UP`]'s tables (the reference table first: a distributed
/// table's foreign key may point only into one).
const DISTRIBUTE_UP: &str = "
SELECT create_reference_table('plans');
SELECT create_distributed_table('projects', 'tenant');";
const DISTRIBUTE_DOWN: &str = "
SELECT undistribute_table('projects');
SELECT undistribute_table('plans');";
const FK_MARKED: &str = "#[tenants_core::with_rls]\ndiesel::table! { projects (id) { id -> Int4, tenant -> Text, plan -> Text } }\n#[tenants_core::shared]\ndiesel::table! { plans (code) { code -> Text } }\n";

/// The names one migration test uses: roles of its own (roles are cluster-wide, and the
/// tests run at once), each test starting without them.
struct Names {
    user: String,
    admin: String,
}

const MIGRATION_SETTING: &str = "citus_migration.tenant";

impl Names {
    fn new(test: &str) -> Self {
        Self {
            user: format!("tenants_test_cm_{test}_user"),
            admin: format!("tenants_test_cm_{test}_admin"),
        }
    }

    fn config(&self) -> Config {
        Config::default()
            .with_tenant_role(&self.user)
            .and_then(|c| c.with_admin_role(&self.admin))
            .and_then(|c| c.with_setting(MIGRATION_SETTING))
            .expect("names")
            .with_citus(true)
    }

    /// The CLI options naming them.
    fn args(&self) -> [&str; 6] {
        [
            "--tenant-role",
            &self.user,
            "--admin-role",
            &self.admin,
            "--setting",
            MIGRATION_SETTING,
        ]
    }

    fn drop_roles(&self, fx: &Fixture) {
        fx.drop_roles(&[&self.user, &self.admin]);
    }
}

/// `tenants generate` with `names`, into `fx`'s migrations.
fn generate_contract(fx: &Fixture, names: &Names, name: &str) {
    // No --citus: Citus mode is read from the server.
    let generate = ["generate", "--grant-to", "CURRENT_USER", "--name", name];
    let run = fx.tenants(&[&generate[..], &names.args()].concat());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

/// `tenants check` agrees with the database, and through `TenantPool` each tenant writes
/// and sees only its own projects while the admin sees both.
fn projects_isolated(fx: &Fixture, names: &Names) {
    let check = fx.tenants(&[&["check"][..], &names.args()].concat());
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    fx.db
        .connect()
        .batch_execute("INSERT INTO plans VALUES ('free') ON CONFLICT DO NOTHING")
        .expect("a plan");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pool = TenantPool::connect_with(
            &fx.db.url(),
            names.config(),
            bb8::Pool::builder().max_size(2),
        )
        .await
        .expect("pool");
        for tenant in ["acme", "globex"] {
            let mut conn = pool.tenant(tenant).await.expect("tenant");
            diesel::sql_query("INSERT INTO projects (tenant, plan) VALUES ($1, 'free')")
                .bind::<diesel::sql_types::Text, _>(tenant)
                .execute(&mut *conn)
                .await
                .expect("insert own project");
            let seen: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "(SELECT count(*) FROM projects)",
            ))
            .get_result(&mut *conn)
            .await
            .expect("count");
            assert_eq!(seen, 1, "{tenant} sees its own project only");
            conn.commit().await.expect("commit");
        }
        let mut admin = pool.admin().await.expect("admin");
        let all: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "(SELECT count(*) FROM projects)",
        ))
        .get_result(&mut *admin)
        .await
        .expect("admin count");
        assert_eq!(all, 2);
        admin.rollback().await.expect("rollback");
    });
}

/// `fx`'s tables created by `tables_up` and marked, as a migration applied by diesel.
fn tables_migrated(fx: &Fixture, tables_up: &str) {
    fx.migration("2026-01-01-000000_tables", tables_up, FK_TABLES_DOWN);
    fx.source(FK_MARKED);
    fx.migrate();
}

/// [`tables_migrated`], then the contract's migration written by the CLI and applied.
fn contract_applied(fx: &Fixture, names: &Names, tables_up: &str) {
    tables_migrated(fx, tables_up);
    generate_contract(fx, names, "contract");
    fx.migrate();
}

/// The first database on a cluster without our roles: the migration creates them.
#[test]
#[ignore = "needs TENANTS_CITUS_URL"]
fn citus_migration_with_fk_into_reference_table_applies_where_the_roles_are_new() {
    let names = Names::new("new");
    let fx = Fixture::citus_named("first");
    names.drop_roles(&fx);
    contract_applied(&fx, &names, FK_TABLES_UP);
    projects_isolated(&fx, &names);
}

/// A second database, where our roles exist already: the migration only grants, and the
/// reference table's grants follow the distributed table's parallel DDL in one
/// transaction (refused by Citus unless the migration runs sequentially).
#[test]
#[ignore = "needs TENANTS_CITUS_URL"]
fn citus_migration_with_fk_into_reference_table_applies_where_the_roles_exist() {
    let names = Names::new("exist");
    let first = Fixture::citus_named("first");
    let second = Fixture::citus_named("second");
    names.drop_roles(&first);
    for fx in [&first, &second] {
        contract_applied(fx, &names, FK_TABLES_UP);
        projects_isolated(fx, &names);
    }
    second.revert_all();
}

/// Tables put under the contract while local, distributed by a later migration: the new
/// shards carry RLS, the policies and the grants.
#[test]
#[ignore = "needs TENANTS_CITUS_URL"]
fn citus_migration_then_distribution_keeps_the_contract() {
    let names = Names::new("later");
    let fx = Fixture::citus_named("later");
    names.drop_roles(&fx);
    contract_applied(&fx, &names, LOCAL_TABLES_UP);
    fx.migration(
        "2099-01-01-000000_distribute",
        DISTRIBUTE_UP,
        DISTRIBUTE_DOWN,
    );
    fx.migrate();
    projects_isolated(&fx, &names);
}

/// The diesel CLI: `diesel migration run`, or why it cannot run.
fn diesel_cli() -> std::process::Command {
    let diesel = std::env::var("DIESEL").unwrap_or_else(|_| "diesel".into());
    match std::process::Command::new(&diesel)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => std::process::Command::new(diesel),
        _ => panic!(
            "cannot run {diesel:?}\nhint: cargo install diesel_cli --no-default-features --features postgres (or set DIESEL to its path)"
        ),
    }
}

/// The real `diesel migration run` applies a CLI-written migration for tables with a
/// foreign key into a reference table, on a cluster where our roles exist.
#[test]
#[ignore = "needs TENANTS_CITUS_URL"]
fn citus_diesel_migration_run_applies_the_generated_migration_where_the_roles_exist() {
    let names = Names::new("cli");
    let first = Fixture::citus_named("first");
    let fx = Fixture::citus_named("second");
    names.drop_roles(&first);
    contract_applied(&first, &names, FK_TABLES_UP);
    tables_migrated(&fx, FK_TABLES_UP);
    generate_contract(&fx, &names, "contract");
    let config_file = fx.dir.join("diesel.toml");
    std::fs::write(&config_file, "").expect("empty diesel.toml");
    let out = diesel_cli()
        .args(["migration", "run", "--database-url", &fx.db.url()])
        .arg("--migration-dir")
        .arg(fx.dir.join("migrations"))
        .arg("--config-file")
        .arg(&config_file)
        .current_dir(&fx.dir)
        .output()
        .expect("run diesel");
    assert!(
        out.status.success(),
        "diesel migration run: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    projects_isolated(&fx, &names);
}

/// `tenants list | export | purge | import` through the binary on a coordinator (Citus
/// mode read from the server): a tenant's rows of a distributed table round-trip exactly,
/// the other tenant's are untouched, and a second import is refused naming the table.
#[test]
#[ignore = "needs TENANTS_CITUS_URL"]
fn citus_list_export_purge_import_through_the_binary() {
    let names = Names::new("life");
    let fx = Fixture::citus_named("life");
    names.drop_roles(&fx);
    contract_applied(&fx, &names, FK_TABLES_UP);
    fx.db
        .connect()
        .batch_execute(
            "INSERT INTO plans VALUES ('free'), ('pro');
             INSERT INTO projects (tenant, plan)
               SELECT t, CASE WHEN g % 2 = 0 THEN 'pro' ELSE 'free' END
               FROM (VALUES ('acme', 3), ('globex', 2)) v (t, n), generate_series(1, n) g;",
        )
        .expect("seed");
    let rows_of = |tenant: &str| -> String {
        #[derive(diesel::QueryableByName)]
        struct Rows {
            #[diesel(sql_type = diesel::sql_types::Text)]
            rows: String,
        }
        diesel::RunQueryDsl::get_result::<Rows>(
            diesel::sql_query(
                "SELECT coalesce(string_agg(p::text, ',' ORDER BY id), '') AS rows FROM projects p WHERE tenant = $1",
            )
            .bind::<diesel::sql_types::Text, _>(tenant),
            &mut fx.db.connect(),
        )
        .expect("rows")
        .rows
    };
    let (acme, globex) = (rows_of("acme"), rows_of("globex"));
    assert_eq!(acme.matches("acme").count(), 3, "{acme}");
    let run = |args: &[&str]| fx.tenants(&[args, &names.args()[..]].concat());

    let list = run(&["list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert_eq!(
        list.words(),
        [
            ["acme", "3", "public.projects=3"],
            ["globex", "2", "public.projects=2"]
        ]
    );
    let out = fx.dir.join("acme-export");
    let out = out.to_str().expect("utf-8 path");
    let export = run(&["export", "--tenant", "acme", "--out", out]);
    assert_eq!(export.code, 0, "{}", export.stderr);
    assert!(
        export.stdout.contains("exported 3 rows of tenant acme"),
        "{}",
        export.stdout
    );
    let purge = run(&["purge", "--tenant", "acme", "--yes"]);
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    assert_eq!(rows_of("acme"), "");
    assert_eq!(rows_of("globex"), globex, "the other tenant untouched");
    let import = run(&["import", "--tenant", "acme", "--from", out]);
    assert_eq!(import.code, 0, "{}", import.stderr);
    assert_eq!(rows_of("acme"), acme, "round trip exact");
    assert_eq!(rows_of("globex"), globex);
    let again = run(&["import", "--tenant", "acme", "--from", out]);
    assert_eq!(again.code, 2, "{}", again.stdout);
    assert!(
        again.stderr.contains(r#""public"."projects""#) && again.stderr.contains("refused"),
        "{}",
        again.stderr
    );
    assert_eq!(
        rows_of("acme"),
        acme,
        "nothing written by the refused import"
    );
}
