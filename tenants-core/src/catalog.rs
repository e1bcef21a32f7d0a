//! Reads what the live database says about the marked tables, in a fixed number of
//! queries whatever the number of tables (each query takes all tables as arrays).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Array, Bool, Integer, Nullable, Text};
use diesel::{PgConnection, QueryResult, QueryableByName};

use crate::config::{Config, Purpose};
use crate::policy;
use crate::registry::TenantSqlType;
pub use crate::spec::PolicyDef;
use crate::spec::{QualifiedName, TenantForeignKey};

/// One of our roles, as the catalog sees it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RoleState {
    /// The role's name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Whether it exists.
    #[diesel(sql_type = Bool)]
    pub exists: bool,
    /// `SUPERUSER`: a transaction running as it is never subject to RLS.
    #[diesel(sql_type = Bool)]
    pub superuser: bool,
    /// `BYPASSRLS`: a transaction running as it is never subject to RLS.
    #[diesel(sql_type = Bool)]
    pub bypass_rls: bool,
    /// `LOGIN`: Citus mode needs it (workers are reached as the current role); outside it,
    /// a role that may log in is one more way in.
    #[diesel(sql_type = Bool)]
    pub can_login: bool,
}

/// A table declared `#[shared]` (readable by every tenant, not under RLS), as asked for.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SharedState {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Whether it exists.
    #[diesel(sql_type = Bool)]
    pub exists: bool,
}

/// Whether a login role may `SET ROLE` to one of our roles.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Membership {
    /// One of our roles.
    #[diesel(sql_type = Text)]
    pub role: String,
    /// The login role.
    #[diesel(sql_type = Text)]
    pub member: String,
    /// Whether `member` is a member of `role`, directly or not (superusers always are).
    #[diesel(sql_type = Bool)]
    pub is_member: bool,
    /// Whether `member` has `role`'s privileges without `SET ROLE` (it inherits them):
    /// then a statement outside any scope runs with our roles' grants and returns nothing
    /// instead of failing with `permission denied`.
    #[diesel(sql_type = Bool)]
    pub inherits: bool,
    /// Whether the role `member` exists.
    #[diesel(sql_type = Bool)]
    pub member_exists: bool,
}

/// Whether one of our roles has `USAGE` on a schema holding marked tables.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SchemaUsage {
    /// The schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// One of our roles.
    #[diesel(sql_type = Text)]
    pub role: String,
    /// Whether it has `USAGE` (granted to it, a role it inherits from, or `PUBLIC`).
    #[diesel(sql_type = Bool)]
    pub usage: bool,
}

/// The tenant column of a marked table, when it exists.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ColumnState {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub table: String,
    /// Column.
    #[diesel(sql_type = Text)]
    pub column: String,
    /// Its type as `format_type` prints it (`text`, `character varying(64)`, ...).
    #[diesel(sql_type = Text)]
    pub type_name: String,
    /// `NOT NULL`.
    #[diesel(sql_type = Bool)]
    pub not_null: bool,
    /// Its default, as the server deparses it (`pg_get_expr`); `None` without one.
    #[diesel(sql_type = Nullable<Text>)]
    pub default: Option<String>,
    /// The column's collation when it is nondeterministic (a case-insensitive ICU
    /// collation): tenant ids that compare equal without being equal share their rows.
    #[diesel(sql_type = Nullable<Text>)]
    pub nondeterministic_collation: Option<String>,
}

/// The tenant type of a column of PostgreSQL type `type_name` (as `format_type` prints it).
pub fn tenant_type_of(type_name: &str) -> Option<TenantSqlType> {
    let base = type_name.split('(').next().unwrap_or(type_name);
    [
        TenantSqlType::Text,
        TenantSqlType::VarChar,
        TenantSqlType::Int4,
        TenantSqlType::Int8,
        TenantSqlType::Uuid,
    ]
    .into_iter()
    .find(|t| t.pg_name() == base)
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

/// The connecting role and what the server is, read in one statement.
#[derive(QueryableByName)]
struct LoginAndServer {
    #[diesel(embed)]
    login: LoginState,
    /// `server_version_num`: PostgreSQL 16 made inheritance a property of each grant.
    #[diesel(sql_type = Integer)]
    server_version_num: i32,
    /// The Citus extension's version, when this database has it.
    #[diesel(sql_type = Nullable<Text>)]
    citus_version: Option<String>,
    /// The session's `citus.propagate_set_commands` (set by the server, the database or
    /// the role); `NULL` without Citus.
    #[diesel(sql_type = Nullable<Text>)]
    propagate_set_commands: Option<String>,
}

/// How Citus holds a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// A plain table on the coordinator, unknown to Citus.
    Local,
    /// A Citus local table: on the coordinator, known to Citus.
    CitusLocal,
    /// A reference table: every row on every node.
    Reference,
    /// A distributed table of one shard, without a distribution column.
    SingleShard,
    /// A hash-distributed table.
    Hash {
        /// Its distribution column.
        column: String,
        /// Its co-location group: tables of one group keep equal keys on the same node.
        colocation: i32,
    },
    /// Append- or range-distributed (`partmethod` `a` or `r`).
    Other {
        /// Its distribution column.
        column: String,
    },
}

impl Distribution {
    /// Whether the table's rows live on the workers, so that a transaction touching it
    /// opens connections to them.
    pub fn on_workers(&self) -> bool {
        !matches!(self, Distribution::Local | Distribution::CitusLocal)
    }
}

/// A marked or shared table that exists, as Citus holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitusTable {
    /// The table.
    pub table: QualifiedName,
    /// How it is held.
    pub distribution: Distribution,
}

/// A row of the distribution query.
#[derive(QueryableByName)]
struct DistributionRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    /// `partmethod`, `NULL` for a table unknown to Citus.
    #[diesel(sql_type = Nullable<Text>)]
    method: Option<String>,
    /// `repmodel`.
    #[diesel(sql_type = Nullable<Text>)]
    replication: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    column: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    colocation: Option<i32>,
}

impl DistributionRow {
    fn into_table(self) -> CitusTable {
        let column = self.column.unwrap_or_default();
        let distribution = match (self.method.as_deref(), self.replication.as_deref()) {
            (None, _) => Distribution::Local,
            (Some("h"), _) => Distribution::Hash {
                column,
                colocation: self.colocation.unwrap_or_default(),
            },
            (Some("n"), Some("t")) => Distribution::Reference,
            // Citus local tables are in no co-location group; single-shard tables are.
            (Some("n"), _) if self.colocation.unwrap_or_default() == 0 => Distribution::CitusLocal,
            (Some("n"), _) => Distribution::SingleShard,
            (Some(_), _) => Distribution::Other { column },
        };
        CitusTable {
            table: QualifiedName::new(self.schema, self.name),
            distribution,
        }
    }
}

/// What a Citus coordinator says: present when the database has the Citus extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitusState {
    /// The extension's version.
    pub version: String,
    /// The session's `citus.propagate_set_commands`, before any begin batch sets it: what
    /// the server, the database or the login role set (Citus's default is `none`).
    pub propagate_set_commands: String,
    /// The marked and the shared tables that exist, sorted, each as Citus holds it.
    pub tables: Vec<CitusTable>,
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

/// A policy on a marked table, or one of ours anywhere, as `pg_policies` shows it.
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
    /// What it does.
    #[diesel(embed)]
    pub def: PolicyDef,
}

/// A permissive policy on a marked table that applies to one of our roles: named in its
/// role list, through `PUBLIC`, or through a role ours is a member of.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct PolicyReach {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub table: String,
    /// The policy.
    #[diesel(sql_type = Text)]
    pub policy: String,
    /// One of our roles it applies to.
    #[diesel(sql_type = Text)]
    pub role: String,
}

