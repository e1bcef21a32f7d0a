//! `tenants audit`: what weakens isolation beyond our own objects, and what the serving
//! login can do.

use std::fmt;

use diesel::QueryableByName;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tenants_core::Config;
use tenants_core::catalog::MarkedTable;
use tenants_core::policy::QualifiedName;

/// One weakness: `subject` names the object, `problem` says what is wrong and why, `hint`
/// how to mend it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Weakness {
    /// The object concerned (a view, function, rule, trigger, index, table or role).
    #[diesel(sql_type = Text)]
    pub subject: String,
    /// What is wrong.
    #[diesel(sql_type = Text)]
    pub problem: String,
    /// The statement or step that mends it.
    #[diesel(sql_type = Text)]
    pub hint: String,
}

impl fmt::Display for Weakness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}\n  hint: {}",
            self.subject, self.problem, self.hint
        )
    }
}

/// What every check starts from (`$1` schemas, `$2` names, `$3` tenant columns of the
/// marked tables, `$4` our roles, tenant then admin, `$5` the serving login): `marked`, the
/// marked tables with their oid and owner. The loopholes around the policies (views,
/// definer functions, triggers, rules, leakproof functions, risky grants, existence
/// oracles) are the catalog's (`tenants_core::catalog::Loophole`), reported by `check` and
/// `verify()` too.
const CONTEXT: &str = r#"WITH marked AS (
   SELECT c.oid, t.schema, t.name, t.col, c.relowner
   FROM unnest($1::text[], $2::text[], $3::text[]) AS t(schema, name, col)
   JOIN pg_namespace n ON n.nspname = t.schema
   JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name)
"#;

/// Each check is one query over all marked tables at once, returning `subject, problem,
/// hint` rows.
const CHECKS: [&str; 1] = [
    // Our roles themselves: one that can log in is a way around the application (Citus
    // mode needs it; then only the cluster's nodes may, by pg_hba.conf).
    r#"SELECT format('role %I', r.rolname) AS subject,
            'can log in: whoever authenticates as it acts as it, around the application; only Citus mode needs it, and then pg_hba.conf must accept it from the cluster''s nodes only' AS problem,
            format('ALTER ROLE %I NOLOGIN; (outside Citus mode)', r.rolname) AS hint
     FROM pg_roles r WHERE r.rolname = ANY($4) AND r.rolcanlogin"#,
];

