//! Marks that survive `diesel print-schema`: with the use form (`#[with_rls] use
//! crate::schema::todo_item;` in a file of the crate's own), `diesel print-schema >
//! src/schema.rs` (the real diesel CLI, as `diesel migration run` with `[print_schema]
//! file` would write it) leaves `tenants check` passing; marks kept in `schema.rs` itself
//! are lost by the rewrite, and `check` says so instead of passing.

use crate::fixture::{Fixture, GRANTEE, TODO_DOWN, TODO_UP};

fn write(fx: &Fixture, file: &str, text: &str) {
    std::fs::write(fx.dir.join("src").join(file), text).expect("write source");
}

#[test]
fn print_schema_leaves_check_passing_with_the_use_form() {
    let fx = Fixture::new();
    tenants_tests::ensure_login_role(&mut fx.db.connect(), GRANTEE);
    let tenants = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--grant-to", GRANTEE]);
        fx.tenants(&args)
    };
    fx.migration("2026-01-01-000000_create_todo_item", TODO_UP, TODO_DOWN);
    fx.migrate();
    // The README's setup: schema.rs is diesel's, the marks live in src/rls.rs.
    fx.source("pub mod rls;\npub mod schema;\n");
    // What `diesel print-schema > src/schema.rs` writes, by the real diesel CLI.
    let print_schema = || {
        let printed = fx.diesel(&["print-schema"]);
        assert!(printed.contains("todo_item (id)"), "{printed}");
        write(&fx, "schema.rs", &printed);
        printed
    };
    print_schema();
    write(
        &fx,
        "rls.rs",
        "//! Which tables are isolated per tenant: kept out of the schema.rs diesel rewrites.\n\n#[tenants_core::with_rls]\npub use crate::schema::todo_item;\n",
    );
    let check_passes_with_one_mark = || {
        let check = tenants(&["check"]);
        assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
        assert!(
            check.stderr.contains("1 #[with_rls] table(s)"),
            "{}",
            check.stderr
        );
    };
    let generated = tenants(&["generate"]);
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    fx.migrate();
    check_passes_with_one_mark();

    // A new migration, and `diesel print-schema > src/schema.rs` rewrites the file.
    fx.migration(
        "2026-01-02-000000_create_project",
        "CREATE TABLE project (id serial PRIMARY KEY, title text NOT NULL);",
        "DROP TABLE project;",
    );
    fx.migrate();
    assert!(print_schema().contains("project (id)"));
    check_passes_with_one_mark();

    // Marks kept in schema.rs itself: the same rewrite loses them, and check says so.
    std::fs::remove_file(fx.dir.join("src/rls.rs")).expect("remove rls.rs");
    fx.source("pub mod schema;\n");
    write(
        &fx,
        "schema.rs",
        &fx.diesel(&["print-schema"]).replacen(
            "diesel::table! {\n    todo_item",
            "#[tenants_core::with_rls]\ndiesel::table! {\n    todo_item",
            1,
        ),
    );
    assert_eq!(tenants(&["check"]).code, 0, "marked in schema.rs: passes");
    print_schema();
    let check = tenants(&["check"]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert!(
        format!("{}{}", check.stdout, check.stderr).contains("print-schema"),
        "{}{}",
        check.stdout,
        check.stderr
    );
}
