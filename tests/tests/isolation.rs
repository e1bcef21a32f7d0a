//! The isolation suite: for each supported tenant type, logged in as superuser, as the
//! table owner, as a non-owner login role and as the hardened serving login (tenant role
//! only, not inheriting it; admin work through its own login), the kit's isolation check passes
//! (`tenants_core::testing`: each tenant sees and writes only its rows, no scope sees and
//! writes nothing, admin sees all), and every tenant, admin, commit and rollback leaves the
//! pooled connection as it found it. The scenario runs through the async `TenantPool` and,
//! on PostgreSQL, through the sync `SyncTenantPool` too.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::future::Future;
use std::pin::Pin;
use tenants_core::registry::{self, TenantSqlType};
use tenants_core::testing::IsolationCheck;
use tenants_core::{Tenant, TenantId};
use tenants_tests::TestDb;

use crate::common::{Login, Server, assert_db_error, create_marked_table};
use crate::pool_kind::{self, AnyPool, PoolKind};

type Names<'a> = Pin<Box<dyn Future<Output = QueryResult<Vec<String>>> + Send + 'a>>;
type Inserted<'a> = Pin<Box<dyn Future<Output = QueryResult<usize>> + Send + 'a>>;

/// One supported tenant type: its table and two tenants' ids, as values and as SQL.
pub struct Kind<A: TenantId, B: TenantId> {
    pub table: &'static str,
    pub pg_type: &'static str,
    pub sql_type: TenantSqlType,
    pub a: A,
    pub b: B,
    pub a_sql: &'static str,
    pub b_sql: &'static str,
    /// Loads every visible name through the Diesel DSL (a cached prepared statement).
    pub names: for<'a> fn(&'a mut AsyncPgConnection) -> Names<'a>,
    /// The same, on a synchronous connection.
    pub names_sync: fn(&mut PgConnection) -> QueryResult<Vec<String>>,
    /// The kit's row maker: inserts one row for a tenant through the Diesel DSL.
    pub row: for<'a> fn(&'a mut AsyncPgConnection, &'a Tenant) -> Inserted<'a>,
}

/// The kit's check of `kind`'s table alone (the database holds no other), counting rows
/// and standing in for the owner as the `DATABASE_URL` superuser.
pub fn check<A: TenantId, B: TenantId>(kind: &Kind<A, B>, db: &TestDb) -> IsolationCheck {
    let row = kind.row;
    let table = registry::tables()
        .into_iter()
        .filter(|t| t.name == kind.table)
        .collect::<Vec<_>>();
    assert_eq!(table.len(), 1, "{} is marked once", kind.table);
    IsolationCheck::new()
        .tables(table)
        .rows(kind.table, async move |conn, tenant| {
            row(conn, tenant).await
        })
        .privileged_url(db.url())
}

pub async fn run<A: TenantId + Copy, B: TenantId + Copy>(kind: Kind<A, B>, login: Login) {
    run_on(kind, login, Server::Direct).await;
}

/// The suite through the sync pool, on PostgreSQL.
pub async fn run_sync<A: TenantId + Copy, B: TenantId + Copy>(kind: Kind<A, B>, login: Login) {
    run_with(kind, login, Server::Direct, PoolKind::Sync).await;
}

/// The suite on `server`: directly, through PgBouncer in transaction mode (where one pool
/// connection may reach a different server backend in each transaction), or on a Citus
/// coordinator with the table distributed by its tenant column.
pub async fn run_on<A: TenantId + Copy, B: TenantId + Copy>(
    kind: Kind<A, B>,
    login: Login,
    server: Server<'_>,
) {
    run_with(kind, login, server, PoolKind::Async).await;
}

