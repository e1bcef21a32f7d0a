//! mark → generate → migrate → check, change marks, revert everything.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use tenants_core::{Error, TenantTransactionExt};

use crate::fixture::{Fixture, GRANTEE};

const TABLES_UP: &str = "
CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, tenant text NOT NULL,
                        org_id int4 NOT NULL DEFAULT 0);
CREATE TABLE project (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant uuid NOT NULL,
                      title text NOT NULL);
";
const TABLES_DOWN: &str = "DROP TABLE project; DROP TABLE todo_item;";

const MARKED: &str = r#"
pub mod schema {
    #[tenants_core::with_rls]
    diesel::table! {
        todo_item (id) {
            id -> Int4,
            name -> Text,
            tenant -> Text,
            org_id -> Int4,
        }
    }

    diesel::table! {
        project (id) {
            id -> Int8,
            tenant -> Uuid,
            title -> Text,
        }
    }
}

#[tenants_core::with_rls]
#[derive(diesel::Queryable)]
#[diesel(table_name = schema::project)]
pub struct Project {
    pub id: i64,
    pub tenant: uuid::Uuid,
    pub title: String,
}
"#;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut PgConnection, sql: &str) -> Result<i64, Error> {
    Ok(diesel::sql_query(sql).get_result::<Count>(conn)?.n)
}