/// The serving login: what it is and what it can become (every role it is a member of,
/// itself included); a superuser is a member of every role, so only its own attributes
/// are listed.
const LOGIN_CHECK: &str = r#"SELECT format('login role %I', $5::text) AS subject, w.problem, w.hint
     FROM (SELECT 1) one
     LEFT JOIN pg_roles l ON l.rolname = $5
     CROSS JOIN LATERAL (
       SELECT 'does not exist' AS problem,
              'pass the login the application serves tenants with: --login NAME, or its URL' AS hint
       WHERE l.oid IS NULL
       UNION ALL
       SELECT 'is a superuser: superusers are never subject to row level security',
              'serve tenants with a login that is NOSUPERUSER, NOBYPASSRLS, owns no table and is a member of the tenant role only (README, "Hardened deployment")'
       WHERE l.rolsuper
       UNION ALL
       SELECT 'has BYPASSRLS: unscoped queries see every tenant',
              format('ALTER ROLE %I NOBYPASSRLS;', l.rolname)
       WHERE l.rolbypassrls AND NOT l.rolsuper
       UNION ALL
       SELECT format('owns marked table %I.%I: an owner can disable row level security', t.schema, t.name),
              format('ALTER TABLE %I.%I OWNER TO <the migration role>; the serving login owns nothing', t.schema, t.name)
       FROM marked t WHERE t.relowner = l.oid
       UNION ALL
       SELECT x.problem, x.hint
       FROM pg_roles r
       CROSS JOIN LATERAL (
         SELECT format('can SET ROLE to %I, which is %s', r.rolname,
                       CASE WHEN r.rolsuper THEN 'a superuser' ELSE 'BYPASSRLS' END) AS problem,
                format('REVOKE %I FROM %I;', r.rolname, l.rolname) AS hint
         WHERE (r.rolsuper OR r.rolbypassrls) AND r.oid <> l.oid
         UNION ALL
         SELECT format('is a member of the admin role %I: one SET ROLE and it sees every tenant', r.rolname),
                format('REVOKE %I FROM %I; admin work belongs to a second login', r.rolname, l.rolname)
         WHERE r.rolname = ($4::text[])[2] AND r.oid <> l.oid
         UNION ALL
         SELECT format('can SET ROLE to %I, owner of marked table %I.%I: an owner can disable row level security',
                       r.rolname, t.schema, t.name),
                format('REVOKE %I FROM %I;', r.rolname, l.rolname)
         FROM marked t WHERE t.relowner = r.oid AND r.oid <> l.oid
         UNION ALL
         SELECT DISTINCT format('has %s on marked table %I.%I through %s, beyond the tenant role: outside a scope it is not refused',
                       a.privilege_type, t.schema, t.name, CASE WHEN r.oid = l.oid THEN 'a direct grant' ELSE quote_ident(r.rolname) END),
                format('REVOKE %s ON %I.%I FROM %I;', a.privilege_type, t.schema, t.name, r.rolname)
         FROM marked t CROSS JOIN LATERAL aclexplode((SELECT relacl FROM pg_class WHERE oid = t.oid)) a
         WHERE a.grantee = r.oid AND r.oid <> t.relowner AND NOT r.rolname = ANY($4)
       ) x
       WHERE NOT l.rolsuper AND pg_has_role(l.oid, r.oid, 'MEMBER')
     ) w"#;

/// Every weakness found, check by check, in a fixed number of queries; `login` is the
/// serving login to inspect.
pub async fn audit(
    conn: &mut AsyncPgConnection,
    config: &Config,
    tables: &[MarkedTable],
    login: &str,
) -> Result<Vec<Weakness>, diesel::result::Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.table.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.table.name.as_str()).collect();
    let columns: Vec<&str> = tables.iter().map(|t| t.key.column.as_str()).collect();
    let roles = [config.tenant_role(), config.admin_role()];
    let mut weaknesses = Vec::new();
    for check in CHECKS.iter().chain([&LOGIN_CHECK]) {
        let mut found = diesel::sql_query(format!(
            "{CONTEXT}SELECT DISTINCT * FROM ({check}) w ORDER BY 1, 2"
        ))
        .bind::<Array<Text>, _>(&schemas)
        .bind::<Array<Text>, _>(&names)
        .bind::<Array<Text>, _>(&columns)
        .bind::<Array<Text>, _>(&roles[..])
        .bind::<Text, _>(login)
        .load::<Weakness>(conn)
        .await?;
        weaknesses.append(&mut found);
    }
    Ok(weaknesses)
}

/// What `tenants audit` found.
pub struct Report {
    /// The comparison's findings that weaken isolation (the rest is `check`'s drift).
    pub findings: Vec<tenants_core::Finding>,
    /// The weaknesses beyond our objects, and the serving login's.
    pub weaknesses: Vec<Weakness>,
    /// The `#[shared]` tables: listed, not counted (readable by every tenant on purpose).
    pub shared: Vec<QualifiedName>,
}

/// Whether a finding of the comparison weakens isolation (as opposed to drift that
/// `tenants generate` mends, or what the audit's own checks report).
pub fn weakens_isolation(finding: &tenants_core::Finding) -> bool {
    use tenants_core::Finding;
    matches!(
        finding,
        Finding::PermissivePolicy { .. }
            | Finding::RoleBypassesRls { .. }
            | Finding::TenantColumnCollation { .. }
            | Finding::SettingDefault { .. }
            | Finding::UnprotectedRelative { .. }
            | Finding::CrossTenantReference(..)
            | Finding::UnmarkedTable { .. }
            | Finding::Loophole(..)
    )
}