/// The suite on `server` through a pool of `pool_kind`.
async fn run_with<A: TenantId + Copy, B: TenantId + Copy>(
    kind: Kind<A, B>,
    login: Login,
    server: Server<'_>,
    pool_kind: PoolKind,
) {
    let db = server.db();
    let config = server.config();
    let table = kind.table;
    {
        let mut admin = db.connect();
        create_marked_table(
            &mut admin,
            &config,
            login,
            table,
            kind.pg_type,
            kind.sql_type,
        );
        // Seeded as the superuser, which RLS never applies to.
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "INSERT INTO \"{table}\" (name, tenant) VALUES
               ('a1', {a}), ('a2', {a}), ('a3', {a}), ('b1', {b}), ('b2', {b})",
                a = kind.a_sql,
                b = kind.b_sql
            )),
            &mut admin,
        )
        .expect("seed");
    }
    let pool = pool_kind::on(server, pool_kind, &db, login, 1).await;
    // The hardened deployment does admin work through its own login.
    let admin_login = match login {
        Login::Hardened => {
            Some(pool_kind::on(server, pool_kind, &db, Login::HardenedAdmin, 1).await)
        }
        _ => None,
    };
    let admins = admin_login.as_ref().unwrap_or(&pool);
    let home = pool.checkout_session().await;
    // The same backend after each transaction, when there is no PgBouncer in between.
    let same_backend = |pid: i32| !server.keeps_backend() || pid == home.pid;

    // An unfiltered UPDATE touches exactly the tenant's rows; serial and identity ids work
    // without being supplied; then a commit.
    let mut conn = pool.tenant(kind.a).await.expect("tenant a");
    let touched = conn
        .execute_sql(&format!("UPDATE \"{table}\" SET name = name"))
        .await
        .expect("update all");
    assert_eq!(touched, 3);
    let inserted = conn
        .execute_sql(&format!(
            "INSERT INTO \"{table}\" (name, tenant) VALUES ('a4', {})",
            kind.a_sql
        ))
        .await
        .expect("insert own row with a serial id");
    assert_eq!(inserted, 1);
    conn.commit().await.expect("commit");

    // A statement refused by RLS aborts the transaction; then a rollback.
    let mut conn = pool.tenant(kind.a).await.expect("tenant a");
    assert_db_error(
        &conn
            .execute_sql(&format!(
                "INSERT INTO \"{table}\" (name, tenant) VALUES ('x', {})",
                kind.b_sql
            ))
            .await,
        "row-level security",
        "insert for another tenant",
    );
    conn.rollback().await.expect("rollback");

    // After commit and after rollback the same backend is back to the login role, empty.
    let after = pool.checkout_session().await;
    assert!(same_backend(after.pid), "pool of one reuses its connection");
    assert_eq!(after.role, home.role);
    assert_eq!(after.tenant, "");

    // So after an admin transaction.
    let mut admin = admins.admin().await.expect("admin");
    assert_eq!(
        admin
            .count_of(&format!("SELECT count(*) AS n FROM \"{table}\""))
            .await,
        6
    );
    admin.commit().await.expect("commit admin");
    let after = pool.checkout_session().await;
    assert!(same_backend(after.pid));
    assert_eq!(
        (after.role.as_str(), after.tenant.as_str()),
        (home.role.as_str(), "")
    );

    // Tenant A then tenant B on one connection, through a cached prepared statement,
    // more often than PostgreSQL needs to switch to a generic plan: never mixed.
    for round in 0..7 {
        let mut conn = pool.tenant(kind.a).await.expect("tenant a");
        let names = conn
            .load_either(async |c| (kind.names)(c).await, kind.names_sync)
            .await
            .expect("names a");
        assert_eq!(names, ["a1", "a2", "a3", "a4"], "round {round}");
        conn.commit().await.expect("commit");
        let mut conn = pool.tenant(kind.b).await.expect("tenant b");
        let names = conn
            .load_either(async |c| (kind.names)(c).await, kind.names_sync)
            .await
            .expect("names b");
        assert_eq!(names, ["b1", "b2"], "round {round}");
        conn.rollback().await.expect("rollback");
    }
    let after = pool.checkout_session().await;
    assert!(same_backend(after.pid));
    assert_eq!(after.tenant, "");

    // Outside any scope, this login: the owner sees and writes nothing (FORCE); so does
    // the non-owner login role (it inherits the tenant role's privileges, but no policy
    // lets an unscoped session see a row); the superuser is never subject to RLS (hence
    // verify's warning).
    let (unscoped, unscoped_insert) = pool
        .unscoped_count_and_execute(
            &format!("SELECT count(*) AS n FROM \"{table}\""),
            &format!(
                "INSERT INTO \"{table}\" (name, tenant) VALUES ('z', {})",
                kind.a_sql
            ),
        )
        .await;
    // On Citus a login role's memberships reach the workers only if the role is in the
    // database's Citus metadata, which depends on the cluster's history (created in this
    // database, or synced by an earlier node registration), not on this test: the workers
    // either refuse the role outright or apply the policies. Both outcomes are closed, and
    // only those two are accepted.
    let citus_app = matches!(server, Server::Citus) && login == Login::App;
    if login == Login::Superuser {
        assert_eq!(unscoped.expect("superuser select"), 6);
        unscoped_insert.expect("superuser insert");
    } else if login == Login::Hardened {
        // It does not inherit the tenant role's privileges: refused outright, loudly.
        assert_db_error(&unscoped, "permission denied", "unscoped select");
        assert_db_error(&unscoped_insert, "permission denied", "unscoped insert");
    } else if citus_app {
        if unscoped.is_err() {
            assert_db_error(
                &unscoped,
                "permission denied",
                "unscoped select on the workers",
            );
        } else {
            assert!(
                matches!(unscoped, Ok(0)),
                "an unscoped session sees nothing: {unscoped:?}"
            );
        }
        let refused = matches!(&unscoped_insert, Err(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("permission denied"));
        if !refused {
            assert_db_error(&unscoped_insert, "row-level security", "unscoped insert");
        }
    } else {
        assert_eq!(
            unscoped.expect("unscoped select"),
            0,
            "an unscoped session sees nothing"
        );
        assert_db_error(&unscoped_insert, "row-level security", "unscoped insert");
    }

    // The isolation properties, by the kit (with its own two tenants, so the rows above
    // stay as they are). The kit probes the database's policies through the async pool;
    // what depends on the pool (the scope each transaction runs in, what it leaves on the
    // connection) is what the steps above check, through either pool.
    if let AnyPool::Async(pool) = &pool {
        let check = match &admin_login {
            Some(AnyPool::Async(admins)) => check(&kind, &db).admin_pool(admins.clone()),
            _ => check(&kind, &db),
        };
        check.assert(pool).await;
    }
}

