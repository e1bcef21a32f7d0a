//! One decision for `diff`, `generate` and `check`: over every kind of drift, `check` exits 0
//! exactly when `generate` has nothing to write, and 1 exactly when `generate` writes a
//! migration or refuses one. Where `generate` writes, the migration mends what `check` saw.

use diesel::connection::SimpleConnection;

use crate::fixture::{Fixture, GRANTEE};

const TABLES_UP: &str = "
CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, tenant text NOT NULL,
                        org_id int4 NOT NULL DEFAULT 0);
CREATE TABLE project (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant uuid NOT NULL);
CREATE TABLE countries (code text PRIMARY KEY);
";
const TABLES_DOWN: &str = "DROP TABLE countries; DROP TABLE project; DROP TABLE todo_item;";

/// The schema as `diesel print-schema` writes it: no marks.
const PRINTED: &str = r#"
diesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text, org_id -> Int4 } }
diesel::table! { project (id) { id -> Int8, tenant -> Uuid } }
diesel::table! { countries (code) { code -> Text } }
"#;

fn marked() -> String {
    PRINTED
        .replacen(
            "diesel::table! { todo_item",
            "#[tenants_core::with_rls]\ndiesel::table! { todo_item",
            1,
        )
        .replacen(
            "diesel::table! { project",
            "#[tenants_core::with_rls]\ndiesel::table! { project",
            1,
        )
        .replacen(
            "diesel::table! { countries",
            "#[tenants_core::shared]\ndiesel::table! { countries",
            1,
        )
}

/// What `generate` does with a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `no changes`, nothing written.
    Nothing,
    /// A migration written.
    Writes,
    /// Refused (exit 2), nothing written.
    Refuses,
}

struct Drift {
    name: &'static str,
    source: String,
    sql: &'static str,
    extra_args: &'static [&'static str],
    expected: Outcome,
}

fn drifts() -> Vec<Drift> {
    let marked = marked();
    let drift = |name, source: &str, sql, expected| Drift {
        name,
        source: source.to_string(),
        sql,
        extra_args: &[],
        expected,
    };
    vec![
        drift("in_sync", &marked, "", Outcome::Nothing),
        drift(
            "unmark_one",
            &marked.replacen(
                "#[tenants_core::with_rls]\ndiesel::table! { project",
                "diesel::table! { project",
                1,
            ),
            "",
            Outcome::Refuses,
        ),
        Drift {
            extra_args: &["--allow-unmark"],
            ..drift(
                "unmark_one_allowed",
                &marked.replacen(
                    "#[tenants_core::with_rls]\ndiesel::table! { project",
                    "diesel::table! { project",
                    1,
                ),
                "",
                Outcome::Writes,
            )
        },
        drift("lose_all_marks", PRINTED, "", Outcome::Refuses),
        drift(
            "change_tenant_column",
            &marked.replacen(
                "#[tenants_core::with_rls]\ndiesel::table! { todo_item",
                "#[tenants_core::with_rls(column = org_id)]\ndiesel::table! { todo_item",
                1,
            ),
            "",
            Outcome::Writes,
        ),
        drift(
            "change_tenant_type",
            &marked.replacen(
                "project (id) { id -> Int8, tenant -> Uuid }",
                "project (id) { id -> Int8, tenant -> Text }",
                1,
            ),
            "",
            Outcome::Refuses,
        ),
        drift(
            "drop_a_grant",
            &marked,
            "REVOKE DELETE ON todo_item FROM tenants_user",
            Outcome::Writes,
        ),
        drift(
            "drop_a_sequence_grant",
            &marked,
            "REVOKE USAGE ON SEQUENCE project_id_seq FROM tenants_admin",
            Outcome::Writes,
        ),
        drift(
            "drop_a_policy",
            &marked,
            "DROP POLICY tenants_admin ON project",
            Outcome::Writes,
        ),
        drift(
            "no_force",
            &marked,
            "ALTER TABLE todo_item NO FORCE ROW LEVEL SECURITY",
            Outcome::Writes,
        ),
        drift(
            "unrelated_permissive_policy",
            &marked,
            "CREATE POLICY everyone ON todo_item FOR SELECT USING (true)",
            Outcome::Refuses,
        ),
        drift(
            "unrelated_restrictive_policy",
            &marked,
            "CREATE POLICY narrowing ON todo_item AS RESTRICTIVE FOR ALL USING (true)",
            Outcome::Nothing,
        ),
        drift(
            "nullable_tenant_column",
            &marked,
            "ALTER TABLE project ALTER tenant DROP NOT NULL",
            Outcome::Writes,
        ),
        drift(
            "shared_grant_revoked",
            &marked,
            "REVOKE SELECT ON countries FROM tenants_user",
            Outcome::Writes,
        ),
    ]
}

