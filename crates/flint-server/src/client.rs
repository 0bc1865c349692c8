//! A blocking client of the Flint server: the methods of the engine over HTTP, with the
//! bodies of [`api`](crate::api).
//!
//! ```no_run
//! use std::time::Duration;
//! use flint_server::client::Client;
//!
//! let client = Client::new("http://127.0.0.1:7878", Some("dev-secret"), Duration::from_secs(10))?;
//! let result = client.check("api:user-42", 1)?;
//! println!("allowed: {}", result.allowed);
//! # Ok::<(), flint_server::client::ClientError>(())
//! ```
//!
//! # Retries: never twice for a request that may have consumed quota
//!
//! A check, a check-all, a limit, a reset, a removal, a flush or a compaction is sent
//! **once**. If anything goes wrong after it may have left (the connection is reset or
//! closed before the answer, the answer is late), the call fails with
//! [`ErrorKind::Connection`] saying that the request may or may not have been applied;
//! it is never sent again, because a second copy could consume quota twice.
//!
//! Only reads (`GET`: health, status, list, history, top, doctor, metrics), which change
//! nothing on the server, are retried, once, and only when the server closed or reset
//! the connection without answering: the race of a keep-alive connection that the
//! server closed just as it was reused. A refused connection is not retried (a second
//! attempt a moment later meets the same closed port), nor is a timeout.
//!
//! What ureq 3 itself does (checked in its source, 3.5): it retries nothing. Its main
//! loop (`run.rs`) sends a request once and follows redirects only; when it takes an
//! idle connection from its pool it first probes it with a non-blocking one-byte read
//! (`Pool::get` → `is_open`) and discards it if the server closed it, *before* writing
//! any byte of the request, then uses another or connects anew. A connection that the
//! server closes after that probe surfaces as an I/O error (`UnexpectedEof`, "Peer
//! disconnected", or `ConnectionReset`), whatever the method, and ureq does not resend.
//! The client turns redirects off (a 307/308 would resend a body) and keeps idle
//! connections for [`MAX_IDLE_AGE`] (30 s), well below the server's 60 s keep-alive
//! timeout, so that the pool never hands out a connection that the server is about to
//! close: the race above is then limited to a server that stops or restarts.

use std::fmt::{self, Write as _};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use ureq::http::{self, Method, Request, Response, StatusCode, Uri};
use ureq::{Agent, Body};

use flint_core::ListKind;

use crate::api::{
    code, CheckAllRequest, CheckAllResult, CheckItem, CheckRequest, CheckResult, Compacted, Doctor,
    Done, ErrorBody, Health, History, HistoryEntry, KeyRequest, KeyStatus, LimitList, LimitRequest,
    LimitResponse, Top,
};

/// How long an idle keep-alive connection is kept for reuse. The server closes idle
/// connections after 60 s; half of that leaves a wide margin (for a slow scheduler, and
/// for the server's timer, which may start before the client's), so that the pool never
/// reuses a connection that the server is closing.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// Idle connections kept in the pool: one per thread that calls the client at once, up
/// to this many (a client talks to one server).
const MAX_IDLE_CONNECTIONS: usize = 64;

/// The largest response body read (a `list()` of many keys is large; this only stops
/// a runaway answer).
const MAX_BODY: u64 = 1 << 30;

/// What kind of failure a [`ClientError`] is; each door maps it to its own error
/// (Python: `InvalidArgument`, `LimitNotFound`, `AuthenticationError`,
/// `FlintConnectionError`, `FlintServerError`, `FlintError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad input: the server answered 400 (or 413), or the client refused an argument
    /// (such as the URL) before sending anything.
    InvalidArgument,
    /// The key has no limit (404 `limit_not_found`).
    LimitNotFound,
    /// The server refused the token (401, or 403).
    Authentication,
    /// The server could not be reached or did not answer: connection refused or reset,
    /// a host name that does not resolve, a TLS failure, a timeout.
    Connection,
    /// The server failed (5xx), with its code and message.
    Server,
    /// An answer that is not what a Flint server sends: not JSON, an unexpected status,
    /// an unknown route. Usually not a Flint server, or one of another version.
    Protocol,
}

