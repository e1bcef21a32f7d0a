//! `verify` reports each kind of drift, typed, all at once.

use diesel::connection::SimpleConnection;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tenants_core::catalog::{Escape, Loophole};
use tenants_core::policy::QualifiedName;
use tenants_core::registry::{self, RlsTable, TenantSqlType};
use tenants_core::verify::{self, Bypass, Finding};
use tenants_core::{Config, Error, Purpose, catalog};
use tenants_tests::capture::Capture;
use tenants_tests::{TestDb, batch_locked, ensure_login_role};

use crate::common::{Login, create_marked_table, items_text_under_contract};
use crate::pool_kind::{self, PoolKind};

const TABLE: RlsTable = RlsTable {
    schema: "public",
    name: "items_text",
    tenant_column: "tenant",
    sql_type: TenantSqlType::Text,
};

fn table() -> QualifiedName {
    QualifiedName::new("public", "items_text")
}

/// The finding of the superuser login the fixtures connect as, under `Config::default()`
/// (an error: the default does not allow a login that bypasses RLS).
fn superuser_warning() -> Finding {
    Finding::LoginBypassesRls {
        login: "postgres".into(),
        bypass: Bypass::Superuser,
        allowed: false,
    }
}

async fn findings(url: &str, config: &Config, tables: &[RlsTable]) -> Vec<Finding> {
    findings_with_shared(url, config, tables, &[]).await
}

async fn findings_with_shared(
    url: &str,
    config: &Config,
    tables: &[RlsTable],
    shared: &[QualifiedName],
) -> Vec<Finding> {
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    let marked = verify::marked_tables(tables);
    let catalog = catalog::read(&mut conn, config, &marked, shared, &[])
        .await
        .expect("read catalog");
    verify::compare(config, &marked, &catalog).findings
}

/// A database with `items_text` under the contract, then `breakage` applied.
async fn broken(breakage: &str) -> (TestDb, Vec<Finding>) {
    let (db, mut conn) = items_text_under_contract();
    let config = Config::default();
    if !breakage.is_empty() {
        conn.batch_execute(breakage).expect("break");
    }
    let found = findings(&db.url(), &config, &[TABLE]).await;
    (db, found)
}

#[tokio::test]
async fn a_database_under_the_contract_has_only_the_superuser_warning() {
    let (_db, found) = broken("").await;
    assert_eq!(found, [superuser_warning()]);
}

#[tokio::test]
async fn rls_disabled() {
    let (_db, found) = broken("ALTER TABLE items_text DISABLE ROW LEVEL SECURITY").await;
    assert_eq!(
        found,
        [Finding::RlsDisabled { table: table() }, superuser_warning()]
    );
}

