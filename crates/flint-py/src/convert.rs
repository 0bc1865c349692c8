//! Python values to engine arguments, and results to Python values. Results pass
//! through the bodies of the HTTP API (`flint_server::api`), so that `Limiter` and
//! `SharedLimiter` build the same dicts with the same code. Type checks
//! that Python needs (a bool is not a rate, a float is not a cost) live here; every
//! rule about values lives in the engine.
//!
//! Every argument of the public methods passes through here, so that no Python value
//! escapes the exception tree: `None`, integers too large for the engine's types and
//! strings that cannot be encoded as UTF-8 (lone surrogates) raise `InvalidArgument`
//! naming the argument, its value and the fix, not `TypeError`, `OverflowError` or
//! `UnicodeEncodeError`.

use std::path::PathBuf;
use std::time::Duration;

use flint_core::duration::MAX_PERIOD_MS;
use flint_core::{from_unix_seconds, Algorithm, ListKind, Mode, Period, Quota, TopBy, UnixNanos};
use flint_server::api::{CheckAllResult, CheckResult, Compacted, Doctor, HistoryEntry, KeyStatus};
use pyo3::exceptions::{PyTypeError, PyUnicodeEncodeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{invalid, to_py};

/// An argument as it was passed, so that `None` can be told from "not passed" (which
/// takes the default); the methods convert it with the functions below.
pub struct Given<'py>(Option<Bound<'py, PyAny>>);

impl<'py> Given<'py> {
    /// The argument was not passed.
    pub const ABSENT: Given<'static> = Given(None);

    /// The value passed, or `None` when the argument was left out.
    pub fn value(&self) -> Option<&Bound<'py, PyAny>> {
        self.0.as_ref()
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Given<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Given(Some(obj.to_owned())))
    }
}

/// `" for key \"k\""`, or nothing.
fn for_key(key: Option<&str>) -> String {
    key.map(|k| format!(" for key {k:?}")).unwrap_or_default()
}

/// The value's type with its article: "an int", "a str".
fn type_name(value: &Bound<'_, PyAny>) -> String {
    let name = value
        .get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string());
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// The value's `repr()`, shortened so that a message stays one readable line.
fn show(value: &Bound<'_, PyAny>) -> String {
    const MAX: usize = 40;
    let repr = value.repr().map_or_else(|_| "?".into(), |r| r.to_string());
    let length = repr.chars().count();
    if length <= MAX {
        return repr;
    }
    let head: String = repr.chars().take(MAX).collect();
    format!("{head}... ({length} characters)")
}

/// A whole number ≥ `min` (0 or 1) such as a rate, a cost or a count; `what` names it
/// in messages, with `key` when it is given for one.
pub fn whole(
    value: &Bound<'_, PyAny>,
    what: &str,
    key: Option<&str>,
    min: u64,
    example: &str,
) -> PyResult<u64> {
    let py = value.py();
    let fail = |problem: String| {
        Err(invalid(
            py,
            key,
            format!("{what} {}{} {problem}", show(value), for_key(key)),
        ))
    };
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return fail(format!(
            "is {}, not an integer: pass a whole number such as {example}",
            type_name(value)
        ));
    }
    match value.extract::<u64>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => fail(format!(
            "is not positive: pass a whole number ≥ {min} such as {example}"
        )),
        Err(_) if value.lt(0)? && min > 0 => fail(format!(
            "is not positive: pass a whole number ≥ {min} such as {example}"
        )),
        Err(_) if value.lt(0)? => fail(format!(
            "is negative: pass a whole number such as {example}"
        )),
        Err(_) => fail(format!(
            "is absurdly large: pass a whole number such as {example}"
        )),
    }
}

/// A whole number ≥ 1 such as a rate or a cost, for `key`.
pub fn positive_int(
    value: &Bound<'_, PyAny>,
    what: &str,
    key: &str,
    example: &str,
) -> PyResult<u64> {
    whole(value, what, Some(key), 1, example)
}