#[test]
fn check_fails_exactly_when_generate_would_write_or_refuse() {
    let mut failures = Vec::new();
    for drift in drifts() {
        let fx = Fixture::new_named(drift.name);
        tenants_tests::ensure_login_role(&mut fx.db.connect(), GRANTEE);
        let tenants = |args: &[&str]| {
            let mut args = args.to_vec();
            args.extend(["--grant-to", GRANTEE]);
            args.extend(drift.extra_args);
            fx.tenants(&args)
        };
        fx.migration("2026-01-01-000000_create_tables", TABLES_UP, TABLES_DOWN);
        fx.migrate();
        fx.source(&marked());
        let setup = tenants(&["generate"]);
        assert_eq!(setup.code, 0, "{}: {}", drift.name, setup.stderr);
        fx.migrate();
        assert_eq!(tenants(&["check"]).code, 0, "{}: set up", drift.name);

        fx.source(&drift.source);
        if !drift.sql.is_empty() {
            fx.db.connect().batch_execute(drift.sql).expect("drift");
        }
        let check = tenants(&["check"]);
        let before = fx.migrations().len();
        let generate = tenants(&["generate", "--name", "mend"]);
        let wrote = fx.migrations().len() > before;
        let outcome = match (generate.code, wrote) {
            (0, false) if generate.stdout.trim() == "no changes" => Outcome::Nothing,
            (0, true) => Outcome::Writes,
            (2, false) => Outcome::Refuses,
            other => panic!(
                "{}: generate gave {other:?}: {}{}",
                drift.name, generate.stdout, generate.stderr
            ),
        };
        // The invariant, whatever the fixture.
        let check_passes = check.code == 0;
        if check_passes != (outcome == Outcome::Nothing) || !matches!(check.code, 0 | 1) {
            failures.push(format!(
                "{}: check exited {} but generate {outcome:?}\n{}{}",
                drift.name, check.code, check.stdout, check.stderr
            ));
            continue;
        }
        // The fixture exercises what it means to.
        if outcome != drift.expected {
            failures.push(format!(
                "{}: expected {:?}, generate {outcome:?}: {}{}",
                drift.name, drift.expected, generate.stdout, generate.stderr
            ));
            continue;
        }
        // What generate writes mends what check saw.
        if outcome == Outcome::Writes {
            fx.migrate();
            let after = tenants(&["check"]);
            if after.code != 0 {
                failures.push(format!(
                    "{}: check after the mending migration: {}",
                    drift.name, after.stdout
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn losing_every_mark_fails_check_and_generate_refuses_naming_the_cause() {
    let fx = Fixture::new();
    fx.migration("2026-01-01-000000_create_tables", TABLES_UP, TABLES_DOWN);
    fx.migrate();
    fx.source(&marked());
    assert_eq!(fx.tenants(&["generate"]).code, 0);
    fx.migrate();
    fx.source(PRINTED);
    for command in ["check", "diff", "generate"] {
        let run = fx.tenants(&[command]);
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains("tenants: 0 #[with_rls] table(s)"),
            "{command}: {said}"
        );
        assert!(
            said.contains("no table is marked #[with_rls], but the database has tenants' policies on 2 table(s): \"public\".\"project\", \"public\".\"todo_item\""),
            "{command}: {said}"
        );
        assert!(said.contains("diesel print-schema"), "{command}: {said}");
        assert_eq!(
            run.code,
            if command == "check" { 1 } else { 2 },
            "{command}: {said}"
        );
    }
    assert_eq!(fx.migrations().len(), 2, "nothing written");
}
