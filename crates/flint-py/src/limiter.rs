//! `flint._native.Limiter`, `CheckResult` and `ManualClock`: conversions around
//! `flint_core`, with the GIL released for every engine call.

use std::sync::Arc;

use flint_core::{to_unix_seconds, Algorithm, Clock, Decision, Limiter, ManualClock, Options};
use flint_server::api::{
    self, change_name, CheckAllResult, Compacted, Doctor, HistoryEntry, KeyStatus,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyList};

use crate::convert::{self, Given};
use crate::errors::{protocol, to_py};

/// The result of one check: immutable, true when allowed.
#[pyclass(name = "CheckResult", module = "flint._native", frozen)]
pub struct PyCheckResult {
    /// Whether the request was allowed.
    #[pyo3(get)]
    allowed: bool,
    /// Units left after this decision.
    #[pyo3(get)]
    remaining: u64,
    /// Unix seconds at which the key is back to full capacity.
    #[pyo3(get)]
    reset_at: f64,
    /// Seconds until a request of this cost would be allowed (0.0 when allowed).
    #[pyo3(get)]
    retry_after: f64,
    /// The limit's capacity: its burst (the rate unless set).
    #[pyo3(get)]
    limit: u64,
    /// The key.
    #[pyo3(get)]
    key: String,
    /// The limit's algorithm.
    #[pyo3(get)]
    algorithm: &'static str,
    /// The cost asked for.
    #[pyo3(get)]
    cost: u64,
    /// True when a shadow limit allowed a request it would have denied (`allowed` is
    /// true and nothing was consumed).
    #[pyo3(get)]
    shadow_denied: bool,
}

impl PyCheckResult {
    fn new(key: String, d: &Decision) -> Self {
        PyCheckResult {
            allowed: d.allowed,
            remaining: d.remaining,
            reset_at: to_unix_seconds(d.reset_at),
            retry_after: d.retry_after as f64 / 1e9,
            limit: d.limit,
            key,
            algorithm: d.algorithm.name(),
            cost: d.cost,
            shadow_denied: d.shadow_denied,
        }
    }

    /// A result that came over HTTP (`SharedLimiter`); `url` names the server in the
    /// message when its algorithm is unknown here.
    pub(crate) fn from_api(py: Python<'_>, r: api::CheckResult, url: &str) -> PyResult<Self> {
        let algorithm: Algorithm = r.algorithm.parse().map_err(|_| {
            protocol(
                py,
                &format!(
                    "the Flint server at {url} answered with the algorithm {:?}, which this version of the package does not know: upgrade the package to the server's version",
                    r.algorithm
                ),
            )
        })?;
        Ok(PyCheckResult {
            allowed: r.allowed,
            remaining: r.remaining,
            reset_at: r.reset_at,
            retry_after: r.retry_after,
            limit: r.limit,
            key: r.key,
            algorithm: algorithm.name(),
            cost: r.cost,
            shadow_denied: r.shadow_denied,
        })
    }

    fn fields(&self) -> (bool, bool, u64, u64, u64, u64, u64, &str, &str) {
        (
            self.allowed,
            self.shadow_denied,
            self.remaining,
            self.reset_at.to_bits(),
            self.retry_after.to_bits(),
            self.limit,
            self.cost,
            &self.key,
            self.algorithm,
        )
    }
}

#[pymethods]
impl PyCheckResult {
    fn __bool__(&self) -> bool {
        self.allowed
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let key = self.key.clone().into_pyobject(py)?.repr()?;
        // Python's float repr ("0.0", "1700000000.25"), not Rust's ("0").
        let retry_after = PyFloat::new(py, self.retry_after).repr()?;
        let reset_at = PyFloat::new(py, self.reset_at).repr()?;
        Ok(format!(
            "CheckResult(key={key}, allowed={}, remaining={}, limit={}, cost={}, retry_after={retry_after}, reset_at={reset_at}, algorithm='{}'{})",
            if self.allowed { "True" } else { "False" },
            self.remaining,
            self.limit,
            self.cost,
            self.algorithm,
            // Only a shadow limit's would-be denial says so.
            if self.shadow_denied { ", shadow_denied=True" } else { "" }
        ))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyCheckResult>()
            .is_ok_and(|o| o.get().fields() == self.fields())
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.fields().hash(&mut hasher);
        hasher.finish()
    }

