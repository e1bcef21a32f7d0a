//! A plain `generate` writes a migration that replays on a fresh server: roles, memberships
//! and schema usage the database already had are ensured idempotently, not assumed.

use diesel::connection::SimpleConnection;

use crate::fixture::Fixture;

const TABLES_UP: &str =
    "CREATE TABLE todo_item (id serial PRIMARY KEY, name text NOT NULL, tenant text NOT NULL);";
const TABLES_DOWN: &str = "DROP TABLE todo_item;";
const MARKED: &str = "#[tenants_core::with_rls]\ndiesel::table! { todo_item (id) { id -> Int4, name -> Text, tenant -> Text } }\n";
/// Roles are cluster-wide: names only this test uses.
const USER: &str = "tenants_test_portable_user";
const ADMIN: &str = "tenants_test_portable_admin";

fn drop_roles(fx: &Fixture) {
    tenants_tests::batch_locked(
        &mut fx.db.connect(),
        &format!("DROP ROLE IF EXISTS {USER}; DROP ROLE IF EXISTS {ADMIN};"),
    );
}

#[test]
fn generate_replays_on_a_server_without_the_roles() {
    let names = [
        "--tenant-role",
        USER,
        "--admin-role",
        ADMIN,
        "--setting",
        "portable.tenant",
    ];
    let dev = Fixture::new_named("dev");
    drop_roles(&dev);
    // The developer's server already has the roles (an earlier project created them).
    tenants_tests::batch_locked(
        &mut dev.db.connect(),
        &format!("CREATE ROLE {USER} NOLOGIN; CREATE ROLE {ADMIN} NOLOGIN;"),
    );
    dev.migration("2026-01-01-000000_create_tables", TABLES_UP, TABLES_DOWN);
    dev.migrate();
    dev.source(MARKED);
    let generated = dev.tenants(&[&["generate"][..], &names].concat());
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    let migrations = dev.migrations();
    assert_eq!(migrations.len(), 2);
    let dir = dev.dir.join("migrations").join(&migrations[1]);
    let up = std::fs::read_to_string(dir.join("up.sql")).expect("up.sql");
    let down = std::fs::read_to_string(dir.join("down.sql")).expect("down.sql");
    assert!(
        up.contains(&format!("CREATE ROLE \"{USER}\" NOLOGIN;")),
        "{up}"
    );
    // Existing roles are not this migration's to drop.
    assert!(!down.contains("DROP ROLE"), "{down}");
    assert!(
        down.contains(&format!("-- kept: role \"{USER}\"")),
        "{down}"
    );

    // A fresh server: the roles do not exist; the committed migrations replay.
    drop_roles(&dev);
    let fresh = Fixture::new_named("fresh");
    fresh.migration("2026-01-01-000000_create_tables", TABLES_UP, TABLES_DOWN);
    fresh.migration(
        &migrations[1],
        &up,
        &std::fs::read_to_string(dir.join("down.sql")).expect("down.sql"),
    );
    fresh.source(MARKED);
    fresh.migrate();
    let check = fresh.tenants(&[&["check"][..], &names].concat());
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    fresh
        .db
        .connect()
        .batch_execute(&format!("REVOKE {USER}, {ADMIN} FROM CURRENT_USER"))
        .ok();
    fresh.revert_all();
    drop_roles(&fresh);
}
