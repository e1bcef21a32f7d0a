//! `tenants audit` names what weakens isolation beyond our own objects, each with its fix,
//! and no false alarm. Each test creates the object on a database under the contract, sees
//! the finding (or none), removes it and sees it go.

use diesel::connection::SimpleConnection;
use tenants_tests::{batch_locked, ensure_login_role};

use crate::fixture::{Fixture, Run};

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

/// The plain login audited by the tests that are not about the login (the CLI itself runs
/// as the superuser that owns the tables).
const AUDITED: &str = "tenants_test_audited_login";

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
    ensure_login_role(&mut fx.db.connect(), AUDITED);
    fx
}

fn audit(fx: &Fixture) -> Run {
    fx.tenants(&["audit", "--login", AUDITED])
}

/// The lines of an audit that found something, without the count at the end.
fn found(run: &Run) -> Vec<&str> {
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let (count, body) = lines.split_last().expect("output");
    assert!(count.ends_with("weakness(es)"), "{}", run.stdout);
    body.to_vec()
}

fn assert_clean(fx: &Fixture) {
    let run = audit(fx);
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "nothing weakens isolation"),
        "{}",
        run.stderr
    );
}

/// Runs `create`, expects exactly `expected` (finding and hint lines), runs `remove`,
/// expects a clean audit again.
fn appears_and_goes(fx: &Fixture, create: &str, expected: &[&str], remove: &str) {
    assert_clean(fx);
    fx.db.connect().batch_execute(create).expect("create");
    assert_eq!(found(&audit(fx)), expected);
    fx.db.connect().batch_execute(remove).expect("remove");
    assert_clean(fx);
}

/// What `check` prints on `fx` (exit 0: the findings here are warnings, not a migration),
/// without its last line ("the database matches ...").
fn check_warnings(fx: &Fixture) -> Vec<String> {
    let run = fx.tenants(&["check"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<String> = run.stdout.lines().map(str::to_string).collect();
    let (last, warnings) = lines.split_last().expect("output");
    assert!(last.starts_with("the database matches"), "{}", run.stdout);
    warnings.to_vec()
}

/// [`appears_and_goes`], and `check` prints the same lines as warnings before those it
/// printed without the object, exits 0 (`generate` has nothing to write) and prints them
/// no more once it is removed.
fn appears_and_goes_in_check_too(fx: &Fixture, create: &str, expected: &[&str], remove: &str) {
    assert_clean(fx);
    let before = check_warnings(fx);
    fx.db.connect().batch_execute(create).expect("create");
    assert_eq!(found(&audit(fx)), expected);
    let mut with_it: Vec<String> = expected.iter().map(|line| line.to_string()).collect();
    with_it.extend(before.iter().cloned());
    assert_eq!(check_warnings(fx), with_it);
    assert_eq!(fx.tenants(&["generate"]).stdout.trim(), "no changes");
    fx.db.connect().batch_execute(remove).expect("remove");
    assert_clean(fx);
    assert_eq!(check_warnings(fx), before);
}

/// Nothing found for `create` (a false alarm that must not ring).
fn never_reported(fx: &Fixture, create: &str) {
    fx.db.connect().batch_execute(create).expect("create");
    assert_clean(fx);
}

#[test]
fn a_careful_setup_audited_as_a_plain_login_role_is_clean() {
    let fx = protected();
    let run = fx.tenants_at(&fx.db.url_as(AUDITED), &["audit"]);
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "nothing weakens isolation"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_view_owned_by_a_role_escaping_the_policies_is_named_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "CREATE VIEW open_view AS SELECT * FROM todo_item;",
        &[
            r#"warning: view "public"."open_view": reads marked table "public"."todo_item" as its owner "postgres", a superuser: row level security applies to the owner, not the caller"#,
            r#"  hint: `ALTER VIEW "public"."open_view" SET (security_invoker = true);` (or give it an owner subject to the policies)"#,
        ],
        "DROP VIEW open_view;",
    );
    appears_and_goes_in_check_too(
        &fx,
        "CREATE VIEW admin_view AS SELECT * FROM tag; ALTER VIEW admin_view OWNER TO tenants_admin;",
        &[
            r#"warning: view "public"."admin_view": reads marked table "public"."tag" as its owner "tenants_admin", the admin role, whose policy shows every tenant: row level security applies to the owner, not the caller"#,
            r#"  hint: `ALTER VIEW "public"."admin_view" SET (security_invoker = true);` (or give it an owner subject to the policies)"#,
        ],
        "DROP VIEW admin_view;",
    );
}

#[test]
fn views_with_security_invoker_or_an_owner_under_the_policies_are_not_named() {
    let fx = protected();
    batch_locked(
        &mut fx.db.connect(),
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_test_view_owner')
           THEN CREATE ROLE tenants_test_view_owner NOLOGIN; END IF; END $$;",
    );
    never_reported(
        &fx,
        "CREATE VIEW invoker_view WITH (security_invoker = 1) AS SELECT * FROM todo_item;
         CREATE VIEW invoker_on WITH (security_invoker = on) AS SELECT * FROM tag;
         CREATE VIEW owned_view AS SELECT * FROM todo_item;
         ALTER VIEW owned_view OWNER TO tenants_test_view_owner;
         CREATE VIEW tenant_view AS SELECT * FROM todo_item;
         ALTER VIEW tenant_view OWNER TO tenants_user;
         CREATE VIEW barrier_view WITH (security_barrier, security_invoker) AS SELECT * FROM todo_item;",
    );
    fx.db
        .connect()
        .batch_execute("DROP VIEW owned_view, tenant_view;")
        .expect("drop");
}

#[test]
fn a_materialized_view_is_named_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "CREATE MATERIALIZED VIEW all_items AS SELECT * FROM todo_item;",
        &[
            r#"warning: materialized view "public"."all_items": stores rows of marked table "public"."todo_item" without row level security: who may read it reads what its owner saw at the last refresh"#,
            r#"  hint: `DROP MATERIALIZED VIEW "public"."all_items";` (a view WITH (security_invoker = true) reads through the policies)"#,
        ],
        "DROP MATERIALIZED VIEW all_items;",
    );
}