/// A default that sessions start with (`ALTER DATABASE/ROLE ... SET`): of the tenant
/// setting, or of `role` to the admin role.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SettingDefault {
    /// The database it applies to (`None`: every database).
    #[diesel(sql_type = Nullable<Text>)]
    pub database: Option<String>,
    /// The role it applies to (`None`: every role).
    #[diesel(sql_type = Nullable<Text>)]
    pub role: Option<String>,
    /// The setting.
    #[diesel(sql_type = Text)]
    pub setting: String,
    /// Its value.
    #[diesel(sql_type = Text)]
    pub value: String,
}

/// A table neither marked nor shared that holds what looks like tenant data (a column
/// named like a marked table's tenant column, in a schema the marks use) or that our roles
/// can read or write.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct UnmarkedTable {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Its column named like a tenant column, if any.
    #[diesel(sql_type = Nullable<Text>)]
    pub tenant_column: Option<String>,
    /// Our roles that may select, insert, update or delete in it.
    #[diesel(sql_type = Array<Text>)]
    pub granted_to: Vec<String>,
}

/// A table related to a marked one by partitioning or inheritance (at any depth) that is
/// not marked and lacks row level security or FORCE: queried directly, only its own row
/// level security applies (a child), or it returns the marked child's rows (a parent).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct RelativeState {
    /// Schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Table.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `partition`, `inheritance child` or `inheritance parent`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Schema of the marked table it is related to.
    #[diesel(sql_type = Text)]
    pub marked_schema: String,
    /// The marked table it is related to.
    #[diesel(sql_type = Text)]
    pub marked_name: String,
    /// `relrowsecurity`.
    #[diesel(sql_type = Bool)]
    pub rls_enabled: bool,
}

/// Why a role is not subject to the FORCE'd policies of the marked tables: objects that run
/// with its rights (a view, a definer function, a rule) see every tenant's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// A superuser: never subject to row level security.
    Superuser,
    /// `BYPASSRLS`.
    BypassRls,
    /// The admin role, whose policy shows every tenant.
    AdminRole,
    /// The owner of a marked table without `FORCE ROW LEVEL SECURITY`.
    OwnerWithoutForce,
}

impl Escape {
    /// The reason, in a finding's words.
    pub fn describe(self) -> &'static str {
        match self {
            Escape::Superuser => "a superuser",
            Escape::BypassRls => "BYPASSRLS",
            Escape::AdminRole => "the admin role, whose policy shows every tenant",
            Escape::OwnerWithoutForce => {
                "the owner of a marked table without FORCE ROW LEVEL SECURITY"
            }
        }
    }

    fn from_code(code: &str) -> Self {
        match code {
            "superuser" => Escape::Superuser,
            "bypassrls" => Escape::BypassRls,
            "admin" => Escape::AdminRole,
            _ => Escape::OwnerWithoutForce,
        }
    }
}

/// An object `generate` does not manage that reaches the marked tables' rows around their
/// policies, or answers questions about them, as [`read`] finds it (one statement for
/// every kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loophole {
    /// A view reading a marked table without `security_invoker`, owned by a role that
    /// escapes the policies: row level security applies to the view's owner, not the caller.
    View {
        /// The view.
        view: QualifiedName,
        /// The marked table it reads.
        marked: QualifiedName,
        /// The view's owner.
        owner: String,
        /// Why the owner escapes the policies.
        escape: Escape,
    },
    /// A materialized view reading a marked table: it stores rows without row level security.
    MaterializedView {
        /// The materialized view.
        view: QualifiedName,
        /// The marked table it reads.
        marked: QualifiedName,
    },
    /// A `SECURITY DEFINER` function owned by a role that escapes the policies: its callers
    /// act as that role.
    DefinerFunction {
        /// Its signature, ready for `ALTER FUNCTION` (`"public"."f"(integer)`).
        function: String,
        /// Its owner.
        owner: String,
        /// Why the owner escapes the policies.
        escape: Escape,
    },
    /// A trigger on a marked table running such a function.
    DefinerTrigger {
        /// The trigger.
        trigger: String,
        /// The marked table it is on.
        table: QualifiedName,
        /// The function's signature.
        function: String,
        /// The function's owner.
        owner: String,
        /// Why the owner escapes the policies.
        escape: Escape,
    },
    /// A rule on a marked table, or whose actions read one, on a table whose owner escapes
    /// the policies: a rule's actions run with the rights of its table's owner.
    Rule {
        /// The rule.
        rule: String,
        /// The table it is on.
        table: QualifiedName,
        /// That table's owner.
        owner: String,
        /// Why the owner escapes the policies.
        escape: Escape,
    },
    /// A `LEAKPROOF` function outside the system schemas: the planner may run it on rows
    /// before the policies filter them.
    LeakproofFunction {
        /// Its signature.
        function: String,
    },
    /// A unique key (constraint, index, also on expressions, or a primary key not made of
    /// generated columns only) or an exclusion constraint of a marked table without its
    /// tenant column: a conflict reveals whether another tenant's row holds a value.
    ExistenceOracle {
        /// `primary key`, `unique constraint`, `unique index` or `exclusion constraint`.
        kind: String,
        /// The constraint or index.
        name: String,
        /// The marked table.
        table: QualifiedName,
        /// Its tenant column.
        tenant_column: String,
        /// The statements that rebuild it with the tenant column first, from the server's
        /// own definition.
        fix: String,
    },
    /// `TRUNCATE`, `REFERENCES` or `TRIGGER` granted to one of our roles (on any table), or
    /// to `PUBLIC` on a marked table or one below it.
    Grant {
        /// The table.
        table: QualifiedName,
        /// The privilege.
        privilege: String,
        /// The grantee; `None` for `PUBLIC`.
        grantee: Option<String>,
    },
}

/// A row of the loophole statement: the columns each kind fills (`name` is the view, the
/// function, the rule, the trigger or, for a grant, the table).
#[derive(QueryableByName)]
struct LoopholeRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
    /// A function's identity arguments.
    #[diesel(sql_type = Nullable<Text>)]
    arguments: Option<String>,
    /// The marked table read, or the table a rule or trigger is on.
    #[diesel(sql_type = Nullable<Text>)]
    table_schema: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    table_name: Option<String>,
    /// A trigger's function.
    #[diesel(sql_type = Nullable<Text>)]
    function_schema: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    function_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    function_arguments: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    owner: Option<String>,
    /// `superuser`, `bypassrls`, `admin` or `owner`.
    #[diesel(sql_type = Nullable<Text>)]
    escape: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    privilege: Option<String>,
    /// `NULL` for `PUBLIC`.
    #[diesel(sql_type = Nullable<Text>)]
    grantee: Option<String>,
    /// An existence oracle's kind of key and tenant column.
    #[diesel(sql_type = Nullable<Text>)]
    key_kind: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    tenant_column: Option<String>,
    /// An existence oracle's fix.
    #[diesel(sql_type = Nullable<Text>)]
    fix: Option<String>,
}

/// A function's signature as `ALTER FUNCTION` takes it.
fn signature(schema: &str, name: &str, arguments: Option<&str>) -> String {
    format!(
        "{}({})",
        QualifiedName::new(schema, name),
        arguments.unwrap_or_default()
    )
}