/// A count such as `limit` of `history()` (0 allowed); `example` is its default.
pub fn count(
    value: &Bound<'_, PyAny>,
    what: &str,
    key: Option<&str>,
    example: &str,
) -> PyResult<usize> {
    let n = whole(value, what, key, 0, example)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// A `str` that can be encoded as UTF-8; `fix` ends the message when it is not one.
pub fn text(
    value: &Bound<'_, PyAny>,
    what: &str,
    key: Option<&str>,
    fix: &str,
) -> PyResult<String> {
    let py = value.py();
    let Ok(s) = value.cast::<PyString>() else {
        return Err(invalid(
            py,
            key,
            format!(
                "{what} {}{} is {}, not a str: {fix}",
                show(value),
                for_key(key),
                type_name(value)
            ),
        ));
    };
    match s.to_cow() {
        Ok(s) => Ok(s.into_owned()),
        Err(e) if e.is_instance_of::<PyUnicodeEncodeError>(py) => Err(invalid(
            py,
            key,
            format!(
                "{what} {}{} cannot be encoded as UTF-8: it holds a lone surrogate (as text decoded with errors=\"surrogateescape\" can); {fix}",
                show(value),
                for_key(key)
            ),
        )),
        Err(e) => Err(e),
    }
}

/// A name such as an algorithm or a sync mode (the engine parses it).
pub fn name(
    value: &Bound<'_, PyAny>,
    what: &str,
    key: Option<&str>,
    example: &str,
) -> PyResult<String> {
    text(
        value,
        what,
        key,
        &format!("pass a name such as {example:?}"),
    )
}

/// An optional `str` such as the `prefix` of `list()`; `None` means none.
pub fn optional_text(
    value: Option<&Bound<'_, PyAny>>,
    what: &str,
    fix: &str,
) -> PyResult<Option<String>> {
    match value {
        Some(v) if !v.is_none() => text(v, what, None, fix).map(Some),
        _ => Ok(None),
    }
}

/// The `data_dir` of a limiter: a `str` or an `os.PathLike`.
pub fn path(value: &Bound<'_, PyAny>, what: &str) -> PyResult<PathBuf> {
    if value.is_none() {
        return Err(invalid(
            value.py(),
            None,
            format!("{what} None is not a path: pass a directory such as \".flint\""),
        ));
    }
    value.extract()
}

/// Unix seconds or a number of seconds for `ManualClock`, as engine nanoseconds.
pub fn seconds(value: &Bound<'_, PyAny>, what: &str) -> PyResult<UnixNanos> {
    // The engine's clock counts nanoseconds in a u64: up to 2554-07-21.
    const MAX_SECONDS: f64 = u64::MAX as f64 / 1e9;
    let py = value.py();
    let fail = |problem: &str| {
        Err(invalid(
            py,
            None,
            format!("{what} {} {problem}", show(value)),
        ))
    };
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
    {
        return fail(&format!(
            "is {}, not a number: pass a number of seconds such as 1.5",
            type_name(value)
        ));
    }
    let range = "pass a finite, non-negative number of seconds, at most 18446744073 (in the year 2554, the end of the clock's range)";
    match value.extract::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=MAX_SECONDS).contains(&s) => Ok(from_unix_seconds(s)),
        Ok(s) if s.is_finite() && s > 0.0 => fail(&format!("is beyond the clock's range: {range}")),
        Ok(_) => fail(&format!("is invalid: {range}")),
        Err(_) => fail(&format!("is absurdly large: {range}")),
    }
}