#[test]
fn security_definer_functions_are_named_by_their_owner_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "CREATE FUNCTION all_items() RETURNS SETOF todo_item SECURITY DEFINER LANGUAGE sql
           AS 'SELECT * FROM todo_item';
         ALTER FUNCTION all_items() OWNER TO tenants_admin;",
        &[
            r#"warning: function "public"."all_items"(): is SECURITY DEFINER and owned by "tenants_admin", the admin role, whose policy shows every tenant: its callers act as "tenants_admin""#,
            r#"  hint: `ALTER FUNCTION "public"."all_items"() SECURITY INVOKER;` (or give it an owner subject to the policies)"#,
        ],
        "DROP FUNCTION all_items();",
    );
    appears_and_goes_in_check_too(
        &fx,
        "CREATE FUNCTION count_all(int) RETURNS bigint SECURITY DEFINER LANGUAGE sql
           AS 'SELECT count(*) FROM todo_item';",
        &[
            r#"warning: function "public"."count_all"(integer): is SECURITY DEFINER and owned by "postgres", a superuser: its callers act as "postgres""#,
            r#"  hint: `ALTER FUNCTION "public"."count_all"(integer) SECURITY INVOKER;` (or give it an owner subject to the policies)"#,
        ],
        "DROP FUNCTION count_all(int);",
    );
    // Owned by the tenant role, a definer function sees what its caller's tenant allows.
    never_reported(
        &fx,
        "CREATE FUNCTION mine() RETURNS bigint SECURITY DEFINER LANGUAGE sql AS 'SELECT count(*) FROM todo_item';
         ALTER FUNCTION mine() OWNER TO tenants_user;",
    );
    fx.db
        .connect()
        .batch_execute("DROP FUNCTION mine();")
        .expect("drop");
}

#[test]
fn a_rule_on_a_marked_table_is_named_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "CREATE TABLE stolen (secret text);
         CREATE RULE steal AS ON INSERT TO todo_item DO ALSO INSERT INTO stolen SELECT name FROM todo_item;",
        &[
            r#"warning: rule "steal" on "public"."todo_item": runs its actions as "postgres", the owner of "public"."todo_item", a superuser: row level security does not apply to them"#,
            r#"  hint: `DROP RULE "steal" ON "public"."todo_item";` (a trigger runs as the caller, under the policies)"#,
        ],
        "DROP RULE steal ON todo_item; DROP TABLE stolen;",
    );
}

#[test]
fn a_trigger_running_a_definer_function_is_named_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "CREATE FUNCTION copy_row() RETURNS trigger SECURITY DEFINER LANGUAGE plpgsql
           AS $$ BEGIN RETURN NEW; END $$;
         CREATE TRIGGER copy AFTER INSERT ON tag FOR EACH ROW EXECUTE FUNCTION copy_row();",
        &[
            r#"warning: function "public"."copy_row"(): is SECURITY DEFINER and owned by "postgres", a superuser: its callers act as "postgres""#,
            r#"  hint: `ALTER FUNCTION "public"."copy_row"() SECURITY INVOKER;` (or give it an owner subject to the policies)"#,
            r#"warning: trigger "copy" on "public"."tag": runs "public"."copy_row"(), SECURITY DEFINER and owned by "postgres", a superuser: it sees and writes every tenant's rows"#,
            r#"  hint: `ALTER FUNCTION "public"."copy_row"() SECURITY INVOKER;` (a trigger then runs as the caller, under the policies)"#,
        ],
        "DROP TRIGGER copy ON tag; DROP FUNCTION copy_row();",
    );
}

