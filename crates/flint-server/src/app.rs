//! The router: handlers that translate HTTP to engine calls and back, bearer auth,
//! metrics, JSON errors for everything, and the OpenAPI document generated from the
//! same handlers (`utoipa-axum` registers each route and its documentation together,
//! so the two cannot drift).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flint_core::{Deferred, Limiter, ListKind, Pending, TopBy};
use std::sync::atomic::{AtomicUsize, Ordering};
use subtle::ConstantTimeEq;

use tokio::sync::{Notify, Semaphore};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    self, change_name, code, AcquireRequest, CheckAllRequest, CheckAllResult, CheckRequest,
    CheckResult, Compacted, Doctor, Done, ErrorBody, Health, History, HistoryEntry, HistoryQuery,
    KeyRequest, KeyStatus, LimitList, LimitRequest, LimitResponse, ListQuery, Top, TopQuery,
};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;

/// The largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How a consuming call waits for its record to be synced (`sync=always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurabilityWait {
    /// The request's task awaits the engine's notification of the synced position:
    /// no thread is held, and the background flusher syncs for every waiter at once.
    #[default]
    Async,
    /// A blocking thread (bounded by `max_blocking`) waits in the engine's group
    /// commit. Kept to measure against; see BENCHMARKS.md.
    Blocking,
}

/// How the app behaves.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The bearer token every route but `GET /v1/health` requires; `None` for none.
    pub token: Option<String>,
    /// Blocking work (syncs on request, compaction, doctor, blocking durability
    /// waits) at once; more waits for a slot.
    pub max_blocking: usize,
    /// See [`DurabilityWait`].
    pub durability_wait: DurabilityWait,
    /// The longest a request may take, body reading included (then 503 `timeout`).
    pub request_timeout: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            token: None,
            max_blocking: 128,
            durability_wait: DurabilityWait::Async,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What the handlers share: the engine, the options and the metrics.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    limiter: Arc<Limiter>,
    options: AppOptions,
    blocking: Arc<Semaphore>,
    metrics: Metrics,
    /// Requests being answered now, and a signal when that falls to zero (for a
    /// graceful stop that need not wait for connections that are merely open).
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl AppState {
    /// The state of an app serving `limiter`.
    pub fn new(limiter: Arc<Limiter>, options: AppOptions) -> Self {
        let blocking = Arc::new(Semaphore::new(options.max_blocking.max(1)));
        let routes: Vec<String> = openapi_document().paths.paths.into_keys().collect();
        let metrics = Metrics::new(Arc::clone(&limiter), &routes);
        AppState {
            inner: Arc::new(Inner {
                limiter,
                options,
                blocking,
                metrics,
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Completes when no request is being answered (at once if none is).
    pub async fn idle(&self) {
        loop {
            // Created before the check: a request ending in between still wakes it.
            let ended = self.inner.idle.notified();
            if self.inner.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }

    /// The engine.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.inner.limiter
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Runs `work` on a blocking thread, at most `max_blocking` at once.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Limiter) -> flint_core::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let slot = Arc::clone(&self.inner.blocking)
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the server is stopping"))?;
        let limiter = Arc::clone(&self.inner.limiter);
        // The slot goes with the work: a request that times out or whose client goes
        // away does not free it while its blocking work still runs.
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work(&limiter)
        })
        .await
        .map_err(|e| internal(&format!("a blocking task failed: {e}")))?
        .map_err(ApiError::from)
    }

    /// Makes a call (deciding at once, on this thread: it takes the state lock for
    /// about a microsecond) and waits for its durability as configured. Denials, batch
    /// mode and unchanged limits have nothing to wait for.
    async fn durable<T: Send + Unpin + 'static>(
        &self,
        call: impl FnOnce(Deferred<'_>) -> flint_core::Result<Pending<T>>,
    ) -> Result<T, ApiError> {
        let pending = call(self.inner.limiter.deferred())?;
        if pending.is_ready() {
            return Ok(pending.wait()?);
        }
        match self.inner.options.durability_wait {
            DurabilityWait::Async => Ok(pending.await?),
            DurabilityWait::Blocking => self.blocking(move |_| pending.wait()).await,
        }
    }
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message)
}

