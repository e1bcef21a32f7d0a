//! Reads what the live database says about the marked tables, in a fixed number of
//! queries whatever the number of tables (each query takes all tables as arrays).

use diesel::QueryableByName;
use diesel::sql_types::{Array, Bool, Nullable, Text};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};

use crate::config::Config;
use crate::policy::{self, QualifiedName};
use crate::registry::TenantSqlType;

/// One of our roles, as the catalog sees it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RoleState {
    /// The role's name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Whether it exists.
    #[diesel(sql_type = Bool)]
    pub exists: bool,
    /// Whether the connecting (session) role is a member of it, directly or not.
    #[diesel(sql_type = Bool)]
    pub login_is_member: bool,
}

/// The connecting role.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct LoginState {
    /// Its name (`session_user`).
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Superusers are never subject to RLS.
    #[diesel(sql_type = Bool)]
    pub superuser: bool,
    /// `BYPASSRLS` roles are never subject to RLS.
    #[diesel(sql_type = Bool)]
    pub bypass_rls: bool,
}

/// A marked table's RLS flags; absent from the result when the table does not exist.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct TableState {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `relrowsecurity`.
    #[diesel(sql_type = Bool)]
    pub rls_enabled: bool,
    /// `relforcerowsecurity`.
    #[diesel(sql_type = Bool)]
    pub rls_forced: bool,
}

/// A policy on a marked table, as `pg_policies` shows it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct PolicyState {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub table: String,
    /// Policy name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `PERMISSIVE` or `RESTRICTIVE`.
    #[diesel(sql_type = Text)]
    pub permissive: String,
    /// Roles the policy applies to (`public` for all).
    #[diesel(sql_type = Array<Text>)]
    pub roles: Vec<String>,
    /// `ALL`, `SELECT`, ...
    #[diesel(sql_type = Text)]
    pub cmd: String,
    /// The deparsed `USING` expression.
    #[diesel(sql_type = Nullable<Text>)]
    pub qual: Option<String>,
    /// The deparsed `WITH CHECK` expression.
    #[diesel(sql_type = Nullable<Text>)]
    pub with_check: Option<String>,
}

/// A privilege granted directly on a table or sequence.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Privilege {
    /// Schema of the table or sequence.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Name of the table or sequence.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// The grantee.
    #[diesel(sql_type = Text)]
    pub grantee: String,
    /// `SELECT`, `INSERT`, `USAGE`, ...
    #[diesel(sql_type = Text)]
    pub privilege: String,
}

/// A sequence owned by a column of a marked table (serial or identity).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct OwnedSequence {
    /// Schema of the owning table.
    #[diesel(sql_type = Text)]
    pub table_schema: String,
    /// The owning table.
    #[diesel(sql_type = Text)]
    pub table_name: String,
    /// Schema of the sequence.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// The sequence.
    #[diesel(sql_type = Text)]
    pub name: String,
}

/// The column a policy is expected on, and its type: the probe key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProbeKey {
    /// SQL name of the tenant column.
    pub column: String,
    /// Its type.
    pub sql_type: TenantSqlType,
}

/// How PostgreSQL itself deparses our policies, to compare with `pg_policies` exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPolicies {
    /// The isolation policy's deparsed expression per tenant column and type.
    pub isolation: Vec<(ProbeKey, String)>,
    /// The admin policy's deparsed expression.
    pub admin: String,
}

/// Everything `verify` and the CLI compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The tenant and admin roles.
    pub roles: Vec<RoleState>,
    /// The connecting role.
    pub login: LoginState,
    /// The marked tables that exist.
    pub tables: Vec<TableState>,
    /// Every policy on the marked tables.
    pub policies: Vec<PolicyState>,
    /// Direct grants on the marked tables.
    pub table_privileges: Vec<Privilege>,
    /// Sequences owned by the marked tables.
    pub sequences: Vec<OwnedSequence>,
    /// Direct grants on those sequences.
    pub sequence_privileges: Vec<Privilege>,
    /// The deparsed form of the policies we would create.
    pub expected: ExpectedPolicies,
}

#[derive(QueryableByName)]
struct DeparsedPolicy {
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    qual: Option<String>,
}

const TABLES: &str = "unnest($1::text[], $2::text[]) AS t(schema, name)";