#[test]
fn a_leakproof_function_is_named_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "CREATE FUNCTION peek(text) RETURNS boolean LEAKPROOF IMMUTABLE LANGUAGE plpgsql
           AS $$ BEGIN RAISE NOTICE '%', $1; RETURN true; END $$;",
        &[
            r#"warning: function "public"."peek"(text): is LEAKPROOF: the planner may run it on rows before row level security filters them, so what it reveals (errors, notices) comes from every tenant's rows"#,
            r#"  hint: as a superuser: `ALTER FUNCTION "public"."peek"(text) NOT LEAKPROOF;`"#,
        ],
        "DROP FUNCTION peek(text);",
    );
}

#[test]
fn truncate_and_trigger_granted_to_public_or_our_roles_are_named_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "GRANT TRUNCATE ON todo_item TO PUBLIC; GRANT TRIGGER ON tag TO tenants_user;
         GRANT REFERENCES ON tag TO tenants_admin;",
        &[
            r#"warning: "public"."tag": REFERENCES is granted to "tenants_admin": a foreign key to this table reveals other tenants' values"#,
            r#"  hint: `REVOKE REFERENCES ON "public"."tag" FROM "tenants_admin";`"#,
            r#"warning: "public"."tag": TRIGGER is granted to "tenants_user": a trigger it creates runs in other tenants' statements, seeing their rows"#,
            r#"  hint: `REVOKE TRIGGER ON "public"."tag" FROM "tenants_user";`"#,
            r#"warning: "public"."todo_item": TRUNCATE is granted to PUBLIC: TRUNCATE ignores row level security"#,
            r#"  hint: `REVOKE TRUNCATE ON "public"."todo_item" FROM PUBLIC;`"#,
        ],
        "REVOKE TRUNCATE ON todo_item FROM PUBLIC; REVOKE TRIGGER ON tag FROM tenants_user;
         REVOKE REFERENCES ON tag FROM tenants_admin;",
    );
}

