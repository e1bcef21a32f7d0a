//! `tenants list | export | import | purge` through the real binary, on a fixture crate
//! whose marked tables are joined by a foreign key, with the exit codes the commands
//! document.

use diesel::sql_types::Text;
use diesel::{QueryableByName, RunQueryDsl};

use crate::fixture::{Fixture, Run};

const TABLES_UP: &str = "
CREATE TABLE vendor (id serial PRIMARY KEY, tenant text NOT NULL, name text NOT NULL);
CREATE TABLE invoice (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant text NOT NULL,
                      vendor_id int NOT NULL REFERENCES vendor (id), total numeric(12, 2));
";
const TABLES_DOWN: &str = "DROP TABLE invoice; DROP TABLE vendor;";

/// The marks come sorted, `invoice` before `vendor`: the commands take their order from
/// the foreign key (vendor first to import, last to purge), not from the marks.
const MARKED: &str = r#"
#[tenants_core::with_rls]
diesel::table! { invoice (id) { id -> Int8, tenant -> Text, vendor_id -> Int4, total -> Nullable<Numeric> } }

#[tenants_core::with_rls]
diesel::table! { vendor (id) { id -> Int4, tenant -> Text, name -> Text } }
"#;

const SEED: &str = "
INSERT INTO vendor (tenant, name) SELECT t, t || ' vendor ' || g
  FROM unnest(ARRAY['acme', 'globex']) t, generate_series(1, 2) g;
INSERT INTO invoice (tenant, vendor_id, total)
  SELECT c.tenant, c.id, 10.5 * g FROM vendor c, generate_series(1, 3) g;
";

#[derive(QueryableByName)]
struct Fingerprint {
    #[diesel(sql_type = Text)]
    value: String,
}

/// Both tables' rows of `tenant`, as one text, read by the superuser.
fn fingerprint(fx: &Fixture, tenant: &str) -> String {
    diesel::sql_query(
        "SELECT concat_ws('|',
           (SELECT string_agg(c::text, ',' ORDER BY c.id) FROM vendor c WHERE tenant = $1),
           (SELECT string_agg(i::text, ',' ORDER BY i.id) FROM invoice i WHERE tenant = $1)) AS value",
    )
    .bind::<Text, _>(tenant)
    .get_result::<Fingerprint>(&mut fx.db.connect())
    .expect("fingerprint")
    .value
}

