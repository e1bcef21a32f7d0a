//! The tenant lifecycle on real databases: export, purge and import give back identical
//! tables for every tenant type; another tenant's rows never change; a tampered export is
//! refused with nothing written; a tenant moves to a second database.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel_async::RunQueryDsl;
use tenants_core::catalog::{MarkedTable, ProbeKey};
use tenants_core::lifecycle::{
    self, EmptyExport, LifecycleError, Manifest, PurgeMode, TableRows, file_sha256, plain_name,
};
use tenants_core::policy::{self, Grantee, QualifiedName, RoleGrant, TableSpec};
use tenants_core::registry::TenantSqlType;
use tenants_core::{Config, TenantPool};
use tenants_tests::{TestDb, batch_locked, ensure_login_role, text};

use crate::common::OWNER;

/// A tenant column type and two tenants of it.
#[derive(Clone, Copy)]
struct Kind {
    pg_type: &'static str,
    sql_type: TenantSqlType,
    a: &'static str,
    b: &'static str,
}

const TEXT: Kind = Kind {
    pg_type: "text",
    sql_type: TenantSqlType::Text,
    a: "acme",
    b: "globex",
};
const INT8: Kind = Kind {
    pg_type: "int8",
    sql_type: TenantSqlType::Int8,
    a: "42",
    b: "7",
};
const UUID: Kind = Kind {
    pg_type: "uuid",
    sql_type: TenantSqlType::Uuid,
    a: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    b: "0b5c2e1d-7f3a-4c8e-9d6b-2a1f0e9c8b7a",
};

/// A three-level chain, named so that alphabetical order is the reverse of the foreign
/// keys' order: parents-first and children-first must come from the catalog.
const TABLES: [&str; 3] = ["t_org", "p_project", "a_task"];

/// The chain's tables. On Citus every unique key and foreign key carries the tenant column
/// (Citus wants the distribution column in them), and the tables are distributed by it,
/// co-located; the columns are the same, so a tenant moves between both kinds of server.
fn schema(kind: Kind, citus: bool) -> String {
    let t = kind.pg_type;
    let (org_key, project_key, task_key) = if citus {
        (
            "PRIMARY KEY (tenant, id)",
            "PRIMARY KEY (tenant, id), FOREIGN KEY (tenant, org_id) REFERENCES t_org (tenant, id)",
            "PRIMARY KEY (tenant, id), FOREIGN KEY (tenant, project_id) REFERENCES p_project (tenant, id)",
        )
    } else {
        (
            "PRIMARY KEY (id)",
            "PRIMARY KEY (id), FOREIGN KEY (org_id) REFERENCES t_org (id)",
            "PRIMARY KEY (id), FOREIGN KEY (project_id) REFERENCES p_project (id)",
        )
    };
    let placement = if citus {
        // Distributed in Fixture::new, after the contract: Citus refuses to alter the
        // distribution column (the contract gives the tenant column its default).
        ""
    } else {
        "CREATE INDEX ON t_org (tenant, id);
         CREATE INDEX ON p_project (tenant, id);
         CREATE INDEX ON a_task (tenant, id);"
    };
    format!(
        "CREATE TABLE t_org (
           id serial,
           tenant {t} NOT NULL,
           name text NOT NULL,
           {org_key}
         );
         CREATE TABLE p_project (
           id bigint GENERATED ALWAYS AS IDENTITY,
           tenant {t} NOT NULL,
           org_id int NOT NULL,
           title text,
           meta jsonb,
           amount numeric(10, 2),
           tags text[],
           blob bytea,
           due timestamptz,
           span interval,
           score float8,
           title_len int GENERATED ALWAYS AS (length(title)) STORED,
           {project_key}
         );
         CREATE TABLE a_task (
           id serial,
           tenant {t} NOT NULL,
           project_id bigint NOT NULL,
           done bool NOT NULL DEFAULT false,
           {task_key}
         );
         {placement}
         ALTER TABLE t_org OWNER TO {OWNER};
         ALTER TABLE p_project OWNER TO {OWNER};
         ALTER TABLE a_task OWNER TO {OWNER};"
    )
}

/// Values chosen to break a lossy format: quotes, backslashes, newlines, non-ASCII, a
/// JSON `null` beside a SQL `NULL`, arrays with NULL and commas, bytes, time zones,
/// intervals, floats.
fn seed(kind: Kind, tenant: &str) -> String {
    let t = format!("'{tenant}'::{}", kind.pg_type);
    format!(
        "INSERT INTO t_org (tenant, name) SELECT {t}, 'org ' || g FROM generate_series(1, 3) g;
         INSERT INTO p_project (tenant, org_id, title, meta, amount, tags, blob, due, span, score)
           SELECT {t}, o.id, E'it''s \"quoted\"\\n\\\\ ünï ' || g,
                  CASE g WHEN 1 THEN 'null'::jsonb WHEN 2 THEN NULL ELSE '{{\"k\": [1, \"x\"]}}' END,
                  12.5 * g, ARRAY['a', NULL, 'c,d'], '\\x00ff'::bytea,
                  '2024-02-29 12:00+05'::timestamptz + g * interval '1 hour',
                  '1 day 3 hours', 0.1 * g
           FROM t_org o, generate_series(1, 4) g WHERE o.tenant = {t};
         INSERT INTO a_task (tenant, project_id, done)
           SELECT {t}, p.id, p.id % 2 = 0 FROM p_project p, generate_series(1, 2) WHERE p.tenant = {t};"
    )
}

