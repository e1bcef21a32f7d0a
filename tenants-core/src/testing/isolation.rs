//! The isolation check: every `#[with_rls]` table, probed as two tenants, without a scope
//! and as admin, every failure reported at once.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use diesel::QueryableByName;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};

use crate::config::Config;
use crate::error::Error;
use crate::pool::{TenantConnection, TenantPool};
use crate::registry::{RlsTable, TenantSqlType};
use crate::tenant::{Tenant, TenantId, escape_literal, quote_ident};

/// One property of the contract, as the check names it in a [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Property {
    /// Every checked table has a row maker, and every row maker names a checked table.
    RowMaker,
    /// The check itself could run: the table exists, the tenants fit its type, rows could
    /// be made and counted.
    Setup,
    /// A tenant transaction can insert a row of its own tenant.
    WritesOwnRows,
    /// A tenant sees all of its rows and no other tenant's, without a filter.
    SeesOnlyOwnRows,
    /// A tenant filtering by the other tenant sees nothing.
    FilterByOtherTenant,
    /// `UPDATE ... WHERE tenant = <other>` touches 0 rows.
    CrossTenantUpdate,
    /// `DELETE ... WHERE tenant = <other>` touches 0 rows.
    CrossTenantDelete,
    /// Inserting a row for the other tenant is refused by row-level security.
    CrossTenantInsert,
    /// Moving an own row to the other tenant is refused by row-level security.
    MoveToOtherTenant,
    /// A transaction without a tenant or admin scope, even the table owner's, sees no row.
    NoScopeSeesNothing,
    /// A transaction without a scope, even the table owner's, writes nothing.
    NoScopeWritesNothing,
    /// An admin transaction sees every tenant's rows.
    AdminSeesAll,
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Property::RowMaker => "row maker",
            Property::Setup => "check setup",
            Property::WritesOwnRows => "a tenant writes its own rows",
            Property::SeesOnlyOwnRows => "a tenant sees only its rows",
            Property::FilterByOtherTenant => "a tenant filtering by another sees nothing",
            Property::CrossTenantUpdate => "cross-tenant UPDATE touches 0 rows",
            Property::CrossTenantDelete => "cross-tenant DELETE touches 0 rows",
            Property::CrossTenantInsert => "cross-tenant INSERT is refused",
            Property::MoveToOtherTenant => "moving a row to another tenant is refused",
            Property::NoScopeSeesNothing => "no scope sees nothing",
            Property::NoScopeWritesNothing => "no scope writes nothing",
            Property::AdminSeesAll => "admin sees every tenant",
        })
    }
}

/// One broken property of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `schema.table` (for a row maker naming no checked table, the name it was given).
    pub table: String,
    /// What does not hold.
    pub property: Property,
    /// What the check saw.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.table, self.property, self.detail)
    }
}

/// Every failure of one [`IsolationCheck::run`], in the order found: by table (schema,
/// then name), then by property.
#[derive(Clone, PartialEq, Eq)]
pub struct IsolationReport {
    tables: usize,
    failures: Vec<Failure>,
}

impl IsolationReport {
    /// The failures.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// How many tables the check covered.
    pub fn tables(&self) -> usize {
        self.tables
    }
}

impl fmt::Display for IsolationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "isolation check of {}: {}",
            plural(self.tables, "#[with_rls] table"),
            plural(self.failures.len(), "failure")
        )?;
        for failure in &self.failures {
            write!(f, "\n  {failure}")?;
        }
        Ok(())
    }
}

/// The report itself: a test that returns `Err(report)` prints this.
impl fmt::Debug for IsolationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for IsolationReport {}

/// A row maker, type-erased.
trait MakeRow {
    fn make<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        tenant: &'a Tenant,
    ) -> Pin<Box<dyn Future<Output = Result<(), DieselError>> + 'a>>;
}

struct RowMaker<F, T>(F, PhantomData<fn() -> T>);