#[test]
fn a_partition_two_levels_down_without_rls_is_named() {
    let fx = protected();
    appears_and_goes(
        &fx,
        "CREATE TABLE events_acme PARTITION OF events FOR VALUES IN ('acme') PARTITION BY RANGE (id);
         ALTER TABLE events_acme ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
         CREATE TABLE events_acme_low PARTITION OF events_acme FOR VALUES FROM (0) TO (100);",
        &[
            PARTITION_LINE,
            "  hint: mark it #[with_rls] and run `tenants generate` (row level security, FORCE and the policies), or at least `ALTER TABLE \"public\".\"events_acme_low\" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;` (nobody then reads it directly)",
        ],
        "ALTER TABLE events_acme_low ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;",
    );
    // check refuses too: no migration of ours decides about a table that is not marked.
    fx.db
        .connect()
        .batch_execute("ALTER TABLE events_acme_low NO FORCE ROW LEVEL SECURITY;")
        .expect("no force");
    let check = fx.tenants(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(
        check.stdout.contains(
            "\"public\".\"events_acme_low\": partition of marked table \"public\".\"events\" lacks FORCE ROW LEVEL SECURITY"
        ),
        "{}",
        check.stdout
    );
}

const PARTITION_LINE: &str = "\"public\".\"events_acme_low\": partition of marked table \"public\".\"events\" lacks row level security: queried directly, only its own row level security applies";

#[test]
fn an_unmarked_inheritance_parent_is_named() {
    let fx = protected();
    appears_and_goes(
        &fx,
        "CREATE TABLE base (id int4, tenant text); ALTER TABLE todo_item INHERIT base;",
        &[
            "\"public\".\"base\": inheritance parent of marked table \"public\".\"todo_item\" is not marked and lacks row level security: selecting from it returns the child's rows of every tenant",
            "  hint: mark \"public\".\"base\" #[with_rls] too and run `tenants generate`, or detach the child from it",
            "warning: \"public\".\"base\": has a tenant column \"tenant\" but is neither #[with_rls] nor #[shared]",
            "  hint: if its rows belong to a tenant, mark it #[with_rls] and run `tenants generate`; only data every tenant may read is #[tenants_core::shared]",
        ],
        "ALTER TABLE todo_item NO INHERIT base; DROP TABLE base;",
    );
}

#[test]
fn a_permissive_policy_reaching_the_tenant_role_by_membership_is_named_by_check_too() {
    let fx = protected();
    let grp = "tenants_test_audit_grp";
    batch_locked(
        &mut fx.db.connect(),
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{grp}')
               THEN CREATE ROLE {grp} NOLOGIN; END IF; END $$;
             GRANT {grp} TO tenants_user;"
        ),
    );
    let line = format!(
        "\"public\".\"todo_item\": permissive policy \"everything\" (TO {grp}) is ORed with the isolation policy: every tenant sees the rows it allows"
    );
    let hint = "  hint: make it restrictive or drop it (`DROP POLICY \"everything\" ON \"public\".\"todo_item\";`); permissive policies are ORed with the isolation policy";
    fx.db
        .connect()
        .batch_execute(&format!(
            "CREATE POLICY everything ON todo_item TO {grp} USING (true);"
        ))
        .expect("policy");
    assert_eq!(found(&audit(&fx)), [line.as_str(), hint]);
    let check = fx.tenants(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(check.stdout.contains(&line), "{}", check.stdout);
    fx.db
        .connect()
        .batch_execute("DROP POLICY everything ON todo_item;")
        .expect("drop");
    assert_clean(&fx);
    assert_eq!(fx.tenants(&["check"]).code, 0);
    batch_locked(
        &mut fx.db.connect(),
        &format!("REVOKE {grp} FROM tenants_user;"),
    );
}

/// Gives the tenant column of `notes` the collation `collation`: the isolation policy
/// must go first (PostgreSQL refuses to retype a column a policy uses). Then `generate`
/// puts it back, or refuses while the collation is nondeterministic.
fn collate_notes(fx: &Fixture, collation: &str) -> Run {
    fx.db
        .connect()
        .batch_execute(&format!(
            "DROP POLICY IF EXISTS tenants_isolation ON notes;
             ALTER TABLE notes ALTER COLUMN tenant TYPE text COLLATE {collation};"
        ))
        .expect("collation");
    let generate = fx.tenants(&["generate"]);
    if generate.code == 0 {
        fx.migrate();
    }
    generate
}

#[test]
fn a_nondeterministic_tenant_collation_is_named_by_check_too() {
    let fx = Fixture::new();
    fx.migration(
        "2026-01-01-000000_tables",
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE notes (id serial PRIMARY KEY, tenant text NOT NULL);",
        "DROP TABLE notes; DROP COLLATION ci;",
    );
    fx.migrate();
    fx.source(
        "#[tenants_core::with_rls]\ndiesel::table! { notes (id) { id -> Int4, tenant -> Text } }\n",
    );
    assert_eq!(collate_notes(&fx, "\"default\"").code, 0);
    ensure_login_role(&mut fx.db.connect(), AUDITED);
    assert_clean(&fx);

    // generate (and so check) refuses: no migration of ours may decide it.
    let generate = collate_notes(&fx, "ci");
    assert_eq!(generate.code, 2, "{}", generate.stdout);
    let line = "\"public\".\"notes\": tenant column \"tenant\" has the nondeterministic collation \"ci\": tenant ids that compare equal (ACME, acme) share their rows";
    assert!(
        generate.stderr.contains(&format!("  {line}\n")),
        "{}",
        generate.stderr
    );
    assert_eq!(fx.tenants(&["check"]).code, 1);
    assert_eq!(
        found(&audit(&fx)),
        [
            line,
            "  hint: compare tenant ids byte for byte: `ALTER TABLE \"public\".\"notes\" ALTER COLUMN \"tenant\" TYPE text COLLATE \"default\";` (PostgreSQL refuses while a policy uses the column: drop the table's isolation policy first, `tenants generate` recreates it)",
        ]
    );
    assert_eq!(collate_notes(&fx, "\"default\"").code, 0);
    assert_clean(&fx);
}

#[test]
fn tenant_setting_defaults_of_the_database_and_roles_are_named_by_check_too() {
    let fx = protected();
    let db = fx.db.name().to_string();
    let database_line = format!(
        "database \"{db}\" sets tenants.current_tenant = 'acme' for every session: unscoped queries run with it"
    );
    let database_hint = format!(
        "  hint: sessions must start without it (the scopes set it per transaction): `ALTER DATABASE \"{db}\" RESET \"tenants.current_tenant\";`"
    );
    let role_line = format!(
        "role \"{AUDITED}\" in database \"{db}\" sets role = 'tenants_admin' for every session: unscoped queries run with it"
    );
    let role_hint = format!(
        "  hint: sessions must start without it (the scopes set it per transaction): `ALTER ROLE \"{AUDITED}\" IN DATABASE \"{db}\" RESET \"role\";`"
    );
    appears_and_goes(
        &fx,
        &format!(
            "ALTER DATABASE \"{db}\" SET tenants.current_tenant = 'acme';
             ALTER ROLE {AUDITED} IN DATABASE \"{db}\" SET role = 'tenants_admin';"
        ),
        &[&database_line, &database_hint, &role_line, &role_hint],
        &format!(
            "ALTER DATABASE \"{db}\" RESET tenants.current_tenant;
             ALTER ROLE {AUDITED} IN DATABASE \"{db}\" RESET role;"
        ),
    );
    fx.db
        .connect()
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET tenants.current_tenant = 'acme';"
        ))
        .expect("set");
    let check = fx.tenants(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stdout);
    assert!(check.stdout.contains(&database_line), "{}", check.stdout);
    fx.db
        .connect()
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" RESET tenants.current_tenant;"
        ))
        .expect("reset");
}