/// The tables as the registry and the CLI give them: sorted by name, so here children
/// first.
fn marked(kind: Kind, names: &[&str]) -> Vec<MarkedTable> {
    let mut names = names.to_vec();
    names.sort();
    names
        .iter()
        .map(|name| MarkedTable {
            table: QualifiedName::new("public", *name),
            key: ProbeKey {
                column: "tenant".into(),
                sql_type: kind.sql_type,
            },
        })
        .collect()
}

/// A database with the chain under the contract, owned by [`OWNER`], who runs the
/// lifecycle (as a real deployment's migration role would).
struct Fixture {
    kind: Kind,
    db: TestDb,
    pool: TenantPool,
    tables: Vec<MarkedTable>,
}

impl Fixture {
    /// The schema, with both tenants' rows when `seeded`.
    async fn new(kind: Kind, db: TestDb, seeded: bool) -> Self {
        let mut conn = db.connect();
        ensure_login_role(&mut conn, OWNER);
        // One statement at a time: Citus refuses its table functions among other commands.
        for statement in schema(kind, db.is_citus()).split(';') {
            if !statement.trim().is_empty() {
                conn.batch_execute(statement).expect("schema");
            }
        }
        let specs: Vec<TableSpec> = TABLES
            .iter()
            .map(|name| TableSpec {
                table: QualifiedName::new("public", *name),
                tenant_column: "tenant".into(),
                sql_type: kind.sql_type,
                sequences: vec![QualifiedName::new("public", format!("{name}_id_seq"))],
            })
            .collect();
        let config = Config::default().with_citus(db.is_citus());
        let up = policy::render_up(
            &config,
            &policy::setup(
                &config,
                &specs,
                &[RoleGrant::both(Grantee::Role(OWNER.into()))],
            ),
        );
        batch_locked(&mut conn, &up);
        if db.is_citus() {
            for sql in [
                "SELECT create_distributed_table('t_org', 'tenant')",
                "SELECT create_distributed_table('p_project', 'tenant', colocate_with => 't_org')",
                "SELECT create_distributed_table('a_task', 'tenant', colocate_with => 't_org')",
            ] {
                conn.batch_execute(sql).expect("distribute");
            }
        }
        if seeded {
            conn.batch_execute(&seed(kind, kind.a)).expect("seed a");
            conn.batch_execute(&seed(kind, kind.b)).expect("seed b");
        }
        let pool =
            TenantPool::connect_with(&db.url_as(OWNER), config, bb8::Pool::builder().max_size(2))
                .await
                .expect("pool");
        let exports = Path::new(env!("CARGO_TARGET_TMPDIR")).join(db.name());
        if exports.exists() {
            std::fs::remove_dir_all(&exports).expect("clean the exports of an earlier run");
        }
        Self {
            kind,
            db,
            pool,
            tables: marked(kind, &TABLES),
        }
    }

    /// Imports the export in `dir` as `tenant`.
    async fn import(
        &self,
        tenant: &str,
        dir: &Path,
    ) -> Result<lifecycle::ImportReport, LifecycleError> {
        lifecycle::import_tenant(&self.pool, &self.tables, tenant, dir).await
    }

    /// Purges `tenant`.
    async fn purge(
        &self,
        tenant: &str,
        mode: PurgeMode,
    ) -> Result<lifecycle::PurgeReport, LifecycleError> {
        lifecycle::purge_tenant(&self.pool, &self.tables, tenant, mode).await
    }

    /// One fingerprint per table of `tenant`'s rows, read by the superuser (no RLS).
    fn fingerprints(&self, tenant: &str) -> Vec<String> {
        let mut conn = self.db.connect();
        TABLES
            .iter()
            .map(|table| {
                text(
                    &mut conn,
                    &format!(
                        "SELECT coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), 'none') AS value
                         FROM {table} t WHERE tenant = '{tenant}'::{}",
                        self.kind.pg_type
                    ),
                )
            })
            .collect()
    }