#[tokio::test]
async fn rls_not_forced() {
    let (_db, found) = broken("ALTER TABLE items_text NO FORCE ROW LEVEL SECURITY").await;
    assert_eq!(
        found,
        [
            Finding::RlsNotForced { table: table() },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn policy_missing() {
    let (_db, found) = broken("DROP POLICY tenants_admin ON items_text").await;
    assert_eq!(
        found,
        [
            Finding::PolicyMissing {
                table: table(),
                policy: "tenants_admin".into()
            },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn policy_with_another_expression() {
    let (_db, found) = broken(
        "DROP POLICY tenants_isolation ON items_text;
         CREATE POLICY tenants_isolation ON items_text USING (true) WITH CHECK (true)",
    )
    .await;
    assert_eq!(found.len(), 2, "{found:?}");
    match &found[0] {
        Finding::PolicyDiffers {
            table: t,
            policy,
            expected,
            actual,
        } => {
            assert_eq!((t, policy.as_str()), (&table(), "tenants_isolation"));
            let expected = expected.to_string();
            assert!(
                expected.contains("current_setting('tenants.current_tenant'"),
                "{expected}"
            );
            assert!(
                actual
                    .to_string()
                    .ends_with("USING (true) WITH CHECK (true)"),
                "{actual}"
            );
        }
        other => panic!("expected PolicyDiffers, got {other}"),
    }
}

#[tokio::test]
async fn another_setting_type_or_column_in_the_code() {
    let (db, _) = items_text_under_contract();
    let renamed = Config::default()
        .with_setting("app.tenant")
        .expect("config");
    let found = findings(&db.url(), &renamed, &[TABLE]).await;
    assert!(
        matches!(&found[..], [Finding::TenantDefaultDiffers { expected, .. }, Finding::PolicyDiffers { policy, .. }, _]
            if policy == "tenants_isolation" && expected.contains("'app.tenant'")),
        "{found:?}"
    );
    // The code now says the column is varchar: the database disagrees.
    let retyped = RlsTable {
        sql_type: TenantSqlType::VarChar,
        ..TABLE
    };
    let found = findings(&db.url(), &Config::default(), &[retyped]).await;
    assert_eq!(
        found,
        [
            Finding::ColumnTypeMismatch {
                table: table(),
                column: "tenant".into(),
                expected: TenantSqlType::VarChar,
                actual: "text".into()
            },
            superuser_warning()
        ]
    );
    // The code names another tenant column.
    let renamed_column = RlsTable {
        tenant_column: "org_id",
        ..TABLE
    };
    let found = findings(&db.url(), &Config::default(), &[renamed_column]).await;
    assert_eq!(
        found,
        [
            Finding::ColumnMissing {
                table: table(),
                column: "org_id".into()
            },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn schema_usage_missing() {
    let db = TestDb::new();
    let mut conn = db.connect();
    conn.batch_execute("CREATE SCHEMA sales").expect("schema");
    let config = Config::default();
    batch_locked(
        &mut conn,
        &tenants_core::policy::render_up(&config, &tenants_core::policy::setup(&config, &[], &[])),
    );
    conn.batch_execute(
        "CREATE TABLE sales.items_text (id serial PRIMARY KEY, tenant text NOT NULL)",
    )
    .expect("table");
    let in_sales = RlsTable {
        schema: "sales",
        ..TABLE
    };
    let found = findings(&db.url(), &config, &[in_sales]).await;
    assert_eq!(
        found[..2],
        [
            Finding::SchemaUsageMissing {
                schema: "sales".into(),
                role: "tenants_user".into()
            },
            Finding::SchemaUsageMissing {
                schema: "sales".into(),
                role: "tenants_admin".into()
            },
        ]
    );
}

#[tokio::test]
async fn our_policy_on_an_unmarked_table_is_a_warning() {
    let (db, _) = items_text_under_contract();
    let config = Config::default();
    // Nothing is marked any more.
    let found = findings(&db.url(), &config, &[]).await;
    assert_eq!(
        found,
        [
            Finding::NoTablesMarked,
            Finding::PolicyOnUnmarkedTable {
                table: table(),
                policy: "tenants_admin".into()
            },
            Finding::PolicyOnUnmarkedTable {
                table: table(),
                policy: "tenants_isolation".into()
            },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn table_grant_missing() {
    let (_db, found) = broken("REVOKE DELETE ON items_text FROM tenants_user").await;
    assert_eq!(
        found,
        [
            Finding::TableGrantMissing {
                table: table(),
                role: "tenants_user".into(),
                privilege: "DELETE".into()
            },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn sequence_grant_missing() {
    let (_db, found) =
        broken("REVOKE USAGE ON SEQUENCE items_text_id_seq FROM tenants_admin").await;
    assert_eq!(
        found,
        [
            Finding::SequenceGrantMissing {
                sequence: QualifiedName::new("public", "items_text_id_seq"),
                role: "tenants_admin".into(),
                privilege: "USAGE".into()
            },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn table_missing() {
    let db = TestDb::new();
    let config = Config::default();
    batch_locked(
        &mut db.connect(),
        &tenants_core::policy::render_up(&config, &tenants_core::policy::setup(&config, &[], &[])),
    );
    let found = findings(&db.url(), &config, &[TABLE]).await;
    assert_eq!(
        found,
        [
            Finding::TableMissing { table: table() },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn role_missing() {
    let (db, _) = items_text_under_contract();
    let config = Config::default()
        .with_tenant_role("tenants_test_no_such_role")
        .expect("config");
    let found = findings(&db.url(), &config, &[TABLE]).await;
    assert_eq!(
        found[..3],
        [
            Finding::RoleMissing {
                role: "tenants_test_no_such_role".into()
            },
            Finding::RoleNotGranted {
                role: "tenants_test_no_such_role".into(),
                login: "postgres".into()
            },
            Finding::SchemaUsageMissing {
                schema: "public".into(),
                role: "tenants_test_no_such_role".into()
            },
        ]
    );
    // Then that role's missing grants (4 on the table, 2 on each of the serial's and the
    // identity's sequences), then the superuser warning.
    assert_eq!(found.len(), 3 + 4 + 2 * 2 + 1, "{found:?}");
    assert!(found[3..11].iter().all(|f| matches!(f,
        Finding::TableGrantMissing { role, .. } | Finding::SequenceGrantMissing { role, .. }
            if role == "tenants_test_no_such_role")));
}

#[tokio::test]
async fn login_role_not_granted_our_roles() {
    let (db, mut conn) = items_text_under_contract();
    ensure_login_role(&mut conn, "tenants_test_ungranted");
    let url = db.url_as("tenants_test_ungranted");
    let not_granted = |role: &str| Finding::RoleNotGranted {
        role: role.into(),
        login: "tenants_test_ungranted".into(),
    };
    for (purpose, expected) in [
        (Purpose::Tenant, vec![not_granted("tenants_user")]),
        (Purpose::Admin, vec![not_granted("tenants_admin")]),
        (
            Purpose::TenantAndAdmin,
            vec![not_granted("tenants_user"), not_granted("tenants_admin")],
        ),
    ] {
        let config = Config::default().with_purpose(purpose);
        assert_eq!(
            findings(&url, &config, &[TABLE]).await,
            expected,
            "{purpose:?}"
        );
    }
}

/// The hardened deployment passes its own check: a tenant-serving login that is a member
/// of the tenant role only, and an admin login that is a member of the admin role only,
/// each verified for its purpose (on main, verify asked both logins for both roles).
#[tokio::test]
async fn each_login_needs_only_the_role_of_its_purpose() {
    let (db, mut conn) = items_text_under_contract();
    for login in ["tenants_test_purpose_tenant", "tenants_test_purpose_admin"] {
        ensure_login_role(&mut conn, login);
    }
    batch_locked(
        &mut conn,
        "ALTER ROLE tenants_test_purpose_tenant NOINHERIT; ALTER ROLE tenants_test_purpose_admin NOINHERIT;
         GRANT tenants_user TO tenants_test_purpose_tenant; GRANT tenants_admin TO tenants_test_purpose_admin",
    );
    let tenant = Config::default();
    let admin = Config::default().with_purpose(Purpose::Admin);
    let url = db.url_as("tenants_test_purpose_tenant");
    assert_eq!(findings(&url, &tenant, &[TABLE]).await, []);
    assert_eq!(
        findings(&url, &admin, &[TABLE]).await,
        [Finding::RoleNotGranted {
            role: "tenants_admin".into(),
            login: "tenants_test_purpose_tenant".into(),
        }],
        "a tenant login cannot serve admin transactions"
    );
    let url = db.url_as("tenants_test_purpose_admin");
    assert_eq!(findings(&url, &admin, &[TABLE]).await, []);
    assert_eq!(
        findings(&url, &tenant, &[TABLE]).await,
        [Finding::RoleNotGranted {
            role: "tenants_user".into(),
            login: "tenants_test_purpose_admin".into(),
        }]
    );
}

/// A login that inherits our role's privileges is a warning naming the fix for the
/// server's version: outside a scope it gets an empty result instead of `permission
/// denied`.
#[tokio::test]
async fn an_inheriting_login_is_a_warning() {
    let (db, mut conn) = items_text_under_contract();
    ensure_login_role(&mut conn, "tenants_test_inheriting");
    batch_locked(
        &mut conn,
        "ALTER ROLE tenants_test_inheriting INHERIT; GRANT tenants_user TO tenants_test_inheriting",
    );
    let found = findings(
        &db.url_as("tenants_test_inheriting"),
        &Config::default(),
        &[TABLE],
    )
    .await;
    let [
        finding @ Finding::LoginInheritsRole {
            login,
            role,
            server_version_num,
        },
    ] = &found[..]
    else {
        panic!("expected one inheritance warning, got {found:?}");
    };
    assert_eq!(
        (login.as_str(), role.as_str()),
        ("tenants_test_inheriting", "tenants_user")
    );
    assert_eq!(finding.severity(), verify::Severity::Warning);
    let fix = if *server_version_num >= 160_000 {
        "WITH INHERIT FALSE"
    } else {
        r#"ALTER ROLE "tenants_test_inheriting" NOINHERIT;"#
    };
    assert!(finding.hint().contains(fix), "{}", finding.hint());
}

#[tokio::test]
async fn bypassrls_login_fails_verify_unless_allowed() {
    let (db, mut conn) = items_text_under_contract();
    ensure_login_role(&mut conn, "tenants_test_bypass");
    batch_locked(
        &mut conn,
        "ALTER ROLE tenants_test_bypass BYPASSRLS; GRANT tenants_user, tenants_admin TO tenants_test_bypass",
    );
    let url = db.url_as("tenants_test_bypass");
    for allowed in [false, true] {
        let config = Config::default().with_bypassing_login(allowed);
        let found = findings(&url, &config, &[TABLE]).await;
        assert_eq!(
            found,
            [Finding::LoginBypassesRls {
                login: "tenants_test_bypass".into(),
                bypass: Bypass::BypassRls,
                allowed,
            }]
        );
        let severity = if allowed {
            verify::Severity::Warning
        } else {
            verify::Severity::Error
        };
        assert_eq!(found[0].severity(), severity);
    }
}

#[tokio::test]
async fn pool_verify_checks_every_registered_table() {
    verify_checks_every_registered_table(PoolKind::Async).await;
}

#[tokio::test]
async fn sync_pool_verify_checks_every_registered_table() {
    verify_checks_every_registered_table(PoolKind::Sync).await;
}

/// `verify()` of a pool of `kind` passes on a database with every registered table under
/// the contract, and lists what breaking two of them broke.
async fn verify_checks_every_registered_table(kind: PoolKind) {
    let db = TestDb::new();
    let mut conn = db.connect();
    let config = Config::default();
    let tables = registry::tables();
    assert!(tables.len() >= 5, "{tables:?}");
    for table in &tables {
        let pg_type = table.sql_type.pg_name();
        create_marked_table(
            &mut conn,
            &config,
            Login::Superuser,
            table.name,
            pg_type,
            table.sql_type,
        );
    }
    match pool_kind::connect(kind, &db.url(), Config::default(), 1)
        .await
        .verify()
        .await
    {
        Err(Error::Drift(report)) => assert_eq!(report.findings, [superuser_warning()]),
        other => panic!("a superuser serving login fails verify by default, got {other:?}"),
    }
    let allowed = Config::default().with_bypassing_login(true);
    let pool = pool_kind::connect(kind, &db.url(), allowed, 1).await;
    let capture = Capture::new();
    let guard = capture.install();
    let report = pool.verify().await.expect("verify passes");
    drop(guard);
    let warning = Finding::LoginBypassesRls {
        login: "postgres".into(),
        bypass: Bypass::Superuser,
        allowed: true,
    };
    assert_eq!(report.findings, std::slice::from_ref(&warning));
    // `pool.verify().await?` keeps the report's warnings visible: each is a WARN event.
    let warned: Vec<String> = capture
        .events()
        .into_iter()
        .filter(|e| e.level == tracing::Level::WARN && e.target == "tenants_core::verify")
        .filter_map(|e| e.fields.get("message").cloned())
        .collect();
    assert_eq!(warned, [warning.to_string()]);

    conn.batch_execute("ALTER TABLE items_int4 DISABLE ROW LEVEL SECURITY; DROP POLICY tenants_admin ON items_uuid")
        .expect("break two tables");
    match pool.verify().await {
        Err(Error::Drift(report)) => {
            let errors: Vec<String> = report
                .findings
                .iter()
                .filter(|f| f.severity() == verify::Severity::Error)
                .map(ToString::to_string)
                .collect();
            assert_eq!(
                errors,
                [
                    r#""public"."items_int4": row level security is not enabled"#,
                    r#""public"."items_uuid": policy "tenants_admin" is missing"#
                ]
            );
        }
        other => panic!("expected drift, got {other:?}"),
    }
}

#[tokio::test]
async fn tenant_column_made_nullable() {
    let (_db, found) = broken("ALTER TABLE items_text ALTER tenant DROP NOT NULL").await;
    assert_eq!(
        found,
        [
            Finding::TenantColumnNullable {
                table: table(),
                column: "tenant".into()
            },
            superuser_warning()
        ]
    );
    assert!(found[0].hint().contains("tenants generate"));
}

#[tokio::test]
async fn tenant_column_default_dropped() {
    let expected = "NULLIF(current_setting('tenants.current_tenant'::text, true), ''::text)";
    let (_db, found) = broken("ALTER TABLE items_text ALTER tenant DROP DEFAULT").await;
    let dropped = Finding::TenantDefaultDiffers {
        table: table(),
        column: "tenant".into(),
        expected: expected.into(),
        actual: None,
    };
    assert_eq!(found, [dropped, superuser_warning()]);
    assert_eq!(
        found[0].to_string(),
        format!(
            r#""public"."items_text": tenant column "tenant" has no default; the contract's is {expected}"#
        )
    );
    assert!(found[0].hint().contains("tenants generate"));
}

#[tokio::test]
async fn tenant_column_default_changed() {
    let expected = "NULLIF(current_setting('tenants.current_tenant'::text, true), ''::text)";
    let (_db, found) = broken("ALTER TABLE items_text ALTER tenant SET DEFAULT 'acme'").await;
    assert_eq!(
        found,
        [
            Finding::TenantDefaultDiffers {
                table: table(),
                column: "tenant".into(),
                expected: expected.into(),
                actual: Some("'acme'::text".into()),
            },
            superuser_warning()
        ]
    );
}

#[tokio::test]
async fn another_permissive_policy_for_everyone() {
    let (_db, found) = broken(
        "CREATE POLICY everyone_reads ON items_text FOR SELECT USING (true);
         CREATE POLICY reporting_only ON items_text FOR SELECT TO pg_monitor USING (true);
         CREATE POLICY narrowing ON items_text AS RESTRICTIVE FOR ALL USING (true)",
    )
    .await;
    // Only the permissive one that applies to our roles (PUBLIC) lets rows through.
    assert_eq!(
        found,
        [
            Finding::PermissivePolicy {
                table: table(),
                policy: "everyone_reads".into(),
                roles: vec!["public".into()]
            },
            superuser_warning()
        ]
    );
    assert!(found[0].hint().contains(r#"DROP POLICY "everyone_reads""#));
}

#[tokio::test]
async fn our_role_bypassing_rls() {
    let (db, mut conn) = items_text_under_contract();
    let config = Config::default()
        .with_tenant_role("tenants_test_bypassing_tenant")
        .expect("config");
    ensure_login_role(&mut conn, "tenants_test_bypassing_tenant");
    batch_locked(
        &mut conn,
        "ALTER ROLE tenants_test_bypassing_tenant BYPASSRLS",
    );
    let found = findings(&db.url(), &config, &[TABLE]).await;
    assert!(
        found.contains(&Finding::RoleBypassesRls {
            role: "tenants_test_bypassing_tenant".into(),
            bypass: Bypass::BypassRls
        }),
        "{found:?}"
    );
}

#[tokio::test]
async fn shared_table_grants() {
    let (db, mut conn) = items_text_under_contract();
    let config = Config::default();
    let countries = QualifiedName::new("public", "countries");
    let missing = findings_with_shared(
        &db.url(),
        &config,
        &[TABLE],
        std::slice::from_ref(&countries),
    )
    .await;
    assert_eq!(
        missing,
        [
            Finding::SharedTableMissing {
                table: countries.clone()
            },
            superuser_warning()
        ]
    );
    conn.batch_execute("CREATE TABLE countries (code text PRIMARY KEY); GRANT SELECT ON countries TO tenants_admin")
        .expect("create countries");
    let ungranted = findings_with_shared(
        &db.url(),
        &config,
        &[TABLE],
        std::slice::from_ref(&countries),
    )
    .await;
    assert_eq!(
        ungranted,
        [
            Finding::SharedGrantMissing {
                table: countries.clone(),
                role: "tenants_user".into()
            },
            superuser_warning()
        ]
    );
    conn.batch_execute("GRANT SELECT ON countries TO tenants_user")
        .expect("grant");
    let granted = findings_with_shared(&db.url(), &config, &[TABLE], &[countries]).await;
    assert_eq!(granted, [superuser_warning()]);
}

/// A default of the tenant setting (`ALTER DATABASE ... SET`) makes every new session start
/// inside a tenant. Both pools refuse to connect, naming it, instead of timing out on
/// connections their clean check calls dirty; the comparison names it with its fix.
#[tokio::test]
async fn a_tenant_setting_default_is_named_instead_of_a_pool_timeout() {
    let (db, mut conn) = items_text_under_contract();
    let name = db.name().to_string();
    conn.batch_execute(&format!(
        "ALTER DATABASE \"{name}\" SET tenants.current_tenant = 'acme'"
    ))
    .expect("default");
    let refused = [
        tenants_core::TenantPool::connect(&db.url())
            .await
            .err()
            .map(|e| e.to_string()),
        tenants_core::SyncTenantPool::connect(&db.url())
            .err()
            .map(|e| e.to_string()),
    ];
    for error in refused {
        let error = error.expect("refused");
        assert!(
            error.contains("tenants: new sessions start as role postgres with tenants.current_tenant = 'acme', a default set by ALTER DATABASE or ALTER ROLE ... SET"),
            "{error}"
        );
    }
    let found = findings(&db.url(), &Config::default(), &[TABLE]).await;
    let default = Finding::SettingDefault {
        database: Some(name.clone()),
        role: None,
        setting: "tenants.current_tenant".into(),
        value: "acme".into(),
    };
    assert_eq!(found, [default.clone(), superuser_warning()]);
    assert_eq!(
        default.hint(),
        format!(
            "sessions must start without it (the scopes set it per transaction): `ALTER DATABASE \"{name}\" RESET \"tenants.current_tenant\";`"
        )
    );

    conn.batch_execute(&format!(
        "ALTER DATABASE \"{name}\" RESET tenants.current_tenant"
    ))
    .expect("reset");
    let pool = tenants_core::TenantPool::connect(&db.url())
        .await
        .expect("connects");
    // A plain checkout passes the clean check again (verify() would compare every
    // registered table, which this database lacks).
    pool.unscoped().await.expect("a clean plain checkout");
}

/// Another permissive policy reaches the tenant role through a role it is a member of:
/// `verify()` fails on it as on one `TO PUBLIC`.
#[tokio::test]
async fn a_permissive_policy_reached_by_membership() {
    let (db, mut conn) = items_text_under_contract();
    let grp = "tenants_test_verify_grp";
    batch_locked(
        &mut conn,
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{grp}')
               THEN CREATE ROLE {grp} NOLOGIN; END IF; END $$;
             GRANT {grp} TO tenants_user;"
        ),
    );
    conn.batch_execute(&format!(
        "CREATE POLICY everything ON items_text TO {grp} USING (true)"
    ))
    .expect("policy");
    let found = findings(&db.url(), &Config::default(), &[TABLE]).await;
    conn.batch_execute("DROP POLICY everything ON items_text")
        .expect("drop");
    batch_locked(&mut conn, &format!("REVOKE {grp} FROM tenants_user;"));
    assert_eq!(
        found,
        [
            Finding::PermissivePolicy {
                table: table(),
                policy: "everything".into(),
                roles: vec![grp.into()],
            },
            superuser_warning()
        ]
    );
    assert_eq!(
        findings(&db.url(), &Config::default(), &[TABLE]).await,
        [superuser_warning()]
    );
}

/// A case-insensitive tenant column lets tenant `ACME` read `acme`'s rows: an error.
#[tokio::test]
async fn a_nondeterministic_tenant_collation() {
    let (_db, found) = broken(
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         DROP POLICY tenants_isolation ON items_text;
         ALTER TABLE items_text ALTER COLUMN tenant TYPE text COLLATE ci;",
    )
    .await;
    assert_eq!(
        found,
        [
            Finding::TenantColumnCollation {
                table: table(),
                column: "tenant".into(),
                type_name: "text".into(),
                collation: "ci".into(),
            },
            Finding::PolicyMissing {
                table: table(),
                policy: "tenants_isolation".into(),
            },
            superuser_warning()
        ]
    );
    assert_eq!(found[0].severity(), verify::Severity::Error);
}

/// Each loophole around the policies that `generate` does not manage (a view or a definer
/// function, trigger or rule running as a role that escapes the policies, a materialized
/// view, a leakproof function, an existence oracle, a risky grant) is a warning of `verify()`: reported with the
/// object, gone with it; one under the policies (a `security_invoker` view, a definer
/// function owned by the tenant role) is not reported at all.
#[tokio::test]
async fn loopholes_around_the_policies_are_warnings() {
    let (db, mut conn) = items_text_under_contract();
    let config = Config::default();
    let superuser = || ("postgres".to_string(), Escape::Superuser);
    let cases: Vec<(&str, Vec<Loophole>, &str)> = vec![
        (
            "CREATE VIEW open_view AS SELECT * FROM items_text",
            vec![Loophole::View {
                view: QualifiedName::new("public", "open_view"),
                marked: table(),
                owner: superuser().0,
                escape: superuser().1,
            }],
            "DROP VIEW open_view",
        ),
        (
            "CREATE VIEW admin_view AS SELECT * FROM items_text; ALTER VIEW admin_view OWNER TO tenants_admin",
            vec![Loophole::View {
                view: QualifiedName::new("public", "admin_view"),
                marked: table(),
                owner: "tenants_admin".into(),
                escape: Escape::AdminRole,
            }],
            "DROP VIEW admin_view",
        ),
        (
            "CREATE MATERIALIZED VIEW all_items AS SELECT * FROM items_text",
            vec![Loophole::MaterializedView {
                view: QualifiedName::new("public", "all_items"),
                marked: table(),
            }],
            "DROP MATERIALIZED VIEW all_items",
        ),
        (
            "CREATE FUNCTION count_all(int) RETURNS bigint SECURITY DEFINER LANGUAGE sql
               AS 'SELECT count(*) FROM items_text'",
            vec![Loophole::DefinerFunction {
                function: r#""public"."count_all"(integer)"#.into(),
                owner: superuser().0,
                escape: superuser().1,
            }],
            "DROP FUNCTION count_all(int)",
        ),
        (
            "CREATE FUNCTION copy_row() RETURNS trigger SECURITY DEFINER LANGUAGE plpgsql
               AS $$ BEGIN RETURN NEW; END $$;
             CREATE TRIGGER copy AFTER INSERT ON items_text FOR EACH ROW EXECUTE FUNCTION copy_row()",
            vec![
                Loophole::DefinerFunction {
                    function: r#""public"."copy_row"()"#.into(),
                    owner: superuser().0,
                    escape: superuser().1,
                },
                Loophole::DefinerTrigger {
                    trigger: "copy".into(),
                    table: table(),
                    function: r#""public"."copy_row"()"#.into(),
                    owner: superuser().0,
                    escape: superuser().1,
                },
            ],
            "DROP TRIGGER copy ON items_text; DROP FUNCTION copy_row()",
        ),
        (
            "CREATE TABLE stolen (secret text);
             CREATE RULE steal AS ON INSERT TO items_text DO ALSO INSERT INTO stolen SELECT name FROM items_text",
            vec![Loophole::Rule {
                rule: "steal".into(),
                table: table(),
                owner: superuser().0,
                escape: superuser().1,
            }],
            "DROP RULE steal ON items_text; DROP TABLE stolen",
        ),
        (
            "CREATE FUNCTION peek(text) RETURNS boolean LEAKPROOF IMMUTABLE LANGUAGE sql AS 'SELECT true'",
            vec![Loophole::LeakproofFunction {
                function: r#""public"."peek"(text)"#.into(),
            }],
            "DROP FUNCTION peek(text)",
        ),
        (
            "CREATE UNIQUE INDEX items_lower_name ON items_text (lower(name))",
            vec![Loophole::ExistenceOracle {
                kind: "unique index".into(),
                name: "items_lower_name".into(),
                table: table(),
                tenant_column: "tenant".into(),
                fix: "DROP INDEX public.items_lower_name; CREATE UNIQUE INDEX items_lower_name ON public.items_text USING btree (tenant, lower(name));".into(),
            }],
            "DROP INDEX items_lower_name",
        ),
        (
            "GRANT TRUNCATE ON items_text TO PUBLIC; GRANT REFERENCES ON items_text TO tenants_user",
            vec![
                Loophole::Grant {
                    table: table(),
                    privilege: "REFERENCES".into(),
                    grantee: Some("tenants_user".into()),
                },
                Loophole::Grant {
                    table: table(),
                    privilege: "TRUNCATE".into(),
                    grantee: None,
                },
            ],
            "REVOKE TRUNCATE ON items_text FROM PUBLIC; REVOKE REFERENCES ON items_text FROM tenants_user",
        ),
    ];
    for (create, loopholes, remove) in cases {
        conn.batch_execute(create).expect(create);
        let found = findings(&db.url(), &config, &[TABLE]).await;
        let mut expected: Vec<Finding> = loopholes.into_iter().map(Finding::Loophole).collect();
        assert!(
            expected
                .iter()
                .all(|f| f.severity() == verify::Severity::Warning)
        );
        expected.push(superuser_warning());
        assert_eq!(found, expected, "{create}");
        conn.batch_execute(remove).expect(remove);
        assert_eq!(
            findings(&db.url(), &config, &[TABLE]).await,
            [superuser_warning()],
            "{remove}"
        );
    }
    conn.batch_execute(
        "CREATE VIEW invoker_view WITH (security_invoker = on) AS SELECT * FROM items_text;
         CREATE FUNCTION mine() RETURNS bigint SECURITY DEFINER LANGUAGE sql AS 'SELECT count(*) FROM items_text';
         ALTER FUNCTION mine() OWNER TO tenants_user;",
    )
    .expect("objects under the policies");
    assert_eq!(
        findings(&db.url(), &config, &[TABLE]).await,
        [superuser_warning()]
    );
}

/// A pool's `verify()` passes with a loophole (a warning) and emits it as a WARN event, with
/// its fix.
#[tokio::test]
async fn pool_verify_passes_with_a_loophole_and_warns() {
    let db = TestDb::new();
    let mut conn = db.connect();
    let config = Config::default();
    for table in registry::tables() {
        create_marked_table(
            &mut conn,
            &config,
            Login::Superuser,
            table.name,
            table.sql_type.pg_name(),
            table.sql_type,
        );
    }
    conn.batch_execute("CREATE VIEW open_view AS SELECT * FROM items_text")
        .expect("view");
    let allowed = Config::default().with_bypassing_login(true);
    let pool = pool_kind::connect(PoolKind::Async, &db.url(), allowed, 1).await;
    let capture = Capture::new();
    let guard = capture.install();
    let report = pool.verify().await.expect("a warning does not fail verify");
    drop(guard);
    let view = Finding::Loophole(Loophole::View {
        view: QualifiedName::new("public", "open_view"),
        marked: table(),
        owner: "postgres".into(),
        escape: Escape::Superuser,
    });
    assert_eq!(
        report.findings,
        [
            view.clone(),
            Finding::LoginBypassesRls {
                login: "postgres".into(),
                bypass: Bypass::Superuser,
                allowed: true,
            }
        ]
    );
    let warned: Vec<(String, String)> = capture
        .events()
        .into_iter()
        .filter(|e| e.level == tracing::Level::WARN && e.target == "tenants_core::verify")
        .filter_map(|e| {
            Some((
                e.fields.get("message")?.clone(),
                e.fields.get("hint")?.clone(),
            ))
        })
        .collect();
    assert_eq!(warned[0], (view.to_string(), view.hint()));
    conn.batch_execute("DROP VIEW open_view").expect("drop");
    assert_eq!(
        pool.verify().await.expect("verify").findings.len(),
        1,
        "only the allowed login's warning is left"
    );
}
