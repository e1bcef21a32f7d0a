//! A plain `generate` writes a migration that replays on a fresh server: roles, memberships
//! and schema usage the database already had are ensured idempotently, not assumed.

use diesel::connection::SimpleConnection;

use crate::fixture::{Fixture, TODO_DOWN, TODO_MARKED, TODO_UP};

/// Roles are cluster-wide: names only this test uses.
const USER: &str = "tenants_test_portable_user";
const ADMIN: &str = "tenants_test_portable_admin";

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
    dev.drop_roles(&[USER, ADMIN]);
    // The developer's server already has the roles (an earlier project created them).
    tenants_tests::batch_locked(
        &mut dev.db.connect(),
        &format!("CREATE ROLE {USER} NOLOGIN; CREATE ROLE {ADMIN} NOLOGIN;"),
    );
    dev.migration("2026-01-01-000000_create_tables", TODO_UP, TODO_DOWN);
    dev.migrate();
    dev.source(TODO_MARKED);
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
    dev.drop_roles(&[USER, ADMIN]);
    let fresh = Fixture::new_named("fresh");
    fresh.migration("2026-01-01-000000_create_tables", TODO_UP, TODO_DOWN);
    fresh.migration(
        &migrations[1],
        &up,
        &std::fs::read_to_string(dir.join("down.sql")).expect("down.sql"),
    );
    fresh.source(TODO_MARKED);
    fresh.migrate();
    let check = fresh.tenants(&[&["check"][..], &names].concat());
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    fresh
        .db
        .connect()
        .batch_execute(&format!("REVOKE {USER}, {ADMIN} FROM CURRENT_USER"))
        .ok();
    fresh.revert_all();
    fresh.drop_roles(&[USER, ADMIN]);
}