impl LoopholeRow {
    fn into_loophole(self) -> Loophole {
        let table = QualifiedName::new(
            self.table_schema.unwrap_or_default(),
            self.table_name.unwrap_or_default(),
        );
        let owner = self.owner.unwrap_or_default();
        let escape = Escape::from_code(self.escape.as_deref().unwrap_or_default());
        match self.kind.as_str() {
            "view" => Loophole::View {
                view: QualifiedName::new(self.schema, self.name),
                marked: table,
                owner,
                escape,
            },
            "materialized view" => Loophole::MaterializedView {
                view: QualifiedName::new(self.schema, self.name),
                marked: table,
            },
            "definer function" => Loophole::DefinerFunction {
                function: signature(&self.schema, &self.name, self.arguments.as_deref()),
                owner,
                escape,
            },
            "trigger" => Loophole::DefinerTrigger {
                trigger: self.name,
                table,
                function: signature(
                    self.function_schema.as_deref().unwrap_or_default(),
                    self.function_name.as_deref().unwrap_or_default(),
                    self.function_arguments.as_deref(),
                ),
                owner,
                escape,
            },
            "rule" => Loophole::Rule {
                rule: self.name,
                table,
                owner,
                escape,
            },
            "existence oracle" => Loophole::ExistenceOracle {
                kind: self.key_kind.unwrap_or_default(),
                name: self.name,
                table,
                tenant_column: self.tenant_column.unwrap_or_default(),
                fix: self.fix.unwrap_or_default(),
            },
            "leakproof function" => Loophole::LeakproofFunction {
                function: signature(&self.schema, &self.name, self.arguments.as_deref()),
            },
            _ => Loophole::Grant {
                table: QualifiedName::new(self.schema, self.name),
                privilege: self.privilege.unwrap_or_default(),
                grantee: self.grantee,
            },
        }
    }
}

/// Every loophole around the marked tables' policies (`$1` schemas, `$2` names, `$4` tenant
/// columns of the marked tables, `$3` our roles, tenant then admin), one kind after the
/// other:
/// - `marked`: the marked tables with their tenant column, owner and FORCE flag;
/// - `escaping`: the roles not subject to the FORCE'd policies: superusers, BYPASSRLS
///   roles, the admin role (whose policy shows every tenant), and the owners of marked
///   tables without FORCE;
/// - `below`: the tables inheriting from a marked one (partitions included), at any depth;
/// - `user_function`: the functions outside the system schemas and extensions.
const LOOPHOLES: &str = r#"WITH RECURSIVE marked AS (
   SELECT c.oid, t.schema, t.name, t.col, c.relowner, c.relforcerowsecurity AS forced
   FROM unnest($1::text[], $2::text[], $4::text[]) AS t(schema, name, col)
   JOIN pg_namespace n ON n.nspname = t.schema
   JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name),
 escaping AS (
   SELECT r.oid, r.rolname::text AS rolname,
          CASE WHEN r.rolsuper THEN 'superuser' WHEN r.rolbypassrls THEN 'bypassrls'
               WHEN r.rolname = ($3::text[])[2] THEN 'admin' ELSE 'owner' END AS escape
   FROM pg_roles r
   WHERE r.rolsuper OR r.rolbypassrls OR r.rolname = ($3::text[])[2]
      OR r.oid IN (SELECT relowner FROM marked WHERE NOT forced)),
 below(oid) AS (
   SELECT i.inhrelid FROM pg_inherits i JOIN marked m ON m.oid = i.inhparent
   UNION SELECT i.inhrelid FROM pg_inherits i JOIN below b ON b.oid = i.inhparent),
 user_function AS (
   SELECT p.oid, p.proowner, p.prosecdef, p.proleakproof, n.nspname::text AS schema,
          p.proname::text AS name, pg_get_function_identity_arguments(p.oid) AS arguments
   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
     AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                     AND d.objid = p.oid AND d.deptype = 'e')),
 reading(rel, kind, marked_oid) AS (
   SELECT DISTINCT v.oid, v.relkind, t.oid
   FROM marked t
   JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
        AND d.classid = 'pg_rewrite'::regclass
   JOIN pg_rewrite r ON r.oid = d.objid
   JOIN pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') AND v.oid <> t.oid),
 found AS (
   -- A view runs with its owner's rights unless security_invoker is set: only an owner
   -- that escapes the policies leaks.
   SELECT 1 AS rank, 'view' AS kind, vn.nspname::text AS schema, v.relname::text AS name,
          NULL::text AS arguments, t.schema AS table_schema, t.name AS table_name,
          NULL::text AS function_schema, NULL::text AS function_name, NULL::text AS function_arguments,
          e.rolname AS owner, e.escape, NULL::text AS privilege, NULL::text AS grantee,
          NULL::text AS key_kind, NULL::text AS tenant_column, NULL::text AS fix
   FROM reading x
   JOIN marked t ON t.oid = x.marked_oid
   JOIN pg_class v ON v.oid = x.rel
   JOIN pg_namespace vn ON vn.oid = v.relnamespace
   JOIN escaping e ON e.oid = v.relowner
   WHERE x.kind = 'v'
     AND NOT EXISTS (SELECT FROM unnest(v.reloptions) o
                     WHERE o ~* '^security_invoker=(t|tr|tru|true|y|ye|yes|on|1)$')
   -- A materialized view stores rows; it has no row level security of its own.
   UNION ALL
   SELECT 2, 'materialized view', vn.nspname::text, v.relname::text, NULL, t.schema, t.name,
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
   FROM reading x
   JOIN marked t ON t.oid = x.marked_oid
   JOIN pg_class v ON v.oid = x.rel
   JOIN pg_namespace vn ON vn.oid = v.relnamespace
   WHERE x.kind = 'm'
   -- A SECURITY DEFINER function runs as its owner.
   UNION ALL
   SELECT 3, 'definer function', p.schema, p.name, p.arguments, NULL, NULL, NULL, NULL, NULL,
          e.rolname, e.escape, NULL, NULL, NULL, NULL, NULL
   FROM user_function p JOIN escaping e ON e.oid = p.proowner
   WHERE p.prosecdef AND EXISTS (SELECT FROM marked)
   -- A trigger runs its function as the user whose statement fired it, unless the
   -- function is SECURITY DEFINER.
   UNION ALL
   SELECT 4, 'trigger', t.schema, g.tgname::text, NULL, t.schema, t.name, p.schema, p.name, p.arguments,
          e.rolname, e.escape, NULL, NULL, NULL, NULL, NULL
   FROM marked t
   JOIN pg_trigger g ON g.tgrelid = t.oid AND NOT g.tgisinternal
   JOIN user_function p ON p.oid = g.tgfoid AND p.prosecdef
   JOIN escaping e ON e.oid = p.proowner
   -- A rule's actions run with the rights of its table's owner.
   UNION ALL
   SELECT DISTINCT 5, 'rule', n.nspname::text, r.rulename::text, NULL, n.nspname::text, c.relname::text,
          NULL, NULL, NULL, e.rolname, e.escape, NULL, NULL, NULL, NULL, NULL
   FROM pg_rewrite r
   JOIN pg_class c ON c.oid = r.ev_class
   JOIN pg_namespace n ON n.oid = c.relnamespace
   JOIN escaping e ON e.oid = c.relowner
   WHERE r.rulename <> '_RETURN'
     AND (r.ev_class IN (SELECT oid FROM marked)
          OR EXISTS (SELECT FROM pg_depend d JOIN marked m ON m.oid = d.refobjid
                     WHERE d.refclassid = 'pg_class'::regclass
                       AND d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid))
   -- The planner runs a LEAKPROOF function before the policies' quals.
   UNION ALL
   SELECT 6, 'leakproof function', p.schema, p.name, p.arguments, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, NULL, NULL, NULL
   FROM user_function p
   WHERE p.proleakproof AND EXISTS (SELECT FROM marked)
   -- TRUNCATE ignores row level security; REFERENCES lets a role probe values through
   -- foreign keys; TRIGGER lets a role run code in other tenants' statements.
   UNION ALL
   SELECT DISTINCT 7, 'grant', n.nspname::text, c.relname::text, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, a.privilege_type, g.rolname::text, NULL, NULL, NULL
   FROM pg_class c
   JOIN pg_namespace n ON n.oid = c.relnamespace
   CROSS JOIN LATERAL aclexplode(c.relacl) a
   LEFT JOIN pg_roles g ON g.oid = a.grantee
   WHERE c.relkind IN ('r', 'p') AND a.privilege_type IN ('TRUNCATE', 'REFERENCES', 'TRIGGER')
     AND (g.rolname = ANY($3::text[])
          OR (a.grantee = 0 AND (c.oid IN (SELECT oid FROM marked) OR c.oid IN (SELECT oid FROM below))))
   -- A unique key checked across tenants answers questions about other tenants' rows.
   -- Keys made only of generated columns (serial, identity, random uuid) reveal nothing.
   UNION ALL
   SELECT 8, 'existence oracle', t.schema, ic.relname::text, NULL, t.schema, t.name, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL,
          CASE WHEN x.indisprimary THEN 'primary key' WHEN k.oid IS NOT NULL THEN 'unique constraint'
               ELSE 'unique index' END,
          t.col,
          CASE WHEN k.oid IS NOT NULL
               THEN format('ALTER TABLE %I.%I DROP CONSTRAINT %I, ADD CONSTRAINT %I %s;', t.schema, t.name, k.conname, k.conname,
                           regexp_replace(pg_get_constraintdef(k.oid), '^(UNIQUE|PRIMARY KEY) \(', '\1 (' || quote_ident(t.col) || ', '))
               ELSE format('DROP INDEX %I.%I; %s;', t.schema, ic.relname,
                           regexp_replace(pg_get_indexdef(x.indexrelid), ' USING (\w+) \(', ' USING \1 (' || quote_ident(t.col) || ', '))
          END
   FROM marked t
   JOIN pg_index x ON x.indrelid = t.oid AND x.indisunique
   JOIN pg_class ic ON ic.oid = x.indexrelid
   LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = t.oid AND k.contype IN ('u', 'p')
   JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = t.col
   WHERE NOT a.attnum = ANY(x.indkey::int2[])
     AND NOT (x.indexprs IS NULL AND NOT EXISTS (
           SELECT FROM unnest(x.indkey::int2[]) AS u(attnum)
           JOIN pg_attribute ka ON ka.attrelid = t.oid AND ka.attnum = u.attnum
           LEFT JOIN pg_attrdef ad ON ad.adrelid = t.oid AND ad.adnum = u.attnum
           WHERE ka.attidentity = ''
             AND COALESCE(pg_get_expr(ad.adbin, ad.adrelid) !~ '^(nextval|gen_random_uuid|uuid_generate_v4)\(', true)))
   -- An exclusion constraint is a unique key by another name.
   UNION ALL
   SELECT 8, 'existence oracle', t.schema, k.conname::text, NULL, t.schema, t.name, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, 'exclusion constraint', t.col,
          format('ALTER TABLE %I.%I DROP CONSTRAINT %I, ADD CONSTRAINT %I %s;', t.schema, t.name, k.conname, k.conname,
                 regexp_replace(pg_get_constraintdef(k.oid), '^EXCLUDE USING (\w+) \(', 'EXCLUDE USING \1 (' || quote_ident(t.col) || ' WITH =, '))
   FROM marked t
   JOIN pg_constraint k ON k.conrelid = t.oid AND k.contype = 'x'
   JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = t.col
   WHERE NOT a.attnum = ANY(k.conkey))
 SELECT kind, schema, name, arguments, table_schema, table_name, function_schema, function_name,
        function_arguments, owner, escape, privilege, grantee, key_kind, tenant_column, fix
 FROM found
 ORDER BY rank, schema, name, arguments, table_schema, table_name, privilege, grantee NULLS FIRST"#;

/// A foreign key between marked tables that does not pair their tenant columns, as read.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
struct CrossTenantKeyRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    tenant_column: String,
    #[diesel(sql_type = Array<Text>)]
    columns: Vec<String>,
    #[diesel(sql_type = Text)]
    parent_schema: String,
    #[diesel(sql_type = Text)]
    parent_table: String,
    #[diesel(sql_type = Text)]
    parent_tenant_column: String,
    #[diesel(sql_type = Array<Text>)]
    parent_columns: Vec<String>,
    /// `confmatchtype`, `confupdtype`, `confdeltype`.
    #[diesel(sql_type = Text)]
    match_type: String,
    #[diesel(sql_type = Text)]
    on_update: String,
    #[diesel(sql_type = Text)]
    on_delete: String,
    #[diesel(sql_type = Bool)]
    deferrable: bool,
    #[diesel(sql_type = Bool)]
    deferred: bool,
    #[diesel(sql_type = Bool)]
    validated: bool,
    #[diesel(sql_type = Text)]
    definition: String,
    #[diesel(sql_type = Bool)]
    parent_has_unique: bool,
}