#[test]
fn existence_oracles_are_named_with_their_fix_by_check_too() {
    let fx = protected();
    appears_and_goes_in_check_too(
        &fx,
        "CREATE UNIQUE INDEX todo_lower_name ON todo_item (lower(name));",
        &[
            r#"warning: unique index "todo_lower_name" on "public"."todo_item": does not include the tenant column "tenant": a conflict reveals whether another tenant's row holds a value"#,
            "  hint: `DROP INDEX public.todo_lower_name; CREATE UNIQUE INDEX todo_lower_name ON public.todo_item USING btree (tenant, lower(name));`",
        ],
        "DROP INDEX todo_lower_name;",
    );
    appears_and_goes_in_check_too(
        &fx,
        "ALTER TABLE todo_item DROP CONSTRAINT todo_item_pkey, ADD PRIMARY KEY (name);",
        &[
            r#"warning: primary key "todo_item_pkey" on "public"."todo_item": does not include the tenant column "tenant": a conflict reveals whether another tenant's row holds a value"#,
            "  hint: `ALTER TABLE public.todo_item DROP CONSTRAINT todo_item_pkey, ADD CONSTRAINT todo_item_pkey PRIMARY KEY (tenant, name);`",
        ],
        "ALTER TABLE todo_item DROP CONSTRAINT todo_item_pkey, ADD PRIMARY KEY (id);",
    );
    appears_and_goes_in_check_too(
        &fx,
        "ALTER TABLE todo_item ADD CONSTRAINT todo_name_excl EXCLUDE USING btree (name WITH =);",
        &[
            r#"warning: exclusion constraint "todo_name_excl" on "public"."todo_item": does not include the tenant column "tenant": a conflict reveals another tenant's rows"#,
            "  hint: `ALTER TABLE public.todo_item DROP CONSTRAINT todo_name_excl, ADD CONSTRAINT todo_name_excl EXCLUDE USING btree (tenant WITH =, name WITH =);` (gist needs the btree_gist extension for the tenant column)",
        ],
        "ALTER TABLE todo_item DROP CONSTRAINT todo_name_excl;",
    );
}