    /// A directory for this test's exports (empty, its parent created).
    fn out(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(self.db.name())
            .join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clean export dir");
        }
        std::fs::create_dir_all(dir.parent().expect("parent")).expect("export parent");
        dir
    }

    /// Inserts one row per table as `tenant` with every id drawn from its sequence.
    async fn insert_fresh_rows(&self, tenant: &str) -> Result<(), diesel::result::Error> {
        let t = format!("'{tenant}'::{}", self.kind.pg_type);
        let mut conn = self.pool.tenant(tenant).await.expect("tenant transaction");
        // Plain VALUES (Citus runs an INSERT ... SELECT as a COPY, refused under RLS).
        for sql in [
            format!("INSERT INTO t_org (tenant, name) VALUES ({t}, 'fresh')"),
            format!(
                "INSERT INTO p_project (tenant, org_id, title) VALUES ({t}, currval('t_org_id_seq')::int, 'fresh')"
            ),
            format!(
                "INSERT INTO a_task (tenant, project_id) VALUES ({t}, currval('p_project_id_seq'))"
            ),
        ] {
            diesel::sql_query(sql).execute(&mut conn).await?;
        }
        conn.commit().await.expect("commit");
        Ok(())
    }
}

/// Exports `tenant` of `fx` into `out`, refusing a tenant without rows.
async fn export(fx: &Fixture, tenant: &str, out: &Path) -> Manifest {
    lifecycle::export_tenant(&fx.pool, &fx.tables, tenant, out, EmptyExport::Refuse)
        .await
        .expect("export")
}

fn counts(rows: &[TableRows]) -> Vec<(String, u64)> {
    rows.iter()
        .map(|t| (plain_name(&t.table), t.rows))
        .collect()
}

fn chain(order: [&str; 3], rows: [u64; 3]) -> Vec<(String, u64)> {
    order
        .iter()
        .zip(rows)
        .map(|(name, n)| (format!("public.{name}"), n))
        .collect()
}

const NONE: [&str; 3] = ["none", "none", "none"];

async fn round_trip(kind: Kind) {
    let fx = Fixture::new(kind, TestDb::new(), true).await;
    let (a_before, b_before) = (fx.fingerprints(kind.a), fx.fingerprints(kind.b));
    assert_ne!(a_before, NONE);

    let first = fx.out("first");
    let manifest = export(&fx, kind.a, &first).await;
    let exported: Vec<(String, u64)> = manifest
        .tables
        .iter()
        .map(|t| (format!("{}.{}", t.schema, t.name), t.rows))
        .collect();
    assert_eq!(
        exported,
        chain(["t_org", "p_project", "a_task"], [3, 12, 24])
    );
    assert_eq!(manifest.tenant, kind.a);
    assert_eq!(fx.fingerprints(kind.b), b_before, "export changed b");

    let dry = fx.purge(kind.a, PurgeMode::DryRun).await.expect("dry run");
    assert!(!dry.deleted);
    assert_eq!(
        counts(&dry.tables),
        chain(["a_task", "p_project", "t_org"], [24, 12, 3])
    );
    assert_eq!(fx.fingerprints(kind.a), a_before, "a dry run deleted rows");

    let purged = fx.purge(kind.a, PurgeMode::Delete).await.expect("purge");
    assert_eq!(counts(&purged.tables), counts(&dry.tables));
    assert_eq!(fx.fingerprints(kind.a), NONE, "purge left rows of a");
    assert_eq!(fx.fingerprints(kind.b), b_before, "purge changed b");

    let imported = fx.import(kind.a, &first).await.expect("import");
    assert_eq!(
        counts(&imported.tables),
        chain(["t_org", "p_project", "a_task"], [3, 12, 24])
    );
    assert_eq!(fx.fingerprints(kind.a), a_before, "import changed a's rows");
    assert_eq!(fx.fingerprints(kind.b), b_before, "import changed b");

    // Exported again, the files are byte for byte the same.
    let second = lifecycle::export_tenant(
        &fx.pool,
        &fx.tables,
        kind.a,
        &fx.out("second"),
        EmptyExport::Refuse,
    )
    .await
    .expect("second export");
    let sums = |m: &Manifest| {
        m.tables
            .iter()
            .map(|t| t.sha256.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(sums(&second), sums(&manifest));

    fx.insert_fresh_rows(kind.a)
        .await
        .expect("new rows after the round trip");
}

#[tokio::test]
async fn round_trip_with_text_tenants() {
    round_trip(TEXT).await;
}

#[tokio::test]
async fn round_trip_with_int8_tenants() {
    round_trip(INT8).await;
}

#[tokio::test]
async fn round_trip_with_uuid_tenants() {
    round_trip(UUID).await;
}

/// A seeded database and an empty one with the same schema.
async fn source_and_target(kind: Kind) -> (Fixture, Fixture) {
    let source = Fixture::new(kind, TestDb::new(), true).await;
    let thread = std::thread::current();
    let name = format!("{}_target", thread.name().unwrap_or("lifecycle"));
    let target = Fixture::new(kind, TestDb::named(&name), false).await;
    (source, target)
}

#[tokio::test]
async fn a_tenant_moves_to_a_second_database() {
    let kind = UUID;
    let (source, target) = source_and_target(kind).await;
    let a_before = source.fingerprints(kind.a);

    let out = source.out("move");
    export(&source, kind.a, &out).await;
    let report = target.import(kind.a, &out).await.expect("import");
    assert_eq!(target.fingerprints(kind.a), a_before);
    assert_eq!(target.fingerprints(kind.b), NONE);
    // The target's sequences never handed out these ids: each is moved past them, and
    // new rows get fresh ids instead of colliding.
    let mut advanced = report.sequences_advanced.clone();
    advanced.sort();
    assert_eq!(
        advanced,
        [
            "public.a_task_id_seq",
            "public.p_project_id_seq",
            "public.t_org_id_seq"
        ]
    );
    target
        .insert_fresh_rows(kind.a)
        .await
        .expect("new rows in the target");

    let b_before = source.fingerprints(kind.b);
    source
        .purge(kind.a, PurgeMode::Delete)
        .await
        .expect("purge the source");
    assert_eq!(source.fingerprints(kind.a), NONE);
    assert_eq!(source.fingerprints(kind.b), b_before);
}

/// Copies the export in `from` to `to` and applies `edit` to the copy.
fn tampered(from: &Path, to: &Path, edit: impl FnOnce(&Path, &mut Manifest)) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("clean");
    }
    std::fs::create_dir_all(to).expect("copy dir");
    for entry in std::fs::read_dir(from).expect("export") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
    let mut manifest = Manifest::read(to).expect("manifest");
    edit(to, &mut manifest);
    manifest.write(to).expect("write manifest");
}