fn internal(message: &str) -> ApiError {
    tracing::error!(error = message, "internal error");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, message)
}

// -- extractors whose rejections are JSON errors -----------------------------------

/// A JSON object body; its rejections (malformed JSON, wrong content type, an array
/// or other non-object, missing field, too large) become [`ApiError`]s.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(api::Object(body)) = Json::<api::Object<T>>::from_request(request, state).await?;
        Ok(Body(body))
    }
}

/// A path parameter (percent-decoded).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct PathKey<T>(T);

/// A query string.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct QueryOf<T>(T);

// -- the documented failures -------------------------------------------------------

/// The error answers every authenticated route may give.
struct Failures;

impl utoipa::IntoResponses for Failures {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        [
            ("400", "Bad input: the message names the value and the fix"),
            ("401", "Missing or wrong bearer token"),
            ("404", "Unknown key (code limit_not_found) or route"),
            ("413", "Body over 64 KiB"),
            ("500", "Storage failure or damaged data"),
            (
                "503",
                "The engine stopped writing, the server is stopping, or a timeout",
            ),
        ]
        .into_iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build();
            (status.to_owned(), RefOr::T(response))
        })
        .collect()
    }
}

// -- handlers --------------------------------------------------------------------

/// Health check (no token needed).
#[utoipa::path(get, path = "/v1/health", tag = "server", security(()),
    responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        ok: true,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// List limits, sorted by key.
#[utoipa::path(get, path = "/v1/limits", tag = "limits", params(ListQuery),
    responses((status = 200, body = LimitList), Failures))]
async fn list_limits(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<ListQuery>,
) -> Result<Json<LimitList>, ApiError> {
    // Every key, under the engine's lock: off the async workers.
    let kind: ListKind = query.kind.as_deref().unwrap_or("all").parse()?;
    let statuses = state
        .blocking(move |limiter| limiter.list_kind(query.prefix.as_deref(), kind))
        .await?;
    Ok(Json(LimitList {
        limits: statuses.iter().map(KeyStatus::from).collect(),
    }))
}

/// Configure a limit (the same settings again write nothing).
#[utoipa::path(post, path = "/v1/limits", tag = "limits", request_body = LimitRequest,
    responses((status = 200, body = LimitResponse), Failures))]
async fn configure(
    State(state): State<AppState>,
    Body(request): Body<LimitRequest>,
) -> Result<Json<LimitResponse>, ApiError> {
    let quota = request.quota()?;
    let key = request.key;
    let change = state.durable(|d| d.limit(&key, quota)).await?;
    let status = state
        .limiter()
        .status(&key)?
        // Removed by another request between the two calls.
        .ok_or_else(|| flint_core::Error::LimitNotFound { key: key.clone() })?;
    Ok(Json(LimitResponse {
        change: change_name(change).to_owned(),
        status: KeyStatus::from(&status),
    }))
}

/// A key's limit, capacity and counters.
#[utoipa::path(get, path = "/v1/limits/{key}", tag = "limits",
    params(("key" = String, Path, description = "The key, percent-encoded")),
    responses((status = 200, body = KeyStatus), Failures))]
async fn limit_status(
    State(state): State<AppState>,
    PathKey(key): PathKey<String>,
) -> Result<Json<KeyStatus>, ApiError> {
    match state.limiter().status(&key)? {
        Some(status) => Ok(Json(KeyStatus::from(&status))),
        None => Err(flint_core::Error::LimitNotFound { key }.into()),
    }
}

/// Delete a key's limit.
#[utoipa::path(delete, path = "/v1/limits/{key}", tag = "limits",
    params(("key" = String, Path, description = "The key, percent-encoded")),
    responses((status = 200, body = Done), Failures))]
