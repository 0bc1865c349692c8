//! The app in process (no socket): the OpenAPI document and the router agree, every
//! route needs the token but health, and every failure is a JSON error body.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use flint_core::{Limiter, Options, SyncMode};
use flint_server::{app, openapi_document, AppOptions, AppState};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "s3cret";

fn open() -> (tempfile::TempDir, axum::Router) {
    let tmp = tempfile::tempdir().unwrap();
    let limiter = Limiter::open(
        tmp.path().join(".flint"),
        Options::default().sync(SyncMode::Batch),
    )
    .unwrap();
    let state = AppState::new(
        Arc::new(limiter),
        AppOptions {
            token: Some(TOKEN.to_owned()),
            ..AppOptions::default()
        },
    );
    (tmp, app(state))
}

async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, content_type, bytes)
}

fn error_code(content_type: &str, body: &[u8]) -> String {
    assert!(
        content_type.starts_with("application/json"),
        "an error must be JSON, got {content_type:?}: {}",
        String::from_utf8_lossy(body)
    );
    let value: Value = serde_json::from_slice(body).unwrap();
    let message = value["error"]["message"].as_str().unwrap();
    assert!(!message.is_empty());
    value["error"]["code"].as_str().unwrap().to_owned()
}

/// Every operation of the document, with its path parameters filled in.
fn operations() -> Vec<(Method, String)> {
    let document = serde_json::to_value(openapi_document()).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            operations.push((method, path.replace("{key}", "a%2Fkey")));
        }
    }
    operations
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_is() {
    let (_tmp, app) = open();
    let operations = operations();
    assert_eq!(operations.len(), 18, "{operations:?}");
    for (method, path) in &operations {
        let (status, content_type, body) =
            send(&app, method.clone(), path, Some(TOKEN), Some(json!({}))).await;
        if status.is_success() {
            continue;
        }
        let code = error_code(&content_type, &body);
        assert!(
            code != "not_found" && code != "method_not_allowed",
            "{method} {path} is documented but not routed: {status} {code}"
        );
    }
    // And the router has no route the document does not list: every other method on
    // a documented path is 405, and an undocumented path is 404.
    let documented: Vec<(Method, String)> = operations.clone();
    for (_, path) in &operations {
        for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT] {
            if documented.contains(&(method.clone(), path.clone())) {
                continue;
            }
            let (status, content_type, body) =
                send(&app, method.clone(), path, Some(TOKEN), None).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(error_code(&content_type, &body), "method_not_allowed");
        }
    }
    let (status, content_type, body) = send(&app, Method::GET, "/v1/nope", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&content_type, &body), "not_found");
}

#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let (_tmp, app) = open();
    for (method, path) in operations() {
        for token in [None, Some("wrong")] {
            let (status, content_type, body) =
                send(&app, method.clone(), &path, token, Some(json!({}))).await;
            if path == "/v1/health" {
                assert_eq!(status, StatusCode::OK);
                continue;
            }
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert_eq!(error_code(&content_type, &body), "unauthorized");
        }
    }
}

#[tokio::test]
async fn rejections_are_json_errors_with_the_status_of_the_spec() {
    let (_tmp, app) = open();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            Request::post("/v1/check")
                .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"key\": "))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Request::post("/v1/check")
                .header(header::AUTHORIZATION, format!("BEARER {TOKEN}"))
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("{\"key\": \"a\"}"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Request::post("/v1/limits")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{\"key\": \"a\", \"per\": \"1m\"}"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Request::post("/v1/check-all")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(vec![b' '; 70 * 1024]))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Request::get("/v1/top?limit=-1")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
    ];
    for (request, want_status, want_code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            status,
            want_status,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error_code(&content_type, &body), want_code, "{what}");
    }
}

#[tokio::test]
async fn keys_with_slashes_and_any_character_round_trip_through_paths() {
    let (_tmp, app) = open();
    let key = "route:/v1/chat é 100%";
    let (status, _, _) = send(
        &app,
        Method::POST,
        "/v1/limits",
        Some(TOKEN),
        Some(json!({"key": key, "rate": 5, "per": "1s"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for uri in [
        "/v1/limits/route%3A%2Fv1%2Fchat%20%C3%A9%20100%25",
        "/v1/limits/route:/v1/chat%20%C3%A9%20100%25",
    ] {
        let (status, _, body) = send(&app, Method::GET, uri, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["key"], key);
    }
    let (status, _, body) = send(
        &app,
        Method::GET,
        "/v1/history/route:/v1/chat%20%C3%A9%20100%25?limit=5",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["key"], key);
    let (status, _, _) = send(
        &app,
        Method::DELETE,
        "/v1/limits/route:/v1/chat%20%C3%A9%20100%25",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, content_type, body) = send(
        &app,
        Method::GET,
        "/v1/limits/route:/v1/chat%20%C3%A9%20100%25",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&content_type, &body), "limit_not_found");
}