impl CrossTenantKeyRow {
    /// `MATCH`, `ON UPDATE`, `ON DELETE`, `DEFERRABLE` and `NOT VALID` as they follow the
    /// referenced columns. `set_null_columns` is the column list of an `ON DELETE SET
    /// NULL/DEFAULT` when it has none of its own.
    fn actions(&self, set_null_columns: Option<&[String]>) -> String {
        let action = |code: &str| match code {
            "r" => "RESTRICT",
            "c" => "CASCADE",
            "n" => "SET NULL",
            "d" => "SET DEFAULT",
            _ => "NO ACTION",
        };
        let mut actions = String::new();
        if self.match_type == "f" {
            actions.push_str(" MATCH FULL");
        }
        if self.on_update != "a" {
            actions.push_str(&format!(" ON UPDATE {}", action(&self.on_update)));
        }
        if self.on_delete != "a" {
            actions.push_str(&format!(" ON DELETE {}", action(&self.on_delete)));
            if matches!(self.on_delete.as_str(), "n" | "d") {
                // The list the server printed (PostgreSQL 15's `SET NULL (col)`), if any.
                let printed = self
                    .definition
                    .split_once(&format!("ON DELETE {} (", action(&self.on_delete)))
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map(|(list, _)| list.to_string());
                let list = printed.or_else(|| {
                    set_null_columns.map(|columns| {
                        columns
                            .iter()
                            .map(|c| crate::tenant::quote_ident(c))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                });
                if let Some(list) = list {
                    actions.push_str(&format!(" ({list})"));
                }
            }
        }
        if self.deferrable {
            actions.push_str(" DEFERRABLE");
            if self.deferred {
                actions.push_str(" INITIALLY DEFERRED");
            }
        }
        if !self.validated {
            actions.push_str(" NOT VALID");
        }
        actions
    }

    fn into_key(self) -> TenantForeignKey {
        // SET NULL/DEFAULT on delete clears only the original columns, as before, never
        // the tenant column.
        let actions = self.actions(Some(&self.columns));
        let original_actions = self.actions(None);
        TenantForeignKey {
            table: QualifiedName::new(self.schema, self.table),
            name: self.name,
            tenant_column: self.tenant_column,
            columns: self.columns,
            parent: QualifiedName::new(self.parent_schema, self.parent_table),
            parent_tenant_column: self.parent_tenant_column,
            parent_columns: self.parent_columns,
            actions,
            original_actions,
            parent_has_unique: self.parent_has_unique,
        }
    }
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

/// How PostgreSQL itself deparses our policies and the tenant columns' default, to compare
/// with `pg_policies` and `pg_attrdef` exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPolicies {
    /// The isolation policy per tenant column and type.
    pub isolation: Vec<(ProbeKey, PolicyDef)>,
    /// The tenant column's default per tenant column and type.
    pub defaults: Vec<(ProbeKey, String)>,
    /// The admin policy; `None` when the admin role does not exist (it cannot be named).
    pub admin: Option<PolicyDef>,
}

/// Everything `verify` and the CLI compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The tenant and admin roles.
    pub roles: Vec<RoleState>,
    /// Whether each login role asked about is a member of each of our roles.
    pub memberships: Vec<Membership>,
    /// The connecting role.
    pub login: LoginState,
    /// The server's `server_version_num` (150004 for 15.4).
    pub server_version_num: i32,
    /// Our roles' `USAGE` on the schemas of the marked tables.
    pub schema_usage: Vec<SchemaUsage>,
    /// The marked tables that exist, and every table carrying a policy named like ours.
    pub tables: Vec<TableState>,
    /// The tenant columns of the marked tables that exist.
    pub columns: Vec<ColumnState>,
    /// Every policy on those tables.
    pub policies: Vec<PolicyState>,
    /// The permissive policies on marked tables that apply to our roles (by name, through
    /// `PUBLIC` or by membership).
    pub policy_reach: Vec<PolicyReach>,
    /// Defaults of the tenant setting (and of `role` to the admin role) for this database
    /// or any role.
    pub setting_defaults: Vec<SettingDefault>,
    /// Tables neither marked nor shared that look like tenant data or that our roles use.
    pub unmarked: Vec<UnmarkedTable>,
    /// Foreign keys between marked tables that do not pair their tenant columns.
    pub cross_tenant_keys: Vec<TenantForeignKey>,
    /// Unmarked partitions, inheritance children and parents of marked tables without
    /// row level security or FORCE.
    pub relatives: Vec<RelativeState>,
    /// Objects that reach the marked tables' rows around their policies: views and
    /// materialized views, definer functions, triggers and rules, leakproof functions,
    /// grants of `TRUNCATE`, `REFERENCES` and `TRIGGER`, existence oracles.
    pub loopholes: Vec<Loophole>,
    /// Direct grants on the marked tables.
    pub table_privileges: Vec<Privilege>,
    /// Sequences owned by the marked tables.
    pub sequences: Vec<OwnedSequence>,
    /// Direct grants on those sequences.
    pub sequence_privileges: Vec<Privilege>,
    /// The shared tables asked about; their grants are in `table_privileges`.
    pub shared: Vec<SharedState>,
    /// The deparsed form of the policies we would create.
    pub expected: ExpectedPolicies,
    /// What Citus says, on a database with the Citus extension (a coordinator).
    pub citus: Option<CitusState>,
}

/// A marked table as [`read`] takes it: where it is and its tenant column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MarkedTable {
    /// The table.
    pub table: QualifiedName,
    /// Its tenant column and type.
    pub key: ProbeKey,
}