#[test]
fn a_foreign_key_into_a_shared_table_is_not_named() {
    let fx = protected();
    fx.db
        .connect()
        .batch_execute(
            "CREATE TABLE countries (code text PRIMARY KEY);
             GRANT SELECT ON countries TO tenants_user, tenants_admin;
             ALTER TABLE todo_item ADD COLUMN country text REFERENCES countries (code);",
        )
        .expect("shared");
    fx.source(&format!(
        "{SOURCE}#[tenants_core::shared]\ndiesel::table! {{ countries (code) {{ code -> Text }} }}\n"
    ));
    let run = audit(&fx);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (
            0,
            "shared: \"public\".\"countries\" is readable by every tenant (#[shared], not under RLS)\nnothing weakens isolation\n"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn unmarked_tables_with_a_tenant_column_or_granted_to_our_roles_are_named_by_check_too() {
    let fx = protected();
    let forgotten = [
        "warning: \"public\".\"invoice\": has a tenant column \"tenant\" but is neither #[with_rls] nor #[shared]",
        "  hint: if its rows belong to a tenant, mark it #[with_rls] and run `tenants generate`; only data every tenant may read is #[tenants_core::shared]",
    ];
    let join = [
        "warning: \"public\".\"todo_tag\": holds rows but is neither #[with_rls] nor #[shared], and \"tenants_user\" can read or write all of it",
        "  hint: if its rows belong to a tenant, mark it #[with_rls] (a join table of tenant rows too: give it the tenant column) and run `tenants generate`; only data every tenant may read is #[tenants_core::shared]; otherwise revoke it: `REVOKE ALL ON \"public\".\"todo_tag\" FROM \"tenants_user\", PUBLIC;`",
    ];
    appears_and_goes(
        &fx,
        "CREATE TABLE invoice (id serial PRIMARY KEY, tenant text NOT NULL);
         CREATE TABLE todo_tag (todo_id int4, tag_id int4);
         GRANT SELECT, INSERT ON todo_tag TO tenants_user;",
        &[forgotten[0], forgotten[1], join[0], join[1]],
        "DROP TABLE invoice, todo_tag;",
    );
    fx.db
        .connect()
        .batch_execute("CREATE TABLE invoice (id serial PRIMARY KEY, tenant text NOT NULL);")
        .expect("forget");
    let check = fx.tenants(&["check"]);
    assert_eq!(
        check.stdout.lines().take(2).collect::<Vec<_>>(),
        forgotten,
        "{}",
        check.stdout
    );
}

#[test]
fn the_serving_login_is_audited() {
    let fx = protected();
    let app = "tenants_test_audit_app";
    ensure_login_role(&mut fx.db.connect(), app);
    let login = |fx: &Fixture| fx.tenants(&["audit", "--login", app]);
    assert_eq!(login(&fx).code, 0, "{}", login(&fx).stdout);
    batch_locked(
        &mut fx.db.connect(),
        &format!(
            "ALTER ROLE {app} BYPASSRLS; GRANT tenants_admin TO {app};
             GRANT SELECT ON todo_item TO {app}; ALTER TABLE events OWNER TO {app};"
        ),
    );
    assert_eq!(
        found(&login(&fx)),
        [
            format!("login role {app}: has BYPASSRLS: unscoped queries see every tenant").as_str(),
            &format!("  hint: ALTER ROLE {app} NOBYPASSRLS;"),
            &format!(
                "login role {app}: has SELECT on marked table public.todo_item through a direct grant, beyond the tenant role: outside a scope it is not refused"
            ),
            &format!("  hint: REVOKE SELECT ON public.todo_item FROM {app};"),
            &format!(
                "login role {app}: is a member of the admin role tenants_admin: one SET ROLE and it sees every tenant"
            ),
            &format!(
                "  hint: REVOKE tenants_admin FROM {app}; admin work belongs to a second login"
            ),
            &format!(
                "login role {app}: owns marked table public.events: an owner can disable row level security"
            ),
            "  hint: ALTER TABLE public.events OWNER TO <the migration role>; the serving login owns nothing",
        ]
    );
    // The URL's user is the default.
    assert_eq!(
        found(&fx.tenants_at(&fx.db.url_as(app), &["audit"]))[0],
        format!("login role {app}: has BYPASSRLS: unscoped queries see every tenant")
    );
    batch_locked(
        &mut fx.db.connect(),
        &format!(
            "ALTER ROLE {app} NOBYPASSRLS; REVOKE tenants_admin FROM {app};
             REVOKE SELECT ON todo_item FROM {app}; ALTER TABLE events OWNER TO postgres;"
        ),
    );
    assert_eq!(login(&fx).code, 0, "{}", login(&fx).stdout);
    let missing = fx.tenants(&["audit", "--login", "tenants_test_nobody"]);
    assert_eq!(
        found(&missing),
        [
            "login role tenants_test_nobody: does not exist",
            "  hint: pass the login the application serves tenants with: --login NAME, or its URL",
        ]
    );
}

#[test]
fn with_every_mark_lost_audit_fails_like_check() {
    let fx = protected();
    fx.source("// diesel print-schema rewrote this file\n");
    let audit = audit(&fx);
    let check = fx.tenants(&["check"]);
    assert_eq!((audit.code, check.code), (1, 1), "{}", audit.stdout);
    assert_eq!(audit.stdout, check.stdout);
    assert!(
        audit.stdout.starts_with(
            "no table is marked #[with_rls], but the database has tenants' policies on 3 table(s)"
        ),
        "{}",
        audit.stdout
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
            && unshared
                .to_string()
                .contains("if this table's rows belong to a tenant, mark it #[with_rls] (a join table too: give it the tenant column)")
            && unshared
                .to_string()
                .contains("#[tenants_core::shared] is only for data every tenant may read"),
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

/// Inserts, as `tenant`, a tag pointing at todo `todo_id`.
fn tag_as(fx: &Fixture, tenant: &str, todo_id: i32) -> Result<usize, tenants_core::Error> {
    use diesel::prelude::*;
    use tenants_core::TenantTransactionExt;
    fx.db.connect().tenant_transaction(tenant, |c| {
        Ok(diesel::sql_query(format!(
            "INSERT INTO tag (todo_id, tenant) VALUES ({todo_id}, '{tenant}')"
        ))
        .execute(c)?)
    })
}

#[test]
fn a_foreign_key_between_marked_tables_without_the_tenant_column_is_made_consistent_by_a_migration_diesel_applies()
 {
    let fx = Fixture::new();
    fx.migration(
        "2026-01-01-000000_tables",
        "CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, tenant text NOT NULL);
         CREATE TABLE tag (id serial PRIMARY KEY, tenant text NOT NULL,
                           todo_id int4 NOT NULL REFERENCES todo_item (id) ON DELETE CASCADE ON UPDATE RESTRICT);
         INSERT INTO todo_item (id, name, tenant) VALUES (1, 'acme''s', 'acme'), (2, 'globex''s', 'globex');",
        "DROP TABLE tag, todo_item;",
    );
    fx.migrate();
    fx.source(
        "#[tenants_core::with_rls]
diesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }
#[tenants_core::with_rls]
diesel::table! { tag (id) { id -> Int4, tenant -> Text, todo_id -> Int4 } }
",
    );
    assert_eq!(fx.tenants(&["generate"]).code, 0);
    fx.migrate();
    ensure_login_role(&mut fx.db.connect(), AUDITED);

    let finding = [
        "warning: \"public\".\"tag\": foreign key \"tag_todo_id_fkey\" references \"public\".\"todo_item\" without the tenant column: a tenant can reference another tenant's row, cascade into it and block its deletes",
        "  hint: make it carry the tenant column (`tenants generate --tenant-keys` writes this as a migration):",
        "    ALTER TABLE \"public\".\"todo_item\" ADD CONSTRAINT \"todo_item_tenant_id_key\" UNIQUE (\"tenant\", \"id\");",
        "    ALTER TABLE \"public\".\"tag\" DROP CONSTRAINT \"tag_todo_id_fkey\",",
        "      ADD CONSTRAINT \"tag_todo_id_fkey\" FOREIGN KEY (\"tenant\", \"todo_id\") REFERENCES \"public\".\"todo_item\" (\"tenant\", \"id\") ON UPDATE RESTRICT ON DELETE CASCADE;",
    ];
    assert_eq!(found(&audit(&fx)), finding);
    let check = fx.tenants(&["check"]);
    assert_eq!(check.code, 0, "a warning: {}", check.stdout);
    assert_eq!(
        check.stdout.lines().take(5).collect::<Vec<_>>(),
        finding,
        "{}",
        check.stdout
    );
    // The attack: globex references acme's todo; acme's delete then cascades into it.
    assert_eq!(tag_as(&fx, "globex", 1).expect("cross-tenant reference"), 1);
    fx.db
        .connect()
        .batch_execute("DELETE FROM tag")
        .expect("clean up");

    let generate = fx.tenants(&["generate", "--tenant-keys", "--name", "tenant_keys"]);
    assert_eq!(generate.code, 0, "{}", generate.stderr);
    let dir = std::path::PathBuf::from(generate.stdout.trim());
    assert_eq!(
        std::fs::read_to_string(dir.join("up.sql")).expect("up.sql"),
        "ALTER TABLE \"public\".\"todo_item\" ADD CONSTRAINT \"todo_item_tenant_id_key\" UNIQUE (\"tenant\", \"id\");
ALTER TABLE \"public\".\"tag\" DROP CONSTRAINT \"tag_todo_id_fkey\",
  ADD CONSTRAINT \"tag_todo_id_fkey\" FOREIGN KEY (\"tenant\", \"todo_id\") REFERENCES \"public\".\"todo_item\" (\"tenant\", \"id\") ON UPDATE RESTRICT ON DELETE CASCADE;
"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("down.sql")).expect("down.sql"),
        "ALTER TABLE \"public\".\"tag\" DROP CONSTRAINT \"tag_todo_id_fkey\",
  ADD CONSTRAINT \"tag_todo_id_fkey\" FOREIGN KEY (\"todo_id\") REFERENCES \"public\".\"todo_item\" (\"id\") ON UPDATE RESTRICT ON DELETE CASCADE;
ALTER TABLE \"public\".\"todo_item\" DROP CONSTRAINT \"todo_item_tenant_id_key\";
"
    );

    fx.diesel(&["migration", "run"]);
    assert_clean(&fx);
    let refused = tag_as(&fx, "globex", 1).expect_err("another tenant's todo");
    assert!(
        refused
            .to_string()
            .contains("violates foreign key constraint \"tag_todo_id_fkey\""),
        "{refused}"
    );
    assert_eq!(tag_as(&fx, "acme", 1).expect("its own todo"), 1);
    assert_eq!(
        fx.tenants(&["generate", "--tenant-keys"]).stdout.trim(),
        "no changes"
    );

    fx.diesel(&["migration", "revert"]);
    assert_eq!(found(&audit(&fx)), finding);
    fx.diesel(&["migration", "run"]);
    assert_clean(&fx);
}

/// The families the README says `audit` checks, each with the test that creates its
/// object, sees the finding and sees it go (or sees no false alarm).
const FAMILIES: [(&str, &[&str]); 16] = [
    (
        "views",
        &[
            "a_view_owned_by_a_role_escaping_the_policies_is_named_by_check_too",
            "views_with_security_invoker_or_an_owner_under_the_policies_are_not_named",
        ],
    ),
    (
        "materialized views",
        &["a_materialized_view_is_named_by_check_too"],
    ),
    (
        "security definer functions",
        &["security_definer_functions_are_named_by_their_owner_by_check_too"],
    ),
    (
        "triggers",
        &["a_trigger_running_a_definer_function_is_named_by_check_too"],
    ),
    ("rules", &["a_rule_on_a_marked_table_is_named_by_check_too"]),
    (
        "leakproof functions",
        &["a_leakproof_function_is_named_by_check_too"],
    ),
    (
        "grants",
        &["truncate_and_trigger_granted_to_public_or_our_roles_are_named_by_check_too"],
    ),
    (
        "partitions and inheritance",
        &[
            "a_partition_two_levels_down_without_rls_is_named",
            "an_unmarked_inheritance_parent_is_named",
        ],
    ),
    (
        "permissive policies",
        &["a_permissive_policy_reaching_the_tenant_role_by_membership_is_named_by_check_too"],
    ),
    (
        "roles",
        &["our_roles_bypassing_rls_or_logging_in_are_named"],
    ),
    ("serving login", &["the_serving_login_is_audited"]),
    (
        "setting defaults",
        &["tenant_setting_defaults_of_the_database_and_roles_are_named_by_check_too"],
    ),
    (
        "tenant column collation",
        &["a_nondeterministic_tenant_collation_is_named_by_check_too"],
    ),
    (
        "unique keys",
        &["existence_oracles_are_named_with_their_fix_by_check_too"],
    ),
    (
        "foreign keys",
        &[
            "a_foreign_key_between_marked_tables_without_the_tenant_column_is_made_consistent_by_a_migration_diesel_applies",
            "a_foreign_key_into_a_shared_table_is_not_named",
        ],
    ),
    (
        "unmarked tables",
        &["unmarked_tables_with_a_tenant_column_or_granted_to_our_roles_are_named_by_check_too"],
    ),
];

#[test]
fn the_readme_lists_exactly_the_families_tested_here() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("<!-- audit-checks -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /audit-checks -->").next())
        .expect("the README's audit-checks table");
    let listed: Vec<&str> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(" |").next())
        .filter(|family| !matches!(*family, "family" | "---"))
        .collect();
    assert_eq!(
        listed,
        FAMILIES
            .iter()
            .map(|(family, _)| *family)
            .collect::<Vec<_>>()
    );
    let this_file = include_str!("audit.rs");
    for (family, tests) in FAMILIES {
        for test in tests {
            assert!(
                this_file.contains(&format!("fn {test}()")),
                "{family}: no test {test}"
            );
        }
    }
}