impl<F, T> MakeRow for RowMaker<F, T>
where
    F: AsyncFn(&mut AsyncPgConnection, &Tenant) -> Result<T, DieselError>,
{
    fn make<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        tenant: &'a Tenant,
    ) -> Pin<Box<dyn Future<Output = Result<(), DieselError>> + 'a>> {
        Box::pin(async move { (self.0)(conn, tenant).await.map(drop) })
    }
}

/// Checks that PostgreSQL keeps tenants apart in every `#[with_rls]` table linked into the
/// test binary ([`crate::registry::tables`]).
///
/// For two tenants (generated to fit each table's tenant type, or given with
/// [`tenants`](IsolationCheck::tenants)) it makes a row of each through the table's row
/// maker, then asserts: each tenant sees all its rows and no other tenant's, without a
/// filter and when filtering by the other; its `UPDATE` and `DELETE` of the other's rows
/// touch 0 rows; inserting a row for the other and moving its own row to the other are
/// refused by row-level security; a transaction without a scope sees and writes nothing,
/// even as the table's owner (`FORCE ROW LEVEL SECURITY`; when the pool's
/// [`Config::force_rls`] is off, as a non-owner); an admin transaction sees every row.
/// Every probe but the row making is rolled back.
///
/// A marked table without a row maker fails the check by name, so a table added later
/// cannot skip it. Run it on a fresh database ([`TestDatabase`](super::TestDatabase)): it
/// leaves one row per tenant per table. It counts rows bypassing RLS and stands in for
/// the table's owner, so it needs a superuser: the pool's login (as
/// [`TestDatabase::pool`](super::TestDatabase::pool)'s), or
/// [`privileged_url`](IsolationCheck::privileged_url).
#[derive(Default)]
pub struct IsolationCheck {
    makers: Vec<(String, Box<dyn MakeRow>)>,
    tables: Option<Vec<RlsTable>>,
    tenants: Option<(String, String)>,
    privileged_url: Option<String>,
    admin_pool: Option<TenantPool>,
}

impl fmt::Debug for IsolationCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsolationCheck")
            .field(
                "row_makers",
                &self.makers.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            )
            .field("tables", &self.tables)
            .field("tenants", &self.tenants)
            .finish_non_exhaustive()
    }
}

impl IsolationCheck {
    /// A check of every marked table, with no row maker yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How to make a row of `table` (`name` or `schema.name`) for a tenant: an async
    /// closure inserting one row whose tenant column is `tenant` (and whatever it needs),
    /// on the connection it is given. It runs inside transactions of several scopes.
    pub fn rows<F, T>(mut self, table: &str, make: F) -> Self
    where
        F: AsyncFn(&mut AsyncPgConnection, &Tenant) -> Result<T, DieselError> + 'static,
        T: 'static,
    {
        self.makers
            .push((table.to_string(), Box::new(RowMaker(make, PhantomData))));
        self
    }

    /// The two tenants, instead of generated ones (when a tenant must exist elsewhere,
    /// say). Each must fit every checked table's tenant type.
    pub fn tenants(mut self, a: impl TenantId, b: impl TenantId) -> Self {
        self.tenants = Some((a.tenant_text().into_owned(), b.tenant_text().into_owned()));
        self
    }

    /// Checks `tables` instead of every marked table: for a test binary whose marked
    /// tables live in several databases. A table left out here is not checked.
    pub fn tables(mut self, tables: impl IntoIterator<Item = RlsTable>) -> Self {
        self.tables = Some(tables.into_iter().collect());
        self
    }

    /// Counts rows and stands in for the owner through a connection to `url` (a superuser
    /// of the same database) instead of the pool's own login.
    pub fn privileged_url(mut self, url: impl Into<String>) -> Self {
        self.privileged_url = Some(url.into());
        self
    }

