//! Citus databases for the Citus tests, on the coordinator `TENANTS_CITUS_URL` names.
//!
//! CI has no Citus cluster: the tests that need one are `#[ignore = "needs
//! TENANTS_CITUS_URL"]` and run with `cargo test --workspace -- --ignored citus`. With the
//! variable unset, or naming a server without Citus, they fail loudly; they never skip.
//!
//! A Citus database takes more than `CREATE DATABASE`: the database is created on every
//! node (`citus.enable_create_database_propagation`), the extension created in it on each
//! worker first (it does not propagate to a database whose coordinator has no nodes yet),
//! then on the coordinator, which registers itself and the workers in the new database's
//! metadata. Dropping takes `WITH (FORCE)`: the workers' maintenance daemons hold
//! connections to it.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel::{PgConnection, QueryableByName, RunQueryDsl};

use crate::{url_with, with_create_lock};

/// The variable naming the coordinator.
pub const CITUS_URL_VAR: &str = "TENANTS_CITUS_URL";

/// Whether the database `conn` is connected to has the Citus extension.
pub fn is_citus(conn: &mut PgConnection) -> bool {
    crate::count(
        conn,
        "SELECT count(*) AS n FROM pg_extension WHERE extname = 'citus'",
    ) > 0
}

/// The coordinator's URL (its maintenance database, as a superuser), or why there is none.
pub fn citus_url() -> Result<String, String> {
    std::env::var(CITUS_URL_VAR).map_err(|_| {
        format!(
            "{CITUS_URL_VAR} is not set\nhint: the Citus tests and the citus benchmark need a Citus coordinator with workers, e.g. {CITUS_URL_VAR}=postgres://postgres@127.0.0.1:9700/postgres cargo test --workspace -- --ignored citus"
        )
    })
}

fn connect_to(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| format!("cannot connect to {url}: {e}"))
}

#[derive(QueryableByName)]
struct Node {
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Integer)]
    port: i32,
}

/// The coordinator and the active primary workers, as the maintenance database of
/// `server` registers them; an error unless `server` is a Citus coordinator with workers.
fn nodes(server: &str) -> Result<(Node, Vec<Node>), String> {
    let mut conn = connect_to(server)?;
    let has_citus =
        diesel::sql_query("SELECT count(*) AS n FROM pg_extension WHERE extname = 'citus'")
            .get_result::<crate::Count>(&mut conn)
            .map_err(|e| format!("cannot read the extensions of {server}: {e}"))?;
    if has_citus.n == 0 {
        return Err(format!(
            "{CITUS_URL_VAR}={server} is not a Citus coordinator: its database has no citus extension\nhint: point {CITUS_URL_VAR} at the coordinator's maintenance database, where `CREATE EXTENSION citus` and `citus_add_node` were run"
        ));
    }
    let workers = diesel::sql_query(
        "SELECT nodename AS host, nodeport AS port FROM pg_dist_node
         WHERE groupid <> 0 AND noderole = 'primary' AND isactive ORDER BY nodeid",
    )
    .load::<Node>(&mut conn)
    .map_err(|e| format!("cannot read the nodes of {server}: {e}"))?;
    if workers.is_empty() {
        return Err(format!(
            "{CITUS_URL_VAR}={server} has no active worker\nhint: SELECT citus_add_node('<host>', <port>) for each worker, in that database"
        ));
    }
    let coordinator = diesel::sql_query(
        "SELECT nodename AS host, nodeport AS port FROM pg_dist_node WHERE groupid = 0
         UNION ALL SELECT host(inet_server_addr()), inet_server_port()
         LIMIT 1",
    )
    .get_result::<Node>(&mut conn)
    .map_err(|e| format!("cannot read the coordinator's address from {server}: {e}"))?;
    Ok((coordinator, workers))
}

/// `url` pointed at `host:port` and `database`, its user, password and parameters kept.
fn url_at(url: &str, host: &str, port: i32, database: &str) -> String {
    let url = url_with(url, None, Some(database));
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", &url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let userinfo = authority.rsplit_once('@').map(|(userinfo, _)| userinfo);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match userinfo {
        Some(userinfo) => format!("{scheme}://{userinfo}@{host}:{port}/{path}"),
        None => format!("{scheme}://{host}:{port}/{path}"),
    }
}

/// Runs `statements` one by one on `conn`, with database propagation on: `CREATE` and
/// `DROP DATABASE` may not share a multi-statement batch, which runs as one transaction.
fn propagated(conn: &mut PgConnection, statements: &[String]) -> QueryResult<()> {
    conn.batch_execute("SET citus.enable_create_database_propagation = on")?;
    for statement in statements {
        conn.batch_execute(statement)?;
    }
    Ok(())
}