macro_rules! isolation_suite {
    ($table:ident, $sql_type:ident, $pg_type:literal, $a:expr, $b:expr, $a_sql:literal, $b_sql:literal, $parse:expr) => {
        pub mod $table {
            use super::*;

            #[tenants_core::with_rls]
            diesel::table! {
                $table (id) {
                    id -> Int4,
                    name -> Text,
                    tenant -> $sql_type,
                }
            }

            pub fn kind() -> Kind<impl TenantId + Copy, impl TenantId + Copy> {
                Kind {
                    table: stringify!($table),
                    pg_type: $pg_type,
                    sql_type: TenantSqlType::$sql_type,
                    a: $a,
                    b: $b,
                    a_sql: $a_sql,
                    b_sql: $b_sql,
                    names: |conn| {
                        Box::pin(
                            $table::table
                                .select($table::name)
                                .order($table::id)
                                .load::<String>(conn),
                        )
                    },
                    names_sync: |conn| {
                        diesel::RunQueryDsl::load(
                            $table::table.select($table::name).order($table::id),
                            conn,
                        )
                    },
                    row: |conn, tenant| Box::pin(make_row(conn, tenant)),
                }
            }

            /// Inserts a row for `tenant`: the kit's row maker of this table.
            pub async fn make_row(
                conn: &mut AsyncPgConnection,
                tenant: &Tenant,
            ) -> QueryResult<usize> {
                let value = ($parse)(tenant.as_str());
                diesel::insert_into($table::table)
                    .values(($table::name.eq("kit"), $table::tenant.eq(value)))
                    .execute(conn)
                    .await
            }

            #[tokio::test]
            async fn sync_superuser() {
                run_sync(kind(), Login::Superuser).await;
            }

            #[tokio::test]
            async fn sync_table_owner() {
                run_sync(kind(), Login::Owner).await;
            }

            #[tokio::test]
            async fn sync_non_owner_login_role() {
                run_sync(kind(), Login::App).await;
            }

            #[tokio::test]
            async fn sync_hardened_login() {
                run_sync(kind(), Login::Hardened).await;
            }

            #[tokio::test]
            async fn hardened_login() {
                run(kind(), Login::Hardened).await;
            }

            #[tokio::test]
            async fn superuser() {
                run(kind(), Login::Superuser).await;
            }

            #[tokio::test]
            async fn table_owner() {
                run(kind(), Login::Owner).await;
            }

            #[tokio::test]
            async fn non_owner_login_role() {
                run(kind(), Login::App).await;
            }
        }
    };
}

isolation_suite!(
    items_text,
    Text,
    "text",
    "acme",
    "globex",
    "'acme'",
    "'globex'",
    str::to_string
);
isolation_suite!(
    items_varchar,
    VarChar,
    "varchar(64)",
    "acme",
    "o'hara",
    "'acme'",
    "'o''hara'",
    str::to_string
);
isolation_suite!(
    items_int4,
    Int4,
    "int4",
    1_i32,
    2_i32,
    "1",
    "2",
    |id: &str| id.parse::<i32>().expect("the kit's int4 tenant")
);
isolation_suite!(
    items_int8,
    Int8,
    "int8",
    5_000_000_001_i64,
    -3_i64,
    "5000000001",
    "-3",
    |id: &str| id.parse::<i64>().expect("the kit's int8 tenant")
);
isolation_suite!(
    items_uuid,
    Uuid,
    "uuid",
    uuid::Uuid::from_u128(0xa),
    uuid::Uuid::from_u128(0xb),
    "'00000000-0000-0000-0000-00000000000a'",
    "'00000000-0000-0000-0000-00000000000b'",
    |id: &str| uuid::Uuid::parse_str(id).expect("the kit's uuid tenant")
);