/// A period: "250ms" / "1m" / "1d", a number of seconds, or a `datetime.timedelta`.
pub fn period(value: &Bound<'_, PyAny>, key: &str) -> PyResult<Period> {
    let py = value.py();
    let in_context = |e: flint_core::Error| match e {
        flint_core::Error::InvalidArgument { message, .. } => {
            invalid(py, Some(key), format!("per for key {key:?}: {message}"))
        }
        other => to_py(py, other),
    };
    if value.is_instance_of::<PyString>() {
        let fix = "write a duration such as \"1m\"";
        return text(value, "per", Some(key), fix)?
            .parse::<Period>()
            .map_err(in_context);
    }
    if value.is_instance_of::<PyBool>() {
        return Err(invalid(
            py,
            Some(key),
            format!("per {} for key {key:?} is a bool: pass a duration such as \"1m\", 60 (seconds) or timedelta(minutes=1)", show(value)),
        ));
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        // Only an int beyond a float's range fails here; the engine refuses it anyway.
        let Ok(seconds) = value.extract::<f64>() else {
            let problem = if value.lt(0)? {
                "is not positive: pass a positive duration such as \"1m\"".to_owned()
            } else {
                format!(
                    "is absurdly large: the longest period is {}",
                    Period::from_millis(MAX_PERIOD_MS).map_err(in_context)?
                )
            };
            return Err(invalid(
                py,
                Some(key),
                format!("per {} for key {key:?} {problem}", show(value)),
            ));
        };
        return Period::from_secs_f64(seconds).map_err(in_context);
    }
    let timedelta = py.import("datetime")?.getattr("timedelta")?;
    if value.is_instance(&timedelta)? {
        // Exact integer microseconds; a float of seconds could round.
        let days: i64 = value.getattr("days")?.extract()?;
        let seconds: i64 = value.getattr("seconds")?.extract()?;
        let micros: i64 = value.getattr("microseconds")?.extract()?;
        let total = i128::from(days) * 86_400_000_000
            + i128::from(seconds) * 1_000_000
            + i128::from(micros);
        if total % 1000 != 0 {
            return Err(invalid(
                py,
                Some(key),
                format!("per {} for key {key:?} has a fraction of a millisecond: periods are whole milliseconds", show(value)),
            ));
        }
        let millis = u64::try_from(total / 1000).map_err(|_| {
            invalid(py, Some(key), format!("per {} for key {key:?} is not positive: pass a positive duration such as timedelta(minutes=1)", show(value)))
        })?;
        return Period::from_millis(millis).map_err(in_context);
    }
    Err(invalid(
        py,
        Some(key),
        format!(
            "per {} for key {key:?} is {}: pass a string such as \"1m\", a number of seconds, or a datetime.timedelta",
            show(value),
            type_name(value)
        ),
    ))
}

/// A key: a `str` (the engine checks length and emptiness).
pub fn key(value: &Bound<'_, PyAny>) -> PyResult<String> {
    text(
        value,
        "key",
        None,
        "keys are strings such as \"api:user-42\"",
    )
}

/// The `key` and optional `cost` of `check` and `allow` (cost 1 when omitted).
pub fn key_and_cost(
    key: &Bound<'_, PyAny>,
    cost: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, u64)> {
    let key = self::key(key)?;
    let cost = match cost {
        None => 1,
        Some(c) => positive_int(c, "cost", &key, "1")?,
    };
    Ok((key, cost))
}

/// The items of `check_all` and `allow_all` (`method`): `"key"`,
/// `{"key": k, "cost": c}` or `(k, c)`.
pub fn items(value: &Bound<'_, PyAny>, method: &str) -> PyResult<Vec<(String, u64)>> {
    let py = value.py();
    if value.is_instance_of::<PyString>() || value.is_instance_of::<PyDict>() {
        return Err(invalid(
            py,
            None,
            format!("{method}() takes a list of items, not a single item: wrap it in a list, as in {method}([\"user:42\"])"),
        ));
    }
    let iterator = value.try_iter().map_err(|e| {
        if e.is_instance_of::<PyTypeError>(py) {
            invalid(
                py,
                None,
                format!(
                    "{method}() takes a list of items, not {} ({}): pass a list such as {method}([\"user:42\", (\"org:acme\", 5)])",
                    show(value),
                    type_name(value)
                ),
            )
        } else {
            e
        }
    })?;
    let mut out = Vec::new();
    for (index, item) in iterator.enumerate() {
        let item = item?;
        let bad = || {
            invalid(
                py,
                None,
                format!(
                    "{method}() item {index} is {}: use \"key\", {{\"key\": key, \"cost\": n}} or (key, n)",
                    show(&item)
                ),
            )
        };
        let (k, cost) = if item.is_instance_of::<PyString>() {
            (key(&item)?, None)
        } else if let Ok(d) = item.cast::<PyDict>() {
            let k = d.get_item("key")?.ok_or_else(bad)?;
            if d.len() > 2 || (d.len() == 2 && d.get_item("cost")?.is_none()) {
                return Err(bad());
            }
            (key(&k)?, d.get_item("cost")?)
        } else if let Ok(t) = item.cast::<PyTuple>() {
            if t.len() != 2 {
                return Err(bad());
            }
            (key(&t.get_item(0)?)?, Some(t.get_item(1)?))
        } else {
            return Err(bad());
        };
        let cost = match cost {
            None => 1,
            Some(c) => positive_int(&c, "cost", &k, "1")?,
        };
        out.push((k, cost));
    }
    Ok(out)
}