/// Creates the Citus database `name` on the coordinator `server` and its workers (a
/// leftover of a failed run is dropped first). Serialised with the other tests' database
/// creation: registering the nodes syncs the cluster-wide roles to the workers, which two
/// registrations at once make fail (`tuple concurrently updated`).
pub fn create(server: &str, name: &str) -> Result<(), String> {
    let (coordinator, workers) = nodes(server)?;
    let mut admin = connect_to(server)?;
    with_create_lock(&mut admin, |admin| {
        Ok(create_locked(admin, server, name, &coordinator, &workers))
    })
    .map_err(|e| format!("cannot create the Citus database {name}: {e}"))?
}

/// [`create`], under the creation lock.
fn create_locked(
    admin: &mut PgConnection,
    server: &str,
    name: &str,
    coordinator: &Node,
    workers: &[Node],
) -> Result<(), String> {
    drop_on_every_node(admin, server, workers, name)?;
    propagated(admin, &[format!("CREATE DATABASE \"{name}\"")])
        .map_err(|e| format!("cannot create the Citus database {name}: {e}"))?;
    for worker in workers {
        connect_to(&url_at(server, &worker.host, worker.port, name))?
            .batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
            .map_err(|e| {
                format!(
                    "cannot create the citus extension in {name} on {}:{}: {e}",
                    worker.host, worker.port
                )
            })?;
    }
    let mut register = format!(
        "CREATE EXTENSION IF NOT EXISTS citus;
         SELECT citus_set_coordinator_host('{}', {});",
        coordinator.host, coordinator.port
    );
    for worker in workers {
        register.push_str(&format!(
            "SELECT citus_add_node('{}', {});",
            worker.host, worker.port
        ));
    }
    // Registering syncs the cluster-wide roles to the workers, which the role DDL of a
    // migration another test runs at the same time can make fail (`tuple concurrently
    // updated` on a worker, `failure on connection marked as essential` on the
    // coordinator); the batch is one transaction, so it is retried whole.
    let mut conn = connect_to(&url_with(server, None, Some(name)))?;
    let mut attempt = 1;
    loop {
        match conn.batch_execute(&register) {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 5
                    && ["concurrently", "marked as essential"]
                        .iter()
                        .any(|m| e.to_string().contains(m)) =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
            }
            Err(e) => return Err(format!("cannot register the nodes in {name}: {e}")),
        }
    }
}

/// Drops the Citus database `name` on every node.
pub fn drop(server: &str, name: &str) -> Result<(), String> {
    let (_, workers) = nodes(server)?;
    let mut admin = connect_to(server)?;
    drop_on_every_node(&mut admin, server, &workers, name)
}

#[derive(QueryableByName)]
struct Database {
    #[diesel(sql_type = Text)]
    name: String,
}

/// A propagated `DROP DATABASE .. WITH (FORCE)` (retried: a worker's maintenance daemon
/// may reconnect in between), then each node's own drop of what is left: a propagated drop
/// that failed half-way leaves the database on some nodes (on the coordinator, marked
/// invalid), where the next propagated drop or create then fails. Returns the last error
/// of the propagated drop when the database is still there.
fn drop_on_every_node(
    admin: &mut PgConnection,
    server: &str,
    workers: &[Node],
    name: &str,
) -> Result<(), String> {
    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let mut propagated_drop = Ok(());
    for _ in 0..3 {
        propagated_drop = propagated(admin, std::slice::from_ref(&drop));
        if propagated_drop.is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let maintenance = diesel::sql_query("SELECT current_database()::text AS name")
        .get_result::<Database>(admin)
        .map_or_else(|_| "postgres".to_string(), |d| d.name);
    let local = |url: &str| {
        connect_to(url)
            .and_then(|mut conn| conn.batch_execute(&drop).map_err(|e| format!("{url}: {e}")))
    };
    let mut left = Vec::new();
    if let Err(e) = local(&url_with(server, None, Some(&maintenance))) {
        left.push(e);
    }
    for worker in workers {
        if let Err(e) = local(&url_at(server, &worker.host, worker.port, &maintenance)) {
            left.push(e);
        }
    }
    match propagated_drop {
        Err(e) if !left.is_empty() => Err(format!(
            "cannot drop the Citus database {name}: {e}; on each node: {}",
            left.join("; ")
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_point_at_each_node() {
        assert_eq!(
            url_at(
                "postgres://u:p@coord:9700/postgres?sslmode=disable",
                "10.0.0.2",
                9701,
                "x"
            ),
            "postgres://u:p@10.0.0.2:9701/x?sslmode=disable"
        );
        assert_eq!(
            url_at("postgres://coord/postgres", "::1", 9702, "x"),
            "postgres://[::1]:9702/x"
        );
    }
}