#[test]
fn our_roles_bypassing_rls_or_logging_in_are_named() {
    // Roles of its own (Citus mode's tests do the same): ours are cluster-wide.
    let fx = protected();
    let (user, admin) = ("tenants_test_audit_user", "tenants_test_audit_admin");
    fx.drop_roles(&[user, admin]);
    let roles = ["--tenant-role", user, "--admin-role", admin];
    let run = |args: &[&str]| fx.tenants(&[args, &roles[..]].concat());
    assert_eq!(run(&["generate"]).code, 0);
    fx.migrate();
    let audit = || run(&["audit", "--login", AUDITED]);
    assert_eq!(audit().stdout.trim(), "nothing weakens isolation");
    batch_locked(
        &mut fx.db.connect(),
        &format!("ALTER ROLE {user} BYPASSRLS; ALTER ROLE {admin} LOGIN;"),
    );
    assert_eq!(
        found(&audit()),
        [
            format!(
                "role \"{user}\" is BYPASSRLS: transactions running as it are not subject to RLS"
            )
            .as_str(),
            &format!("  hint: as a superuser: `ALTER ROLE \"{user}\" NOSUPERUSER NOBYPASSRLS;`"),
            &format!(
                "role {admin}: can log in: whoever authenticates as it acts as it, around the application; only Citus mode needs it, and then pg_hba.conf must accept it from the cluster's nodes only"
            ),
            &format!("  hint: ALTER ROLE {admin} NOLOGIN; (outside Citus mode)"),
        ]
    );
    assert_eq!(run(&["check"]).code, 1);
    batch_locked(
        &mut fx.db.connect(),
        &format!("ALTER ROLE {user} NOBYPASSRLS; ALTER ROLE {admin} NOLOGIN;"),
    );
    assert_eq!(audit().stdout.trim(), "nothing weakens isolation");
}