/// A failed call of the [`Client`]: its kind, the server's URL, the HTTP status and the
/// server's error code when there was an answer, and a message that names the URL and
/// the fix.
///
/// For a `4xx` answer, [`ClientError::message`] is the server's message verbatim (it
/// names the key, the value and the fix); `Display` adds the URL.
#[derive(Debug, Clone)]
pub struct ClientError {
    kind: ErrorKind,
    url: String,
    status: Option<u16>,
    code: Option<String>,
    key: Option<String>,
    message: String,
    timed_out: bool,
}

impl ClientError {
    fn new(kind: ErrorKind, url: &str, message: String) -> Self {
        ClientError {
            kind,
            url: url.to_owned(),
            status: None,
            code: None,
            key: None,
            message,
            timed_out: false,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The server's URL, as given to [`Client::new`] (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The server's error code (see [`api::code`](crate::api::code)), when it sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The key that the failed call was about, when known.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The message: for a `4xx` answer the server's own, verbatim (without the URL);
    /// otherwise the client's, which names the URL.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the call failed because the server did not answer within the timeout.
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }

    /// True when the message is the server's (an answer with a status) and does not
    /// name the URL itself.
    fn is_server_4xx(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::InvalidArgument | ErrorKind::LimitNotFound | ErrorKind::Authentication
        ) && self.status.is_some()
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_server_4xx() {
            write!(f, "{} (Flint server at {})", self.message, self.url)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for ClientError {}

/// The result type of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A blocking client of one Flint server. Cheap to clone; clones share one pool of
/// keep-alive connections and may be used from many threads at once.
///
/// Every request carries `Authorization: Bearer <token>` when a token was given, and
/// must finish (connect, send, receive) within the timeout. Requests that may consume
/// quota are never retried; see the [module documentation](self).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    agent: Agent,
    /// The base URL without a trailing slash, such as `http://127.0.0.1:7878`.
    url: String,
    /// `Bearer <token>`.
    authorization: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: say only whether there is one.
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .field("token", &self.inner.authorization.as_ref().map(|_| "..."))
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Never: the request may consume quota or change state.
    Never,
    /// Once, when the server closed the connection without answering: a read.
    ReadOnce,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Provably before the request left: refused, no such host, no route, TLS.
    BeforeSending,
    /// The server closed or reset the connection without a (complete) answer.
    Closed,
    /// No answer within the timeout.
    TimedOut,
    /// Anything else on the connection.
    Other,
}

impl Client {
    /// A client of the server at `url` (`http://` or `https://`, a host, an optional
    /// port and path prefix, no query; a trailing slash is fine), sending `token` as a
    /// bearer token when given. `timeout` bounds each request from connecting to the
    /// last byte of the answer.
    ///
    /// Nothing is sent: a server that is not running shows at the first call.
    pub fn new(url: &str, token: Option<&str>, timeout: Duration) -> Result<Client> {
        let url = validate_url(url)?;
        let invalid =
            |message: String| Err(ClientError::new(ErrorKind::InvalidArgument, &url, message));
        if timeout.is_zero() {
            return invalid(format!(
                "the timeout for the Flint server at {url} is zero: pass a positive duration such as 10 seconds"
            ));
        }
        let authorization = match token {
            None => None,
            Some("") => {
                return invalid(format!(
                    "the token for the Flint server at {url} is empty: pass the server's token, or none if it was started without one"
                ))
            }
            Some(t) => {
                let value = format!("Bearer {t}");
                if http::HeaderValue::from_str(&value).is_err() {
                    return invalid(format!(
                        "the token for the Flint server at {url} holds characters that an HTTP header cannot carry (control characters or non-ASCII): use the server's token as printed"
                    ));
                }
                Some(value)
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                agent: new_agent(timeout),
                url,
                authorization,
                timeout,
            }),
        })
    }

    /// A client with the same URL, token and timeout and a pool of connections of its
    /// own. A forked child process must use this rather than its parent's client: the
    /// pooled connections are sockets shared with the parent, and two processes
    /// writing requests on one connection would mix their answers.
    #[must_use]
    pub fn with_new_pool(&self) -> Client {
        Client {
            inner: Arc::new(Inner {
                agent: new_agent(self.inner.timeout),
                url: self.inner.url.clone(),
                authorization: self.inner.authorization.clone(),
                timeout: self.inner.timeout,
            }),
        }
    }

    /// The server's URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The timeout of each request.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// `GET /v1/health`: the server answers (needs no token).
    pub fn health(&self) -> Result<Health> {
        self.get("/v1/health", None)
    }

