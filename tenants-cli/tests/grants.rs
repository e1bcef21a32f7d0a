//! Grants by purpose: a tenant-serving login gets the tenant role only, an admin login the
//! admin role only; a login that does not exist is refused by name, nothing written.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::fixture::{Fixture, TODO_DOWN, TODO_MARKED, TODO_UP};

const TENANT_LOGIN: &str = "tenants_test_cli_tenant_login";
const ADMIN_LOGIN: &str = "tenants_test_cli_admin_login";

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn is_member(fx: &Fixture, login: &str, role: &str) -> bool {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
         JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1 AND g.rolname = $2",
    )
    .bind::<Text, _>(login)
    .bind::<Text, _>(role)
    .get_result::<Count>(&mut fx.db.connect())
    .expect("membership")
    .n > 0
}

#[test]
fn a_tenant_login_and_an_admin_login_get_one_role_each() {
    let fx = Fixture::new();
    let mut conn = fx.db.connect();
    for login in [TENANT_LOGIN, ADMIN_LOGIN] {
        tenants_tests::ensure_login_role(&mut conn, login);
    }
    // A failed earlier run may have left the (cluster-wide) memberships behind.
    tenants_tests::batch_locked(
        &mut conn,
        &format!(
            "DO $$ BEGIN
               IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_user') THEN REVOKE tenants_user FROM {TENANT_LOGIN}, {ADMIN_LOGIN}; END IF;
               IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenants_admin') THEN REVOKE tenants_admin FROM {TENANT_LOGIN}, {ADMIN_LOGIN}; END IF;
             END $$"
        ),
    );
    fx.migration("2026-01-01-000000_todo", TODO_UP, TODO_DOWN);
    fx.migrate();
    fx.source(TODO_MARKED);
    let grants = [
        "--grant-tenant-to",
        TENANT_LOGIN,
        "--grant-admin-to",
        ADMIN_LOGIN,
    ];

    let generated = fx.tenants(&[&["generate"][..], &grants].concat());
    assert_eq!(generated.code, 0, "{}", generated.stderr);
    let up = std::fs::read_to_string(std::path::Path::new(generated.stdout.trim()).join("up.sql"))
        .expect("up.sql");
    assert!(
        up.contains(&format!("GRANT \"tenants_user\" TO \"{TENANT_LOGIN}\";")),
        "{up}"
    );
    assert!(
        up.contains(&format!("GRANT \"tenants_admin\" TO \"{ADMIN_LOGIN}\";")),
        "{up}"
    );
    assert!(
        !up.contains(&format!("\"tenants_admin\" TO \"{TENANT_LOGIN}\""))
            && !up.contains(&format!("\"tenants_user\" TO \"{ADMIN_LOGIN}\"")),
        "each login gets its purpose's role only: {up}"
    );

    fx.migrate();
    assert!(is_member(&fx, TENANT_LOGIN, "tenants_user"));
    assert!(!is_member(&fx, TENANT_LOGIN, "tenants_admin"));
    assert!(is_member(&fx, ADMIN_LOGIN, "tenants_admin"));
    assert!(!is_member(&fx, ADMIN_LOGIN, "tenants_user"));

    let check = fx.tenants(&[&["check"][..], &grants].concat());
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    fx.revert_all();
    assert!(
        !is_member(&fx, TENANT_LOGIN, "tenants_user")
            && !is_member(&fx, ADMIN_LOGIN, "tenants_admin"),
        "down.sql revokes what up.sql granted"
    );
}

#[test]
fn a_login_that_does_not_exist_is_refused_by_name() {
    let fx = Fixture::new();
    fx.migration("2026-01-01-000000_todo", TODO_UP, TODO_DOWN);
    fx.migrate();
    fx.source(TODO_MARKED);
    let missing = "tenants_test_cli_no_such_login";
    tenants_tests::batch_locked(
        &mut fx.db.connect(),
        &format!("DROP ROLE IF EXISTS {missing}"),
    );
    for flag in ["--grant-to", "--grant-tenant-to", "--grant-admin-to"] {
        for command in ["generate", "diff", "check"] {
            let run = fx.tenants(&[command, flag, missing]);
            assert_eq!(
                run.code, 2,
                "{command} {flag}: {}{}",
                run.stdout, run.stderr
            );
            assert!(
                run.stderr
                    .contains(&format!("error: role \"{missing}\" does not exist")),
                "{command} {flag}: {}",
                run.stderr
            );
            assert_eq!(run.stdout, "", "{command} {flag}");
        }
    }
    assert_eq!(fx.migrations().len(), 1, "nothing written");
}