/// Replaces the first occurrence of `from` on line `line` (1-based) of `path`.
fn edit_line(path: &Path, line: usize, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let target = &mut lines[line - 1];
    assert!(target.contains(from), "{from} not in {target}");
    *target = target.replacen(from, to, 1);
    std::fs::write(path, lines.join("\n") + "\n").expect("write");
}

fn file_of(dir: &Path, manifest: &Manifest, table: &str) -> PathBuf {
    let entry = manifest
        .tables
        .iter()
        .find(|t| t.name == table)
        .expect("table in manifest");
    dir.join(&entry.file)
}

/// Edits row `line` of `p_project`'s file and makes the manifest's checksum match it.
fn edit_row_keeping_checksum(
    dir: &Path,
    manifest: &mut Manifest,
    line: usize,
    from: &str,
    to: &str,
) {
    let file = file_of(dir, manifest, "p_project");
    edit_line(&file, line, from, to);
    let (sha256, _) = file_sha256(&file).expect("checksum");
    if let Some(t) = manifest.tables.iter_mut().find(|t| t.name == "p_project") {
        t.sha256 = sha256;
    }
}

#[tokio::test]
async fn tampered_exports_are_refused_and_nothing_is_written() {
    let kind = TEXT;
    let (source, target) = source_and_target(kind).await;
    let out = source.out("export");
    export(&source, kind.a, &out).await;
    let nothing_in_target = || {
        assert_eq!(target.fingerprints(kind.a), NONE, "rows of a were written");
        assert_eq!(target.fingerprints(kind.b), NONE, "rows of b were written");
    };

    // A row of another tenant, with the checksum made to match: the parent table loads
    // first, then the policy refuses the row, and everything is rolled back.
    let other_tenant = source.out("other_tenant");
    tampered(&out, &other_tenant, |dir, manifest| {
        edit_row_keeping_checksum(dir, manifest, 2, "\tacme\t", "\tglobex\t");
    });
    match target.import(kind.a, &other_tenant).await {
        Err(LifecycleError::RowRefused {
            table, row, reason, ..
        }) => {
            assert_eq!(table.name, "p_project");
            assert_eq!(row, 2);
            assert!(reason.contains("globex"), "{reason}");
            assert!(reason.contains("row-level security"), "{reason}");
        }
        other => panic!("expected the row to be refused, got {other:?}"),
    }
    nothing_in_target();

    // A changed row without a matching checksum.
    let changed = source.out("changed");
    tampered(&out, &changed, |dir, manifest| {
        let file = file_of(dir, manifest, "a_task");
        edit_line(&file, 1, "\tacme\t", "\tacmf\t");
    });
    match target.import(kind.a, &changed).await {
        Err(LifecycleError::Checksum { table, .. }) => assert_eq!(table.name, "a_task"),
        other => panic!("expected a checksum error, got {other:?}"),
    }
    nothing_in_target();

    // A column missing from the export.
    let missing = source.out("missing_column");
    tampered(&out, &missing, |_, manifest| {
        if let Some(t) = manifest.tables.iter_mut().find(|t| t.name == "p_project") {
            t.columns.retain(|c| c.name != "score");
        }
    });
    match target.import(kind.a, &missing).await {
        Err(LifecycleError::ColumnMismatch { table, differences }) => {
            assert_eq!(table.name, "p_project");
            assert!(differences.contains("\"score\""), "{differences}");
        }
        other => panic!("expected a column mismatch, got {other:?}"),
    }
    nothing_in_target();

    // A row without one of the columns, the checksum made to match.
    let short_row = source.out("short_row");
    tampered(&out, &short_row, |dir, manifest| {
        let file = file_of(dir, manifest, "p_project");
        let text = std::fs::read_to_string(&file).expect("read");
        let row = text.lines().nth(2).expect("row 3");
        let (short, _) = row.rsplit_once('\t').expect("fields");
        edit_row_keeping_checksum(dir, manifest, 3, row, short);
    });
    match target.import(kind.a, &short_row).await {
        Err(LifecycleError::RowRefused {
            table, row, reason, ..
        }) => {
            assert_eq!((table.name.as_str(), row), ("p_project", 3));
            assert!(reason.contains("missing data for column"), "{reason}");
        }
        other => panic!("expected a refused row, got {other:?}"),
    }
    nothing_in_target();

    // Another tenant's export.
    match target.import(kind.b, &out).await {
        Err(LifecycleError::TenantMismatch {
            exported,
            requested,
        }) => {
            assert_eq!((exported.as_str(), requested.as_str()), (kind.a, kind.b));
        }
        other => panic!("expected a tenant mismatch, got {other:?}"),
    }
    nothing_in_target();

    // Ids that already exist: a conflict, never an overwrite.
    let a_before = source.fingerprints(kind.a);
    match source.import(kind.a, &out).await {
        Err(LifecycleError::RowRefused {
            table, row, reason, ..
        }) => {
            assert_eq!((table.name.as_str(), row), ("t_org", 1));
            // Under RLS the server leaves out the key's value; the row number names it.
            assert!(
                reason.contains("unique constraint \"t_org_pkey\""),
                "{reason}"
            );
        }
        other => panic!("expected a key conflict, got {other:?}"),
    }
    assert_eq!(source.fingerprints(kind.a), a_before);

    // The untampered export loads.
    target
        .import(kind.a, &out)
        .await
        .expect("the original export imports");
    assert_eq!(target.fingerprints(kind.a), a_before);
}

