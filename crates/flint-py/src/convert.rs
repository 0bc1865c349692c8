//! Python values to engine arguments and engine results to Python values. Type checks
//! that Python needs (a bool is not a rate, a float is not a cost) live here; every
//! rule about values lives in the engine.

use flint_core::{to_unix_seconds, Decision, DoctorReport, HistoryEvent, Period, Status};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{invalid, to_py};

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

fn show(value: &Bound<'_, PyAny>) -> String {
    value.repr().map_or_else(|_| "?".into(), |r| r.to_string())
}

/// A whole number ≥ 1 such as a rate or a cost; `what` names it in messages.
pub fn positive_int(
    value: &Bound<'_, PyAny>,
    what: &str,
    key: &str,
    example: &str,
) -> PyResult<u64> {
    let py = value.py();
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(invalid(
            py,
            Some(key),
            format!(
                "{what} {} for key {key:?} is a {}, not an integer: pass a whole number such as {example}",
                show(value),
                type_name(value)
            ),
        ));
    }
    match value.extract::<i64>() {
        Ok(n) if n >= 1 => Ok(n as u64),
        Ok(n) => Err(invalid(
            py,
            Some(key),
            format!("{what} {n} for key {key:?} is not positive: pass a whole number ≥ 1 such as {example}"),
        )),
        Err(_) => Err(invalid(
            py,
            Some(key),
            format!("{what} {} for key {key:?} is absurdly large: pass a whole number such as {example}", show(value)),
        )),
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
    if let Ok(text) = value.cast::<PyString>() {
        return text.to_cow()?.parse::<Period>().map_err(in_context);
    }
    if value.is_instance_of::<PyBool>() {
        return Err(invalid(
            py,
            Some(key),
            format!("per {} for key {key:?} is a bool: pass a duration such as \"1m\", 60 (seconds) or timedelta(minutes=1)", show(value)),
        ));
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        let seconds: f64 = value.extract()?;
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
            "per {} for key {key:?} is a {}: pass a string such as \"1m\", a number of seconds, or a datetime.timedelta",
            show(value),
            type_name(value)
        ),
    ))
}

/// A key: a `str` (the engine checks length and emptiness).
pub fn key(value: &Bound<'_, PyAny>) -> PyResult<String> {
    match value.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.into_owned()),
        Err(_) => Err(invalid(
            value.py(),
            None,
            format!(
                "key {} is a {}, not a str: keys are strings such as \"api:user-42\"",
                show(value),
                type_name(value)
            ),
        )),
    }
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

/// The items of `check_all`: `"key"`, `{"key": k, "cost": c}` or `(k, c)`.
pub fn items(value: &Bound<'_, PyAny>) -> PyResult<Vec<(String, u64)>> {
    let py = value.py();
    if value.is_instance_of::<PyString>() || value.is_instance_of::<PyDict>() {
        return Err(invalid(
            py,
            None,
            "check_all() takes a list of items, not a single item: wrap it in a list, as in check_all([\"user:42\"])".into(),
        ));
    }
    let mut out = Vec::new();
    for (index, item) in value.try_iter()?.enumerate() {
        let item = item?;
        let bad = || {
            invalid(
                py,
                None,
                format!(
                    "check_all() item {index} is {}: use \"key\", {{\"key\": key, \"cost\": n}} or (key, n)",
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

/// A `Status` as the flat dict of SPEC §6.
pub fn status<'py>(py: Python<'py>, s: &Status) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", &s.key)?;
    d.set_item("rate", s.quota.rate())?;
    d.set_item("per", s.quota.period().to_string())?;
    d.set_item("per_ms", s.quota.period().as_millis())?;
    d.set_item("algorithm", s.quota.algorithm().name())?;
    d.set_item("remaining", s.remaining)?;
    d.set_item("reset_at", to_unix_seconds(s.reset_at))?;
    d.set_item("allowed", s.counters.allowed)?;
    d.set_item("denied", s.counters.denied)?;
    d.set_item("allowed_cost", s.counters.allowed_cost)?;
    d.set_item("denied_cost", s.counters.denied_cost)?;
    d.set_item("last_seen", s.last_seen.map(to_unix_seconds))?;
    Ok(d)
}

/// A list of statuses.
pub fn statuses<'py>(py: Python<'py>, all: &[Status]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for s in all {
        list.append(status(py, s)?)?;
    }
    Ok(list)
}

/// History events as dicts.
pub fn history<'py>(py: Python<'py>, events: &[HistoryEvent]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for e in events {
        let d = PyDict::new(py);
        d.set_item("at", to_unix_seconds(e.at))?;
        d.set_item("cost", e.cost)?;
        d.set_item("allowed", e.allowed)?;
        d.set_item("remaining", e.remaining)?;
        list.append(d)?;
    }
    Ok(list)
}

/// A doctor report as a dict.
pub fn doctor<'py>(py: Python<'py>, r: &DoctorReport) -> PyResult<Bound<'py, PyDict>> {
    let checks = PyList::empty(py);
    for c in &r.checks {
        let d = PyDict::new(py);
        d.set_item("name", c.name)?;
        d.set_item("ok", c.level != flint_core::CheckLevel::Fail)?;
        d.set_item("level", c.level.to_string())?;
        d.set_item("detail", &c.detail)?;
        checks.append(d)?;
    }
    let d = PyDict::new(py);
    d.set_item("ok", r.ok)?;
    d.set_item("checks", checks)?;
    d.set_item("sync", r.sync)?;
    d.set_item("version", r.version)?;
    d.set_item("data_dir", r.data_dir.display().to_string())?;
    d.set_item("log_bytes", r.log_bytes)?;
    d.set_item("snapshot_bytes", r.snapshot_bytes)?;
    d.set_item("keys", r.keys)?;
    d.set_item("pending_events", r.pending_events)?;
    Ok(d)
}

/// The fields of a decision, for `check_all` results.
pub fn decision<'py>(py: Python<'py>, key: &str, d: &Decision) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("key", key)?;
    out.set_item("allowed", d.allowed)?;
    out.set_item("remaining", d.remaining)?;
    out.set_item("reset_at", to_unix_seconds(d.reset_at))?;
    out.set_item("retry_after", d.retry_after as f64 / 1e9)?;
    out.set_item("limit", d.limit)?;
    out.set_item("algorithm", d.algorithm.name())?;
    out.set_item("cost", d.cost)?;
    Ok(out)
}