    /// Runs admin transactions on `pool` instead of the checked pool: for a serving pool
    /// whose login is a member of the tenant role only, as in the hardened deployment
    /// ([`TestDatabase::admin_pool`](super::TestDatabase::admin_pool)).
    pub fn admin_pool(mut self, pool: TenantPool) -> Self {
        self.admin_pool = Some(pool);
        self
    }

    /// Runs the check with tenant transactions from `pool` and admin transactions from
    /// [`IsolationCheck::admin_pool`] (else `pool`); `Err` lists every failure.
    pub async fn run(&self, pool: &TenantPool) -> Result<(), IsolationReport> {
        let tables = self.tables.clone().unwrap_or_else(crate::registry::tables);
        let mut failures = Vec::new();
        for (name, _) in &self.makers {
            if !tables.iter().any(|table| names(name, table)) {
                failures.push(Failure {
                    table: name.clone(),
                    property: Property::RowMaker,
                    detail: "a row maker for a table that is not #[with_rls] (or not checked)"
                        .into(),
                });
            }
        }
        let privileged = match &self.privileged_url {
            None => Ok(Privileged::Pool(pool)),
            Some(url) => crate::connect::establish(url)
                .await
                .map(|conn| Privileged::Own(Box::new(conn)))
                .map_err(|e| format!("cannot connect to the privileged URL: {e}")),
        };
        match privileged {
            Ok(mut privileged) => {
                for table in &tables {
                    let found = TableCheck::run(self, pool, &mut privileged, table).await;
                    failures.extend(found);
                }
            }
            Err(detail) => failures.push(Failure {
                table: "(all)".into(),
                property: Property::Setup,
                detail,
            }),
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(IsolationReport {
                tables: tables.len(),
                failures,
            })
        }
    }

    /// Runs the check and panics with the report when anything fails (so a
    /// [`TestDatabase`](super::TestDatabase) is kept for inspection).
    ///
    /// # Panics
    ///
    /// When the check fails; the message is the [`IsolationReport`].
    pub async fn assert(&self, pool: &TenantPool) {
        if let Err(report) = self.run(pool).await {
            panic!("{report}");
        }
    }

    fn maker(&self, table: &RlsTable) -> Option<&dyn MakeRow> {
        self.makers
            .iter()
            .find(|(name, _)| names(name, table))
            .map(|(_, maker)| maker.as_ref())
    }
}

/// Whether a row maker's `name` (`table` in `public`, or `schema.table`) is `table`.
fn names(name: &str, table: &RlsTable) -> bool {
    match name.split_once('.') {
        Some((schema, name)) => schema == table.schema && name == table.name,
        None => table.schema == "public" && name == table.name,
    }
}

/// Where privileged probes run: the pool's own login, checked out per probe (so a pool of
/// one still serves the tenant probes), or a connection of their own.
enum Privileged<'p> {
    Pool(&'p TenantPool),
    Own(Box<AsyncPgConnection>),
}

impl Privileged<'_> {
    /// Runs `f` in a transaction that is rolled back.
    async fn probe<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, DieselError>,
    ) -> Result<Result<T, DieselError>, String> {
        match self {
            Privileged::Pool(pool) => {
                let mut conn = pool
                    .unscoped()
                    .await
                    .map_err(|e| format!("cannot check out a connection: {e}"))?;
                Ok(rolled_back(&mut conn, f).await)
            }
            Privileged::Own(conn) => Ok(rolled_back(conn, f).await),
        }
    }
}

async fn rolled_back<T>(
    conn: &mut AsyncPgConnection,
    f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, DieselError>,
) -> Result<T, DieselError> {
    AnsiTransactionManager::begin_transaction(conn).await?;
    let result = f(conn).await;
    AnsiTransactionManager::rollback_transaction(conn).await?;
    result
}

/// Row counts of one table: of tenant a, of tenant b, of all.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    a: i64,
    #[diesel(sql_type = BigInt)]
    b: i64,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// Whether a table exists.