#[tokio::test]
async fn list_counts_every_tenant_sorted() {
    let kind = INT8;
    let fx = Fixture::new(kind, TestDb::new(), true).await;
    fx.db
        .connect()
        .batch_execute("INSERT INTO t_org (tenant, name) VALUES (10, 'only an org')")
        .expect("third tenant");
    let list = lifecycle::list_tenants(&fx.pool, &fx.tables)
        .await
        .expect("list");
    type Seen = (String, u64, Vec<(String, u64)>);
    let seen: Vec<Seen> = list
        .tenants
        .iter()
        .map(|t| (t.tenant.clone(), t.total, counts(&t.tables)))
        .collect();
    let full = chain(["a_task", "p_project", "t_org"], [24, 12, 3]);
    assert_eq!(
        seen,
        vec![
            ("7".to_string(), 39, full.clone()),
            ("10".to_string(), 1, vec![("public.t_org".to_string(), 1)]),
            ("42".to_string(), 39, full),
        ]
    );
}

#[tokio::test]
async fn export_refuses_a_non_empty_directory_and_leaves_nothing_on_failure() {
    let kind = TEXT;
    let fx = Fixture::new(kind, TestDb::new(), true).await;
    let out = fx.out("occupied");
    std::fs::create_dir_all(&out).expect("dir");
    std::fs::write(out.join("keep.txt"), "mine").expect("file");
    match lifecycle::export_tenant(&fx.pool, &fx.tables, kind.a, &out, EmptyExport::Refuse).await {
        Err(LifecycleError::OutputNotEmpty(dir)) => assert_eq!(dir, out),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let names: Vec<_> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec!["keep.txt"]);

    // A table the database lacks, found before anything is written; then a table the
    // tenant role may not read, failing after the files of its parents were written.
    // Either way: no directory, no temporary sibling.
    let failing = fx.out("failing");
    let mut tables = fx.tables.clone();
    tables.extend(marked(kind, &["z_missing"]));
    match lifecycle::export_tenant(&fx.pool, &tables, kind.a, &failing, EmptyExport::Refuse).await {
        Err(LifecycleError::TableMissing { table }) => assert_eq!(table.name, "z_missing"),
        other => panic!("expected a missing table, got {other:?}"),
    }
    fx.db
        .connect()
        .batch_execute("REVOKE SELECT ON a_task FROM tenants_user")
        .expect("revoke");
    match lifecycle::export_tenant(&fx.pool, &fx.tables, kind.a, &failing, EmptyExport::Refuse)
        .await
    {
        Err(LifecycleError::Database { context, source }) => {
            assert!(context.contains("a_task"), "{context}");
            assert!(source.to_string().contains("permission denied"), "{source}");
        }
        other => panic!("expected a database error, got {other:?}"),
    }
    let parent = failing.parent().expect("parent");
    let left: Vec<_> = std::fs::read_dir(parent)
        .expect("parent")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["occupied"], "a failed export left files behind");
    fx.db
        .connect()
        .batch_execute("GRANT SELECT ON a_task TO tenants_user")
        .expect("grant");

    // An empty directory is fine.
    let empty = fx.out("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    lifecycle::export_tenant(&fx.pool, &fx.tables, kind.a, &empty, EmptyExport::Refuse)
        .await
        .expect("export into an empty directory");
    assert!(empty.join("manifest.json").is_file());
}

