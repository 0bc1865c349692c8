//! With `sync=always`, the server answers a consuming request only after its record is
//! synced. A SIGKILL cannot show this (the log is a shared mapping: written records
//! survive the process), so this test takes a simulated power loss (the in-memory
//! backend's crash image, which keeps synced bytes and a seeded choice of the rest)
//! right after each answer, and reopens it: every acknowledged check must be there.
//! The background flusher is slowed to an hour, so nothing but the request's own
//! durability wait can have synced it. Both ways of waiting are tested.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use flint_core::backend::MemoryBackend;
use flint_core::{Limiter, Options, SyncMode};
use flint_server::{app, AppOptions, AppState, DurabilityWait};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn options(backend: &Arc<MemoryBackend>, sync: SyncMode) -> Options {
    Options::default()
        .sync(sync)
        .flush_every_ms(3_600_000)
        .flush_every_events(u64::MAX)
        .backend(Arc::clone(backend) as Arc<dyn flint_core::backend::Backend>)
}

async fn post(app: &axum::Router, path: &str, body: Value) -> Value {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// The allowed checks a power loss now would keep, for several seeds (the least).
fn allowed_after_power_loss(backend: &MemoryBackend, sync: SyncMode) -> u64 {
    (0..8)
        .map(|seed| {
            let image = Arc::new(backend.crash_image(seed));
            let limiter = Limiter::open("/flint", options(&image, sync)).unwrap();
            let allowed = limiter
                .status("api:user-42")
                .unwrap()
                .map_or(0, |s| s.counters.allowed);
            limiter.close().unwrap();
            allowed
        })
        .min()
        .unwrap()
}

async fn acknowledged_checks_are_durable(wait: DurabilityWait) {
    let backend = Arc::new(MemoryBackend::new());
    let limiter = Limiter::open("/flint", options(&backend, SyncMode::Always)).unwrap();
    let state = AppState::new(
        Arc::new(limiter),
        AppOptions {
            durability_wait: wait,
            ..AppOptions::default()
        },
    );
    let app = app(state);
    post(
        &app,
        "/v1/limits",
        json!({"key": "api:user-42", "rate": 1000, "per": "1h"}),
    )
    .await;
    for acknowledged in 1..=20 {
        let answer = post(&app, "/v1/check", json!({"key": "api:user-42"})).await;
        assert_eq!(answer["allowed"], true);
        assert_eq!(
            allowed_after_power_loss(&backend, SyncMode::Always),
            acknowledged,
            "{wait:?}: check {acknowledged} was answered before its record was synced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_check_survives_a_power_loss_with_async_waits() {
    acknowledged_checks_are_durable(DurabilityWait::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_check_survives_a_power_loss_with_blocking_waits() {
    acknowledged_checks_are_durable(DurabilityWait::Blocking).await;
}

/// The control: in batch mode the same answers come before the sync, and a power loss
/// loses them, so the test above can tell the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_batch_mode_a_power_loss_can_lose_answered_checks() {
    let backend = Arc::new(MemoryBackend::new());
    let limiter = Limiter::open("/flint", options(&backend, SyncMode::Batch)).unwrap();
    let app = app(AppState::new(Arc::new(limiter), AppOptions::default()));
    post(
        &app,
        "/v1/limits",
        json!({"key": "api:user-42", "rate": 1000, "per": "1h"}),
    )
    .await;
    post(&app, "/v1/check", json!({"key": "api:user-42"})).await;
    assert_eq!(allowed_after_power_loss(&backend, SyncMode::Batch), 0);
}
