//! The one place where engine errors become Python exceptions.
//!
//! The exception classes are defined in Python (`flint/_errors.py`), because several
//! have two bases (`LimitNotFound` is also a `KeyError`, `InvalidArgument` a
//! `ValueError`, `StorageError` an `OSError`), which Python expresses directly.

use flint_core::Error;
use flint_server::client::{ClientError, ErrorKind};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Builds an instance of `flint._errors.<class>` with `message` and attributes.
fn raise(py: Python<'_>, class: &str, message: &str, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = py.import("flint._errors")?;
        let exception = module.getattr(class)?.call1((message,))?;
        for (name, value) in attrs {
            exception.setattr(*name, value)?;
        }
        Ok(PyErr::from_value(exception))
    };
    build().unwrap_or_else(|e| {
        PyRuntimeError::new_err(format!("{message} (and raising it failed: {e})"))
    })
}

/// Converts an engine error into the matching exception of SPEC §4.
pub fn to_py(py: Python<'_>, error: Error) -> PyErr {
    let message = error.to_string();
    let none = || py.None();
    let text = |s: &str| {
        s.into_pyobject(py)
            .map_or_else(|_| py.None(), |o| o.into_any().unbind())
    };
    match error {
        Error::InvalidArgument { key, .. } => raise(
            py,
            "InvalidArgument",
            &message,
            &[("key", key.as_deref().map_or_else(none, text))],
        ),
        Error::LimitNotFound { key } => {
            raise(py, "LimitNotFound", &message, &[("key", text(&key))])
        }
        Error::Locked { dir, pid } => raise(
            py,
            "DataDirLocked",
            &message,
            &[
                ("data_dir", text(&dir.display().to_string())),
                (
                    "pid",
                    pid.map_or_else(none, |p| {
                        p.into_pyobject(py)
                            .map_or_else(|_| py.None(), |o| o.into_any().unbind())
                    }),
                ),
            ],
        ),
        Error::Corrupt { file, offset, .. } => raise(
            py,
            "CorruptedData",
            &message,
            &[
                ("filename", text(&file.display().to_string())),
                (
                    "offset",
                    offset
                        .into_pyobject(py)
                        .map_or_else(|_| py.None(), |o| o.into_any().unbind()),
                ),
            ],
        ),
        Error::Io { path, source, .. } => raise(
            py,
            "StorageError",
            &message,
            &[
                ("filename", text(&path.display().to_string())),
                (
                    "errno",
                    source.raw_os_error().map_or_else(none, |n| {
                        n.into_pyobject(py)
                            .map_or_else(|_| py.None(), |o| o.into_any().unbind())
                    }),
                ),
            ],
        ),
        Error::Unrepairable { file, .. } => raise(
            py,
            "CorruptedData",
            &message,
            &[
                ("filename", text(&file.display().to_string())),
                ("offset", none()),
            ],
        ),
        Error::NotFlint { .. } | Error::UnsupportedVersion { .. } | Error::Poisoned { .. } => {
            raise(py, "StorageError", &message, &[])
        }
        // A parent's limiter used in a forked child (`Forked`), `Closed`, and variants
        // added to the engine later: the root class.
        _ => raise(py, "FlintError", &message, &[]),
    }
}

/// An `InvalidArgument` raised by the binding itself (a Python type the engine never
/// sees, such as a float rate).
pub fn invalid(py: Python<'_>, key: Option<&str>, message: String) -> PyErr {
    to_py(
        py,
        Error::InvalidArgument {
            key: key.map(str::to_owned),
            message,
        },
    )
}

/// Converts a failure of the shared-mode client into the matching exception: 400 →
/// `InvalidArgument`, 404 → `LimitNotFound` (with `.key`), 401 → `AuthenticationError`,
/// no answer → `FlintConnectionError`, 5xx → `FlintServerError`, anything else
/// `FlintError`. Every message names the server's URL; the client exceptions also carry
/// `.url`, `.status` and `.code`.
pub fn client_to_py(py: Python<'_>, error: &ClientError) -> PyErr {
    let message = error.to_string();
    let text = |s: Option<&str>| {
        s.map_or_else(
            || py.None(),
            |s| {
                s.into_pyobject(py)
                    .map_or_else(|_| py.None(), |o| o.into_any().unbind())
            },
        )
    };
    let status = error.status().map_or_else(
        || py.None(),
        |s| {
            s.into_pyobject(py)
                .map_or_else(|_| py.None(), |o| o.into_any().unbind())
        },
    );
    let details = || {
        [
            ("url", text(Some(error.url()))),
            ("status", status.clone_ref(py)),
            ("code", text(error.code())),
        ]
    };
    match error.kind() {
        ErrorKind::InvalidArgument => raise(
            py,
            "InvalidArgument",
            &message,
            &[("key", text(error.key()))],
        ),
        ErrorKind::LimitNotFound => {
            raise(py, "LimitNotFound", &message, &[("key", text(error.key()))])
        }
        ErrorKind::Authentication => raise(py, "AuthenticationError", &message, &details()),
        ErrorKind::Connection => raise(py, "FlintConnectionError", &message, &details()),
        ErrorKind::Server => raise(py, "FlintServerError", &message, &details()),
        // A protocol failure (not a Flint server, another version), and kinds added later.
        _ => raise(py, "FlintError", &message, &[]),
    }
}

/// A `FlintError` for an answer that this version cannot read.
pub fn protocol(py: Python<'_>, message: &str) -> PyErr {
    raise(py, "FlintError", message, &[])
}

/// A `FlintError` for a closed client.
pub fn closed(py: Python<'_>, message: &str) -> PyErr {
    raise(py, "FlintError", message, &[])
}