#[tokio::test]
async fn purge_refuses_a_cycle_of_foreign_keys_unless_deferrable() {
    let kind = TEXT;
    let fx = Fixture::new(kind, TestDb::new(), true).await;
    let mut conn = fx.db.connect();
    conn.batch_execute(&format!(
        "ALTER TABLE t_org ADD COLUMN lead_task int REFERENCES a_task (id);
         UPDATE t_org o SET lead_task = (SELECT min(id) FROM a_task t WHERE t.tenant = o.tenant);
         ALTER TABLE t_org OWNER TO {OWNER};"
    ))
    .expect("close the cycle");
    let a_before = fx.fingerprints(kind.a);
    match fx.purge(kind.a, PurgeMode::Delete).await {
        Err(LifecycleError::ForeignKeyCycle { cycle }) => {
            let names: Vec<&str> = cycle.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names[0], names[names.len() - 1]);
            for table in TABLES {
                assert!(names.contains(&table), "{names:?}");
            }
        }
        other => panic!("expected a cycle error, got {other:?}"),
    }
    assert_eq!(fx.fingerprints(kind.a), a_before);

    conn.batch_execute(
        "ALTER TABLE t_org ALTER CONSTRAINT t_org_lead_task_fkey DEFERRABLE INITIALLY IMMEDIATE",
    )
    .expect("deferrable");
    let b_before = fx.fingerprints(kind.b);
    let report = fx
        .purge(kind.a, PurgeMode::Delete)
        .await
        .expect("purge with the cycle deferred");
    assert_eq!(report.total(), 39);
    assert_eq!(fx.fingerprints(kind.a), NONE);
    assert_eq!(fx.fingerprints(kind.b), b_before);
}

#[tokio::test]
async fn an_id_of_the_wrong_type_is_refused_before_any_io() {
    let fx = Fixture::new(UUID, TestDb::new(), false).await;
    match fx.purge("acme", PurgeMode::Delete).await {
        Err(LifecycleError::TenantType { table, .. }) => assert_eq!(table.name, "a_task"),
        other => panic!("expected a typed error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tenant_without_rows_in_some_tables_round_trips() {
    let kind = TEXT;
    let (source, target) = source_and_target(kind).await;
    // Rows in t_org only: p_project (identity) and a_task (serial) hold none of its rows,
    // so the largest imported id of their sequences is NULL.
    source
        .db
        .connect()
        .batch_execute("INSERT INTO t_org (tenant, name) VALUES ('initech', 'lonely org')")
        .expect("a tenant with one row");
    let before = source.fingerprints("initech");
    let out = source.out("lonely");
    let manifest = export(&source, "initech", &out).await;
    let exported: Vec<u64> = manifest.tables.iter().map(|t| t.rows).collect();
    assert_eq!(exported, [1, 0, 0]);

    source
        .purge("initech", PurgeMode::Delete)
        .await
        .expect("purge");
    let imported = source
        .import("initech", &out)
        .await
        .expect("the unedited export imports again");
    assert!(imported.sequences_advanced.is_empty());
    assert_eq!(source.fingerprints("initech"), before);

    // Into a database whose sequences never handed out its id: only t_org's moves.
    let moved = target
        .import("initech", &out)
        .await
        .expect("import into a second database");
    assert_eq!(moved.sequences_advanced, ["public.t_org_id_seq"]);
    assert_eq!(target.fingerprints("initech"), before);
}

#[tokio::test]
async fn what_runs_after_the_sequences_runs_as_the_tenant() {
    let kind = TEXT;
    let (source, target) = source_and_target(kind).await;
    // A deferred constraint trigger fires at the commit, after the sequences were
    // advanced: it must not run as the login role (the owner here; a superuser elsewhere).
    target
        .db
        .connect()
        .batch_execute(
            "CREATE TABLE fired (role text NOT NULL, tenant text);
             GRANT INSERT ON fired TO tenants_user;
             CREATE FUNCTION record_role() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO fired VALUES (current_user, current_setting('tenants.current_tenant', true));
               RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER a_task_fired AFTER INSERT ON a_task
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION record_role();",
        )
        .expect("deferred trigger");
    let out = source.out("deferred");
    export(&source, kind.a, &out).await;
    let report = target.import(kind.a, &out).await.expect("import");
    assert_eq!(report.sequences_advanced.len(), 3, "the role was switched");
    let fired = text(
        &mut target.db.connect(),
        "SELECT string_agg(DISTINCT role || '/' || tenant, ',') AS value FROM fired",
    );
    assert_eq!(fired, "tenants_user/acme");
}

#[cfg(unix)]
#[tokio::test]
async fn an_export_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let kind = TEXT;
    let fx = Fixture::new(kind, TestDb::new(), true).await;
    let out = fx.out("private");
    export(&fx, kind.a, &out).await;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&out), 0o700, "the export directory");
    let mut files = 0;
    for entry in std::fs::read_dir(&out).expect("export") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert_eq!(files, 4, "manifest.json and three table files");
}