/// The arguments of `limit()`: the key and the quota, checked here (types) and by the
/// engine's own constructors (values), with the key named in every message. Both
/// `Limiter` and `SharedLimiter` use it, so both refuse the same values with the same
/// words before anything is written or sent.
pub fn limit_args(
    key: &Bound<'_, PyAny>,
    rate: &Bound<'_, PyAny>,
    per: &Bound<'_, PyAny>,
    algorithm: Option<&Bound<'_, PyAny>>,
    burst: Option<&Bound<'_, PyAny>>,
    mode: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Quota)> {
    let py = key.py();
    let key = self::key(key)?;
    let rate = positive_int(rate, "rate", &key, "100")?;
    let period = self::period(per, &key)?;
    // None (the default) is a burst equal to the rate.
    let burst = match burst {
        Some(b) if !b.is_none() => Some(positive_int(b, "burst", &key, "500")?),
        _ => None,
    };
    let algorithm = match algorithm {
        Some(a) => name(a, "algorithm", Some(&key), "token_bucket")?,
        None => Algorithm::TokenBucket.name().to_owned(),
    };
    let mode = match mode {
        Some(m) => Some(name(m, "mode", Some(&key), "enforce")?),
        None => None,
    };
    // The engine checks these without knowing the key; name it in the message.
    let for_key = |e: flint_core::Error| match e {
        flint_core::Error::InvalidArgument { key: None, message } => {
            invalid(py, Some(&key), format!("for key {key:?}: {message}"))
        }
        other => to_py(py, other),
    };
    let algorithm: Algorithm = algorithm.parse().map_err(for_key)?;
    let quota = Quota::new(rate, period, algorithm).map_err(for_key)?;
    let quota = match burst {
        Some(burst) => quota.with_burst(burst).map_err(for_key)?,
        None => quota,
    };
    let quota = match mode {
        Some(mode) => quota.with_mode(mode.parse::<Mode>().map_err(for_key)?),
        None => quota,
    };
    Ok((key, quota))
}

/// The `kind` of `list()`: `"all"` (when omitted), `"keys"` or `"templates"`.
pub fn list_kind(value: Option<&Bound<'_, PyAny>>) -> PyResult<ListKind> {
    match value {
        Some(k) => name(k, "kind", None, "keys")?
            .parse()
            .map_err(|e| to_py(k.py(), e)),
        None => Ok(ListKind::All),
    }
}

/// The `limit` of `history()` (100 when omitted).
pub fn history_limit(value: Option<&Bound<'_, PyAny>>, key: &str) -> PyResult<usize> {
    match value {
        Some(n) => count(n, "limit", Some(key), "100"),
        None => Ok(100),
    }
}

/// The `by` and `limit` of `top()` (`"denied"` and 20 when omitted).
pub fn top_args(
    by: Option<&Bound<'_, PyAny>>,
    limit: Option<&Bound<'_, PyAny>>,
) -> PyResult<(TopBy, usize)> {
    let by = match by {
        Some(b) => name(b, "by", None, "denied")?
            .parse()
            .map_err(|e| to_py(b.py(), e))?,
        None => TopBy::Denied,
    };
    let limit = match limit {
        Some(n) => count(n, "limit", None, "20")?,
        None => 20,
    };
    Ok((by, limit))
}

/// The `timeout` of a `SharedLimiter`: a positive, finite number of seconds.
pub fn timeout(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    // A day: longer than any request should wait, short of Duration's overflow.
    const MAX_SECONDS: f64 = 86_400.0;
    let py = value.py();
    let fail = |problem: String| {
        Err(invalid(
            py,
            None,
            format!("timeout {} {problem}", show(value)),
        ))
    };
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
    {
        return fail(format!(
            "is {}, not a number: pass a number of seconds such as 10.0",
            type_name(value)
        ));
    }
    match value.extract::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= MAX_SECONDS => Ok(Duration::from_secs_f64(s)),
        _ => fail(format!(
            "is out of range: pass a positive number of seconds, at most {MAX_SECONDS} (a day), such as 10.0"
        )),
    }
}