#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// A table's row-level security switches, from `pg_class`.
#[derive(QueryableByName)]
struct RlsFlags {
    #[diesel(sql_type = Bool)]
    enabled: bool,
    #[diesel(sql_type = Bool)]
    forced: bool,
}

/// Whose transaction a probe runs in.
#[derive(Clone, Copy)]
enum As<'t> {
    Tenant(&'t Tenant),
    Admin,
}

/// The probes of one table.
struct TableCheck<'c> {
    pool: &'c TenantPool,
    /// Where admin transactions run.
    admin_pool: &'c TenantPool,
    config: &'c Config,
    maker: &'c dyn MakeRow,
    table: String,
    /// The table, quoted and schema-qualified.
    sql_table: String,
    /// The tenant column, quoted.
    column: String,
    a: Tenant,
    b: Tenant,
    /// The tenants as typed SQL literals (`E'..'::text`).
    a_sql: String,
    b_sql: String,
    failures: Vec<Failure>,
}

impl<'c> TableCheck<'c> {
    async fn run(
        check: &'c IsolationCheck,
        pool: &'c TenantPool,
        privileged: &mut Privileged<'_>,
        table: &RlsTable,
    ) -> Vec<Failure> {
        let name = format!("{}.{}", table.schema, table.name);
        let failure = |property, detail: String| Failure {
            table: name.clone(),
            property,
            detail,
        };
        let Some(maker) = check.maker(table) else {
            return vec![failure(
                Property::RowMaker,
                format!(
                    "no row maker; every #[with_rls] table needs one: `.rows(\"{name}\", ...)`"
                ),
            )];
        };
        let (a, b) = match tenants(check.tenants.as_ref(), table.sql_type) {
            Ok(pair) => pair,
            Err(detail) => return vec![failure(Property::Setup, detail)],
        };
        let column = quote_ident(table.tenant_column);
        let literal = |tenant: &Tenant| {
            format!(
                "{}::{}",
                escape_literal(tenant.as_str()),
                table.sql_type.pg_name()
            )
        };
        let mut this = TableCheck {
            pool,
            admin_pool: check.admin_pool.as_ref().unwrap_or(pool),
            config: pool.config(),
            maker,
            sql_table: format!("{}.{}", quote_ident(table.schema), quote_ident(table.name)),
            a_sql: literal(&a),
            b_sql: literal(&b),
            column,
            table: name,
            a,
            b,
            failures: Vec::new(),
        };
        if let Some(truth) = this.prepare(privileged).await {
            this.tenant_probes(truth).await;
            this.no_scope_probes(privileged).await;
            this.admin_probe(truth).await;
        }
        this.failures
    }

    fn fail(&mut self, property: Property, detail: impl Into<String>) {
        self.failures.push(Failure {
            table: self.table.clone(),
            property,
            detail: detail.into(),
        });
    }

    /// `tenant a (`id`)`.
    fn who(&self, tenant: &Tenant) -> String {
        let label = if *tenant == self.a { "a" } else { "b" };
        format!("tenant {label} (`{tenant}`)")
    }

