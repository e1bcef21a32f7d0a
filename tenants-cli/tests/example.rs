//! The example service's RLS migration is exactly what `tenants generate --full` writes.

use std::path::Path;

use diesel::connection::SimpleConnection;

use crate::fixture::{Fixture, Run};

#[test]
fn the_example_services_migration_is_what_generate_writes() {
    let fx = Fixture::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/todo-api");
    let migrations = example.join("migrations");
    let mut names: Vec<String> = std::fs::read_dir(&migrations)
        .expect("the example's migrations")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let [create, rls] = &names[..] else {
        panic!("expected the table migration and the RLS migration: {names:?}");
    };
    let table_up = std::fs::read_to_string(migrations.join(create).join("up.sql")).expect("up");
    fx.db
        .connect()
        .batch_execute(&table_up)
        .expect("create the table");

    let out = fx.dir.join("generated");
    let run: Run = std::process::Command::new(env!("CARGO_BIN_EXE_tenants"))
        .args([
            "generate",
            "--full",
            "--grant-to",
            "CURRENT_USER",
            "--crate-dir",
        ])
        .arg(&example)
        .arg("--migration-dir")
        .arg(&out)
        .args(["--database-url", &fx.db.url()])
        .output()
        .expect("run tenants")
        .into();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let generated = std::path::PathBuf::from(run.stdout.trim());
    for file in ["up.sql", "down.sql"] {
        let committed =
            std::fs::read_to_string(migrations.join(rls).join(file)).expect("committed");
        let written = std::fs::read_to_string(generated.join(file)).expect("generated");
        assert_eq!(
            written, committed,
            "{file} differs from `tenants generate --full --grant-to CURRENT_USER`"
        );
    }
}