/// Rewrites the export in `dir` as version 1 wrote it: one JSON object of text values per
/// line (built by the server, as that version did), `.jsonl` files, format version 1.
fn as_version_1(fx: &Fixture, dir: &Path, tenant: &str) {
    let mut manifest = Manifest::read(dir).expect("manifest");
    let mut conn = fx.db.connect();
    conn.batch_execute(
        "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET bytea_output = 'hex'; SET extra_float_digits = 3",
    )
    .expect("text formats");
    for table in &mut manifest.tables {
        let keys: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("'{}'", c.name))
            .collect();
        let values: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("t.{}::text", c.name))
            .collect();
        let lines = text(
            &mut conn,
            &format!(
                "SELECT coalesce(string_agg(json_object(ARRAY[{}]::text[], ARRAY[{}]::text[])::text || E'\\n', '' ORDER BY {}), '') AS value
                 FROM {} t WHERE tenant = '{tenant}'::{}",
                keys.join(", "),
                values.join(", "),
                table.primary_key.iter().map(|k| format!("t.{k}")).collect::<Vec<_>>().join(", "),
                table.name,
                fx.kind.pg_type,
            ),
        );
        std::fs::remove_file(dir.join(&table.file)).expect("remove the version 2 file");
        table.file = table.file.replace(".tsv", ".jsonl");
        std::fs::write(dir.join(&table.file), lines).expect("write the version 1 file");
        table.sha256 = file_sha256(&dir.join(&table.file)).expect("checksum").0;
    }
    manifest.format_version = 1;
    manifest.write(dir).expect("manifest");
}

#[tokio::test]
async fn a_version_1_export_still_imports_and_its_lines_are_bounded() {
    let kind = TEXT;
    let (source, target) = source_and_target(kind).await;
    let a_before = source.fingerprints(kind.a);
    let out = source.out("v1");
    export(&source, kind.a, &out).await;
    as_version_1(&source, &out, kind.a);
    assert!(
        std::fs::read_to_string(file_of(
            &out,
            &Manifest::read(&out).expect("manifest"),
            "p_project"
        ))
        .expect("v1 file")
        .starts_with("{\"id\" : \"")
    );

    // A line past the bound is refused before it is read whole, nothing written.
    let long = source.out("long_line");
    let padding = "x".repeat(lifecycle::MAX_LINE_BYTES);
    tampered(&out, &long, |dir, manifest| {
        edit_row_keeping_checksum(
            dir,
            manifest,
            2,
            "\"title\" : \"",
            &format!("\"title\" : \"{padding}"),
        );
    });
    match target.import(kind.a, &long).await {
        Err(LifecycleError::LineTooLong {
            table, row, limit, ..
        }) => {
            assert_eq!((table.name.as_str(), row), ("p_project", 2));
            assert_eq!(limit, lifecycle::MAX_LINE_BYTES);
        }
        other => panic!("expected a refused line, got {other:?}"),
    }
    assert_eq!(target.fingerprints(kind.a), NONE, "rows were written");

    // A row without one of its columns: the row, named.
    let short_row = source.out("v1_short_row");
    tampered(&out, &short_row, |dir, manifest| {
        edit_row_keeping_checksum(dir, manifest, 3, "\"score\" : \"", "\"scorf\" : \"");
    });
    match target.import(kind.a, &short_row).await {
        Err(LifecycleError::RowRefused {
            table, row, reason, ..
        }) => {
            assert_eq!((table.name.as_str(), row), ("p_project", 3));
            assert_eq!(reason, "column \"score\" is missing");
        }
        other => panic!("expected a refused row, got {other:?}"),
    }
    assert_eq!(target.fingerprints(kind.a), NONE, "rows were written");

    target
        .import(kind.a, &out)
        .await
        .expect("the version 1 export imports");
    assert_eq!(target.fingerprints(kind.a), a_before);
}

#[tokio::test]
async fn a_long_row_streams_through_copy() {
    // Version 2 files go to the server in chunks: a row longer than any line bound of the
    // JSON format imports, and the client never holds it whole.
    let kind = TEXT;
    let (source, target) = source_and_target(kind).await;
    source
        .db
        .connect()
        .batch_execute(&format!(
            "UPDATE p_project SET title = repeat('x', {}) WHERE id = (SELECT min(id) FROM p_project WHERE tenant = 'acme')",
            lifecycle::MAX_LINE_BYTES + 1
        ))
        .expect("a long title");
    let a_before = source.fingerprints(kind.a);
    let out = source.out("long");
    export(&source, kind.a, &out).await;
    target.import(kind.a, &out).await.expect("import");
    assert_eq!(target.fingerprints(kind.a), a_before);
}

