//! Tenants never see, change or delete each other's todos, through any route, with the
//! explicit tenant filter and with RLS alone.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;

use crate::common::{Launch, all_rows, test_db, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_todo_goes_through_every_route() {
    let db = test_db();
    let service = Launch::db(&db).start();
    let acme = token("acme");

    let created = service
        .call(
            Method::POST,
            "/todos",
            Some(&acme),
            Some(json!({ "name": "buy milk" })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let id = created.body["id"].as_i64().expect("id");
    assert_eq!(created.body, json!({ "id": id, "name": "buy milk" }));
    assert_eq!(
        created
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("/todos/{id}").as_str())
    );

    let path = format!("/todos/{id}");
    let got = service.call(Method::GET, &path, Some(&acme), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, json!({ "id": id, "name": "buy milk" }));

    let patched = service
        .call(
            Method::PATCH,
            &path,
            Some(&acme),
            Some(json!({ "name": "buy oat milk" })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body, json!({ "id": id, "name": "buy oat milk" }));
    assert_eq!(service.names(&acme).await, ["buy oat milk"]);

    let deleted = service.call(Method::DELETE, &path, Some(&acme), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, serde_json::Value::Null);
    for method in [Method::GET, Method::DELETE] {
        let reply = service.call(method, &path, Some(&acme), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    assert!(service.names(&acme).await.is_empty());
    assert!(all_rows(&db).is_empty());
}

/// acme and globex each write todos; each route then keeps them apart, and another
/// tenant's id answers exactly as a missing one.
async fn tenants_are_isolated(launch: Launch, db: &tenants_tests::TestDb) {
    let service = launch.start();
    let acme = token("acme");
    let globex = token("globex");
    // A tenant id that would break out of a naively quoted literal.
    let tricky = token(r"acme' OR '1'='1 \");

    service.create(&acme, "acme 1").await;
    service.create(&acme, "acme 2").await;
    let globex_id = service.create(&globex, "globex 1").await;
    service.create(&tricky, "tricky 1").await;

    assert_eq!(service.names(&acme).await, ["acme 1", "acme 2"]);
    assert_eq!(service.names(&globex).await, ["globex 1"]);
    assert_eq!(service.names(&tricky).await, ["tricky 1"]);
    assert!(service.names(&token("initech")).await.is_empty());

    let theirs = format!("/todos/{globex_id}");
    let missing = "/todos/2147483647";
    let body = Some(json!({ "name": "hijacked" }));
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, body.clone()),
        (Method::DELETE, None),
    ] {
        let reply = service
            .call(method.clone(), &theirs, Some(&acme), body.clone())
            .await;
        let absent = service
            .call(method.clone(), missing, Some(&acme), body)
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}: {reply:?}");
        assert_eq!(
            reply.body, absent.body,
            "{method}: another tenant's id looks missing"
        );
    }

    // globex's todo is untouched, as globex and as the database see it.
    let own = service
        .call(Method::GET, &theirs, Some(&globex), None)
        .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body, json!({ "id": globex_id, "name": "globex 1" }));
    assert_eq!(service.names(&globex).await, ["globex 1"]);
    assert_eq!(
        all_rows(db),
        [
            ("acme".to_string(), "acme 1".to_string()),
            ("acme".into(), "acme 2".into()),
            ("globex".into(), "globex 1".into()),
            (r"acme' OR '1'='1 \".into(), "tricky 1".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_isolated_with_the_explicit_filter() {
    let db = test_db();
    tenants_are_isolated(Launch::db(&db), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_stays_isolated_by_rls_alone() {
    let db = test_db();
    let launch = Launch::db(&db).env("TENANT_FILTER", "rls-only");
    tenants_are_isolated(launch, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tenants_at_once_each_see_only_their_own() {
    const TENANTS: usize = 20;
    const TODOS: usize = 5;
    let db = test_db();
    // Without the explicit filter, so that a tenant left behind on a pooled connection
    // would show up instead of being masked by the WHERE clause.
    let service = std::sync::Arc::new(Launch::db(&db).env("TENANT_FILTER", "rls-only").start());
    let tenant = |t: usize| format!("tenant-{t:02}");

    // Every tenant writes its todos at the same time...
    let mut writes = JoinSet::new();
    for t in 0..TENANTS {
        for i in 0..TODOS {
            let service = service.clone();
            let token = token(&tenant(t));
            let name = format!("{} todo {i}", tenant(t));
            writes.spawn(async move { service.create(&token, &name).await });
        }
    }
    let mut ids = BTreeSet::new();
    while let Some(id) = writes.join_next().await {
        assert!(ids.insert(id.expect("write task")), "ids are unique");
    }
    assert_eq!(ids.len(), TENANTS * TODOS);

    // ...then reads, several times each, all at once.
    let mut reads = JoinSet::new();
    for t in 0..TENANTS {
        for _ in 0..3 {
            let service = service.clone();
            let name = tenant(t);
            reads.spawn(async move {
                let names = service.names(&token(&name)).await;
                (name, names)
            });
        }
    }
    while let Some(read) = reads.join_next().await {
        let (tenant, names) = read.expect("read task");
        let expected: BTreeSet<String> = (0..TODOS).map(|i| format!("{tenant} todo {i}")).collect();
        assert_eq!(
            names.into_iter().collect::<BTreeSet<_>>(),
            expected,
            "{tenant} sees exactly its own todos"
        );
    }
}