fn fixture() -> Fixture {
    let fx = Fixture::new();
    fx.source(MARKED);
    fx.migration("2026-01-01-000000_tables", TABLES_UP, TABLES_DOWN);
    fx.migrate();
    let run = fx.tenants(&["generate"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    fx.migrate();
    diesel::connection::SimpleConnection::batch_execute(&mut fx.db.connect(), SEED).expect("seed");
    fx
}

fn assert_exit(run: &Run, code: i32, what: &str) {
    assert_eq!(
        run.code, code,
        "{what}: stdout {:?} stderr {:?}",
        run.stdout, run.stderr
    );
}

#[test]
fn list_export_purge_import_through_the_binary() {
    let fx = fixture();
    let (acme, globex) = (fingerprint(&fx, "acme"), fingerprint(&fx, "globex"));
    assert!(!acme.is_empty() && acme != "|");

    let run = fx.tenants(&["list"]);
    assert_exit(&run, 0, "list");
    assert_eq!(
        run.words(),
        vec![
            vec!["acme", "8", "public.invoice=6", "public.vendor=2"],
            vec!["globex", "8", "public.invoice=6", "public.vendor=2"],
        ]
    );
    let run = fx.tenants(&["list", "--json"]);
    assert_exit(&run, 0, "list --json");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(json["tenants"][1]["tenant"], "globex");
    assert_eq!(json["tenants"][1]["total"], 8);
    assert_eq!(json["tenants"][1]["tables"][0]["table"], "public.invoice");
    assert_eq!(json["tenants"][1]["tables"][0]["rows"], 6);

    let out = fx.dir.join("acme-export");
    let out_arg = out.to_str().expect("utf-8 path");
    let run = fx.tenants(&["export", "--tenant", "acme", "--out", out_arg]);
    assert_exit(&run, 0, "export");
    assert!(
        run.stdout.contains("exported 8 rows of tenant acme"),
        "{}",
        run.stdout
    );
    let run = fx.tenants(&["export", "--tenant", "acme", "--out", out_arg]);
    assert_exit(&run, 1, "export into a non-empty directory");
    assert!(run.stderr.starts_with("refused: "), "{}", run.stderr);

    // Without --yes, or with --dry-run, nothing is deleted.
    for args in [
        &["purge", "--tenant", "acme"][..],
        &["purge", "--tenant", "acme", "--dry-run", "--yes"],
    ] {
        let run = fx.tenants(args);
        assert_exit(&run, 1, "purge without --yes");
        assert_eq!(
            run.stdout,
            "public.invoice\t6\npublic.vendor\t2\nwould delete 8 rows of tenant acme; nothing deleted (pass --yes to delete)\n"
        );
        assert_eq!(fingerprint(&fx, "acme"), acme);
    }
    let run = fx.tenants(&["purge", "--tenant", "acme", "--yes"]);
    assert_exit(&run, 0, "purge --yes");
    assert!(
        run.stdout.ends_with("deleted 8 rows of tenant acme\n"),
        "{}",
        run.stdout
    );
    assert_eq!(fingerprint(&fx, "acme"), "");
    assert_eq!(fingerprint(&fx, "globex"), globex);
    let run = fx.tenants(&["purge", "--tenant", "acme", "--yes"]);
    assert_exit(&run, 1, "purge of a tenant without rows");

    let run = fx.tenants(&["import", "--tenant", "acme", "--from", out_arg]);
    assert_exit(&run, 0, "import");
    assert_eq!(
        run.stdout,
        "public.vendor\t2\npublic.invoice\t6\nimported 8 rows of tenant acme\n"
    );
    assert_eq!(fingerprint(&fx, "acme"), acme);
    assert_eq!(fingerprint(&fx, "globex"), globex);

    // Again: the ids exist, the first row is refused, nothing changes.
    let run = fx.tenants(&["import", "--tenant", "acme", "--from", out_arg]);
    assert_exit(&run, 2, "import of rows that exist");
    assert!(
        run.stderr
            .starts_with("error: \"public\".\"vendor\": row 1 of "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("vendor_pkey"), "{}", run.stderr);
    assert_eq!(fingerprint(&fx, "acme"), acme);

    // Another tenant's export.
    let run = fx.tenants(&["import", "--tenant", "globex", "--from", out_arg]);
    assert_exit(&run, 2, "import under another tenant");
    assert!(
        run.stderr.contains("holds tenant \"acme\""),
        "{}",
        run.stderr
    );
    assert_eq!(fingerprint(&fx, "globex"), globex);
}

#[test]
fn errors_exit_2_with_one_message() {
    let fx = fixture();
    let missing = fx.dir.join("no-such-export");
    let run = fx.tenants(&[
        "import",
        "--tenant",
        "acme",
        "--from",
        missing.to_str().expect("utf-8 path"),
    ]);
    assert_exit(&run, 2, "import of a missing directory");
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("manifest.json"), "{}", run.stderr);

    // Lost marks must not look like an empty database: refused before any I/O.
    fx.source("pub fn nothing_marked() {}\n");
    for args in [&["list"][..], &["purge", "--tenant", "acme", "--yes"]] {
        let run = fx.tenants(args);
        assert_exit(&run, 2, "a crate without marks");
        assert!(
            run.stderr.starts_with("error: no #[with_rls] table in "),
            "{}",
            run.stderr
        );
    }
    assert_ne!(fingerprint(&fx, "acme"), "");
    fx.source(MARKED);

    let run = fx.tenants_at("postgres://postgres@127.0.0.1:1/nowhere", &["list"]);
    assert_exit(&run, 2, "list without a server");
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert_eq!(run.stdout, "");
}

/// Runs `tenants <args>` with its stdout closed before it writes, as `| head -1` closes
/// it after one line.
fn tenants_with_closed_stdout(fx: &Fixture, args: &[&str]) -> Run {
    let dir = fx.dir.to_str().expect("utf-8 path");
    let url = fx.db.url();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tenants"))
        .args(args)
        .args(["--crate-dir", dir, "--database-url", &url])
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tenants");
    drop(child.stdout.take());
    child.wait_with_output().expect("wait for tenants").into()
}

#[test]
fn a_closed_stdout_keeps_the_documented_exit_code() {
    let fx = fixture();
    let out = fx.dir.join("piped-export");
    let out_arg = out.to_str().expect("utf-8 path");
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["diff"],
        &["check"],
        &["audit"],
        &["purge", "--tenant", "acme"],
        &["export", "--tenant", "acme", "--out", out_arg],
    ] {
        let open = fx.tenants(args);
        assert!(!open.stdout.is_empty(), "{args:?} prints something");
        if args[0] == "export" {
            std::fs::remove_dir_all(&out).expect("remove the first export");
        }
        let closed = tenants_with_closed_stdout(&fx, args);
        assert_eq!(
            closed.code, open.code,
            "{args:?} with a closed stdout: stderr {:?}",
            closed.stderr
        );
        assert!(
            !closed.stderr.contains("panicked"),
            "{args:?}: {}",
            closed.stderr
        );
    }
    assert!(
        out.join("manifest.json").is_file(),
        "the export ran to its end"
    );
}

#[test]
fn list_escapes_control_characters_of_tenant_ids() {
    let fx = fixture();
    diesel::connection::SimpleConnection::batch_execute(
        &mut fx.db.connect(),
        "INSERT INTO vendor (tenant, name) VALUES
           (E'\\x1b[2J\\x1b[1;1Hevil', 'clears the screen'),
           (E'two\\nlines', 'breaks the table'),
           ('two words', 'makes two columns')",
    )
    .expect("hostile ids");
    let run = fx.tenants(&["list"]);
    assert_exit(&run, 0, "list");
    assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);
    let firsts: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split("  ").next().unwrap_or_default().trim_end())
        .collect();
    assert_eq!(
        firsts,
        [
            "\"\\u{1b}[2J\\u{1b}[1;1Hevil\"",
            "acme",
            "globex",
            "\"two\\nlines\"",
            "\"two words\""
        ]
    );
}