async fn remove_limit(
    State(state): State<AppState>,
    PathKey(key): PathKey<String>,
) -> Result<Json<Done>, ApiError> {
    state.durable(|d| d.remove(&key)).await?;
    Ok(Json(Done { ok: true }))
}

/// Check a key and consume `cost` units when allowed. A denial is 200 with
/// `allowed: false`.
#[utoipa::path(post, path = "/v1/check", tag = "checks", request_body = CheckRequest,
    responses((status = 200, body = CheckResult), Failures))]
async fn check(
    State(state): State<AppState>,
    Body(request): Body<CheckRequest>,
) -> Result<Json<CheckResult>, ApiError> {
    let decision = state
        .durable(|d| d.check(&request.key, request.cost))
        .await?;
    state.metrics().checked(&decision);
    Ok(Json(CheckResult::new(&request.key, &decision)))
}

/// What a check would answer now, consuming nothing and writing nothing.
#[utoipa::path(post, path = "/v1/peek", tag = "checks", request_body = CheckRequest,
    responses((status = 200, body = CheckResult), Failures))]
async fn peek(
    State(state): State<AppState>,
    Body(request): Body<CheckRequest>,
) -> Result<Json<CheckResult>, ApiError> {
    let decision = state.limiter().peek(&request.key, request.cost)?;
    Ok(Json(CheckResult::new(&request.key, &decision)))
}

/// Wait until `cost` units are granted, or `timeout` seconds pass (then the denied
/// result). The server peeks, recording nothing, sleeps the `retry_after` it names,
/// and checks once the units are there; a check made when the wait would outlast the
/// timeout records the refusal. The wait is capped at the request timeout less 1 s.
#[utoipa::path(post, path = "/v1/acquire", tag = "checks", request_body = AcquireRequest,
    responses((status = 200, body = CheckResult), Failures))]
async fn acquire(
    State(state): State<AppState>,
    Body(request): Body<AcquireRequest>,
) -> Result<Json<CheckResult>, ApiError> {
    let cap = state
        .inner
        .options
        .request_timeout
        .saturating_sub(Duration::from_secs(1));
    let limit = match request.timeout {
        None => cap,
        Some(t) if t.is_finite() && t >= 0.0 => Duration::from_secs_f64(t.min(1e9)).min(cap),
        Some(t) => {
            return Err(ApiError::invalid(format!(
                "timeout {t} for key {:?} is invalid: pass a number of seconds, 0 or more (such as 2.5), or leave it out to wait up to {} s",
                request.key,
                cap.as_secs()
            )))
        }
    };
    let deadline = Instant::now() + limit;
    let (key, cost) = (request.key.as_str(), request.cost);
    loop {
        let seen = state.limiter().peek(key, cost)?;
        let wait = Duration::from_nanos(seen.retry_after);
        if seen.allowed || Instant::now() + wait > deadline {
            let decision = state.durable(|d| d.check(key, cost)).await?;
            if decision.allowed || !seen.allowed {
                state.metrics().checked(&decision);
                return Ok(Json(CheckResult::new(key, &decision)));
            }
            // Another caller took the units first: look again.
            continue;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Check several keys, all or nothing.
#[utoipa::path(post, path = "/v1/check-all", tag = "checks", request_body = CheckAllRequest,
    responses((status = 200, body = CheckAllResult), Failures))]
async fn check_all(
    State(state): State<AppState>,
    Body(request): Body<CheckAllRequest>,
) -> Result<Json<CheckAllResult>, ApiError> {
    let items: Vec<(&str, u64)> = request
        .items
        .iter()
        .map(|item| (item.key.as_str(), item.cost))
        .collect();
    let decision = state.durable(|d| d.check_all(&items)).await?;
    state.metrics().checked_all(&decision);
    Ok(Json(CheckAllResult::from(&decision)))
}

/// Put a key back to full capacity.
#[utoipa::path(post, path = "/v1/reset", tag = "limits", request_body = KeyRequest,
    responses((status = 200, body = Done), Failures))]
