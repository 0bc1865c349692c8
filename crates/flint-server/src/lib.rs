//! Flint's shared mode: the HTTP server that owns a data directory (one writer) and
//! serves the engine to other processes, and the client that talks to it.
//!
//! The server only translates: every rule lives in `flint-core`. [`api`] is the one
//! definition of the JSON bodies, shared by the server, its OpenAPI document, the
//! client, the CLI's `--json` output and the Python package.

pub mod api;
pub mod app;
pub mod client;
pub mod error;
pub mod metrics;
pub mod serve;

pub use app::{app, openapi_document, AppOptions, AppState, DurabilityWait};
pub use metrics::{engine_text, EngineMetricsOptions};
pub use serve::{serve, stop_signal, ServeError, Server, ServerConfig};