    /// `POST /v1/limits`: configures a limit.
    pub fn limit(&self, request: &LimitRequest) -> Result<LimitResponse> {
        self.post("/v1/limits", request, Some(&request.key))
    }

    /// `POST /v1/check`: checks `key` and consumes `cost` units when allowed. A denial
    /// is a result with `allowed: false`, not an error.
    pub fn check(&self, key: &str, cost: u64) -> Result<CheckResult> {
        let body = CheckRequest {
            key: key.to_owned(),
            cost,
        };
        self.post("/v1/check", &body, Some(key))
    }

    /// `POST /v1/peek`: what a check of `cost` units of `key` would answer now,
    /// consuming nothing. Sent once, like every POST.
    pub fn peek(&self, key: &str, cost: u64) -> Result<CheckResult> {
        let body = CheckRequest {
            key: key.to_owned(),
            cost,
        };
        self.post("/v1/peek", &body, Some(key))
    }

    /// `POST /v1/check-all`: checks several keys, all or nothing (duplicate keys'
    /// costs are summed).
    pub fn check_all(&self, items: &[(&str, u64)]) -> Result<CheckAllResult> {
        let body = CheckAllRequest {
            items: items
                .iter()
                .map(|&(key, cost)| CheckItem {
                    key: key.to_owned(),
                    cost,
                })
                .collect(),
        };
        self.post::<_, CheckAllResult>("/v1/check-all", &body, None)
            .map_err(|e| e.with_key_among(items.iter().map(|(k, _)| *k)))
    }

    /// `POST /v1/reset`: puts `key` back to full capacity.
    pub fn reset(&self, key: &str) -> Result<()> {
        let body = KeyRequest {
            key: key.to_owned(),
        };
        self.post::<_, Done>("/v1/reset", &body, Some(key))
            .map(drop)
    }

    /// `POST /v1/refund`: gives back `cost` units of `key` consumed earlier. Sent once,
    /// like every POST (a retry could give back twice).
    pub fn refund(&self, key: &str, cost: u64) -> Result<()> {
        let body = crate::api::RefundRequest {
            key: key.to_owned(),
            cost,
        };
        self.post::<_, Done>("/v1/refund", &body, Some(key))
            .map(drop)
    }

    /// `DELETE /v1/limits/{key}`: deletes the limit of `key`.
    pub fn remove(&self, key: &str) -> Result<()> {
        if key.is_empty() {
            // No route has an empty key; the engine's own answer.
            return Err(self.not_found(key));
        }
        let path = format!("/v1/limits/{}", encode(key));
        self.send::<Done>(&Method::DELETE, &path, None, Some(key), Retry::Never)
            .map(drop)
    }