    /// Checks the table exists, makes a row of each tenant, and counts the rows bypassing
    /// RLS; `None` when the other probes cannot run.
    async fn prepare(&mut self, privileged: &mut Privileged<'_>) -> Option<Counts> {
        let exists = format!(
            "SELECT to_regclass({}) IS NOT NULL AS exists",
            escape_literal(&self.sql_table)
        );
        match privileged
            .probe(async |conn| diesel::sql_query(&exists).get_result::<Exists>(conn).await)
            .await
        {
            Ok(Ok(Exists { exists: true })) => {}
            Ok(Ok(Exists { exists: false })) => {
                self.fail(
                    Property::Setup,
                    "the table does not exist in this database: have the migrations run?",
                );
                return None;
            }
            Ok(Err(e)) => {
                self.fail(Property::Setup, format!("cannot look the table up: {e}"));
                return None;
            }
            Err(e) => {
                self.fail(Property::Setup, e);
                return None;
            }
        }

        for tenant in [self.a.clone(), self.b.clone()] {
            let who = self.who(&tenant);
            if let Err(error) = self.make_committed(As::Tenant(&tenant), &tenant).await {
                self.fail(
                    Property::WritesOwnRows,
                    format!("{who} cannot insert its own row: {error}"),
                );
                // Made as admin instead, so that the other properties are still checked.
                if let Err(error) = self.make_committed(As::Admin, &tenant).await {
                    self.fail(
                        Property::Setup,
                        format!(
                            "cannot make a row of {who} as admin either ({error}); the other checks of this table are skipped"
                        ),
                    );
                    return None;
                }
            }
        }

        let count = self.counts_sql("");
        let truth = privileged
            .probe(async |conn| {
                conn.batch_execute("SET LOCAL row_security = off").await?;
                diesel::sql_query(&count).get_result::<Counts>(conn).await
            })
            .await;
        match truth {
            Ok(Ok(truth)) if truth.a > 0 && truth.b > 0 => Some(truth),
            Ok(Ok(truth)) => {
                self.fail(
                    Property::Setup,
                    format!(
                        "the row maker made no row of its tenant ({} of tenant a, {} of tenant b): it must insert a row whose tenant column is the tenant it is given",
                        truth.a, truth.b
                    ),
                );
                None
            }
            Ok(Err(e)) => {
                self.fail(
                    Property::Setup,
                    format!(
                        "cannot count the rows bypassing row-level security ({e}); the check needs a superuser: use TestDatabase::pool() or IsolationCheck::privileged_url"
                    ),
                );
                None
            }
            Err(e) => {
                self.fail(Property::Setup, e);
                None
            }
        }
    }

    /// Makes a row of `tenant` in a transaction of `scope`, committed.
    async fn make_committed(&self, scope: As<'_>, tenant: &Tenant) -> Result<(), String> {
        let mut conn = self.begin(scope).await.map_err(|e| e.to_string())?;
        match self.maker.make(&mut conn, tenant).await {
            Ok(()) => conn.commit().await.map_err(|e| e.to_string()),
            Err(error) => {
                // Dropped, it would be rolled back all the same; the explicit rollback
                // returns the connection before the next probe needs it.
                let _ = conn.rollback().await;
                Err(error.to_string())
            }
        }
    }

    async fn begin(&self, scope: As<'_>) -> Result<TenantConnection, Error> {
        match scope {
            As::Tenant(tenant) => self.pool.tenant(tenant).await,
            As::Admin => self.admin_pool.admin().await,
        }
    }

    /// Runs `f` in a transaction of `scope` that is rolled back.
    async fn probe<T>(
        &self,
        scope: As<'_>,
        f: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, DieselError>,
    ) -> Result<Result<T, DieselError>, String> {
        let mut conn = self
            .begin(scope)
            .await
            .map_err(|e| format!("cannot begin the transaction: {e}"))?;
        let result = f(&mut conn).await;
        let _ = conn.rollback().await;
        Ok(result)
    }

    /// `"tenant" = <literal>`.
    fn is(&self, literal: &str) -> String {
        format!("{} = {literal}", self.column)
    }

    /// `SELECT` counting tenant a's, tenant b's and all rows, after `filter` (`WHERE ..`).
    fn counts_sql(&self, filter: &str) -> String {
        format!(
            "SELECT count(*) FILTER (WHERE {}) AS a, count(*) FILTER (WHERE {}) AS b, count(*) AS total FROM {} {filter}",
            self.is(&self.a_sql),
            self.is(&self.b_sql),
            self.sql_table
        )
    }