const TABLES: &str = "unnest($1::text[], $2::text[]) AS t(schema, name)";

/// The marked tables (`$1` schemas, `$2` names) and every table carrying one of our
/// policy names (`$3`).
const TABLES_AND_OURS: &str = "(SELECT * FROM unnest($1::text[], $2::text[])
       UNION SELECT schemaname::text, tablename::text FROM pg_policies WHERE policyname = ANY($3::text[])
     ) AS t(schema, name)";

/// The tenant columns of `tables` that exist, in one query.
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub async fn columns(
    conn: &mut diesel_async::AsyncPgConnection,
    tables: &[(QualifiedName, String)],
) -> Result<Vec<ColumnState>, diesel::result::Error> {
    columns_on(conn, tables).await
}

async fn columns_on(
    conn: &mut impl CatalogConnection,
    tables: &[(QualifiedName, String)],
) -> Result<Vec<ColumnState>, diesel::result::Error> {
    let schemas: Vec<&str> = tables.iter().map(|(t, _)| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|(t, _)| t.name.as_str()).collect();
    let columns: Vec<&str> = tables.iter().map(|(_, c)| c.as_str()).collect();
    statement(
        "SELECT t.schema, t.name AS table, t.col AS column,
                format_type(a.atttypid, a.atttypmod) AS type_name, a.attnotnull AS not_null,
                pg_get_expr(d.adbin, d.adrelid) AS \"default\",
                CASE WHEN NOT co.collisdeterministic THEN co.collname::text END AS nondeterministic_collation
         FROM unnest($1::text[], $2::text[], $3::text[]) AS t(schema, name, col)
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = t.col AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         LEFT JOIN pg_collation co ON co.oid = a.attcollation
         ORDER BY 1, 2",
    )
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Text>, _>(&columns)
    .load::<ColumnState>(conn)
    .await
}

/// The Citus extension's version in the connected database, `NULL` without it: whether
/// the server is a Citus coordinator, read by [`read`] and by [`citus_version`].
const CITUS_VERSION: &str = "SELECT extversion::text FROM pg_extension WHERE extname = 'citus'";

