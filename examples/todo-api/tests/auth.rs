//! Every way a request can fail to authenticate is a 401 with a JSON body, answered before
//! any database work.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{Launch, bring_up, now, sign, sign_with, take_down, test_db, token};

/// The routes, with a valid body where they take one.
fn routes() -> Vec<(Method, &'static str, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/todos", None),
        (Method::POST, "/todos", Some(json!({ "name": "x" }))),
        (Method::GET, "/todos/1", None),
        (Method::PATCH, "/todos/1", Some(json!({ "name": "x" }))),
        (Method::DELETE, "/todos/1", None),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_401_case_is_answered_without_touching_the_database() {
    let db = test_db();
    let service = Launch::db(&db).env("POOL_TIMEOUT_SECONDS", "2").start();
    let acme = token("acme");
    assert_eq!(service.names(&acme).await, Vec::<String>::new());

    // With the database unreachable, any request that checked out a connection would be
    // answered 503: a 401 shows the credentials were refused before any database work.
    take_down(&db);

    let exp = now() + 3600;
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "no Authorization header",
            None,
            "missing Authorization header",
        ),
        (
            "Basic scheme",
            Some("Basic YWNtZTpzZWNyZXQ=".into()),
            "must be `Bearer <token>`",
        ),
        (
            "Bearer without a token",
            Some("Bearer".into()),
            "must be `Bearer <token>`",
        ),
        (
            "malformed token",
            Some("Bearer not-a-jwt".into()),
            "malformed token",
        ),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                sign_with(
                    jsonwebtoken::Algorithm::HS256,
                    &json!({ "tenant": "acme", "exp": exp }),
                    b"another-secret-another-secret-another",
                )
            )),
            "invalid token signature",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(&json!({ "tenant": "acme", "exp": now() - 3600 }))
            )),
            "token expired",
        ),
        (
            "another algorithm",
            Some(format!(
                "Bearer {}",
                sign_with(
                    jsonwebtoken::Algorithm::HS512,
                    &json!({ "tenant": "acme", "exp": exp }),
                    crate::common::SECRET.as_bytes(),
                )
            )),
            "algorithm not accepted",
        ),
        (
            "no exp",
            Some(format!("Bearer {}", sign(&json!({ "tenant": "acme" })))),
            "lacks the `exp` claim",
        ),
        (
            "no tenant claim",
            Some(format!("Bearer {}", sign(&json!({ "exp": exp })))),
            "no string `tenant` claim",
        ),
        (
            "numeric tenant",
            Some(format!(
                "Bearer {}",
                sign(&json!({ "tenant": 42, "exp": exp }))
            )),
            "no string `tenant` claim",
        ),
        (
            "null tenant",
            Some(format!(
                "Bearer {}",
                sign(&json!({ "tenant": null, "exp": exp }))
            )),
            "no string `tenant` claim",
        ),
        (
            "empty tenant",
            Some(format!(
                "Bearer {}",
                sign(&json!({ "tenant": "", "exp": exp }))
            )),
            "not a valid tenant id",
        ),
    ];
    for (case, header, message) in &cases {
        for (method, path, body) in routes() {
            let mut request = service.req(method.clone(), path, None);
            if let Some(header) = header {
                request = request.header("Authorization", header);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let reply = crate::common::send(request).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{case}: {method} {path}: {reply:?}"
            );
            assert_eq!(reply.error(), "unauthorized", "{case}");
            let text = reply.body["message"].as_str().unwrap_or_default();
            assert!(text.contains(message), "{case}: {text:?} lacks {message:?}");
            let challenge = reply.headers.get("www-authenticate");
            assert!(
                challenge.is_some_and(|v| v.as_bytes().starts_with(b"Bearer")),
                "{case}: {challenge:?}"
            );
        }
    }

    // The control: a valid token does reach for the database, which is down.
    let reply = service.call(Method::GET, "/todos", Some(&acme), None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    bring_up(&db);

    // No token ever reaches the logs (read once the last request is logged).
    assert!(service.prints("status=503"), "{}", service.output());
    let output = service.output();
    for (_, header, _) in &cases {
        if let Some(token) = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
            assert!(!output.contains(token), "a token was logged");
        }
    }
    assert!(!output.contains(&acme), "a token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audience_is_checked_when_configured() {
    let db = test_db();
    let service = Launch::db(&db).env("JWT_AUDIENCE", "todo-api").start();
    let exp = now() + 3600;
    let cases = [
        (
            json!({ "tenant": "acme", "exp": exp }),
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({ "tenant": "acme", "exp": exp, "aud": "billing" }),
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({ "tenant": "acme", "exp": exp, "aud": "todo-api" }),
            StatusCode::OK,
        ),
        (
            json!({ "tenant": "acme", "exp": exp, "aud": ["billing", "todo-api"] }),
            StatusCode::OK,
        ),
    ];
    for (claims, expected) in cases {
        let reply = service
            .call(Method::GET, "/todos", Some(&sign(&claims)), None)
            .await;
        assert_eq!(reply.status, expected, "{claims}: {reply:?}");
    }
}