async fn reset(
    State(state): State<AppState>,
    Body(request): Body<KeyRequest>,
) -> Result<Json<Done>, ApiError> {
    state.durable(|d| d.reset(&request.key)).await?;
    Ok(Json(Done { ok: true }))
}

/// Give back units of a key consumed earlier (a request that failed and should not
/// count), never beyond full capacity. Logged, and with `sync=always` answered once on
/// disk; a refund on a key at full capacity changes and writes nothing.
#[utoipa::path(post, path = "/v1/refund", tag = "checks", request_body = api::RefundRequest,
    responses((status = 200, body = Done), Failures))]
async fn refund(
    State(state): State<AppState>,
    Body(request): Body<api::RefundRequest>,
) -> Result<Json<Done>, ApiError> {
    state
        .durable(|d| d.refund(&request.key, request.cost))
        .await?;
    Ok(Json(Done { ok: true }))
}

/// A key's most recent decisions, oldest first.
#[utoipa::path(get, path = "/v1/history/{key}", tag = "inspect",
    params(("key" = String, Path, description = "The key, percent-encoded"), HistoryQuery),
    responses((status = 200, body = History), Failures))]
async fn history(
    State(state): State<AppState>,
    PathKey(key): PathKey<String>,
    QueryOf(query): QueryOf<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let events = state.limiter().history(&key, query.limit)?;
    Ok(Json(History {
        key,
        events: events.iter().map(HistoryEntry::from).collect(),
    }))
}

/// Keys ranked by denials, allowances, costs or checks.
#[utoipa::path(get, path = "/v1/top", tag = "inspect", params(TopQuery),
    responses((status = 200, body = Top), Failures))]
async fn top(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<TopQuery>,
) -> Result<Json<Top>, ApiError> {
    let by: TopBy = query.by.parse()?;
    // Every key, under the engine's lock: off the async workers.
    let ranked = state
        .blocking(move |limiter| limiter.top(by, query.limit))
        .await?;
    Ok(Json(Top {
        top: ranked.iter().map(KeyStatus::from).collect(),
    }))
}

/// Sync every event written so far to disk.
#[utoipa::path(post, path = "/v1/log/flush", tag = "log",
    responses((status = 200, body = Done), Failures))]
async fn flush(State(state): State<AppState>) -> Result<Json<Done>, ApiError> {
    state.blocking(Limiter::flush).await?;
    Ok(Json(Done { ok: true }))
}

/// Write a snapshot and start a new, short log.
#[utoipa::path(post, path = "/v1/log/compact", tag = "log",
    responses((status = 200, body = Compacted), Failures))]
async fn compact(State(state): State<AppState>) -> Result<Json<Compacted>, ApiError> {
    let report = state.blocking(Limiter::compact).await?;
    Ok(Json(Compacted::from(&report)))
}

/// The health of the data directory and of the engine.
#[utoipa::path(get, path = "/v1/doctor", tag = "server",
    responses((status = 200, body = Doctor), Failures))]
async fn doctor(State(state): State<AppState>) -> Result<Json<Doctor>, ApiError> {
    let report = state.blocking(Limiter::doctor).await?;
    Ok(Json(Doctor::from(&report)))
}

/// Prometheus metrics (OpenMetrics text); no per-key series.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, content_type = "application/openmetrics-text", body = String), Failures))]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "server",
    responses((status = 200, content_type = "application/json", body = Object), Failures))]
async fn openapi(axum::Extension(document): axum::Extension<Arc<String>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str().to_owned(),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        format!(
            "no route {}: see GET /v1/openapi.json for the API",
            uri.path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}: see GET /v1/openapi.json for the methods of each route",
            request.method(),
            request.uri().path()
        ),
    )
}

// -- middleware ------------------------------------------------------------------