    /// The fields as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("key", &self.key)?;
        d.set_item("allowed", self.allowed)?;
        d.set_item("remaining", self.remaining)?;
        d.set_item("reset_at", self.reset_at)?;
        d.set_item("retry_after", self.retry_after)?;
        d.set_item("limit", self.limit)?;
        d.set_item("algorithm", self.algorithm)?;
        d.set_item("cost", self.cost)?;
        d.set_item("shadow_denied", self.shadow_denied)?;
        Ok(d)
    }
}

/// A clock that moves only when told to, for tests.
#[pyclass(name = "ManualClock", module = "flint._native", frozen)]
pub struct PyManualClock(Arc<ManualClock>);

#[pymethods]
impl PyManualClock {
    #[new]
    #[pyo3(signature = (start=None))]
    fn new(py: Python<'_>, start: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = match start {
            Some(s) => convert::seconds(s, "start")?,
            None => flint_core::SystemClock.now(),
        };
        let clock = ManualClock::try_new(start).map_err(|e| to_py(py, e))?;
        Ok(PyManualClock(Arc::new(clock)))
    }

    /// Moves the clock forward by `seconds`.
    fn advance(&self, py: Python<'_>, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        let nanos = convert::seconds(seconds, "advance")?;
        self.0.try_advance(nanos).map_err(|e| to_py(py, e))
    }

    /// Sets the clock to `unix_seconds` (it may go backwards, as a real clock can).
    fn set(&self, py: Python<'_>, unix_seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        let at = convert::seconds(unix_seconds, "set")?;
        self.0.try_set(at).map_err(|e| to_py(py, e))
    }

    /// The clock's time in Unix seconds.
    fn now(&self) -> f64 {
        to_unix_seconds(self.0.now())
    }

    fn __repr__(&self) -> String {
        format!("ManualClock(now={})", self.now())
    }
}

/// A persistent rate limiter over one data directory (embedded mode). The engine
/// guards against use in a forked child (`Error::Forked`) and leaks rather than
/// closes a parent's limiter there.
#[pyclass(name = "Limiter", module = "flint._native", subclass, frozen)]
pub struct PyLimiter {
    inner: Limiter,
}

impl PyLimiter {
    #[expect(
        clippy::unnecessary_wraps,
        reason = "every method reaches the engine through one fallible accessor"
    )]
    fn engine(&self, _py: Python<'_>) -> PyResult<&Limiter> {
        Ok(&self.inner)
    }
}

