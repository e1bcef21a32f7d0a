//! The typed tenant filter (`table.scoped(&conn)`): the tenant's rows, the same plan as the
//! hand-written filter, and typed errors before any query.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, Error, ScopedDsl, Tenant};
use tenants_tests::TestDb;

use crate::common::{Login, create_marked_table, pool};

#[tenants_core::with_rls]
diesel::table! {
    items_text (id) {
        id -> Int4,
        name -> Text,
        tenant -> Text,
    }
}

#[tenants_core::with_rls]
diesel::table! {
    items_uuid (id) {
        id -> Int4,
        name -> Text,
        tenant -> Uuid,
    }
}

/// `EXPLAIN <query>`, binds included: the plan the server makes for exactly what Diesel
/// sends.
#[derive(Debug, Clone, Copy)]
pub struct Explain<Q>(pub Q);

impl<Q> QueryId for Explain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Explain<Q> {
    type SqlType = Text;
}

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Explain<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("EXPLAIN ");
        self.0.walk_ast(out.reborrow())
    }
}

/// The lines of the plan of `query`.
pub async fn explain<Q>(conn: &mut AsyncPgConnection, query: Q) -> Vec<String>
where
    Q: QueryFragment<Pg> + Send + 'static,
{
    Explain(query)
        .load::<String>(conn)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN failed: {e}"))
}

/// Plan lines without their cost estimates, which the row estimate of a parameter may
/// shift between two plannings.
fn shapes(plan: &[String]) -> Vec<String> {
    plan.iter()
        .map(|line| line.split("  (cost=").next().unwrap_or(line).to_string())
        .collect()
}

async fn seeded(login: Login) -> TestDb {
    let db = TestDb::new();
    let mut conn = db.connect();
    let config = Config::default();
    create_marked_table(
        &mut conn,
        &config,
        login,
        "items_text",
        "text",
        TenantSqlType::Text,
    );
    create_marked_table(
        &mut conn,
        &config,
        login,
        "items_uuid",
        "uuid",
        TenantSqlType::Uuid,
    );
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        "INSERT INTO items_text (name, tenant)
           SELECT 'row ' || i, 'tenant' || (i % 200) FROM generate_series(1, 20000) i;
         INSERT INTO items_uuid (name, tenant)
           SELECT 'row ' || i, ('00000000-0000-0000-0000-' || lpad((i % 2)::text, 12, '0'))::uuid
           FROM generate_series(1, 10) i;
         ANALYZE items_text; ANALYZE items_uuid",
    )
    .expect("seed");
    db
}

#[tokio::test]
async fn scoped_reads_the_scopes_tenant_with_its_column_type() {
    let db = seeded(Login::App).await;
    let pool = pool(&Login::App.url(&db), 1).await;
    let tenant = "00000000-0000-0000-0000-000000000001";

    let mut conn = pool.tenant(tenant).await.expect("tenant");
    let names: Vec<String> = items_uuid::table
        .scoped(&conn)
        .expect("a tenant scope")
        .select(items_uuid::name)
        .order(items_uuid::id)
        .load(&mut conn)
        .await
        .expect("scoped load");
    assert_eq!(names, ["row 1", "row 3", "row 5", "row 7", "row 9"]);
    // It is a filter: update and delete take it as well.
    let touched = diesel::update(items_uuid::table.scoped(&conn).expect("scoped"))
        .set(items_uuid::name.eq("renamed"))
        .execute(&mut conn)
        .await
        .expect("scoped update");
    assert_eq!(touched, 5);
    conn.rollback().await.expect("rollback");

    // The closure form has no connection to ask: the tenant given to it serves.
    let acme = Tenant::new("tenant7").expect("id");
    let count: i64 = pool
        .transaction(&acme, async |conn| {
            Ok::<_, Error>(
                items_text::table
                    .scoped(&acme)?
                    .count()
                    .get_result(conn)
                    .await?,
            )
        })
        .await
        .expect("closure form");
    assert_eq!(count, 100);

    // No tenant in an admin scope; an id of another type than the column's: typed errors,
    // before any query.
    let admin = pool.admin().await.expect("admin");
    assert!(matches!(
        items_text::table.scoped(&admin),
        Err(Error::NotTenantScoped)
    ));
    drop(admin);
    let conn = pool.tenant("acme").await.expect("tenant");
    assert!(matches!(
        items_uuid::table.scoped(&conn),
        Err(Error::InvalidTenantId(_))
    ));
}

#[tokio::test]
async fn scoped_is_the_plan_of_the_hand_written_filter() {
    let db = seeded(Login::App).await;
    let pool = pool(&Login::App.url(&db), 1).await;
    let mut conn = pool.tenant("tenant7").await.expect("tenant");
    let scoped = items_text::table
        .scoped(&conn)
        .expect("scoped")
        .order(items_text::id.desc())
        .limit(10)
        .select(items_text::name);
    let by_hand = items_text::table
        .filter(items_text::tenant.eq("tenant7"))
        .order(items_text::id.desc())
        .limit(10)
        .select(items_text::name);
    assert_eq!(
        diesel::debug_query::<Pg, _>(&scoped).to_string(),
        diesel::debug_query::<Pg, _>(&by_hand).to_string()
    );
    let scoped_plan = explain(&mut conn, scoped).await;
    let by_hand_plan = explain(&mut conn, by_hand).await;
    assert_eq!(shapes(&scoped_plan), shapes(&by_hand_plan));
    assert!(
        scoped_plan
            .iter()
            .any(|l| l.contains("Index Cond") && l.contains("tenant = ")),
        "the filter is an index condition on the tenant column:\n{}",
        scoped_plan.join("\n")
    );
    conn.rollback().await.expect("rollback");
}
