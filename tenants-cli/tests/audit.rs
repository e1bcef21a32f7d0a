//! `tenants audit` names what weakens isolation beyond our own objects.

use diesel::connection::SimpleConnection;
use tenants_tests::ensure_login_role;

use crate::fixture::Fixture;

const SOURCE: &str = "
#[tenants_core::with_rls]
diesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }
#[tenants_core::with_rls]
diesel::table! { tag (id) { id -> Int4, todo_id -> Int4, tenant -> Text } }
#[tenants_core::with_rls]
diesel::table! { events (id) { id -> Int4, tenant -> Text } }
";

const TABLES: &str = "
CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, tenant text NOT NULL,
                        UNIQUE (tenant, name), UNIQUE (tenant, id));
CREATE TABLE tag (id serial PRIMARY KEY, todo_id int4 NOT NULL, tenant text NOT NULL,
                  FOREIGN KEY (tenant, todo_id) REFERENCES todo_item (tenant, id));
CREATE TABLE events (id int4 NOT NULL, tenant text NOT NULL) PARTITION BY LIST (tenant);
";

/// A database with the three tables under the contract, generated and applied.
fn protected() -> Fixture {
    let fx = Fixture::new();
    fx.migration(
        "2026-01-01-000000_tables",
        TABLES,
        "DROP TABLE tag, todo_item, events;",
    );
    fx.migrate();
    fx.source(SOURCE);
    let run = fx.tenants(&["generate"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    fx.migrate();
    fx
}

#[test]
fn a_careful_setup_audited_as_a_plain_login_role_is_clean() {
    let fx = protected();
    let mut conn = fx.db.connect();
    ensure_login_role(&mut conn, "tenants_test_auditor");
    let run = fx.tenants_at(&fx.db.url_as("tenants_test_auditor"), &["audit"]);
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "nothing weakens isolation"),
        "{}",
        run.stderr
    );
}

#[test]
fn each_weakness_is_named() {
    let fx = protected();
    let mut conn = fx.db.connect();
    conn.batch_execute(
        "CREATE VIEW open_view AS SELECT * FROM todo_item;
         CREATE VIEW careful_view WITH (security_invoker = true) AS SELECT * FROM todo_item;
         CREATE FUNCTION count_all() RETURNS bigint SECURITY DEFINER LANGUAGE sql
           AS 'SELECT count(*) FROM todo_item';
         ALTER TABLE todo_item ADD CONSTRAINT todo_name_key UNIQUE (name);
         CREATE TABLE plain (id serial PRIMARY KEY);
         ALTER TABLE tag ADD CONSTRAINT tag_todo_fkey FOREIGN KEY (todo_id) REFERENCES todo_item (id);
         CREATE TABLE events_acme PARTITION OF events FOR VALUES IN ('acme');
         GRANT TRUNCATE ON todo_item TO tenants_user;
         GRANT REFERENCES ON tag TO tenants_admin;",
    )
    .expect("weaken");
    let run = fx.tenants(&["audit"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "view public.open_view: reads marked table public.todo_item without security_invoker: RLS applies to the view owner, not the caller",
            "function public.count_all(): is SECURITY DEFINER and owned by postgres, who bypasses RLS",
            "constraint tag_todo_fkey on public.tag: foreign key does not include the tenant column tenant: it reveals whether other tenants' rows hold a value",
            "constraint todo_name_key on public.todo_item: unique constraint does not include the tenant column tenant: it reveals whether other tenants' rows hold a value",
            "partition public.events_acme: of marked table public.events lacks row level security",
            "table public.tag: REFERENCES is granted to tenants_admin: a foreign key to this table reveals other tenants' values",
            "table public.todo_item: TRUNCATE is granted to tenants_user: TRUNCATE ignores row level security",
            "login role postgres: is a superuser: superusers are never subject to row level security",
            "login role postgres: owns marked table public.events: an owner can disable row level security",
            "login role postgres: owns marked table public.tag: an owner can disable row level security",
            "login role postgres: owns marked table public.todo_item: an owner can disable row level security",
            "11 weakness(es)",
        ]
    );
}

#[test]
fn a_login_role_owning_a_marked_table_is_named() {
    let fx = protected();
    let mut conn = fx.db.connect();
    ensure_login_role(&mut conn, "tenants_test_table_owner");
    conn.batch_execute("ALTER TABLE tag OWNER TO tenants_test_table_owner")
        .expect("owner");
    let run = fx.tenants_at(&fx.db.url_as("tenants_test_table_owner"), &["audit"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.stdout.lines().next(),
        Some(
            "login role tenants_test_table_owner: owns marked table public.tag: an owner can disable row level security"
        )
    );
}

#[test]
fn shared_tables_are_listed_granted_and_readable_by_tenants() {
    use diesel::prelude::*;
    use tenants_core::TenantTransactionExt;

    let fx = Fixture::new();
    fx.migration(
        "2026-01-01-000000_tables",
        "CREATE TABLE todo_item (id serial PRIMARY KEY, tenant text NOT NULL);
         CREATE TABLE countries (code text PRIMARY KEY);
         INSERT INTO countries VALUES ('ch'), ('fr');",
        "DROP TABLE todo_item, countries;",
    );
    fx.migrate();
    let marked = "#[tenants_core::with_rls]\ndiesel::table! { todo_item (id) { id -> Int4, tenant -> Text } }\n";
    fx.source(marked);
    assert_eq!(fx.tenants(&["generate"]).code, 0);
    fx.migrate();
    let count = |conn: &mut PgConnection| {
        conn.tenant_transaction("acme", |c| {
            Ok::<_, tenants_core::Error>(
                diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "(SELECT count(*) FROM countries)",
                ))
                .get_result::<i64>(c)?,
            )
        })
    };
    let unshared = count(&mut fx.db.connect()).expect_err("not shared yet");
    assert!(
        unshared
            .to_string()
            .contains("permission denied for table countries")
            && unshared.to_string().contains("#[tenants_core::shared]"),
        "{unshared}"
    );

    fx.source(&format!(
        "{marked}#[tenants_core::shared]\ndiesel::table! {{ countries (code) {{ code -> Text }} }}\n"
    ));
    let check = fx.tenants(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains(r#""public"."countries": shared table is not readable by "tenants_user""#),
        "{}",
        check.stdout
    );
    assert_eq!(fx.tenants(&["generate"]).code, 0);
    fx.migrate();
    assert_eq!(count(&mut fx.db.connect()).expect("shared now"), 2);
    let audit = fx.tenants(&["audit"]);
    assert!(
        audit.stdout.lines().next().is_some_and(|l| l
            == r#"shared: "public"."countries" is readable by every tenant (#[shared], not under RLS)"#),
        "{}",
        audit.stdout
    );
}
