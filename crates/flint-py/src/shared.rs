//! `flint._native.SharedLimiter`: the methods of `Limiter` over HTTP, through
//! `flint_server::client::Client`, with the GIL released for every request.
//!
//! Arguments pass through the same conversions as `Limiter`'s (`convert.rs`), so both
//! refuse the same Python values with the same messages before anything is sent; what
//! only the engine can check (a key's length, a cost above the rate, an unknown key)
//! is checked by the server, whose message is raised as it came. Results become the
//! same `CheckResult` and dicts as `Limiter`'s, built from the same API bodies.

use std::sync::{PoisonError, RwLock};

use flint_server::api::LimitRequest;
use flint_server::client::Client;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList};

use crate::convert::{self, Given};
use crate::errors::{client_to_py, closed, protocol};
use crate::limiter::PyCheckResult;

/// A client of a Flint server (shared mode) with the methods of `Limiter`.
///
/// Nothing that may consume quota is ever sent twice: a check whose answer was lost
/// raises `FlintConnectionError` ("may or may not have been applied") rather than be
/// retried. Safe to share between threads (one pool of keep-alive connections), and
/// across a fork: a child process makes connections of its own.
#[pyclass(name = "SharedLimiter", module = "flint._native", subclass, frozen)]
pub struct PySharedLimiter {
    /// The client, and the process that made it; `None` once closed.
    client: RwLock<Option<(Client, u32)>>,
    url: String,
    timeout: f64,
}

impl PySharedLimiter {
    /// The client for this process: after a fork, the child replaces its parent's
    /// (whose pooled connections are sockets shared with the parent) by one with a
    /// pool of its own.
    fn client(&self, py: Python<'_>) -> PyResult<Client> {
        let pid = std::process::id();
        {
            let guard = self.client.read().unwrap_or_else(PoisonError::into_inner);
            match &*guard {
                Some((client, owner)) if *owner == pid => return Ok(client.clone()),
                Some(_) => {}
                None => return Err(self.closed(py)),
            }
        }
        let mut guard = self.client.write().unwrap_or_else(PoisonError::into_inner);
        match guard.take() {
            Some((client, owner)) if owner == pid => {
                *guard = Some((client.clone(), owner));
                Ok(client)
            }
            Some((inherited, _)) => {
                let fresh = inherited.with_new_pool();
                // Dropping the parent's pool is safe (closing a copy of a descriptor
                // sends nothing), but nothing at all is done with it: forget it.
                std::mem::forget(inherited);
                *guard = Some((fresh.clone(), pid));
                Ok(fresh)
            }
            None => Err(self.closed(py)),
        }
    }

    fn closed(&self, py: Python<'_>) -> PyErr {
        closed(
            py,
            &format!(
                "this SharedLimiter (Flint server at {}) is closed: create a new one",
                self.url
            ),
        )
    }
}