#[cfg(feature = "async")]
#[derive(QueryableByName)]
struct CitusVersion {
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

/// The Citus extension's version in the database `conn` is connected to, `None` when it
/// has none (not a Citus coordinator): one statement, for a caller that needs the mode
/// before anything else (the CLI decides Citus mode by it, never by a guess).
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub async fn citus_version(
    conn: &mut diesel_async::AsyncPgConnection,
) -> Result<Option<String>, diesel::result::Error> {
    statement(format!("SELECT ({CITUS_VERSION}) AS version"))
        .get_result::<CitusVersion>(conn)
        .await
        .map(|row| row.version)
}

/// Reads the catalog for the marked `tables` and the `shared` ones with `config`'s names,
/// checking the membership of each of `members` in the roles its [`Purpose`] needs (the
/// connecting role for [`Config::purpose`] when empty): a fixed number of statements
/// (sixteen reads and a rolled-back probe transaction of two, and
/// one read of Citus's metadata on a database with Citus) whatever the number of tables.
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub async fn read(
    conn: &mut diesel_async::AsyncPgConnection,
    config: &Config,
    tables: &[MarkedTable],
    shared: &[QualifiedName],
    members: &[(String, Purpose)],
) -> Result<Catalog, diesel::result::Error> {
    read_on(conn, config, tables, shared, members).await
}

/// [`read`] on a synchronous `diesel::PgConnection`: the same statements, in the same order.
pub fn read_sync(
    conn: &mut PgConnection,
    config: &Config,
    tables: &[MarkedTable],
    shared: &[QualifiedName],
    members: &[(String, Purpose)],
) -> Result<Catalog, diesel::result::Error> {
    completed_at_once(read_on(conn, config, tables, shared, members))
}

async fn read_on(
    conn: &mut impl CatalogConnection,
    config: &Config,
    tables: &[MarkedTable],
    shared: &[QualifiedName],
    members: &[(String, Purpose)],
) -> Result<Catalog, diesel::result::Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.table.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.table.name.as_str()).collect();
    let shared_schemas: Vec<&str> = shared.iter().map(|t| t.schema.as_str()).collect();
    let shared_names: Vec<&str> = shared.iter().map(|t| t.name.as_str()).collect();
    // Grants are read for the marked and the shared tables alike.
    let granted_schemas: Vec<&str> = schemas.iter().chain(&shared_schemas).copied().collect();
    let granted_names: Vec<&str> = names.iter().chain(&shared_names).copied().collect();
    let our_roles = [config.tenant_role(), config.admin_role()];
    let our_policies = [config.isolation_policy(), config.admin_policy()];

    let roles = statement(
        "SELECT r.name, o.oid IS NOT NULL AS exists,
                COALESCE(o.rolsuper, false) AS superuser, COALESCE(o.rolbypassrls, false) AS bypass_rls,
                COALESCE(o.rolcanlogin, false) AS can_login
         FROM unnest($1::text[]) WITH ORDINALITY AS r(name, i)
         LEFT JOIN pg_roles o ON o.rolname = r.name
         ORDER BY r.i",
    )
    .bind::<Array<Text>, _>(&our_roles[..])
    .load::<RoleState>(conn)
    .await?;

    // pg_has_role raises for a missing role, hence the joins guarding it.
    let memberships = statement(
        "SELECT r.name AS role, m.name AS member,
                COALESCE(CASE WHEN ro.oid IS NOT NULL AND mo.oid IS NOT NULL
                              THEN pg_has_role(mo.oid, ro.oid, 'MEMBER') END, false) AS is_member,
                COALESCE(CASE WHEN ro.oid IS NOT NULL AND mo.oid IS NOT NULL
                              THEN pg_has_role(mo.oid, ro.oid, 'USAGE') END, false) AS inherits,
                mo.oid IS NOT NULL AS member_exists
         FROM unnest(CASE WHEN cardinality($2::text[]) = 0 THEN ARRAY[session_user::text] ELSE $2::text[] END)
              WITH ORDINALITY AS m(name, i)
         CROSS JOIN unnest($1::text[]) WITH ORDINALITY AS r(name, j)
         LEFT JOIN pg_roles ro ON ro.rolname = r.name
         LEFT JOIN pg_roles mo ON mo.rolname = m.name
         ORDER BY m.i, r.j",
    )
    .bind::<Array<Text>, _>(&our_roles[..])
    .bind::<Array<Text>, _>(members.iter().map(|(name, _)| name).collect::<Vec<_>>())
    .load::<Membership>(conn)
    .await?;
    // Only the roles each member's purpose needs are asked of it.
    let memberships: Vec<Membership> = memberships
        .into_iter()
        .enumerate()
        .filter(|(i, m)| {
            let purpose = members
                .get(i / our_roles.len())
                .map_or(config.purpose(), |(_, purpose)| *purpose);
            purpose.roles(config).contains(&m.role.as_str())
        })
        .map(|(_, m)| m)
        .collect();

    let login_and_server = statement(format!(
        "SELECT session_user::text AS name, rolsuper AS superuser, rolbypassrls AS bypass_rls,
                current_setting('server_version_num')::int4 AS server_version_num,
                ({CITUS_VERSION}) AS citus_version,
                current_setting({}, true) AS propagate_set_commands
         FROM pg_roles WHERE rolname = session_user",
        crate::tenant::quote_literal(crate::config::CITUS_PROPAGATE_SET_COMMANDS)
    ))
    .get_result::<LoginAndServer>(conn)
    .await?;
    let login = login_and_server.login;

    let schema_usage = statement(
        "SELECT s.schema, r.name AS role,
                COALESCE(CASE WHEN o.oid IS NOT NULL AND n.oid IS NOT NULL
                              THEN has_schema_privilege(o.oid, n.oid, 'USAGE') END, false) AS usage
         FROM (SELECT DISTINCT unnest($1::text[]) AS schema) s
         CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS r(name, i)
         LEFT JOIN pg_namespace n ON n.nspname = s.schema
         LEFT JOIN pg_roles o ON o.rolname = r.name
         ORDER BY s.schema, r.i",
    )
    .bind::<Array<Text>, _>(&granted_schemas)
    .bind::<Array<Text>, _>(&our_roles[..])
    .load::<SchemaUsage>(conn)
    .await?;

    let table_states = statement(format!(
        "SELECT t.schema, t.name, c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced
         FROM {TABLES_AND_OURS}
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p')
         ORDER BY 1, 2"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Text>, _>(&our_policies[..])
    .load::<TableState>(conn)
    .await?;

    let column_keys: Vec<(QualifiedName, String)> = tables
        .iter()
        .map(|t| (t.table.clone(), t.key.column.clone()))
        .collect();
    let tenant_columns = columns_on(conn, &column_keys).await?;

    let policies = statement(format!(
        "SELECT p.schemaname::text AS schema, p.tablename::text AS table, p.policyname::text AS name,
                p.permissive, p.roles::text[] AS roles, p.cmd, p.qual AS using, p.with_check AS check
         FROM {TABLES_AND_OURS}
         JOIN pg_policies p ON p.schemaname = t.schema AND p.tablename = t.name
         ORDER BY 1, 2, 3"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Text>, _>(&our_policies[..])
    .load::<PolicyState>(conn)
    .await?;

    let policy_reach = statement(format!(
        "SELECT t.schema, t.name AS table, p.polname::text AS policy, r.name AS role
         FROM {TABLES}
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
         JOIN pg_policy p ON p.polrelid = c.oid AND p.polpermissive
         CROSS JOIN unnest($3::text[]) WITH ORDINALITY AS r(name, i)
         JOIN pg_roles o ON o.rolname = r.name
         WHERE 0 = ANY(p.polroles)
            OR EXISTS (SELECT FROM unnest(p.polroles) AS pr(oid) WHERE pg_has_role(o.oid, pr.oid, 'MEMBER'))
         ORDER BY 1, 2, 3, r.i"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Text>, _>(&our_roles[..])
    .load::<PolicyReach>(conn)
    .await?;

    // GUC names are stored as the server folds them (lower case).
    let setting_defaults = statement(
        "SELECT d.datname::text AS database, r.rolname::text AS role,
                split_part(cfg, '=', 1) AS setting, substr(cfg, strpos(cfg, '=') + 1) AS value
         FROM pg_db_role_setting s
         CROSS JOIN LATERAL unnest(s.setconfig) AS cfg
         LEFT JOIN pg_database d ON d.oid = s.setdatabase
         LEFT JOIN pg_roles r ON r.oid = s.setrole
         WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
           AND (lower(split_part(cfg, '=', 1)) = lower($1)
                OR (lower(split_part(cfg, '=', 1)) = 'role' AND substr(cfg, strpos(cfg, '=') + 1) = $2))
         ORDER BY 1 NULLS FIRST, 2 NULLS FIRST, 3",
    )
    .bind::<Text, _>(config.setting())
    .bind::<Text, _>(config.admin_role())
    .load::<SettingDefault>(conn)
    .await?;

    let tenant_columns_named: Vec<&str> = tables.iter().map(|t| t.key.column.as_str()).collect();
    // A table inheriting from a marked one (a partition) is not forgotten: `audit` checks
    // its row level security.
    let unmarked = statement(
        "WITH RECURSIVE marked AS (
           SELECT c.oid FROM unnest($1::text[], $2::text[]) AS t(schema, name)
           JOIN pg_namespace n ON n.nspname = t.schema
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name),
         below AS (
           SELECT i.inhrelid AS oid FROM pg_inherits i JOIN marked m ON m.oid = i.inhparent
           UNION SELECT i.inhrelid FROM pg_inherits i JOIN below b ON b.oid = i.inhparent),
         candidates AS (
           SELECT n.nspname::text AS schema, c.relname::text AS name,
                  (SELECT min(a.attname::text) FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.attname = ANY($5::text[]) AND n.nspname = ANY($1::text[])) AS tenant_column,
                  ARRAY(SELECT r.name FROM unnest($6::text[]) WITH ORDINALITY AS r(name, i)
                        JOIN pg_roles o ON o.rolname = r.name
                        WHERE has_table_privilege(o.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                        ORDER BY r.i) AS granted_to
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p', 'f')
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
             AND c.oid NOT IN (SELECT oid FROM marked) AND c.oid NOT IN (SELECT oid FROM below)
             AND (n.nspname, c.relname) NOT IN (SELECT * FROM unnest($3::text[], $4::text[])))
         SELECT * FROM candidates
         WHERE tenant_column IS NOT NULL OR cardinality(granted_to) > 0
         ORDER BY 1, 2",
    )
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Text>, _>(&shared_schemas)
    .bind::<Array<Text>, _>(&shared_names)
    .bind::<Array<Text>, _>(&tenant_columns_named)
    .bind::<Array<Text>, _>(&our_roles[..])
    .load::<UnmarkedTable>(conn)
    .await?;

    let relatives = statement(
        "WITH RECURSIVE marked AS (
           SELECT c.oid, t.schema, t.name FROM unnest($1::text[], $2::text[]) AS t(schema, name)
           JOIN pg_namespace n ON n.nspname = t.schema
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name),
         below(oid, marked_oid) AS (
           SELECT i.inhrelid, m.oid FROM pg_inherits i JOIN marked m ON m.oid = i.inhparent
           UNION SELECT i.inhrelid, b.marked_oid FROM pg_inherits i JOIN below b ON b.oid = i.inhparent),
         above(oid, marked_oid) AS (
           SELECT i.inhparent, m.oid FROM pg_inherits i JOIN marked m ON m.oid = i.inhrelid
           UNION SELECT i.inhparent, a.marked_oid FROM pg_inherits i JOIN above a ON a.oid = i.inhrelid),
         related AS (
           SELECT b.oid, b.marked_oid,
                  CASE WHEN c.relispartition THEN 'partition' ELSE 'inheritance child' END AS kind
           FROM below b JOIN pg_class c ON c.oid = b.oid
           UNION SELECT a.oid, a.marked_oid, 'inheritance parent' FROM above a)
         SELECT DISTINCT n.nspname::text AS schema, c.relname::text AS name, r.kind,
                m.schema AS marked_schema, m.name AS marked_name, c.relrowsecurity AS rls_enabled
         FROM related r
         JOIN marked m ON m.oid = r.marked_oid
         JOIN pg_class c ON c.oid = r.oid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE r.oid NOT IN (SELECT oid FROM marked)
           AND (NOT c.relrowsecurity OR NOT c.relforcerowsecurity)
         ORDER BY 1, 2, 4, 5",
    )
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<RelativeState>(conn)
    .await?;

    let loopholes = statement(LOOPHOLES)
        .bind::<Array<Text>, _>(&schemas)
        .bind::<Array<Text>, _>(&names)
        .bind::<Array<Text>, _>(&our_roles[..])
        .bind::<Array<Text>, _>(&tenant_columns_named)
        .load::<LoopholeRow>(conn)
        .await?
        .into_iter()
        .map(LoopholeRow::into_loophole)
        .collect();

    let cross_tenant_keys = statement(
        "WITH marked AS (
           SELECT c.oid, t.col, a.attnum AS tenant_attnum
           FROM unnest($1::text[], $2::text[], $3::text[]) AS t(schema, name, col)
           JOIN pg_namespace n ON n.nspname = t.schema
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = t.col AND NOT a.attisdropped)
         SELECT cn.nspname::text AS schema, cc.relname::text AS table, k.conname::text AS name,
                child.col AS tenant_column,
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, i)
                      JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum ORDER BY u.i) AS columns,
                pn.nspname::text AS parent_schema, pc.relname::text AS parent_table,
                parent.col AS parent_tenant_column,
                ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS u(attnum, i)
                      JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.attnum ORDER BY u.i) AS parent_columns,
                k.confmatchtype::text AS match_type, k.confupdtype::text AS on_update,
                k.confdeltype::text AS on_delete, k.condeferrable AS deferrable,
                k.condeferred AS deferred, k.convalidated AS validated,
                pg_get_constraintdef(k.oid) AS definition,
                EXISTS (SELECT FROM pg_index i
                        WHERE i.indrelid = k.confrelid AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                          AND (SELECT array_agg(x ORDER BY x) FROM unnest(i.indkey::int2[]) x)
                            = (SELECT array_agg(x ORDER BY x) FROM unnest(k.confkey || parent.tenant_attnum) x)
                       ) AS parent_has_unique
         FROM pg_constraint k
         JOIN marked child ON child.oid = k.conrelid
         JOIN marked parent ON parent.oid = k.confrelid
         JOIN pg_class cc ON cc.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
         JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
         WHERE k.contype = 'f' AND k.conparentid = 0
           AND NOT EXISTS (SELECT FROM generate_subscripts(k.conkey, 1) AS s(i)
                           WHERE k.conkey[s.i] = child.tenant_attnum AND k.confkey[s.i] = parent.tenant_attnum)
         ORDER BY 1, 2, 3",
    )
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .bind::<Array<Text>, _>(&tenant_columns_named)
    .load::<CrossTenantKeyRow>(conn)
    .await?
    .into_iter()
    .map(CrossTenantKeyRow::into_key)
    .collect();

    let table_privileges = statement(format!(
        "SELECT t.schema, t.name, g.rolname::text AS grantee, a.privilege_type AS privilege
         FROM {TABLES}
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
         CROSS JOIN LATERAL aclexplode(c.relacl) a
         JOIN pg_roles g ON g.oid = a.grantee
         ORDER BY 1, 2, 3, 4"
    ))
    .bind::<Array<Text>, _>(&granted_schemas)
    .bind::<Array<Text>, _>(&granted_names)
    .load::<Privilege>(conn)
    .await?;

    let shared = statement(
        "SELECT t.schema, t.name, c.oid IS NOT NULL AS exists
         FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(schema, name, i)
         LEFT JOIN pg_namespace n ON n.nspname = t.schema
         LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         ORDER BY t.i",
    )
    .bind::<Array<Text>, _>(&shared_schemas)
    .bind::<Array<Text>, _>(&shared_names)
    .load::<SharedState>(conn)
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
    let sequences = statement(format!(
        "SELECT table_schema, table_name, schema, name FROM ({owned}) o ORDER BY 1, 2, 3, 4"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<OwnedSequence>(conn)
    .await?;
    let sequence_privileges = statement(format!(
        "SELECT o.schema, o.name, g.rolname::text AS grantee, a.privilege_type AS privilege
         FROM ({owned}) o CROSS JOIN LATERAL aclexplode(o.relacl) a
         JOIN pg_roles g ON g.oid = a.grantee ORDER BY 1, 2, 3, 4"
    ))
    .bind::<Array<Text>, _>(&schemas)
    .bind::<Array<Text>, _>(&names)
    .load::<Privilege>(conn)
    .await?;

    let mut keys: Vec<ProbeKey> = tables.iter().map(|t| t.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let admin_exists = roles
        .iter()
        .any(|r| r.name == config.admin_role() && r.exists);
    let expected = probe(conn, config, &keys, admin_exists).await?;

    let citus = match login_and_server.citus_version {
        Some(version) => Some(CitusState {
            version,
            propagate_set_commands: login_and_server.propagate_set_commands.unwrap_or_default(),
            tables: distribution(conn, &granted_schemas, &granted_names).await?,
        }),
        None => None,
    };

    Ok(Catalog {
        roles,
        memberships,
        login,
        server_version_num: login_and_server.server_version_num,
        schema_usage,
        tables: table_states,
        columns: tenant_columns,
        policies,
        policy_reach,
        setting_defaults,
        unmarked,
        cross_tenant_keys,
        relatives,
        loopholes,
        table_privileges,
        sequences,
        sequence_privileges,
        shared,
        expected,
        citus,
    })
}

/// How Citus holds each of the tables (`schemas` and `names` zipped) that exist, in one
/// query; only on a database with Citus, whose `pg_dist_partition` it reads.
async fn distribution(
    conn: &mut impl CatalogConnection,
    schemas: &[&str],
    names: &[&str],
) -> Result<Vec<CitusTable>, diesel::result::Error> {
    let rows = statement(format!(
        "SELECT DISTINCT t.schema, t.name, p.partmethod::text AS method, p.repmodel::text AS replication,
                CASE WHEN p.partmethod IN ('h', 'a', 'r')
                     THEN column_to_column_name(p.logicalrelid, p.partkey) END AS column,
                p.colocationid AS colocation
         FROM {TABLES}
         JOIN pg_namespace n ON n.nspname = t.schema
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name
         LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
         ORDER BY 1, 2"
    ))
    .bind::<Array<Text>, _>(schemas)
    .bind::<Array<Text>, _>(names)
    .load::<DistributionRow>(conn)
    .await?;
    Ok(rows.into_iter().map(DistributionRow::into_table).collect())
}

/// Creates our policies on temporary tables, one per tenant column and type, reads back
/// how the server deparses them and rolls everything back. Comparing against the server's
/// own deparse is exact where comparing SQL text would not be.
async fn probe(
    conn: &mut impl CatalogConnection,
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
            "CREATE TEMP TABLE \"tenants_probe_{i}\" ({} {} DEFAULT {});\n",
            crate::tenant::quote_ident(&key.column),
            key.sql_type.pg_name(),
            policy::tenant_default_expression(config, key.sql_type)
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
    conn.begin().await?;
    let deparsed = probe_in_transaction(conn, &ddl).await;
    conn.rollback().await?;
    let (deparsed, defaults) = deparsed?;

    let def_of = |table: &str, name: &str| {
        deparsed
            .iter()
            .find(|p| p.table == table && p.name == name)
            .map(|p| p.def.clone())
    };
    let isolation = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let table = format!("tenants_probe_{}", i + 1);
            def_of(&table, config.isolation_policy())
                .map(|def| (key.clone(), def))
                .ok_or_else(|| probe_error(&table))
        })
        .collect::<Result<_, _>>()?;
    let defaults = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let table = format!("tenants_probe_{}", i + 1);
            defaults
                .iter()
                .find(|d| d.table == table)
                .map(|d| (key.clone(), d.expression.clone()))
                .ok_or_else(|| probe_error(&table))
        })
        .collect::<Result<_, _>>()?;
    Ok(ExpectedPolicies {
        isolation,
        defaults,
        admin: def_of("tenants_probe_0", config.admin_policy()),
    })
}