    async fn tenant_probes(&mut self, truth: Counts) {
        for (own, other) in [
            (self.a.clone(), self.b.clone()),
            (self.b.clone(), self.a.clone()),
        ] {
            let (who, whom) = (self.who(&own), self.who(&other));
            let own_is_a = own == self.a;
            let pick = |counts: Counts| {
                if own_is_a {
                    (counts.a, counts.b)
                } else {
                    (counts.b, counts.a)
                }
            };
            let (own_truth, _) = pick(truth);
            let (own_sql, other_sql) = if own_is_a {
                (&self.a_sql, &self.b_sql)
            } else {
                (&self.b_sql, &self.a_sql)
            };
            let (is_own, is_other) = (self.is(own_sql), self.is(other_sql));
            let other_sql = other_sql.clone();

            // Without a filter: all of its rows, none of another tenant's.
            let all = self.counts_sql("");
            match self
                .probe(As::Tenant(&own), async |conn| {
                    diesel::sql_query(&all).get_result::<Counts>(conn).await
                })
                .await
            {
                Ok(Ok(seen)) => {
                    let (seen_own, seen_other) = pick(seen);
                    let foreign = seen.total - seen_own;
                    if seen_own != own_truth || foreign != 0 {
                        self.fail(
                            Property::SeesOnlyOwnRows,
                            format!(
                                "{who} sees {seen_own} of its {} and {} of other tenants ({seen_other} of {whom})",
                                rows(own_truth),
                                rows(foreign)
                            ),
                        );
                    }
                }
                outcome => self.fail_outcome(Property::SeesOnlyOwnRows, &who, outcome),
            }

            // Filtering by the other tenant: nothing.
            let filtered = self.counts_sql(&format!("WHERE {is_other}"));
            match self
                .probe(As::Tenant(&own), async |conn| {
                    diesel::sql_query(&filtered)
                        .get_result::<Counts>(conn)
                        .await
                })
                .await
            {
                Ok(Ok(seen)) if seen.total == 0 => {}
                Ok(Ok(seen)) => self.fail(
                    Property::FilterByOtherTenant,
                    format!(
                        "{who} sees {} of {whom} when filtering by it",
                        rows(seen.total)
                    ),
                ),
                outcome => self.fail_outcome(Property::FilterByOtherTenant, &who, outcome),
            }

            // UPDATE and DELETE of the other tenant's rows touch nothing.
            let column = self.column.clone();
            let update = format!(
                "UPDATE {} SET {column} = {column} WHERE {is_other}",
                self.sql_table
            );
            let delete = format!("DELETE FROM {} WHERE {is_other}", self.sql_table);
            let move_rows = format!(
                "UPDATE {} SET {column} = {other_sql} WHERE {is_own}",
                self.sql_table
            );
            for (property, verb, sql) in [
                (Property::CrossTenantUpdate, "UPDATE", &update),
                (Property::CrossTenantDelete, "DELETE", &delete),
            ] {
                match self
                    .probe(As::Tenant(&own), async |conn| {
                        diesel::sql_query(sql).execute(conn).await
                    })
                    .await
                {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => self.fail(
                        property,
                        format!("{who}'s {verb} touched {} of {whom}", rows(n)),
                    ),
                    outcome => self.fail_outcome(property, &who, outcome),
                }
            }

            // INSERT for the other tenant: refused.
            let maker = self.maker;
            let inserted = self
                .probe(As::Tenant(&own), async |conn| {
                    maker.make(conn, &other).await
                })
                .await;
            match inserted {
                Ok(Ok(())) => self.fail(
                    Property::CrossTenantInsert,
                    format!("{who} inserted a row for {whom}"),
                ),
                Ok(Err(error)) if is_rls_refusal(&error) => {}
                outcome => self.fail_outcome(Property::CrossTenantInsert, &who, outcome),
            }

            // Moving its own rows to the other tenant: refused.
            match self
                .probe(As::Tenant(&own), async |conn| {
                    diesel::sql_query(&move_rows).execute(conn).await
                })
                .await
            {
                Ok(Ok(0)) => self.fail(
                    Property::MoveToOtherTenant,
                    format!("nothing to move: {who} sees none of its rows"),
                ),
                Ok(Ok(n)) => self.fail(
                    Property::MoveToOtherTenant,
                    format!("{who} moved {} to {whom}", rows(n)),
                ),
                Ok(Err(error)) if is_rls_refusal(&error) || is_distribution_refusal(&error) => {}
                outcome => self.fail_outcome(Property::MoveToOtherTenant, &who, outcome),
            }
        }
    }