#[pymethods]
impl PyLimiter {
    #[new]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "PyO3 extracts arguments as owned values"
    )]
    #[pyo3(
        signature = (data_dir=Given::ABSENT, *, sync=Given::ABSENT, flush_every_ms=Given::ABSENT, flush_every_events=Given::ABSENT, clock=None),
        text_signature = "(data_dir='.flint', *, sync='always', flush_every_ms=100, flush_every_events=100, clock=None)"
    )]
    fn new(
        py: Python<'_>,
        data_dir: Given<'_>,
        sync: Given<'_>,
        flush_every_ms: Given<'_>,
        flush_every_events: Given<'_>,
        clock: Option<&Bound<'_, PyManualClock>>,
    ) -> PyResult<Self> {
        let defaults = Options::default();
        let data_dir = match data_dir.value() {
            Some(d) => convert::path(d, "data_dir")?,
            None => ".flint".into(),
        };
        let sync = match sync.value() {
            Some(s) => convert::text(s, "sync", None, "pass \"always\" or \"batch\"")?
                .parse()
                .map_err(|e| to_py(py, e))?,
            None => defaults.sync,
        };
        let example = defaults.flush_every_ms.to_string();
        let flush_every_ms = match flush_every_ms.value() {
            Some(n) => convert::whole(
                n,
                "flush_every_ms",
                None,
                0,
                &format!("{example} (milliseconds)"),
            )?,
            None => defaults.flush_every_ms,
        };
        let example = defaults.flush_every_events.to_string();
        let flush_every_events = match flush_every_events.value() {
            Some(n) => convert::whole(n, "flush_every_events", None, 0, &example)?,
            None => defaults.flush_every_events,
        };
        let mut options = defaults
            .sync(sync)
            .flush_every_ms(flush_every_ms)
            .flush_every_events(flush_every_events);
        if let Some(clock) = clock {
            options = options.clock(clock.get().0.clone());
        }
        let limiter = py
            .detach(|| Limiter::open(&data_dir, options))
            .map_err(|e| to_py(py, e))?;
        Ok(PyLimiter { inner: limiter })
    }

    /// The data directory.
    #[getter]
    fn data_dir(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.engine(py)?.data_dir().display().to_string())
    }

    /// `"always"` or `"batch"`.
    #[getter]
    fn sync(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.engine(py)?.options().sync.name())
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
        let engine = self.engine(py)?;
        let change = py
            .detach(|| engine.limit(&key, quota))
            .map_err(|e| to_py(py, e))?;
        Ok(change_name(change))
    }

    /// What `check` would answer now for `cost` units of `key`, consuming nothing
    /// and writing nothing.
    #[pyo3(signature = (key, *, cost=None))]
    fn peek(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCheckResult> {
        let (key, cost) = convert::key_and_cost(key, cost)?;
        let engine = self.engine(py)?;
        let decision = py
            .detach(|| engine.peek(&key, cost))
            .map_err(|e| to_py(py, e))?;
        Ok(PyCheckResult::new(key, &decision))
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
        let engine = self.engine(py)?;
        let decision = py
            .detach(|| engine.check(&key, cost))
            .map_err(|e| to_py(py, e))?;
        Ok(PyCheckResult::new(key, &decision))
    }

    /// `check`, made only if the engine's state lock is free right now: `None` when
    /// another call holds it, and then nothing was decided. The async methods use it
    /// with `sync="batch"` (where a check never waits for the disk) to decide in the
    /// event loop's thread instead of handing the call to an executor thread.
    #[pyo3(signature = (key, *, cost=None))]
    fn check_nowait(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<PyCheckResult>> {
        let (key, cost) = convert::key_and_cost(key, cost)?;
        let engine = self.engine(py)?;
        let decision = py
            .detach(|| match engine.deferred().try_check(&key, cost)? {
                // With sync="always" an allowed check still waits for its sync.
                Some(pending) => pending.wait().map(Some),
                None => Ok(None),
            })
            .map_err(|e| to_py(py, e))?;
        Ok(decision.map(|d| PyCheckResult::new(key, &d)))
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
        let engine = self.engine(py)?;
        py.detach(|| engine.allow(&key, cost))
            .map_err(|e| to_py(py, e))
    }

    /// Checks several keys, all or nothing.
    fn check_all<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let items = convert::items(items, "check_all")?;
        let borrowed: Vec<(&str, u64)> = items.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        let engine = self.engine(py)?;
        let result = py
            .detach(|| {
                engine
                    .check_all(&borrowed)
                    .map(|m| CheckAllResult::from(&m))
            })
            .map_err(|e| to_py(py, e))?;
        convert::check_all(py, &result)
    }

    /// Like `check_all`, returning only whether it was allowed.
    fn allow_all(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<bool> {
        let items = convert::items(items, "allow_all")?;
        let borrowed: Vec<(&str, u64)> = items.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        let engine = self.engine(py)?;
        py.detach(|| engine.allow_all(&borrowed))
            .map_err(|e| to_py(py, e))
    }

    /// Puts `key` back to full capacity.
    fn reset(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = convert::key(key)?;
        let engine = self.engine(py)?;
        py.detach(|| engine.reset(&key)).map_err(|e| to_py(py, e))
    }

    /// Gives back `cost` units of `key` consumed earlier, never beyond full capacity.
    #[pyo3(signature = (key, *, cost=None))]
    fn refund(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        cost: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (key, cost) = convert::key_and_cost(key, cost)?;
        let engine = self.engine(py)?;
        py.detach(|| engine.refund(&key, cost))
            .map_err(|e| to_py(py, e))
    }

    /// Deletes the limit of `key`.
    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = convert::key(key)?;
        let engine = self.engine(py)?;
        py.detach(|| engine.remove(&key)).map_err(|e| to_py(py, e))
    }

    /// The status dict of `key`, or None.
    fn status<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let key = convert::key(key)?;
        let engine = self.engine(py)?;
        let status = py
            .detach(|| engine.status(&key).map(|s| s.as_ref().map(KeyStatus::from)))
            .map_err(|e| to_py(py, e))?;
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
        let engine = self.engine(py)?;
        let all = py
            .detach(|| {
                engine
                    .list_kind(prefix.as_deref(), kind)
                    .map(|all| statuses(&all))
            })
            .map_err(|e| to_py(py, e))?;
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
        let engine = self.engine(py)?;
        let events = py
            .detach(|| {
                let events = engine.history(&key, limit)?;
                Ok::<_, flint_core::Error>(
                    events.iter().map(HistoryEntry::from).collect::<Vec<_>>(),
                )
            })
            .map_err(|e| to_py(py, e))?;
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
        let engine = self.engine(py)?;
        let ranked = py
            .detach(|| engine.top(by, limit).map(|all| statuses(&all)))
            .map_err(|e| to_py(py, e))?;
        convert::statuses(py, &ranked)
    }

    /// Checks the data directory and the engine.
    fn doctor<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.engine(py)?;
        let report = py
            .detach(|| engine.doctor().map(|r| Doctor::from(&r)))
            .map_err(|e| to_py(py, e))?;
        convert::doctor(py, &report)
    }

    /// Drops now every key made from a template that is back at full capacity (the
    /// background sweep does this over time); returns how many were dropped.
    fn sweep(&self, py: Python<'_>) -> PyResult<usize> {
        let engine = self.engine(py)?;
        py.detach(|| engine.sweep()).map_err(|e| to_py(py, e))
    }

    /// Syncs every event written so far.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine(py)?;
        py.detach(|| engine.flush()).map_err(|e| to_py(py, e))
    }

    /// Writes a snapshot and starts a new log tail.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let engine = self.engine(py)?;
        let r = py
            .detach(|| engine.compact().map(|r| Compacted::from(&r)))
            .map_err(|e| to_py(py, e))?;
        convert::compacted(py, &r)
    }

    /// Syncs and releases the data directory; closing twice is fine.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine(py)?;
        py.detach(|| engine.close()).map_err(|e| to_py(py, e))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let engine = self.engine(py)?;
        Ok(format!(
            "Limiter(data_dir={:?}, sync={:?})",
            engine.data_dir().display().to_string(),
            engine.options().sync.name()
        ))
    }
}

/// Engine statuses as the API's, converted without the GIL.
fn statuses(all: &[flint_core::Status]) -> Vec<KeyStatus> {
    all.iter().map(KeyStatus::from).collect()
}

/// The Prometheus text (OpenMetrics) of an embedded limiter: the engine's totals, its
/// checks since open by outcome, one series per template, and the top `per_key` keys by
/// checks when given (see `flint_server::metrics::engine_text`).
#[pyfunction]
#[pyo3(signature = (limiter, per_key=None))]
pub fn metrics_text(
    py: Python<'_>,
    limiter: &Bound<'_, PyLimiter>,
    per_key: Option<usize>,
) -> PyResult<String> {
    let engine = limiter.get().engine(py)?;
    let options = flint_server::EngineMetricsOptions { per_key };
    py.detach(|| flint_server::engine_text(engine, &options))
        .map_err(|e| to_py(py, e))
}