#[test]
fn export_of_a_tenant_without_rows_exits_1_unless_allowed() {
    let fx = fixture();
    let out = fx.dir.join("typo-export");
    let out_arg = out.to_str().expect("utf-8 path");
    let run = fx.tenants(&["export", "--tenant", "acmee", "--out", out_arg]);
    assert_exit(&run, 1, "export of an unknown tenant");
    assert!(
        run.stderr
            .starts_with("refused: tenant \"acmee\" has no rows"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--allow-empty"), "{}", run.stderr);
    assert!(!out.exists(), "a refused export wrote {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(&fx.dir)
        .expect("crate dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().contains("typo-export"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let run = fx.tenants(&[
        "export",
        "--tenant",
        "acmee",
        "--out",
        out_arg,
        "--allow-empty",
    ]);
    assert_exit(&run, 0, "export --allow-empty");
    assert!(run.stdout.contains("exported 0 rows"), "{}", run.stdout);
    assert!(out.join("manifest.json").is_file());
}

/// A table with a tenant column that nobody marked is not exported, and export says so
/// (issue 16: leaving it out was silent); with every table marked it says nothing.
#[test]
fn export_names_a_forgotten_table_it_leaves_out() {
    let fx = fixture();
    let export = |name: &str| {
        let out = fx.dir.join(name);
        fx.tenants(&[
            "export",
            "--tenant",
            "acme",
            "--out",
            out.to_str().expect("utf-8 path"),
        ])
    };
    let run = export("clean");
    assert_exit(&run, 0, "export");
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);

    diesel::connection::SimpleConnection::batch_execute(
        &mut fx.db.connect(),
        "CREATE TABLE note (id serial PRIMARY KEY, tenant text NOT NULL, body text);
         INSERT INTO note (tenant, body) VALUES ('acme', 'left behind');",
    )
    .expect("an unmarked table with a tenant column");
    let run = export("with-forgotten");
    assert_exit(&run, 0, "export");
    assert!(
        run.stderr.contains(
            r#"warning: "public"."note": has a tenant column "tenant" but is neither #[with_rls] nor #[shared]: not exported"#
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "hint: if its rows belong to a tenant, mark it #[with_rls] and run `tenants generate`"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("exported 8 rows of tenant acme"),
        "{}",
        run.stdout
    );
}