    /// `GET /v1/limits/{key}`: the status of `key`, or `None` when it has no limit.
    pub fn status(&self, key: &str) -> Result<Option<KeyStatus>> {
        if key.is_empty() {
            // No key is empty, so none has a limit (as the engine answers).
            return Ok(None);
        }
        let path = format!("/v1/limits/{}", encode(key));
        match self.get(&path, Some(key)) {
            Ok(status) => Ok(Some(status)),
            Err(e) if e.kind == ErrorKind::LimitNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/limits?prefix=P&kind=K`: the status of every entry whose key starts
    /// with `prefix` (all when `None`) and is of `kind`, sorted by key.
    pub fn list(&self, prefix: Option<&str>, kind: ListKind) -> Result<Vec<KeyStatus>> {
        let mut query = Vec::new();
        if let Some(p) = prefix {
            query.push(format!("prefix={}", encode(p)));
        }
        if kind != ListKind::All {
            query.push(format!("kind={}", kind.name()));
        }
        let path = if query.is_empty() {
            "/v1/limits".to_owned()
        } else {
            format!("/v1/limits?{}", query.join("&"))
        };
        self.get::<LimitList>(&path, None).map(|l| l.limits)
    }

    /// `GET /v1/history/{key}?limit=N`: the `limit` most recent decisions of `key`,
    /// oldest first.
    pub fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
        if key.is_empty() {
            return Err(self.not_found(key));
        }
        let path = format!("/v1/history/{}?limit={limit}", encode(key));
        self.get::<History>(&path, Some(key)).map(|h| h.events)
    }

    /// `GET /v1/top?by=B&limit=N`: the `limit` keys with the most `by` (`denied`,
    /// `allowed`, `denied_cost`, `allowed_cost` or `checks`), highest first.
    pub fn top(&self, by: &str, limit: usize) -> Result<Vec<KeyStatus>> {
        let path = format!("/v1/top?by={}&limit={limit}", encode(by));
        self.get::<Top>(&path, None).map(|t| t.top)
    }

    /// `POST /v1/log/flush`: syncs every event written so far.
    pub fn flush(&self) -> Result<()> {
        self.post::<_, Done>("/v1/log/flush", &serde_json::json!({}), None)
            .map(drop)
    }

    /// `POST /v1/log/compact`: writes a snapshot and starts a new log tail.
    pub fn compact(&self) -> Result<Compacted> {
        self.post("/v1/log/compact", &serde_json::json!({}), None)
    }

    /// `GET /v1/doctor`: the health of the server's data directory and engine.
    pub fn doctor(&self) -> Result<Doctor> {
        self.get("/v1/doctor", None)
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = self.exchange(&Method::GET, "/metrics", None, Retry::ReadOnce)?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(self.answer_error(&Method::GET, "/metrics", status, &body, None))
        }
    }

    fn get<T: DeserializeOwned>(&self, path: &str, key: Option<&str>) -> Result<T> {
        self.send(&Method::GET, path, None, key, Retry::ReadOnce)
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        key: Option<&str>,
    ) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(|e| {
            ClientError::new(
                ErrorKind::InvalidArgument,
                &self.inner.url,
                format!(
                    "cannot encode the request to the Flint server at {}: {e}",
                    self.inner.url
                ),
            )
        })?;
        self.send(&Method::POST, path, Some(&body), key, Retry::Never)
    }

    /// One request and its JSON answer.
    fn send<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        key: Option<&str>,
        retry: Retry,
    ) -> Result<T> {
        let (status, text) = self
            .exchange(method, path, body, retry)
            .map_err(|e| e.with_key(key))?;
        if !status.is_success() {
            return Err(self.answer_error(method, path, status, &text, key));
        }
        serde_json::from_str(&text).map_err(|e| {
            ClientError::new(
                ErrorKind::Protocol,
                &self.inner.url,
                format!(
                    "the server at {} answered {method} {} with a body that is not the expected JSON ({e}): is it a Flint server of version {}?",
                    self.inner.url,
                    strip_query(path),
                    env!("CARGO_PKG_VERSION")
                ),
            )
            .with_status(status)
        })
    }

    /// Sends the request and reads the whole answer, with the retry rule of the module
    /// documentation: a read is sent again once when the server closed the connection
    /// without answering (within what is left of the timeout); nothing else ever is.
    fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        retry: Retry,
    ) -> Result<(StatusCode, String)> {
        let started = Instant::now();
        let first = self.attempt(method, path, body, None);
        let (failure, error) = match first {
            Ok(answer) => return Ok(answer),
            Err(failed) => failed,
        };
        let left = self.inner.timeout.saturating_sub(started.elapsed());
        if retry == Retry::ReadOnce && failure == Failure::Closed && !left.is_zero() {
            debug_assert!(*method == Method::GET, "only reads are retried");
            return self
                .attempt(method, path, body, Some(left))
                .map_err(|(_, e)| e);
        }
        Err(error)
    }

    /// One attempt. `budget` replaces the agent's timeout (for a retry).
    fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        budget: Option<Duration>,
    ) -> Result<(StatusCode, String), (Failure, ClientError)> {
        let uri = format!("{}{path}", self.inner.url);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(http::header::ACCEPT, "application/json");
        if let Some(authorization) = &self.inner.authorization {
            builder = builder.header(http::header::AUTHORIZATION, authorization.as_str());
        }
        let bad_request = |e: http::Error| {
            (
                Failure::BeforeSending,
                ClientError::new(
                    ErrorKind::InvalidArgument,
                    &self.inner.url,
                    format!("cannot build the request {method} {uri}: {e}"),
                ),
            )
        };
        let agent = &self.inner.agent;
        // Two arms: a request without a body has no content length at all.
        let response = if let Some(bytes) = body {
            let request = builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(bytes)
                .map_err(bad_request)?;
            match budget {
                Some(t) => agent.run(
                    agent
                        .configure_request(request)
                        .timeout_global(Some(t))
                        .build(),
                ),
                None => agent.run(request),
            }
        } else {
            let request = builder.body(()).map_err(bad_request)?;
            match budget {
                Some(t) => agent.run(
                    agent
                        .configure_request(request)
                        .timeout_global(Some(t))
                        .build(),
                ),
                None => agent.run(request),
            }
        };
        let read = |mut response: Response<Body>| {
            let status = response.status();
            response
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .lossy_utf8(true)
                .read_to_string()
                .map(|text| (status, text))
        };
        response
            .and_then(read)
            .map_err(|e| self.transport_error(method, path, &e))
    }

    /// A request that got no (complete) answer.
    fn transport_error(
        &self,
        method: &Method,
        path: &str,
        e: &ureq::Error,
    ) -> (Failure, ClientError) {
        let url = &self.inner.url;
        let route = format!("{method} {}", strip_query(path));
        let may_have_applied = if *method == Method::GET {
            "it changed nothing on the server"
        } else {
            "the request may or may not have been applied, and was not sent again (it could consume quota twice)"
        };
        let (failure, kind, message) = match e {
            ureq::Error::Timeout(ureq::Timeout::Resolve | ureq::Timeout::Connect) => (
                Failure::TimedOut,
                ErrorKind::Connection,
                format!(
                    "cannot reach the Flint server at {url}: no connection within {} (the timeout); is `flint server start` running there, and is the address right?",
                    seconds(self.inner.timeout)
                ),
            ),
            ureq::Error::Timeout(_) => (
                Failure::TimedOut,
                ErrorKind::Connection,
                format!(
                    "the Flint server at {url} did not answer {route} within {} (the timeout): {may_have_applied}; check that the server is running and not overloaded, or raise the timeout",
                    seconds(self.inner.timeout)
                ),
            ),
            ureq::Error::HostNotFound => (
                Failure::BeforeSending,
                ErrorKind::Connection,
                format!("cannot reach the Flint server at {url}: its host name does not resolve; check the URL"),
            ),
            ureq::Error::ConnectionFailed => (
                Failure::BeforeSending,
                ErrorKind::Connection,
                format!("cannot reach the Flint server at {url}: the connection failed; is `flint server start` running there?"),
            ),
            ureq::Error::Io(io) => match io.kind() {
                io::ErrorKind::ConnectionRefused => (
                    Failure::BeforeSending,
                    ErrorKind::Connection,
                    format!("cannot reach the Flint server at {url}: connection refused; is `flint server start` running there?"),
                ),
                io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::NetworkDown
                | io::ErrorKind::AddrNotAvailable => (
                    Failure::BeforeSending,
                    ErrorKind::Connection,
                    format!("cannot reach the Flint server at {url}: {io}; check the URL and the network"),
                ),
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => (
                    Failure::Closed,
                    ErrorKind::Connection,
                    format!(
                        "the Flint server at {url} closed the connection before answering {route} ({io}): {may_have_applied}; was the server stopped or restarted?"
                    ),
                ),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => (
                    Failure::TimedOut,
                    ErrorKind::Connection,
                    format!(
                        "the Flint server at {url} did not answer {route} within {} (the timeout): {may_have_applied}; check that the server is running and not overloaded, or raise the timeout",
                        seconds(self.inner.timeout)
                    ),
                ),
                _ => (
                    Failure::Other,
                    ErrorKind::Connection,
                    format!("the connection to the Flint server at {url} failed during {route} ({io}): {may_have_applied}"),
                ),
            },
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) | ureq::Error::TlsRequired => (
                Failure::BeforeSending,
                ErrorKind::Connection,
                format!("cannot reach the Flint server at {url}: TLS failed ({e}); check the URL's scheme (http or https) and the server's certificate"),
            ),
            _ => (
                Failure::Other,
                ErrorKind::Protocol,
                format!(
                    "the server at {url} gave an answer to {route} that is not HTTP as a Flint server speaks it ({e}): {may_have_applied}; is it a Flint server?"
                ),
            ),
        };
        let mut error = ClientError::new(kind, url, message);
        error.timed_out = failure == Failure::TimedOut;
        (failure, error)
    }

    /// An answer with an error status.
    fn answer_error(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        text: &str,
        key: Option<&str>,
    ) -> ClientError {
        let url = &self.inner.url;
        let route = format!("{method} {}", strip_query(path));
        let body = serde_json::from_str::<ErrorBody>(text)
            .ok()
            .map(|b| b.error);
        let (code, server_message) = match &body {
            Some(d) => (Some(d.code.as_str()), d.message.clone()),
            None => (None, shorten(text)),
        };
        let (kind, message) = match (status.as_u16(), code) {
            (404, Some(code::LIMIT_NOT_FOUND)) => (ErrorKind::LimitNotFound, server_message),
            (400 | 413 | 422, Some(_)) => (ErrorKind::InvalidArgument, server_message),
            (401 | 403, Some(_)) => (ErrorKind::Authentication, server_message),
            (401 | 403, None) => (
                ErrorKind::Authentication,
                format!(
                    "the server refused the token ({status}): pass the token the server was started with"
                ),
            ),
            (500..=599, Some(c)) => (
                ErrorKind::Server,
                format!("the Flint server at {url} failed on {route}: {server_message} ({c}, HTTP {})", status.as_u16()),
            ),
            (500..=599, None) => (
                ErrorKind::Server,
                format!(
                    "the server at {url} failed on {route} with HTTP {status} and no Flint error body ({server_message}): is a proxy in front of it, or is the server restarting?"
                ),
            ),
            (404 | 405, _) => (
                ErrorKind::Protocol,
                format!(
                    "the server at {url} has no route {route} (HTTP {status}: {server_message}): is it a Flint server of version {} or later, and is the URL's path right?",
                    env!("CARGO_PKG_VERSION")
                ),
            ),
            _ => (
                ErrorKind::Protocol,
                format!(
                    "the server at {url} answered {route} with HTTP {status} ({server_message}), which a Flint server does not send: is it a Flint server?"
                ),
            ),
        };
        let mut error = ClientError::new(kind, url, message).with_status(status);
        error.code = code.map(str::to_owned);
        error.with_key(key)
    }

    /// The engine's own "no limit" error for `key`, for requests that cannot be sent.
    fn not_found(&self, key: &str) -> ClientError {
        let message = flint_core::Error::LimitNotFound {
            key: key.to_owned(),
        }
        .to_string();
        let mut error = ClientError::new(ErrorKind::LimitNotFound, &self.inner.url, message);
        error.status = Some(404);
        error.code = Some(code::LIMIT_NOT_FOUND.to_owned());
        error.key = Some(key.to_owned());
        error
    }
}

impl ClientError {
    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status.as_u16());
        self
    }

    fn with_key(mut self, key: Option<&str>) -> Self {
        if self.key.is_none() {
            self.key = key.map(str::to_owned);
        }
        self
    }

    /// For a call about several keys: the key that the server's message names.
    fn with_key_among<'a>(mut self, keys: impl Iterator<Item = &'a str>) -> Self {
        if self.key.is_none() && self.status.is_some() {
            let mut quoted = String::new();
            for key in keys {
                quoted.clear();
                let _ = write!(quoted, "{key:?}");
                if self.message.contains(&quoted) {
                    self.key = Some(key.to_owned());
                    break;
                }
            }
        }
        self
    }
}

/// Resolves a host that is an IP address (`127.0.0.1`, `[::1]`) without a lookup;
/// other names go to ureq's resolver. ureq's own resolver, given a timeout, starts a
/// thread for every lookup, every request (about 50 µs here, half of a loopback
/// request): a client of a server named by address needs none.
#[derive(Debug, Default)]
struct LiteralResolver {
    names: ureq::unversioned::resolver::DefaultResolver,
}

impl ureq::unversioned::resolver::Resolver for LiteralResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> std::result::Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let literal = uri.host().and_then(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .ok()
        });
        let port = uri.port_u16().or_else(|| match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        match (literal, port) {
            (Some(ip), Some(port)) => {
                let mut addrs = self.empty();
                addrs.push(std::net::SocketAddr::new(ip, port));
                Ok(addrs)
            }
            _ => self.names.resolve(uri, config, timeout),
        }
    }
}

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// Sends a request's headers and its body in one write. ureq writes them in two, so the
/// server wakes twice per POST (its headers, then its body): about 15 µs of a 35 µs
/// loopback check here. This transport holds back headers that announce a body and
/// sends them with the body's first bytes, which ureq writes after them into the rest
/// of the same output buffer.
#[derive(Debug)]
struct Coalescing {
    inner: Box<dyn Transport>,
    /// Bytes of headers at the start of the output buffer, not sent yet.
    held: usize,
}

/// Whether `bytes` are complete request headers announcing a non-empty body.
fn announces_body(bytes: &[u8]) -> bool {
    let Some(head) = bytes.strip_suffix(b"\r\n\r\n") else {
        return false;
    };
    // The start of a request ("POST /v1/check HTTP/1.1"), never a piece of a body.
    let mut lines = head.split(|b| *b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let method_end = request_line.iter().position(|b| *b == b' ').unwrap_or(0);
    let is_request = method_end > 0
        && request_line[..method_end]
            .iter()
            .all(u8::is_ascii_uppercase)
        && request_line.get(method_end + 1) == Some(&b'/')
        && request_line.ends_with(b" HTTP/1.1\r");
    is_request
        && lines.any(|line| {
            let line = String::from_utf8_lossy(line).to_ascii_lowercase();
            line.strip_prefix("content-length:")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
}

impl Buffers for Coalescing {
    fn output(&mut self) -> &mut [u8] {
        let held = self.held;
        &mut self.inner.buffers().output()[held..]
    }

    // Only while headers are held (between them and the body) are these buffers in
    // use, and nothing is read then: the request is not complete yet.
    fn input(&self) -> &[u8] {
        &[]
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.inner.buffers().input_append_buf()
    }

    fn input_appended(&mut self, amount: usize) {
        self.inner.buffers().input_appended(amount);
    }

    fn input_consume(&mut self, amount: usize) {
        self.inner.buffers().input_consume(amount);
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        let held = self.held;
        let (tmp, output) = self.inner.buffers().tmp_and_output();
        (tmp, &mut output[held..])
    }

    fn can_use_input(&self) -> bool {
        false
    }
}

impl Transport for Coalescing {
    fn buffers(&mut self) -> &mut dyn Buffers {
        if self.held == 0 {
            self.inner.buffers()
        } else {
            self
        }
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> std::result::Result<(), ureq::Error> {
        let total = self.held + amount;
        if self.held == 0 {
            let output = self.inner.buffers().output();
            // Hold the headers only when the body has room after them in the buffer.
            if total < output.len() && announces_body(&output[..total]) {
                self.held = total;
                return Ok(());
            }
        }
        self.held = 0;
        self.inner.transmit_output(total, timeout)
    }

    fn maybe_await_input(
        &mut self,
        timeout: NextTimeout,
    ) -> std::result::Result<bool, ureq::Error> {
        self.inner.maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// Wraps every connection in [`Coalescing`].
#[derive(Debug)]
struct CoalescingConnector;

impl Connector<Box<dyn Transport>> for CoalescingConnector {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| Box::new(Coalescing { inner, held: 0 }) as Box<dyn Transport>))
    }
}

/// The agent of a client: one pool of keep-alive connections.
fn new_agent(timeout: Duration) -> Agent {
    let config = Agent::config_builder()
        // Error statuses are answers: their JSON bodies carry the code and message.
        .http_status_as_error(false)
        // A redirected POST would be sent twice; a Flint server never redirects.
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .max_idle_age(MAX_IDLE_AGE)
        .max_idle_connections(MAX_IDLE_CONNECTIONS)
        .max_idle_connections_per_host(MAX_IDLE_CONNECTIONS)
        // Talk to the server directly: an HTTP_PROXY meant for the internet must not
        // carry the limiter's traffic (and its token) elsewhere.
        .proxy(None)
        .user_agent(concat!("flint-client/", env!("CARGO_PKG_VERSION")))
        .build();
    Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new().chain(CoalescingConnector),
        LiteralResolver::default(),
    )
}

/// Checks a server URL and returns it without trailing slashes.
fn validate_url(url: &str) -> Result<String> {
    let fail = |problem: &str| {
        Err(ClientError::new(
            ErrorKind::InvalidArgument,
            url,
            format!("the Flint server URL {url:?} {problem}"),
        ))
    };
    if url.is_empty() {
        return fail("is empty: pass the server's address, such as \"http://127.0.0.1:7878\"");
    }
    if !url.contains("://") {
        return fail(&format!(
            "has no scheme: write it with http:// or https://, such as \"http://{url}\""
        ));
    }
    let uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            return fail(&format!(
                "is not a valid URL ({e}): pass an address such as \"http://127.0.0.1:7878\""
            ))
        }
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return fail(&format!(
                "has the scheme {other:?}: a Flint server speaks http:// or https://"
            ))
        }
        None => return fail("has no scheme: write it with http:// or https://"),
    }
    let Some(authority) = uri.authority() else {
        return fail("has no host: pass an address such as \"http://127.0.0.1:7878\"");
    };
    if authority.host().is_empty() {
        return fail("has no host: pass an address such as \"http://127.0.0.1:7878\"");
    }
    if authority.as_str().len() > authority.host().len() && authority.port_u16().is_none() {
        return fail(
            "has an invalid port: pass a number from 1 to 65535, such as \"http://127.0.0.1:7878\"",
        );
    }
    if authority.as_str().contains('@') {
        return fail("holds a user name or password: pass the server's token separately (token=... or --token)");
    }
    if uri.query().is_some() || url.contains('#') {
        return fail("has a query or a fragment: pass only the server's address (and a path prefix, behind a proxy)");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Percent-encodes every byte but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so that `/`, `:`, `?`, `%`, spaces and non-ASCII keys
/// reach the server intact in a path segment or a query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A body shown in a message: one line, at most 200 characters.
fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "an empty body".to_owned();
    }
    if line.chars().count() <= MAX {
        return line;
    }
    let head: String = line.chars().take(MAX).collect();
    format!("{head}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = |u: &str| validate_url(u).unwrap();
        assert_eq!(ok("http://127.0.0.1:7878"), "http://127.0.0.1:7878");
        assert_eq!(ok("http://127.0.0.1:7878/"), "http://127.0.0.1:7878");
        assert_eq!(
            ok("https://flint.internal/limiter/"),
            "https://flint.internal/limiter"
        );
        assert_eq!(ok("http://[::1]:7878"), "http://[::1]:7878");
        for (bad, says) in [
            ("", "is empty"),
            ("127.0.0.1:7878", "has no scheme"),
            ("ftp://host", "has the scheme \"ftp\""),
            ("http://", "not a valid URL"),
            ("http://h:7878/?x=1", "has a query"),
            ("http://h:7878#frag", "fragment"),
            ("http://user:pw@h:7878", "user name or password"),
            ("http://h:notaport", "port"),
            ("http://h:", "port"),
        ] {
            let e = validate_url(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message().contains(says), "{bad}: {}", e.message());
        }
    }

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode("api:user-42"), "api%3Auser-42");
        assert_eq!(encode("route:/v1/chat"), "route%3A%2Fv1%2Fchat");
        assert_eq!(encode("a b%c?d#e&f=g+h"), "a%20b%25c%3Fd%23e%26f%3Dg%2Bh");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn a_token_never_shows_in_debug() {
        let client =
            Client::new("http://127.0.0.1:1", Some("s3cret"), Duration::from_secs(1)).unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn bad_tokens_and_timeouts_are_refused() {
        let url = "http://127.0.0.1:1";
        let e = Client::new(url, Some(""), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = Client::new(url, Some("a\nb"), Duration::from_secs(1)).unwrap_err();
        assert!(e.message().contains("header"), "{e}");
        let e = Client::new(url, None, Duration::ZERO).unwrap_err();
        assert!(e.message().contains("zero"), "{e}");
    }

    #[test]
    fn the_key_of_a_check_all_error_is_found_in_the_message() {
        let mut e = ClientError::new(
            ErrorKind::LimitNotFound,
            "http://h",
            "no limit is configured for key \"b:2\": call limit(\"b:2\", rate=..., per=...) first"
                .into(),
        );
        e.status = Some(404);
        let e = e.with_key_among(["a", "b:2"].into_iter());
        assert_eq!(e.key(), Some("b:2"));
    }
}

#[cfg(test)]
mod coalescing_tests {
    use super::announces_body;

    #[test]
    fn only_complete_headers_with_a_body_are_held_back() {
        assert!(announces_body(
            b"POST /v1/check HTTP/1.1\r\nContent-Length: 20\r\n\r\n"
        ));
        assert!(announces_body(
            b"POST /v1/check HTTP/1.1\r\ncontent-length:3\r\n\r\n"
        ));
        assert!(!announces_body(
            b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n"
        ));
        assert!(!announces_body(
            b"POST /v1/log/flush HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!announces_body(
            b"POST /v1/check HTTP/1.1\r\ncontent-length: 20\r\n"
        ));
    }
}