/// A key's status as the flat dict of SPEC §6.
pub fn status<'py>(py: Python<'py>, s: &KeyStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", &s.key)?;
    d.set_item("rate", s.rate)?;
    d.set_item("burst", s.burst)?;
    d.set_item("per", &s.per)?;
    d.set_item("per_ms", s.per_ms)?;
    d.set_item("algorithm", &s.algorithm)?;
    d.set_item("mode", &s.mode)?;
    d.set_item("template", &s.template)?;
    d.set_item("remaining", s.remaining)?;
    d.set_item("reset_at", s.reset_at)?;
    d.set_item("allowed", s.allowed)?;
    d.set_item("denied", s.denied)?;
    d.set_item("allowed_cost", s.allowed_cost)?;
    d.set_item("denied_cost", s.denied_cost)?;
    d.set_item("shadow_denied", s.shadow_denied)?;
    d.set_item("last_seen", s.last_seen)?;
    Ok(d)
}

/// A list of statuses.
pub fn statuses<'py>(py: Python<'py>, all: &[KeyStatus]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for s in all {
        list.append(status(py, s)?)?;
    }
    Ok(list)
}

/// History entries as dicts.
pub fn history<'py>(py: Python<'py>, events: &[HistoryEntry]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for e in events {
        let d = PyDict::new(py);
        d.set_item("at", e.at)?;
        d.set_item("cost", e.cost)?;
        d.set_item("allowed", e.allowed)?;
        d.set_item("blocked_by_other", e.blocked_by_other)?;
        d.set_item("shadow_denied", e.shadow_denied)?;
        d.set_item("remaining", e.remaining)?;
        list.append(d)?;
    }
    Ok(list)
}

/// A doctor report as a dict.
pub fn doctor<'py>(py: Python<'py>, r: &Doctor) -> PyResult<Bound<'py, PyDict>> {
    let checks = PyList::empty(py);
    for c in &r.checks {
        let d = PyDict::new(py);
        d.set_item("name", &c.name)?;
        d.set_item("ok", c.ok)?;
        d.set_item("level", &c.level)?;
        d.set_item("detail", &c.detail)?;
        checks.append(d)?;
    }
    let d = PyDict::new(py);
    d.set_item("ok", r.ok)?;
    d.set_item("checks", checks)?;
    d.set_item("sync", &r.sync)?;
    d.set_item("version", &r.version)?;
    d.set_item("data_dir", &r.data_dir)?;
    d.set_item("log_bytes", r.log_bytes)?;
    d.set_item("snapshot_bytes", r.snapshot_bytes)?;
    d.set_item("keys", r.keys)?;
    d.set_item("pending_events", r.pending_events)?;
    let templates = PyList::empty(py);
    for t in &r.templates {
        let entry = PyDict::new(py);
        entry.set_item("template", &t.template)?;
        entry.set_item("live_keys", t.live_keys)?;
        entry.set_item("remembered_keys", t.remembered_keys)?;
        templates.append(entry)?;
    }
    d.set_item("templates", templates)?;
    d.set_item("memory_bytes", r.memory_bytes)?;
    d.set_item("process_resident_bytes", r.process_resident_bytes)?;
    Ok(d)
}

/// What a compaction did, as a dict.
pub fn compacted<'py>(py: Python<'py>, r: &Compacted) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("keys", r.keys)?;
    d.set_item("snapshot_bytes", r.snapshot_bytes)?;
    d.set_item("log_bytes_before", r.log_bytes_before)?;
    d.set_item("log_bytes_after", r.log_bytes_after)?;
    Ok(d)
}

/// The fields of one check, for `check_all` results.
pub fn check_result<'py>(py: Python<'py>, r: &CheckResult) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("key", &r.key)?;
    out.set_item("allowed", r.allowed)?;
    out.set_item("remaining", r.remaining)?;
    out.set_item("reset_at", r.reset_at)?;
    out.set_item("retry_after", r.retry_after)?;
    out.set_item("limit", r.limit)?;
    out.set_item("algorithm", &r.algorithm)?;
    out.set_item("cost", r.cost)?;
    out.set_item("shadow_denied", r.shadow_denied)?;
    Ok(out)
}

/// The dict of `check_all`: `allowed`, `denied_key`, `results`.
pub fn check_all<'py>(py: Python<'py>, r: &CheckAllResult) -> PyResult<Bound<'py, PyDict>> {
    let results = PyList::empty(py);
    for item in &r.results {
        results.append(check_result(py, item)?)?;
    }
    let d = PyDict::new(py);
    d.set_item("allowed", r.allowed)?;
    d.set_item("denied_key", &r.denied_key)?;
    d.set_item("results", results)?;
    Ok(d)
}