/// Compares a given token with the server's in time that depends on neither the
/// bytes nor the length of the server's token: the given one is padded or cut to its
/// length before the constant-time comparison, and the lengths are compared apart.
fn same_token(given: &[u8], token: &[u8]) -> bool {
    let padded: Vec<u8> = (0..token.len())
        .map(|i| given.get(i).copied().unwrap_or(0))
        .collect();
    let lengths = (given.len() as u64).ct_eq(&(token.len() as u64));
    bool::from(padded.ct_eq(token) & lengths)
}

/// Requires the bearer token on every route but `GET /v1/health`.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.inner.options.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/v1/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim());
    let message = match given {
        Some(given) if same_token(given.as_bytes(), token.as_bytes()) => {
            return next.run(request).await;
        }
        Some(_) => "the bearer token is wrong: send the token the server was started with (`flint server start --token`, or FLINT_SERVER_TOKEN)",
        None => "this server requires a token: send `Authorization: Bearer <token>` with the token it was started with",
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"flint\""),
    );
    response
}

/// Times every request (by route template), counts errors by code, and bounds how
/// long a request may take.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let _in_flight = InFlight::enter(&state.inner);
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let timeout = state.inner.options.request_timeout;
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::TIMEOUT,
            format!(
                "the request took longer than {} s (a slow client body, or a stalled disk); it may have been applied",
                timeout.as_secs()
            ),
        )
        .into_response(),
    };
    let metrics = state.metrics();
    metrics.observe(
        route.as_ref().map(MatchedPath::as_str),
        started.elapsed().as_secs_f64(),
    );
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        metrics.error(code);
        if response.status().is_server_error() {
            tracing::warn!(status = response.status().as_u16(), code, "request failed");
        }
    }
    response
}

/// The keys in `/v1/limits/{key}` and `/v1/history/{key}` may hold `/`: encode those
/// slashes so that the router sees one segment (the path extractor decodes them).
fn encode_key_slashes(mut request: Request) -> Request {
    let path = request.uri().path();
    let Some(prefix) = ["/v1/limits/", "/v1/history/"]
        .into_iter()
        .find(|p| path.starts_with(p))
    else {
        return request;
    };
    let key = &path[prefix.len()..];
    if !key.contains('/') {
        return request;
    }
    let mut rebuilt = format!("{prefix}{}", key.replace('/', "%2F"));
    if let Some(query) = request.uri().query() {
        rebuilt.push('?');
        rebuilt.push_str(query);
    }
    if let Ok(uri) = rebuilt.parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    request
}

/// A panic in a handler: a JSON 500, never a dropped connection or a stack trace.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature CatchPanicLayer::custom asks for"
)]
fn panicked(panic: Box<dyn std::any::Any + Send>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    internal(&format!("the server failed on this request: {detail}")).into_response()
}

// -- the router ------------------------------------------------------------------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flint",
        description = "A persistent, exact rate limiter (shared mode). Every failure is `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody, api::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes and their OpenAPI document, registered together.
fn documented() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(list_limits, configure))
        .routes(routes!(limit_status, remove_limit))
        .routes(routes!(check))
        .routes(routes!(peek))
        .routes(routes!(acquire))
        .routes(routes!(check_all))
        .routes(routes!(reset))
        .routes(routes!(refund))
        .routes(routes!(history))
        .routes(routes!(top))
        .routes(routes!(flush))
        .routes(routes!(compact))
        .routes(routes!(doctor))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .split_for_parts();
    env!("CARGO_PKG_VERSION").clone_into(&mut document.info.version);
    (router, document)
}

/// The OpenAPI 3.1 document of the API, as `GET /v1/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    documented().1
}

/// The whole app: every route of the API over `state`'s limiter.
pub fn app(state: AppState) -> axum::Router {
    let (router, document) = documented();
    let text = document
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"the document failed to serialise: {e}\"}}"));
    let routes = router
        .with_state(state.clone())
        .layer(axum::Extension(Arc::new(text)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state, observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked));
    axum::Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .map_request(encode_key_slashes)
            .service(routes),
    )
}