#[test]
fn mark_generate_migrate_check_change_and_revert() {
    let fx = Fixture::new();
    let mut admin = fx.db.connect();
    tenants_tests::ensure_login_role(&mut admin, GRANTEE);
    // A failed earlier run may have left the (cluster-wide) memberships behind.
    tenants_tests::batch_locked(
        &mut admin,
        &format!(
            "DO $$ BEGIN
               IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_user') THEN REVOKE tenants_user FROM {GRANTEE}; END IF;
               IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_admin') THEN REVOKE tenants_admin FROM {GRANTEE}; END IF;
             END $$"
        ),
    );
    let before = fx.catalog_snapshot();
    assert!(
        !before.contains("member "),
        "{GRANTEE} starts without our roles: {before}"
    );
    let tenants = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--grant-to", GRANTEE]);
        fx.tenants(&args)
    };
    fx.migration("2026-01-01-000000_create_tables", TABLES_UP, TABLES_DOWN);
    fx.migrate();
    fx.source(MARKED);

    let check = tenants(&["check"]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert!(
        check
            .stdout
            .contains(r#""public"."project": row level security is not enabled"#)
    );
    assert!(
        check
            .stdout
            .contains(r#""public"."todo_item": policy "tenants_isolation" is missing"#)
    );

    let diff = tenants(&["diff"]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(
        diff.stdout
            .contains("NULLIF(current_setting('tenants.current_tenant', true), '')::uuid")
    );
    assert_eq!(fx.migrations().len(), 1, "diff writes nothing");

    let generated = tenants(&["generate"]);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    let migrations = fx.migrations();
    assert_eq!(migrations.len(), 2);
    assert!(migrations[1].ends_with("_tenants_rls"), "{migrations:?}");
    assert_eq!(
        generated.stdout.trim(),
        fx.dir
            .join("migrations")
            .join(&migrations[1])
            .display()
            .to_string()
    );
    let up = std::fs::read_to_string(
        fx.dir
            .join("migrations")
            .join(&migrations[1])
            .join("up.sql"),
    )
    .expect("up");
    assert!(up.contains(r#"GRANT USAGE, SELECT ON SEQUENCE "public"."project_id_seq" TO "tenants_user", "tenants_admin";"#), "{up}");
    assert!(
        up.contains(&format!("GRANT \"tenants_user\" TO \"{GRANTEE}\";")),
        "{up}"
    );
    assert!(
        up.contains(r#"ALTER TABLE "public"."project" ALTER COLUMN "tenant" SET DEFAULT NULLIF(current_setting('tenants.current_tenant', true), '')::uuid;"#),
        "{up}"
    );

    fx.migrate();
    assert!(
        fx.catalog_snapshot()
            .contains(&format!("member {GRANTEE} of tenants_user"))
    );

    // Isolation through tenants-core on the generated policies.
    let mut conn = fx.db.connect();
    conn.tenant_transaction("acme", |c| {
        diesel::sql_query("INSERT INTO todo_item (name, tenant) VALUES ('a', 'acme')")
            .execute(c)?;
        Ok::<_, Error>(())
    })
    .expect("insert as acme");
    let seen_by_globex = conn
        .tenant_transaction("globex", |c| {
            count(c, "SELECT count(*) AS n FROM todo_item")
        })
        .expect("read as globex");
    assert_eq!(seen_by_globex, 0);
    let seen_by_acme = conn
        .tenant_transaction("acme", |c| count(c, "SELECT count(*) AS n FROM todo_item"))
        .expect("read as acme");
    assert_eq!(seen_by_acme, 1);
    // The tenant column fills itself: an insert that leaves it out gets the scope's tenant,
    // and outside a tenant scope it fails (NOT NULL) instead of writing a row of nobody's.
    conn.tenant_transaction("acme", |c| {
        diesel::sql_query("INSERT INTO todo_item (name) VALUES ('b')").execute(c)?;
        Ok::<_, Error>(())
    })
    .expect("insert as acme without naming the tenant");
    let acme_named = conn
        .tenant_transaction("acme", |c| {
            count(
                c,
                "SELECT count(*) AS n FROM todo_item WHERE tenant = 'acme'",
            )
        })
        .expect("read as acme");
    assert_eq!(acme_named, 2);
    let unscoped =
        diesel::sql_query("INSERT INTO todo_item (name) VALUES ('c')").execute(&mut conn);
    assert!(
        matches!(&unscoped, Err(diesel::result::Error::DatabaseError(kind, _))
            if matches!(kind, diesel::result::DatabaseErrorKind::NotNullViolation)),
        "{unscoped:?}"
    );

    // Idempotent.
    let again = tenants(&["generate"]);
    assert_eq!(
        (again.code, again.stdout.trim()),
        (0, "no changes"),
        "{}",
        again.stderr
    );
    assert_eq!(fx.migrations().len(), 2);
    let check = tenants(&["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);

    // Another tenant column (text → int4 `org_id`): the policy is replaced.
    fx.source(&MARKED.replacen(
        "#[tenants_core::with_rls]\n    diesel::table! {\n        todo_item",
        "#[tenants_core::with_rls(column = org_id)]\n    diesel::table! {\n        todo_item",
        1,
    ));
    let changed = tenants(&["generate", "--name", "org_id_tenant"]);
    assert_eq!(changed.code, 0, "{}", changed.stderr);
    let migrations = fx.migrations();
    assert_eq!(migrations.len(), 3);
    let up = std::fs::read_to_string(
        fx.dir
            .join("migrations")
            .join(&migrations[2])
            .join("up.sql"),
    )
    .expect("up");
    // The idempotent preamble first (replays on a fresh server), then the replacement.
    assert!(up.starts_with("DO $tenants$ BEGIN"), "{up}");
    assert!(
        up.contains("\nDROP POLICY \"tenants_isolation\" ON \"public\".\"todo_item\";\n"),
        "{up}"
    );
    assert!(up.contains("(\"org_id\" = (SELECT NULLIF(current_setting('tenants.current_tenant', true), '')::int4))"), "{up}");
    // org_id's own default gives way to the scope's tenant, and comes back on revert.
    assert!(up.contains(r#"ALTER TABLE "public"."todo_item" ALTER COLUMN "org_id" SET DEFAULT NULLIF(current_setting('tenants.current_tenant', true), '')::int4;"#), "{up}");
    let down = std::fs::read_to_string(
        fx.dir
            .join("migrations")
            .join(&migrations[2])
            .join("down.sql"),
    )
    .expect("down");
    assert!(
        down.contains(r#"ALTER TABLE "public"."todo_item" ALTER COLUMN "org_id" SET DEFAULT 0;"#),
        "{down}"
    );
    fx.migrate();
    assert_eq!(tenants(&["check"]).code, 0);
    let acme_rows = conn
        .tenant_transaction("0", |c| count(c, "SELECT count(*) AS n FROM todo_item"))
        .expect("read as org 0");
    assert_eq!(acme_rows, 2, "both rows have org_id 0");

    // Unmark `project`: it loses our policies and RLS.
    fx.source(&MARKED.replace("#[tenants_core::with_rls]\n#[derive", "#[derive").replacen("#[tenants_core::with_rls]\n    diesel::table! {\n        todo_item", "#[tenants_core::with_rls(column = org_id)]\n    diesel::table! {\n        todo_item", 1));
    // Never silently: check fails and generate refuses, naming the table and the cause.
    let check = tenants(&["check"]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    let refused = tenants(&["generate", "--name", "unmark_project"]);
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert!(
        refused.stderr.contains(r#"refusing to remove row level security from 1 table(s) no longer marked #[with_rls]: "public"."project""#)
            && refused.stderr.contains("diesel print-schema")
            && refused.stderr.contains("--allow-unmark"),
        "{}",
        refused.stderr
    );
    assert_eq!(fx.migrations().len(), 3, "nothing written");
    let unmarked = tenants(&["generate", "--name", "unmark_project", "--allow-unmark"]);
    assert_eq!(unmarked.code, 0, "{}", unmarked.stderr);
    let migrations = fx.migrations();
    let up = std::fs::read_to_string(
        fx.dir
            .join("migrations")
            .join(&migrations[3])
            .join("up.sql"),
    )
    .expect("up");
    assert!(
        up.contains(r#"DROP POLICY "tenants_admin" ON "public"."project";"#),
        "{up}"
    );
    assert!(
        up.contains(r#"ALTER TABLE "public"."project" DISABLE ROW LEVEL SECURITY;"#),
        "{up}"
    );
    fx.migrate();
    let check = tenants(&["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert_eq!(tenants(&["generate"]).stdout.trim(), "no changes");

    // Revert every migration: the catalog is what it was.
    fx.revert_all();
    assert_eq!(fx.catalog_snapshot(), before);
}

#[test]
fn missing_roles_are_created_and_dropped_again_on_revert() {
    let fx = Fixture::new();
    // Roles are cluster-wide: names only this test uses.
    let (user, admin) = ("tenants_test_cli_new_user", "tenants_test_cli_new_admin");
    let exists = |fx: &Fixture, role: &str| {
        count(
            &mut fx.db.connect(),
            &format!("SELECT count(*) AS n FROM pg_roles WHERE rolname = '{role}'"),
        )
        .expect("query")
    };
    assert_eq!(
        (exists(&fx, user), exists(&fx, admin)),
        (0, 0),
        "left over by an earlier run?"
    );
    fx.migration(
        "2026-01-01-000000_create",
        "CREATE TABLE todo_item (id serial PRIMARY KEY, tenant text NOT NULL)",
        "DROP TABLE todo_item",
    );
    fx.migrate();
    fx.source("#[tenants_core::with_rls]\ndiesel::table! { todo_item (id) { id -> Int4, tenant -> Text } }\n");
    let names = [
        "--tenant-role",
        user,
        "--admin-role",
        admin,
        "--setting",
        "app.tenant",
    ];
    let generate = fx.tenants(&[&["generate"][..], &names].concat());
    assert_eq!(generate.code, 0, "{}", generate.stderr);
    fx.migrate();
    assert_eq!((exists(&fx, user), exists(&fx, admin)), (1, 1));
    let check = fx.tenants(&[&["check"][..], &names].concat());
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    // The default names are still missing from this database.
    assert_eq!(fx.tenants(&["check"]).code, 1);
    fx.revert_all();
    assert_eq!((exists(&fx, user), exists(&fx, admin)), (0, 0));
}