fn probe_error(table: &str) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!("the probe policy on pg_temp.{table} was not found after creating it").into(),
    )
}

/// The default of a probe table's column, as the server deparses it.
#[derive(QueryableByName)]
struct ProbeDefault {
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = Text)]
    expression: String,
}

async fn probe_in_transaction(
    conn: &mut impl CatalogConnection,
    ddl: &str,
) -> Result<(Vec<PolicyState>, Vec<ProbeDefault>), diesel::result::Error> {
    conn.batch_execute(ddl).await?;
    let defaults = statement(
        "SELECT c.relname::text AS table, pg_get_expr(d.adbin, d.adrelid) AS expression
         FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid
         WHERE c.relnamespace = pg_my_temp_schema() AND c.relname LIKE 'tenants\\_probe\\_%'",
    )
    .load::<ProbeDefault>(conn)
    .await?;
    let policies = statement(
        "SELECT schemaname::text AS schema, tablename::text AS table, policyname::text AS name,
                permissive, roles::text[] AS roles, cmd, qual AS using, with_check AS check
         FROM pg_policies
         WHERE schemaname = (SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema())
           AND tablename LIKE 'tenants\\_probe\\_%'",
    )
    .load::<PolicyState>(conn)
    .await?;
    Ok((policies, defaults))
}