#[tokio::test]
async fn export_of_a_tenant_without_rows_is_refused_unless_asked_for() {
    let kind = TEXT;
    let fx = Fixture::new(kind, TestDb::new(), true).await;
    let out = fx.out("typo");
    match lifecycle::export_tenant(&fx.pool, &fx.tables, "acmee", &out, EmptyExport::Refuse).await {
        Err(LifecycleError::NoRows { tenant }) => assert_eq!(tenant, "acmee"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!out.exists());
    let manifest =
        lifecycle::export_tenant(&fx.pool, &fx.tables, "acmee", &out, EmptyExport::Write)
            .await
            .expect("an empty export, asked for");
    assert!(manifest.tables.iter().all(|t| t.rows == 0));
}

/// An empty database with the chain on the Citus coordinator `TENANTS_CITUS_URL` names.
async fn citus_target(kind: Kind, suffix: &str) -> Fixture {
    let thread = std::thread::current();
    let name = format!("{}_{suffix}", thread.name().unwrap_or("lifecycle"));
    Fixture::new(kind, TestDb::citus_named(&name), false).await
}

/// Export, purge and import on Citus give back identical tables; a row of another tenant
/// is refused with its table and its line (not the batch's first), nothing written; so is
/// an id that exists.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_export_purge_import_round_trip() {
    let kind = TEXT;
    let fx = Fixture::new(kind, TestDb::citus(), true).await;
    let (a_before, b_before) = (fx.fingerprints(kind.a), fx.fingerprints(kind.b));
    assert_ne!(a_before, NONE);
    let out = fx.out("citus");
    let manifest = export(&fx, kind.a, &out).await;
    let exported: Vec<u64> = manifest.tables.iter().map(|t| t.rows).collect();
    assert_eq!(exported, [3, 12, 24]);

    let purged = fx.purge(kind.a, PurgeMode::Delete).await.expect("purge");
    assert_eq!(purged.total(), 39);
    assert_eq!(fx.fingerprints(kind.a), NONE);

    let other_tenant = fx.out("other_tenant");
    tampered(&out, &other_tenant, |dir, manifest| {
        edit_row_keeping_checksum(dir, manifest, 5, "\tacme\t", "\tglobex\t");
    });
    match fx.import(kind.a, &other_tenant).await {
        Err(LifecycleError::RowRefused {
            table, row, reason, ..
        }) => {
            assert_eq!((table.name.as_str(), row), ("p_project", 5));
            assert!(reason.contains("globex"), "{reason}");
        }
        other => panic!("expected the row to be refused, got {other:?}"),
    }
    assert_eq!(fx.fingerprints(kind.a), NONE, "a refused import wrote rows");

    fx.import(kind.a, &out).await.expect("import");
    assert_eq!(fx.fingerprints(kind.a), a_before);
    assert_eq!(fx.fingerprints(kind.b), b_before);
    match fx.import(kind.a, &out).await {
        Err(LifecycleError::RowRefused { table, row, .. }) => {
            assert_eq!((table.name.as_str(), row), ("t_org", 1));
        }
        other => panic!("expected a key conflict, got {other:?}"),
    }
    assert_eq!(fx.fingerprints(kind.a), a_before);
    fx.insert_fresh_rows(kind.a)
        .await
        .expect("new rows after the round trip");
}

/// A tenant moves between two Citus databases, sequences advanced in the target.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_a_tenant_moves_between_two_citus_databases() {
    let kind = UUID;
    let source = Fixture::new(kind, TestDb::citus(), true).await;
    let target = citus_target(kind, "target").await;
    let a_before = source.fingerprints(kind.a);
    let out = source.out("move");
    export(&source, kind.a, &out).await;
    let report = target.import(kind.a, &out).await.expect("import");
    assert_eq!(report.sequences_advanced.len(), 3);
    assert_eq!(target.fingerprints(kind.a), a_before);
    assert_eq!(target.fingerprints(kind.b), NONE);
    target
        .insert_fresh_rows(kind.a)
        .await
        .expect("new rows in the target");
    source
        .purge(kind.a, PurgeMode::Delete)
        .await
        .expect("purge the source");
    assert_eq!(source.fingerprints(kind.a), NONE);
}

/// A tenant moves from plain PostgreSQL to Citus and back, identical each way.
#[tokio::test]
#[ignore = "needs TENANTS_CITUS_URL"]
async fn citus_a_tenant_moves_from_postgres_to_citus_and_back() {
    let kind = INT8;
    let plain = Fixture::new(kind, TestDb::new(), true).await;
    let citus = citus_target(kind, "citus").await;
    let a_before = plain.fingerprints(kind.a);
    let there = plain.out("to_citus");
    export(&plain, kind.a, &there).await;
    citus
        .import(kind.a, &there)
        .await
        .expect("import into Citus");
    assert_eq!(citus.fingerprints(kind.a), a_before);
    plain
        .purge(kind.a, PurgeMode::Delete)
        .await
        .expect("purge PostgreSQL");

    let back = citus.out("to_postgres");
    export(&citus, kind.a, &back).await;
    plain
        .import(kind.a, &back)
        .await
        .expect("import back into PostgreSQL");
    assert_eq!(plain.fingerprints(kind.a), a_before);
}