    /// A transaction without a scope, as the table's owner: the tenant role stands in for
    /// the owner (`ALTER TABLE .. OWNER TO`, rolled back with the rest), so the probe
    /// tests the table's RLS settings whoever owns it in this database. With FORCE off in
    /// the pool's config, the owner bypasses RLS by design: the probe runs as a non-owner.
    async fn no_scope_probes(&mut self, privileged: &mut Privileged<'_>) {
        let role = quote_ident(self.config.tenant_role());
        // In Citus mode the stand-in cannot work: the shards changed owner over the
        // superuser's connections, which Citus lets no other role use in the same
        // transaction. The probe runs as a non-owner there (verify checks FORCE).
        let stand_in_owner = self.config.force_rls() && !self.config.citus();
        let mut enter = String::new();
        if stand_in_owner {
            enter.push_str(&format!("ALTER TABLE {} OWNER TO {role}; ", self.sql_table));
        }
        if self.config.citus() {
            enter.push_str(crate::config::CITUS_BEGIN_PREFIX);
        }
        enter.push_str(&format!(
            "SET LOCAL ROLE {role}; SET LOCAL {} = ''",
            quote_ident(self.config.setting())
        ));
        let who = if stand_in_owner {
            "the table's owner"
        } else {
            "a non-owner"
        };
        let count = self.counts_sql("");
        let column = &self.column;
        let update = format!("UPDATE {} SET {column} = {column}", self.sql_table);
        let delete = format!("DELETE FROM {}", self.sql_table);
        let (maker, a) = (self.maker, self.a.clone());
        let flags = format!(
            "SELECT relrowsecurity AS enabled, relforcerowsecurity AS forced FROM pg_class WHERE oid = to_regclass({})",
            escape_literal(&self.sql_table)
        );

        let outcome = privileged
            .probe(async |conn| {
                let flags = diesel::sql_query(&flags)
                    .get_result::<RlsFlags>(conn)
                    .await?;
                if let Err(e) = conn.batch_execute(&enter).await {
                    return Ok(Err(format!(
                        "cannot run as {who} without a scope ({e}); the check needs a superuser"
                    )));
                }
                let seen = diesel::sql_query(&count).get_result::<Counts>(conn).await?;
                let updated = diesel::sql_query(&update).execute(conn).await?;
                let deleted = diesel::sql_query(&delete).execute(conn).await?;
                let inserted = maker.make(conn, &a).await;
                Ok(Ok((flags, seen, updated, deleted, inserted)))
            })
            .await;
        match outcome {
            Ok(Ok(Ok((flags, seen, updated, deleted, inserted)))) => {
                // Why, when the table's switches explain it; else a policy lets it in.
                let hint = if !flags.enabled {
                    " (row-level security is not enabled on the table)"
                } else if stand_in_owner && !flags.forced {
                    " (FORCE ROW LEVEL SECURITY is off)"
                } else {
                    ""
                };
                if seen.total != 0 {
                    self.fail(
                        Property::NoScopeSeesNothing,
                        format!("{who} sees {} without a scope{hint}", rows(seen.total)),
                    );
                }
                let mut wrote = Vec::new();
                if updated != 0 {
                    wrote.push(format!("UPDATE touched {}", rows(updated)));
                }
                if deleted != 0 {
                    wrote.push(format!("DELETE touched {}", rows(deleted)));
                }
                match inserted {
                    Ok(()) => wrote.push(format!("INSERT for {} succeeded", self.who(&self.a))),
                    Err(error) if is_rls_refusal(&error) => {}
                    Err(error) => wrote.push(format!(
                        "INSERT for {} was refused, but not by row-level security: {error}",
                        self.who(&self.a)
                    )),
                }
                if !wrote.is_empty() {
                    self.fail(
                        Property::NoScopeWritesNothing,
                        format!("{who} without a scope: {}{hint}", wrote.join(", ")),
                    );
                }
            }
            Ok(Ok(Err(setup))) => self.fail(Property::Setup, setup),
            Ok(Err(error)) => self.fail(
                Property::NoScopeSeesNothing,
                format!("{who} without a scope: a statement failed: {error}"),
            ),
            Err(error) => self.fail(Property::Setup, error),
        }
    }