#[pymethods]
impl PySharedLimiter {
    #[new]
    #[pyo3(
        signature = (url, *, token=None, timeout=Given::ABSENT),
        text_signature = "(url, *, token=None, timeout=10.0)"
    )]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts arguments as owned values"
    )]
    fn new(
        py: Python<'_>,
        url: &Bound<'_, PyAny>,
        token: Option<&Bound<'_, PyAny>>,
        timeout: Given<'_>,
    ) -> PyResult<Self> {
        let url = convert::text(
            url,
            "url",
            None,
            "pass the server's address, such as \"http://127.0.0.1:7878\"",
        )?;
        let token = convert::optional_text(
            token,
            "token",
            "pass the token the server was started with, or None",
        )?;
        let timeout = match timeout.value() {
            Some(t) => convert::timeout(t)?,
            None => std::time::Duration::from_secs(10),
        };
        let client =
            Client::new(&url, token.as_deref(), timeout).map_err(|e| client_to_py(py, &e))?;
        Ok(PySharedLimiter {
            url: client.url().to_owned(),
            timeout: timeout.as_secs_f64(),
            client: RwLock::new(Some((client, std::process::id()))),
        })
    }

    /// The server's URL.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// Seconds that each request may take, from connecting to the whole answer.
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }

    /// `GET /v1/health` (no token needed): `{"ok": True, "version": ...}` when the
    /// server answers; raises `FlintConnectionError` otherwise.
    fn health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let client = self.client(py)?;
        let health = py
            .detach(|| client.health())
            .map_err(|e| client_to_py(py, &e))?;
        let d = PyDict::new(py);
        d.set_item("ok", health.ok)?;
        d.set_item("version", health.version)?;
        Ok(d)
    }

    /// Configures the limit of `key`, or of a template (a key ending in `*`); the same
    /// settings again change nothing. `burst` (`token_bucket` only) is the capacity,
    /// refilled at `rate` per `per`; `mode` is "enforce" or "shadow".
    /// Returns "created", "updated" or "unchanged".
    #[pyo3(
        signature = (key, *, rate, per, algorithm=Given::ABSENT, burst=None, mode=Given::ABSENT),
        text_signature = "($self, key, *, rate, per, algorithm='token_bucket', burst=None, mode='enforce')"
    )]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts arguments as owned values"
    )]
    #[expect(
        clippy::too_many_arguments,
        reason = "the keyword arguments of limit() in Python"
    )]
    fn limit(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        rate: &Bound<'_, PyAny>,
        per: &Bound<'_, PyAny>,
        algorithm: Given<'_>,
        burst: Option<&Bound<'_, PyAny>>,
        mode: Given<'_>,
    ) -> PyResult<&'static str> {
        let (key, quota) =
            convert::limit_args(key, rate, per, algorithm.value(), burst, mode.value())?;
        let request = LimitRequest {
            key,
            rate: quota.rate(),
            per: quota.period().to_string(),
            algorithm: Some(quota.algorithm().name().to_owned()),
            burst: quota.has_burst().then_some(quota.burst()),
            mode: quota.is_shadow().then(|| quota.mode().name().to_owned()),
        };
        let client = self.client(py)?;
        let response = py
            .detach(|| client.limit(&request))
            .map_err(|e| client_to_py(py, &e))?;
        match response.change.as_str() {
            "created" => Ok("created"),
            "updated" => Ok("updated"),
            "unchanged" => Ok("unchanged"),
            other => Err(protocol(
                py,
                &format!(
                    "the Flint server at {} answered the change {other:?}, which this version of the package does not know: upgrade the package to the server's version",
                    self.url
                ),
            )),
        }
    }

    /// What `check` would answer now for `cost` units of `key`, consuming nothing.
    #[pyo3(signature = (key, *, cost=None))]
    fn peek(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCheckResult> {
        let (key, cost) = convert::key_and_cost(key, cost)?;
        let client = self.client(py)?;
        let result = py
            .detach(|| client.peek(&key, cost))
            .map_err(|e| client_to_py(py, &e))?;
        PyCheckResult::from_api(py, result, &self.url)
    }

    /// Checks `key` for `cost` units, consuming them when allowed.
    #[pyo3(signature = (key, *, cost=None))]
    fn check(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCheckResult> {
        let (key, cost) = convert::key_and_cost(key, cost)?;
        let client = self.client(py)?;
        let result = py
            .detach(|| client.check(&key, cost))
            .map_err(|e| client_to_py(py, &e))?;
        PyCheckResult::from_api(py, result, &self.url)
    }

    /// Like `check`, returning only whether it was allowed.
    #[pyo3(signature = (key, *, cost=None))]
    fn allow(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let (key, cost) = convert::key_and_cost(key, cost)?;
        let client = self.client(py)?;
        py.detach(|| client.check(&key, cost))
            .map(|r| r.allowed)
            .map_err(|e| client_to_py(py, &e))
    }

    /// Checks several keys, all or nothing.
    fn check_all<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let items = convert::items(items, "check_all")?;
        let borrowed: Vec<(&str, u64)> = items.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        let client = self.client(py)?;
        let result = py
            .detach(|| client.check_all(&borrowed))
            .map_err(|e| client_to_py(py, &e))?;
        convert::check_all(py, &result)
    }

    /// Like `check_all`, returning only whether it was allowed.
    fn allow_all(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<bool> {
        let items = convert::items(items, "allow_all")?;
        let borrowed: Vec<(&str, u64)> = items.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        let client = self.client(py)?;
        py.detach(|| client.check_all(&borrowed))
            .map(|r| r.allowed)
            .map_err(|e| client_to_py(py, &e))
    }

    /// Puts `key` back to full capacity.
    fn reset(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = convert::key(key)?;
        let client = self.client(py)?;
        py.detach(|| client.reset(&key))
            .map_err(|e| client_to_py(py, &e))
    }

    /// Gives back `cost` units of `key` consumed earlier (`POST /v1/refund`).
    #[pyo3(signature = (key, *, cost=None))]
    fn refund(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (key, cost) = convert::key_and_cost(key, cost)?;
        let client = self.client(py)?;
        py.detach(|| client.refund(&key, cost))
            .map_err(|e| client_to_py(py, &e))
    }

    /// Deletes the limit of `key`.
    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = convert::key(key)?;
        let client = self.client(py)?;
        py.detach(|| client.remove(&key))
            .map_err(|e| client_to_py(py, &e))
    }

    /// The status dict of `key`, or None.
    fn status<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let key = convert::key(key)?;
        let client = self.client(py)?;
        let status = py
            .detach(|| client.status(&key))
            .map_err(|e| client_to_py(py, &e))?;
        status.map(|s| convert::status(py, &s)).transpose()
    }

    /// Status dicts of every limit (whose key starts with `prefix`), sorted by key;
    /// `kind` is "all", "keys" or "templates".
    #[pyo3(
        signature = (prefix=None, kind=Given::ABSENT),
        text_signature = "($self, prefix=None, kind='all')"
    )]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts arguments as owned values"
    )]
    fn list<'py>(
        &self,
        py: Python<'py>,
        prefix: Option<&Bound<'py, PyAny>>,
        kind: Given<'py>,
    ) -> PyResult<Bound<'py, PyList>> {
        let fix = "pass a str such as \"api:\", or None for every key";
        let prefix = convert::optional_text(prefix, "prefix", fix)?;
        let kind = convert::list_kind(kind.value())?;
        let client = self.client(py)?;
        let all = py
            .detach(|| client.list(prefix.as_deref(), kind))
            .map_err(|e| client_to_py(py, &e))?;
        convert::statuses(py, &all)
    }

    /// The most recent decisions of `key`, oldest first.
    #[pyo3(
        signature = (key, limit=Given::ABSENT),
        text_signature = "($self, key, limit=100)"
    )]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts arguments as owned values"
    )]
    fn history<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        limit: Given<'py>,
    ) -> PyResult<Bound<'py, PyList>> {
        let key = convert::key(key)?;
        let limit = convert::history_limit(limit.value(), &key)?;
        let client = self.client(py)?;
        let events = py
            .detach(|| client.history(&key, limit))
            .map_err(|e| client_to_py(py, &e))?;
        convert::history(py, &events)
    }

    /// The keys with the most `by`: `denied`, `allowed`, `denied_cost`, `allowed_cost`,
    /// `shadow_denied` or `checks`.
    #[pyo3(
        signature = (by=Given::ABSENT, limit=Given::ABSENT),
        text_signature = "($self, by='denied', limit=20)"
    )]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts arguments as owned values"
    )]
    fn top<'py>(
        &self,
        py: Python<'py>,
        by: Given<'py>,
        limit: Given<'py>,
    ) -> PyResult<Bound<'py, PyList>> {
        let (by, limit) = convert::top_args(by.value(), limit.value())?;
        let client = self.client(py)?;
        let ranked = py
            .detach(|| client.top(by.name(), limit))
            .map_err(|e| client_to_py(py, &e))?;
        convert::statuses(py, &ranked)
    }

    /// Checks the server's data directory and engine.
    fn doctor<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let client = self.client(py)?;
        let report = py
            .detach(|| client.doctor())
            .map_err(|e| client_to_py(py, &e))?;
        convert::doctor(py, &report)
    }

    /// Syncs every event the server has written so far (`POST /v1/log/flush`).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let client = self.client(py)?;
        py.detach(|| client.flush())
            .map_err(|e| client_to_py(py, &e))
    }

    /// Has the server write a snapshot and start a new log tail.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let client = self.client(py)?;
        let r = py
            .detach(|| client.compact())
            .map_err(|e| client_to_py(py, &e))?;
        convert::compacted(py, &r)
    }

    /// Closes the client's connections; later calls raise `FlintError`. Requests in
    /// flight in other threads finish. Closing twice is fine.
    fn close(&self) {
        let taken = self
            .client
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match taken {
            Some((client, owner)) if owner == std::process::id() => drop(client),
            // A parent's client in a forked child: leave its connections alone.
            Some((inherited, _)) => std::mem::forget(inherited),
            None => {}
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        // Python's float repr ("10.0"), not Rust's ("10").
        let timeout = PyFloat::new(py, self.timeout).repr()?;
        Ok(format!(
            "SharedLimiter(url={:?}, timeout={timeout})",
            self.url
        ))
    }
}
