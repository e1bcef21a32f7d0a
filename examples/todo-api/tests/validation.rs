//! Invalid bodies are 422 with a JSON error and change nothing; odd paths are 404.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Launch, all_rows, bring_up, send, take_down, test_db, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_are_422_and_change_nothing() {
    let db = test_db();
    let service = Launch::db(&db).env("POOL_TIMEOUT_SECONDS", "1").start();
    let acme = token("acme");
    let id = service.create(&acme, "keep me").await;
    let path = format!("/todos/{id}");

    let too_long = "x".repeat(501);
    let invalid: [(&str, String); 9] = [
        ("syntax error", r#"{"name": "#.into()),
        ("not JSON at all", "name=milk".into()),
        ("an array", "[]".into()),
        ("no name", "{}".into()),
        ("a number", r#"{"name": 5}"#.into()),
        ("null", r#"{"name": null}"#.into()),
        ("empty", r#"{"name": ""}"#.into()),
        ("blank", r#"{"name": "  \t "}"#.into()),
        ("501 characters", json!({ "name": too_long }).to_string()),
    ];
    for (case, body) in &invalid {
        for (method, target) in [(Method::POST, "/todos"), (Method::PATCH, path.as_str())] {
            let reply = send(
                service
                    .req(method.clone(), target, Some(&acme))
                    .header("content-type", "application/json")
                    .body(body.clone()),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{case}: {method} {target}: {reply:?}"
            );
            assert_eq!(reply.error(), "unprocessable", "{case}");
            assert!(
                !reply.body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{case}: the error says what is wrong"
            );
        }
    }
    assert_eq!(all_rows(&db), [("acme".to_string(), "keep me".to_string())]);

    // The bounds themselves are accepted: 500 characters, counted as characters.
    let longest = "é".repeat(500);
    service.create(&acme, &longest).await;
    let renamed = service
        .call(
            Method::PATCH,
            &path,
            Some(&acme),
            Some(json!({ "name": longest })),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:?}");

    // A body without a JSON content type is refused with a JSON error too.
    let reply = send(
        service
            .req(Method::POST, "/todos", Some(&acme))
            .body(r#"{"name": "milk"}"#),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{reply:?}"
    );
    assert_eq!(reply.error(), "unsupported_media_type");

    // The body is checked before a connection is checked out: with the database down, an
    // invalid body is still a 422, not a 503.
    take_down(&db);
    for (method, target) in [(Method::POST, "/todos"), (Method::PATCH, path.as_str())] {
        let reply = service
            .call(
                method.clone(),
                target,
                Some(&acme),
                Some(json!({ "name": "" })),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method}: {reply:?}"
        );
    }
    bring_up(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_paths_are_json_404s_and_healthz_needs_no_token() {
    let db = test_db();
    let service = Launch::db(&db).start();
    let acme = token("acme");
    for path in ["/todos/abc", "/todos/99999999999", "/todos/1.5", "/nope"] {
        let reply = service.call(Method::GET, path, Some(&acme), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        assert_eq!(reply.error(), "not_found", "{path}");
    }
    let health = service.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, json!({ "status": "ok" }));
}
