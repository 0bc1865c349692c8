//! `flint._native`: the Python binding of the Flint engine and of its shared-mode
//! client. It converts types, releases the GIL around every engine call and request,
//! and maps errors; no limiter rule lives here.

mod convert;
mod errors;
mod limiter;
mod shared;

use pyo3::prelude::*;

/// Runs the `flint` command with `argv` (program name first) and returns its exit code.
/// The package's console script calls this, so `pip install` gives the same CLI as
/// `cargo install`. The arguments are taken as `OsString`s: `sys.argv` holds bytes that
/// are not UTF-8 as lone surrogates, which become those bytes again here, so the CLI
/// sees what the Rust binary would and reports them itself.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> i32 {
    py.detach(|| flint_cli::run(argv))
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<limiter::PyLimiter>()?;
    m.add_class::<limiter::PyCheckResult>()?;
    m.add_class::<limiter::PyManualClock>()?;
    m.add_class::<shared::PySharedLimiter>()?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(limiter::metrics_text, m)?)?;
    // The metric names, from the one list the server and `metrics_text` use.
    m.add(
        "METRIC_NAMES",
        pyo3::types::PyTuple::new(m.py(), flint_server::metrics::names::ALL)?,
    )?;
    m.add(
        "METRIC_HISTOGRAMS",
        pyo3::types::PyTuple::new(m.py(), flint_server::metrics::names::HISTOGRAMS)?,
    )?;
    m.add("METRICS_CONTENT_TYPE", flint_server::metrics::CONTENT_TYPE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