/// A catalog statement: loaded the same way on the async and the sync connection.
type Statement<'a> = BoxedSqlQuery<'a, Pg, SqlQuery>;

fn statement<'a>(sql: impl Into<String>) -> Statement<'a> {
    diesel::sql_query(sql).into_boxed()
}

/// A connection the catalog is read on. The reader is written once, as async code: on
/// diesel-async's connection each step awaits the server; on diesel's synchronous
/// `PgConnection` each step has completed when its future is made, so [`read_sync`] runs
/// the reader to its end in a single poll, without a runtime.
trait CatalogConnection {
    async fn load<U>(&mut self, statement: Statement<'_>) -> QueryResult<Vec<U>>
    where
        U: QueryableByName<Pg> + Send + 'static;

    async fn batch_execute(&mut self, sql: &str) -> QueryResult<()>;

    /// Begins a transaction (a savepoint inside one) through the transaction manager.
    async fn begin(&mut self) -> QueryResult<()>;

    /// Rolls back what [`CatalogConnection::begin`] began.
    async fn rollback(&mut self) -> QueryResult<()>;
}

#[cfg(feature = "async")]
impl CatalogConnection for diesel_async::AsyncPgConnection {
    async fn load<U>(&mut self, statement: Statement<'_>) -> QueryResult<Vec<U>>
    where
        U: QueryableByName<Pg> + Send + 'static,
    {
        diesel_async::RunQueryDsl::load(statement, self).await
    }

    async fn batch_execute(&mut self, sql: &str) -> QueryResult<()> {
        diesel_async::SimpleAsyncConnection::batch_execute(self, sql).await
    }

    async fn begin(&mut self) -> QueryResult<()> {
        use diesel_async::TransactionManager;
        diesel_async::AnsiTransactionManager::begin_transaction(self).await
    }

    async fn rollback(&mut self) -> QueryResult<()> {
        use diesel_async::TransactionManager;
        diesel_async::AnsiTransactionManager::rollback_transaction(self).await
    }
}

impl CatalogConnection for PgConnection {
    async fn load<U>(&mut self, statement: Statement<'_>) -> QueryResult<Vec<U>>
    where
        U: QueryableByName<Pg> + Send + 'static,
    {
        diesel::RunQueryDsl::load(statement, self)
    }

    async fn batch_execute(&mut self, sql: &str) -> QueryResult<()> {
        diesel::connection::SimpleConnection::batch_execute(self, sql)
    }

    async fn begin(&mut self) -> QueryResult<()> {
        use diesel::connection::TransactionManager;
        diesel::connection::AnsiTransactionManager::begin_transaction(self)
    }

    async fn rollback(&mut self) -> QueryResult<()> {
        use diesel::connection::TransactionManager;
        diesel::connection::AnsiTransactionManager::rollback_transaction(self)
    }
}

/// `load` and `get_result` of a [`Statement`], on either connection.
trait Load {
    async fn load<U>(self, conn: &mut impl CatalogConnection) -> QueryResult<Vec<U>>
    where
        U: QueryableByName<Pg> + Send + 'static;

    async fn get_result<U>(self, conn: &mut impl CatalogConnection) -> QueryResult<U>
    where
        U: QueryableByName<Pg> + Send + 'static;
}

impl Load for Statement<'_> {
    async fn load<U>(self, conn: &mut impl CatalogConnection) -> QueryResult<Vec<U>>
    where
        U: QueryableByName<Pg> + Send + 'static,
    {
        conn.load(self).await
    }

    async fn get_result<U>(self, conn: &mut impl CatalogConnection) -> QueryResult<U>
    where
        U: QueryableByName<Pg> + Send + 'static,
    {
        conn.load(self)
            .await?
            .into_iter()
            .next()
            .ok_or(diesel::result::Error::NotFound)
    }
}

/// The output of a future that completes without waiting, as the reader does on the sync
/// connection: polled once.
fn completed_at_once<T>(future: impl Future<Output = QueryResult<T>>) -> QueryResult<T> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => Err(diesel::result::Error::QueryBuilderError(
            "the catalog reader waited on a synchronous connection".into(),
        )),
    }
}
