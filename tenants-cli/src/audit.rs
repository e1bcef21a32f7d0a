//! `tenants audit`: what weakens isolation beyond our own objects.

use std::fmt;

use diesel::QueryableByName;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tenants_core::Config;
use tenants_core::catalog::MarkedTable;

/// One weakness; `subject` names the object, `problem` says what is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Weakness {
    /// The object concerned (a view, function, constraint, table or role).
    #[diesel(sql_type = Text)]
    pub subject: String,
    /// What is wrong.
    #[diesel(sql_type = Text)]
    pub problem: String,
}

impl fmt::Display for Weakness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)
    }
}

/// Each check is one query over all marked tables at once (`$1` schemas, `$2` names, `$3`
/// tenant columns, `$4` our roles), returning `subject, problem` rows.
const CHECKS: [&str; 7] = [
    // Views run with their owner's rights unless security_invoker is set: RLS then
    // applies to the view's owner (often the table owner, or a superuser), not the caller.
    "SELECT DISTINCT format('view %I.%I', vn.nspname, v.relname) AS subject,
            format('reads marked table %I.%I without security_invoker: RLS applies to the view owner, not the caller', t.schema, t.name) AS problem
     FROM marked t
     JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass
     JOIN pg_rewrite r ON r.oid = d.objid
     JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') AND v.oid <> t.oid
     JOIN pg_namespace vn ON vn.oid = v.relnamespace
     WHERE NOT COALESCE(v.reloptions @> ARRAY['security_invoker=true'] OR v.reloptions @> ARRAY['security_invoker=on'], false)",
    // A SECURITY DEFINER function runs as its owner; an owner that bypasses RLS turns
    // every caller into one that does.
    "SELECT format('function %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS subject,
            format('is SECURITY DEFINER and owned by %I, who bypasses RLS', o.rolname) AS problem
     FROM pg_proc p
     JOIN pg_namespace n ON n.oid = p.pronamespace
     JOIN pg_roles o ON o.oid = p.proowner
     WHERE p.prosecdef AND (o.rolsuper OR o.rolbypassrls)
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
       AND (SELECT count(*) FROM marked) > 0",
    // A unique constraint or foreign key checked across tenants answers questions about
    // other tenants' rows (a conflict or a violation reveals that a value exists).
    "SELECT format('constraint %I on %I.%I', c.conname, t.schema, t.name) AS subject,
            format('%s does not include the tenant column %I: it reveals whether other tenants'' rows hold a value',
                   CASE c.contype WHEN 'u' THEN 'unique constraint' ELSE 'foreign key' END, t.col) AS problem
     FROM marked t
     JOIN pg_constraint c ON c.conrelid = t.oid AND c.contype IN ('u', 'f')
     JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = t.col
     WHERE NOT a.attnum = ANY(c.conkey)",
    // Partitions are tables of their own: queried directly, only their own RLS applies.
    "SELECT format('partition %I.%I', pn.nspname, p.relname) AS subject,
            format('of marked table %I.%I lacks %s', t.schema, t.name,
                   CASE WHEN NOT p.relrowsecurity THEN 'row level security' ELSE 'FORCE ROW LEVEL SECURITY' END) AS problem
     FROM marked t
     JOIN pg_inherits i ON i.inhparent = t.oid
     JOIN pg_class p ON p.oid = i.inhrelid
     JOIN pg_namespace pn ON pn.oid = p.relnamespace
     WHERE NOT p.relrowsecurity OR NOT p.relforcerowsecurity",
    // TRUNCATE ignores RLS; REFERENCES lets a role probe values through foreign keys.
    "SELECT DISTINCT format('table %I.%I', n.nspname, c.relname) AS subject,
            format('%s is granted to %I: %s', a.privilege_type, g.rolname,
                   CASE a.privilege_type WHEN 'TRUNCATE' THEN 'TRUNCATE ignores row level security'
                        ELSE 'a foreign key to this table reveals other tenants'' values' END) AS problem
     FROM pg_class c
     JOIN pg_namespace n ON n.oid = c.relnamespace
     CROSS JOIN LATERAL aclexplode(c.relacl) a
     JOIN pg_roles g ON g.oid = a.grantee AND g.rolname = ANY($4)
     WHERE c.relkind IN ('r', 'p') AND a.privilege_type IN ('TRUNCATE', 'REFERENCES')",
    // Our roles themselves: one that can log in is a way around the application (Citus
    // mode needs it; then only the cluster's nodes may, by pg_hba.conf).
    "SELECT format('role %I', r.rolname) AS subject,
            'can log in: whoever authenticates as it acts as it, around the application; only Citus mode needs it, and then pg_hba.conf must accept it from the cluster''s nodes only' AS problem
     FROM pg_roles r WHERE r.rolname = ANY($4) AND r.rolcanlogin",
    // The login role itself.
    "SELECT format('login role %I', r.rolname) AS subject, w.problem
     FROM pg_roles r
     CROSS JOIN LATERAL (
       SELECT 'is a superuser: superusers are never subject to row level security' AS problem WHERE r.rolsuper
       UNION ALL
       SELECT 'has BYPASSRLS: unscoped queries see every tenant' WHERE r.rolbypassrls AND NOT r.rolsuper
       UNION ALL
       SELECT format('owns marked table %I.%I: an owner can disable row level security', t.schema, t.name)
       FROM marked t JOIN pg_class c ON c.oid = t.oid WHERE c.relowner = r.oid
     ) w
     WHERE r.rolname = session_user",
];

/// The marked tables with their oids, as a CTE every check starts from.
const MARKED: &str = "WITH marked AS (
   SELECT c.oid, t.schema, t.name, t.col
   FROM unnest($1::text[], $2::text[], $3::text[]) AS t(schema, name, col)
   JOIN pg_namespace n ON n.nspname = t.schema
   JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name)
";

/// Every weakness found, check by check, in a fixed number of queries.
pub async fn audit(
    conn: &mut AsyncPgConnection,
    config: &Config,
    tables: &[MarkedTable],
) -> Result<Vec<Weakness>, diesel::result::Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.table.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.table.name.as_str()).collect();
    let columns: Vec<&str> = tables.iter().map(|t| t.key.column.as_str()).collect();
    let roles = [config.tenant_role(), config.admin_role()];
    let mut weaknesses = Vec::new();
    for check in CHECKS {
        let mut found =
            diesel::sql_query(format!("{MARKED}SELECT * FROM ({check}) w ORDER BY 1, 2"))
                .bind::<Array<Text>, _>(&schemas)
                .bind::<Array<Text>, _>(&names)
                .bind::<Array<Text>, _>(&columns)
                .bind::<Array<Text>, _>(&roles[..])
                .load::<Weakness>(conn)
                .await?;
        weaknesses.append(&mut found);
    }
    Ok(weaknesses)
}