    async fn admin_probe(&mut self, truth: Counts) {
        let count = self.counts_sql("");
        match self
            .probe(As::Admin, async |conn| {
                diesel::sql_query(&count).get_result::<Counts>(conn).await
            })
            .await
        {
            Ok(Ok(seen)) if seen == truth => {}
            Ok(Ok(seen)) => self.fail(
                Property::AdminSeesAll,
                format!(
                    "admin sees {} of tenant a's {}, {} of tenant b's {}, {} of all {}",
                    seen.a,
                    rows(truth.a),
                    seen.b,
                    rows(truth.b),
                    seen.total,
                    rows(truth.total)
                ),
            ),
            outcome => self.fail_outcome(Property::AdminSeesAll, "admin", outcome),
        }
    }

    /// Records a probe that failed where it should have answered (or was refused
    /// otherwise than by row-level security).
    fn fail_outcome<T>(
        &mut self,
        property: Property,
        who: &str,
        outcome: Result<Result<T, DieselError>, String>,
    ) {
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(error)) if is_rls_refusal(&error) => self.fail(
                property,
                format!("{who}'s statement was refused by row-level security: {error}"),
            ),
            Ok(Err(error)) => self.fail(property, format!("{who}'s statement failed: {error}")),
            Err(error) => self.fail(property, format!("{who}: {error}")),
        }
    }
}

/// `1 row`, `2 rows`.
fn rows(n: impl fmt::Display) -> String {
    plural(n, "row")
}

/// `n` `thing`s: `1 row`, `2 rows`.
fn plural(n: impl fmt::Display, thing: &str) -> String {
    let n = n.to_string();
    if n == "1" {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// The error PostgreSQL raises when a policy's `WITH CHECK` refuses a row.
fn is_rls_refusal(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(_, info) if info.message().contains("row-level security"))
}

/// Citus refuses to change a row's distribution column, the tenant column of a table
/// distributed by it, before RLS is asked: the row stays with its tenant all the same.
fn is_distribution_refusal(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(_, info) if info.message().contains("modifying the partition value of rows is not allowed"))
}

/// The two tenants for a table of `sql_type`: the given ones, or generated to fit it.
fn tenants(
    given: Option<&(String, String)>,
    sql_type: TenantSqlType,
) -> Result<(Tenant, Tenant), String> {
    let (a, b) = match given {
        Some((a, b)) => (a.as_str(), b.as_str()),
        None => match sql_type {
            TenantSqlType::Text | TenantSqlType::VarChar => {
                ("isolation-check-a", "isolation-check-b")
            }
            TenantSqlType::Int4 | TenantSqlType::Int8 => ("1000000001", "1000000002"),
            TenantSqlType::Uuid => (
                "00000000-0000-4000-8000-00000000000a",
                "00000000-0000-4000-8000-00000000000b",
            ),
        },
    };
    let typed = |id: &str| {
        Tenant::of_type(id, sql_type)
            .map_err(|e| format!("tenant `{id}` does not fit the tenant column: {e}"))
    };
    let (a, b) = (typed(a)?, typed(b)?);
    if a == b {
        return Err(format!("the two tenants are the same (`{a}`)"));
    }
    Ok((a, b))
}
