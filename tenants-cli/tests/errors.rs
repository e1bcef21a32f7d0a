//! Bad input gets a clear error, exit code 2, and nothing written.

use crate::fixture::{Fixture, TODO_MARKED};

#[test]
fn unreachable_database_is_one_line_exit_2_and_no_files() {
    let fx = Fixture::new();
    fx.source(TODO_MARKED);
    for command in ["generate", "check", "diff"] {
        let run = fx.tenants_at("postgres://postgres@127.0.0.1:1/nowhere", &[command]);
        assert_eq!(run.code, 2, "{command}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{command}: {:?}", run.stderr);
        assert!(
            run.stderr
                .starts_with("error: cannot connect to the database"),
            "{}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
    assert!(fx.migrations().is_empty());
}

#[test]
fn unparsable_source_names_file_and_line() {
    let fx = Fixture::new();
    fx.source("pub fn fine() {}\n\npub fn broken( {\n");
    let run = fx.tenants(&["generate"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lib = fx.dir.join("src/lib.rs");
    assert!(
        run.stderr.contains(&format!("{}:3:", lib.display())),
        "{}",
        run.stderr
    );
    assert!(fx.migrations().is_empty());
}

#[test]
fn wrongly_marked_item_names_file_and_line() {
    let fx = Fixture::new();
    fx.source("\n#[tenants_core::with_rls]\ndiesel::table! { t (id) { id -> Int4 } }\n");
    let run = fx.tenants(&["check"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("src/lib.rs:3:"), "{}", run.stderr);
    assert!(run.stderr.contains("tenant"), "{}", run.stderr);
}

#[test]
fn missing_table_or_column_names_them_and_writes_nothing() {
    let fx = Fixture::new();
    fx.source(TODO_MARKED);
    let run = fx.tenants(&["generate"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(r#""public"."todo_item": table does not exist"#),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("diesel migration run"),
        "{}",
        run.stderr
    );
    assert!(fx.migrations().is_empty());

    fx.migration(
        "2026-01-01-000000_create",
        "CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, org text NOT NULL)",
        "DROP TABLE todo_item",
    );
    fx.migrate();
    let run = fx.tenants(&["generate"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(r#"tenant column "tenant" does not exist"#),
        "{}",
        run.stderr
    );
    assert_eq!(fx.migrations().len(), 1, "nothing written");

    // In `check`, the same is a difference: exit 1, with the hint that mends it (not
    // `tenants generate`, which refuses here).
    let check = fx.tenants(&["check"]);
    assert_eq!(check.code, 1, "{}", check.stderr);
    assert!(
        check.stdout.contains("diesel migration run")
            && !check.stdout.contains("run `tenants generate`"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains(r#"tenant column "tenant" does not exist"#)
    );
}

#[test]
fn migration_dir_and_url_come_from_diesel_toml_and_dotenv() {
    let fx = Fixture::new();
    fx.source(TODO_MARKED);
    std::fs::write(
        fx.dir.join("diesel.toml"),
        "[migrations_directory]\ndir = \"db/migrations\"\n",
    )
    .expect("toml");
    std::fs::write(
        fx.dir.join(".env"),
        format!("DATABASE_URL={}\n", fx.db.url()),
    )
    .expect(".env");
    diesel::connection::SimpleConnection::batch_execute(
        &mut fx.db.connect(),
        "CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, tenant text NOT NULL)",
    )
    .expect("table");
    let run: crate::fixture::Run = std::process::Command::new(env!("CARGO_BIN_EXE_tenants"))
        .args(["generate", "--crate-dir", fx.dir.to_str().expect("utf-8")])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run")
        .into();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .trim()
            .starts_with(&fx.dir.join("db/migrations").display().to_string()),
        "{}",
        run.stdout
    );
    // From `src/`, with the `.env` one directory up, as diesel finds them.
    std::fs::write(fx.dir.join("Cargo.toml"), "[package]\nname = \"fixture\"\n")
        .expect("Cargo.toml");
    let from_src: crate::fixture::Run = std::process::Command::new(env!("CARGO_BIN_EXE_tenants"))
        .arg("check")
        .current_dir(fx.dir.join("src"))
        .env_remove("DATABASE_URL")
        .output()
        .expect("run")
        .into();
    // It found the database (the migration above is not applied yet) and the sources.
    assert_eq!(from_src.code, 1, "{}{}", from_src.stdout, from_src.stderr);
    assert!(
        from_src
            .stdout
            .contains(r#""public"."todo_item": row level security is not enabled"#),
        "{}",
        from_src.stdout
    );
    assert!(
        from_src.stderr.contains("tenants: 1 #[with_rls] table(s)"),
        "{}",
        from_src.stderr
    );
    let bad = std::fs::write(fx.dir.join("diesel.toml"), "[migrations_directory\n");
    bad.expect("write");
    let run = fx.tenants(&["generate"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("diesel.toml"), "{}", run.stderr);
}

/// Runs `tenants <args>` alone: no `--crate-dir`, no database.
fn bare(args: &[&str]) -> crate::fixture::Run {
    std::process::Command::new(env!("CARGO_BIN_EXE_tenants"))
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run tenants")
        .into()
}

#[test]
fn options_a_subcommand_does_not_use_are_refused() {
    for args in [
        &["list", "--full", "--grant-to", "nobody"][..],
        &["list", "--grant-to", "nobody"],
        &["audit", "--allow-unmark"],
        &["check", "--full"],
        &["purge", "--tenant", "acme", "--migration-dir", "m"],
        &["export", "--tenant", "a", "--out", "x", "--verbose"],
        &["diff", "--migration-dir", "m"],
    ] {
        let run = bare(args);
        assert_eq!(run.code, 2, "{args:?} was accepted: {}", run.stdout);
        assert!(
            run.stderr.contains("unexpected argument"),
            "{args:?}: {}",
            run.stderr
        );
    }
    for (command, options) in [
        (
            "generate",
            &["--full", "--allow-unmark", "--grant-to", "--migration-dir"][..],
        ),
        ("diff", &["--full", "--allow-unmark", "--grant-to"]),
        ("check", &["--allow-unmark", "--grant-to"]),
    ] {
        let help = bare(&[command, "--help"]);
        for option in options {
            assert!(
                help.stdout.contains(option),
                "{command} --help lacks {option}"
            );
        }
    }
}

#[test]
fn every_subcommand_help_states_its_exit_codes() {
    for command in [
        "diff", "generate", "check", "audit", "list", "export", "import", "purge",
    ] {
        let help = bare(&[command, "--help"]);
        assert_eq!(help.code, 0, "{command} --help");
        let text = help.stdout.replace('\n', " ");
        assert!(text.contains("Exit 0"), "{command}: {text}");
        assert!(
            text.contains("2 on"),
            "{command} names no error code: {text}"
        );
    }
    // `diff` refuses what `generate` refuses, with exit 2: its help says so.
    let diff = bare(&["diff", "--help"]).stdout.replace('\n', " ");
    assert!(diff.contains("refuses"), "{diff}");
}
