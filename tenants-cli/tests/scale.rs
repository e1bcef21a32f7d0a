//! The catalog is read in a fixed number of statements whatever the number of tables.

use diesel::connection::SimpleConnection;

use crate::fixture::Fixture;

fn statements_for(tables: usize) -> usize {
    let fx = Fixture::new_named(&format!("scale_{tables}"));
    let mut ddl = String::new();
    let mut source = String::new();
    for i in 0..tables {
        ddl.push_str(&format!(
            "CREATE TABLE t{i} (id serial PRIMARY KEY, tenant text NOT NULL);\n"
        ));
        source.push_str(&format!(
            "#[tenants_core::with_rls]\ndiesel::table! {{ t{i} (id) {{ id -> Int4, tenant -> Text }} }}\n"
        ));
    }
    fx.db.connect().batch_execute(&ddl).expect("tables");
    fx.source(&source);
    let run = fx.tenants(&["diff", "--verbose"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.matches("ENABLE ROW LEVEL SECURITY").count(),
        tables
    );
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("read the catalog"))
        .unwrap_or_else(|| panic!("no count in {}", run.stderr));
    assert!(
        line.contains(&format!("for {tables} marked table(s)")),
        "{line}"
    );
    line.split_whitespace()
        .rev()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line}"))
}

#[test]
fn catalog_statements_do_not_grow_with_tables() {
    let three = statements_for(3);
    let three_hundred = statements_for(300);
    assert_eq!(
        three, three_hundred,
        "3 tables: {three}, 300 tables: {three_hundred}"
    );
}