/// Reads the catalog for `tables` with `config`'s names: eight statements (four reads and
/// a rolled-back probe transaction) whatever the number of tables.
pub async fn read(
    conn: &mut AsyncPgConnection,
    config: &Config,
    tables: &[(QualifiedName, ProbeKey)],
) -> Result<Catalog, diesel::result::Error> {
    let schemas: Vec<String> = tables.iter().map(|(t, _)| t.schema.clone()).collect();
    let names: Vec<String> = tables.iter().map(|(t, _)| t.name.clone()).collect();

    let roles = diesel::sql_query(
        "SELECT r.name, (o.oid IS NOT NULL) AS exists,
                COALESCE(CASE WHEN o.oid IS NOT NULL THEN pg_has_role(session_user, o.oid, 'MEMBER') END, false) AS login_is_member
         FROM unnest($1::text[]) WITH ORDINALITY AS r(name, i)
         LEFT JOIN pg_roles o ON o.rolname = r.name ORDER BY r.i",
    )
    .bind::<Array<Text>, _>(vec![
        config.tenant_role().to_string(),
        config.admin_role().to_string(),
    ])
    .load::<RoleState>(conn)
    .await?;

    let login = diesel::sql_query(
        "SELECT session_user::text AS name, rolsuper AS superuser, rolbypassrls AS bypass_rls
         FROM pg_roles WHERE rolname = session_user",
    )
    .get_result::<LoginState>(conn)
    .await?;

    let table_states = diesel::sql_query(format!(
        "SELECT t.schema, t.name, c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced
         FROM {TABLES}
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
         ORDER BY 1, 2"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<TableState>(conn)
    .await?;

    let policies = diesel::sql_query(format!(
        "SELECT p.schemaname::text AS schema, p.tablename::text AS table, p.policyname::text AS name,
                p.permissive, p.roles::text[] AS roles, p.cmd, p.qual, p.with_check
         FROM {TABLES}
         JOIN pg_policies p ON p.schemaname = t.schema AND p.tablename = t.name
         ORDER BY 1, 2, 3"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<PolicyState>(conn)
    .await?;

    let table_privileges = diesel::sql_query(format!(
        "SELECT t.schema, t.name, g.rolname::text AS grantee, a.privilege_type AS privilege
         FROM {TABLES}
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
         CROSS JOIN LATERAL aclexplode(c.relacl) a
         JOIN pg_roles g ON g.oid = a.grantee
         ORDER BY 1, 2, 3, 4"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<Privilege>(conn)
    .await?;

    let owned = format!(
        "SELECT t.schema AS table_schema, t.name AS table_name, sn.nspname::text AS schema, s.relname::text AS name, s.relacl
         FROM {TABLES}
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
         JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
              AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
         JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
         JOIN pg_namespace sn ON sn.oid = s.relnamespace"
    );
    let sequences = diesel::sql_query(format!(
        "SELECT table_schema, table_name, schema, name FROM ({owned}) o ORDER BY 1, 2, 3, 4"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<OwnedSequence>(conn)
    .await?;
    let sequence_privileges = diesel::sql_query(format!(
        "SELECT o.schema, o.name, g.rolname::text AS grantee, a.privilege_type AS privilege
         FROM ({owned}) o CROSS JOIN LATERAL aclexplode(o.relacl) a
         JOIN pg_roles g ON g.oid = a.grantee ORDER BY 1, 2, 3, 4"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<Privilege>(conn)
    .await?;

    let mut keys: Vec<ProbeKey> = tables.iter().map(|(_, key)| key.clone()).collect();
    keys.sort();
    keys.dedup();
    let admin_exists = roles
        .iter()
        .any(|r| r.name == config.admin_role() && r.exists);
    let expected = probe(conn, config, &keys, admin_exists).await?;

    Ok(Catalog {
        roles,
        login,
        tables: table_states,
        policies,
        table_privileges,
        sequences,
        sequence_privileges,
        expected,
    })
}

/// Creates our policies on temporary tables, one per tenant column and type, reads back
/// how the server deparses them and rolls everything back. Comparing against the server's
/// own deparse is exact where comparing SQL text would not be.
async fn probe(
    conn: &mut AsyncPgConnection,
    config: &Config,
    keys: &[ProbeKey],
    admin_exists: bool,
) -> Result<ExpectedPolicies, diesel::result::Error> {
    let mut ddl = String::new();
    // Probe 0 always exists: it carries the admin policy even when no table is marked.
    let columns = std::iter::once(ProbeKey {
        column: "tenant".into(),
        sql_type: TenantSqlType::Text,
    })
    .chain(keys.iter().cloned());
    for (i, key) in columns.enumerate() {
        let table = QualifiedName::new("pg_temp", format!("tenants_probe_{i}"));
        ddl.push_str(&format!(
            "CREATE TEMP TABLE \"tenants_probe_{i}\" ({} {});\n",
            crate::tenant::quote_ident(&key.column),
            key.sql_type.pg_name()
        ));
        ddl.push_str(
            &policy::Change::CreateIsolationPolicy {
                table: table.clone(),
                column: key.column.clone(),
                sql_type: key.sql_type,
            }
            .up(config),
        );
        ddl.push('\n');
        // The admin policy names the admin role: without it there is nothing to compare.
        if i == 0 && admin_exists {
            ddl.push_str(&policy::Change::CreateAdminPolicy { table }.up(config));
            ddl.push('\n');
        }
    }
    // Through the transaction manager, so that inside a transaction this is a savepoint.
    AnsiTransactionManager::begin_transaction(conn).await?;
    let deparsed = probe_in_transaction(conn, &ddl).await;
    AnsiTransactionManager::rollback_transaction(conn).await?;
    let deparsed = deparsed?;

    let qual_of = |table: &str, name: &str| {
        deparsed
            .iter()
            .find(|p| p.table == table && p.name == name)
            .and_then(|p| p.qual.clone())
            .unwrap_or_default()
    };
    Ok(ExpectedPolicies {
        isolation: keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                (
                    key.clone(),
                    qual_of(
                        &format!("tenants_probe_{}", i + 1),
                        config.isolation_policy(),
                    ),
                )
            })
            .collect(),
        admin: qual_of("tenants_probe_0", config.admin_policy()),
    })
}

async fn probe_in_transaction(
    conn: &mut AsyncPgConnection,
    ddl: &str,
) -> Result<Vec<DeparsedPolicy>, diesel::result::Error> {
    conn.batch_execute(ddl).await?;
    diesel::sql_query(
        "SELECT tablename::text AS table, policyname::text AS name, qual FROM pg_policies
         WHERE schemaname = (SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema())
           AND tablename LIKE 'tenants\\_probe\\_%'",
    )
    .load::<DeparsedPolicy>(conn)
    .await
}
