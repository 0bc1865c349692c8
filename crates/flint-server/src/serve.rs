//! Running the server: refuse an unsafe bind, open the data directory (its lock makes
//! this process the one writer), accept connections with bounded header reads, and
//! stop cleanly (stop accepting, finish what is in flight within a grace period, sync,
//! release the lock).

use std::future::Future;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flint_core::{Limiter, Options, SyncMode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::app::{app, AppOptions, AppState, DurabilityWait};

/// Everything `flint server start` configures.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The data directory the server owns.
    pub data_dir: PathBuf,
    /// `HOST:PORT` to listen on.
    pub bind: String,
    /// The bearer token; required unless every address of `bind` is loopback.
    pub token: Option<String>,
    /// `always` (default) or `batch`.
    pub sync: SyncMode,
    /// The longest an event stays unsynced.
    pub flush_every_ms: u64,
    /// In batch mode, sync after this many events.
    pub flush_every_events: u64,
    /// Blocking work at once (see [`AppOptions::max_blocking`]).
    pub max_blocking: usize,
    /// How a consuming call waits for durability.
    pub durability_wait: DurabilityWait,
    /// The longest a client may take to send a request's headers, and the longest
    /// an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// The longest a request may take, body included.
    pub request_timeout: Duration,
    /// After a stop signal, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// The defaults of `flint server start` for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let engine = Options::default();
        ServerConfig {
            data_dir: data_dir.into(),
            bind: "127.0.0.1:7878".to_owned(),
            token: None,
            sync: engine.sync,
            flush_every_ms: engine.flush_every_ms,
            flush_every_events: engine.flush_every_events,
            max_blocking: AppOptions::default().max_blocking,
            durability_wait: DurabilityWait::Async,
            header_timeout: Duration::from_secs(60),
            request_timeout: AppOptions::default().request_timeout,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why the server did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is refused (a non-loopback bind without a token, ...).
    #[error("{0}")]
    Refused(String),
    /// The engine failed (the directory is locked, damaged, unreadable...).
    #[error(transparent)]
    Engine(#[from] flint_core::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A server that has opened its data directory and bound its address, ready to run.
pub struct Server {
    listener: TcpListener,
    limiter: Arc<Limiter>,
    state: AppState,
    config: ServerConfig,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr())
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

/// The addresses `bind` names, or why it names none.
fn resolve(bind: &str) -> Result<Vec<SocketAddr>, ServeError> {
    let refused = |why: String| {
        ServeError::Refused(format!(
            "--bind {bind:?} {why}: give HOST:PORT, such as 127.0.0.1:7878"
        ))
    };
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .map_err(|e| refused(format!("is not an address ({e})")))?
        .collect();
    if addrs.is_empty() {
        return Err(refused("resolves to no address".to_owned()));
    }
    Ok(addrs)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Refuses what would expose the limiter: a non-loopback address without a token,
/// or an empty token.
fn check_exposure(config: &ServerConfig, addrs: &[SocketAddr]) -> Result<(), ServeError> {
    match config.token.as_deref() {
        Some("") => Err(ServeError::Refused(
            "the token is empty (from --token or FLINT_SERVER_TOKEN, perhaps an unset variable): pass a long random one, e.g. --token \"$(openssl rand -hex 32)\", or leave both out on a loopback address".to_owned(),
        )),
        Some(_) => Ok(()),
        None => match addrs.iter().find(|a| !is_loopback(a.ip())) {
            Some(open) => Err(ServeError::Refused(format!(
                "refusing to serve on {open} without a token: any host that can reach it could consume, reset and remove every limit. Pass --token T (or set FLINT_SERVER_TOKEN) so that every request needs `Authorization: Bearer T`, or bind a loopback address such as 127.0.0.1:7878"
            ))),
            None => Ok(()),
        },
    }
}

impl Server {
    /// Checks the configuration, opens the data directory (taking its lock) and
    /// binds the address.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServeError> {
        let addrs = resolve(&config.bind)?;
        check_exposure(&config, &addrs)?;
        let options = Options::default()
            .sync(config.sync)
            .flush_every_ms(config.flush_every_ms)
            .flush_every_events(config.flush_every_events);
        let dir = config.data_dir.clone();
        let limiter = tokio::task::spawn_blocking(move || Limiter::open(dir, options))
            .await
            .map_err(|e| {
                ServeError::Refused(format!("opening the data directory failed: {e}"))
            })??;
        let limiter = Arc::new(limiter);
        let listener = match TcpListener::bind(addrs.as_slice()).await {
            Ok(listener) => listener,
            Err(source) => {
                let _ = limiter.close();
                return Err(ServeError::Bind {
                    addr: config.bind.clone(),
                    source,
                });
            }
        };
        let state = AppState::new(
            Arc::clone(&limiter),
            AppOptions {
                token: config.token.clone(),
                max_blocking: config.max_blocking,
                durability_wait: config.durability_wait,
                request_timeout: config.request_timeout,
            },
        );
        Ok(Server {
            listener,
            limiter,
            state,
            config,
        })
    }

    /// The address the server listens on (the real port when `bind` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` completes, then stops accepting, lets the requests in
    /// flight finish (at most `shutdown_grace`), syncs and closes the data directory.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Server {
            listener,
            limiter,
            state,
            config,
        } = self;
        let addr = listener.local_addr().ok();
        tracing::info!(
            address = %addr.map_or_else(|| config.bind.clone(), |a| a.to_string()),
            data_dir = %config.data_dir.display(),
            sync = config.sync.name(),
            auth = if config.token.is_some() { "on" } else { "off" },
            "flint server started"
        );
        let service = TowerToHyperService::new(app(state.clone()));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, _peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of descriptors or a connection reset before accept:
                        // keep serving, after a breath so as not to spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let connection = http.serve_connection(TokioIo::new(stream), service.clone());
            let connection = graceful.watch(connection);
            let gauge = state.metrics().connections().clone();
            gauge.inc();
            tokio::spawn(async move {
                // A client that goes away mid-request is its own business.
                let _ = connection.await;
                gauge.dec();
            });
        }
        drop(listener);
        tracing::info!("flint server stopping: finishing requests in flight");
        // Done when every connection has closed, or when no request is being answered:
        // a client stuck halfway through a request's headers holds no decision, and
        // need not hold the stop for the whole grace period (hyper would wait for it).
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            tokio::select! {
                () = graceful.shutdown() => {}
                // A moment first, for requests already on their way in.
                () = async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    state.idle().await;
                } => {}
            }
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                grace_seconds = config.shutdown_grace.as_secs_f64(),
                "requests still in flight after the grace period were cut off"
            );
        }
        let closing = Arc::clone(&limiter);
        let closed = tokio::task::spawn_blocking(move || closing.close())
            .await
            .map_err(|e| ServeError::Refused(format!("closing the data directory failed: {e}")))?;
        match closed {
            Ok(()) => {
                tracing::info!(data_dir = %config.data_dir.display(), "flint server stopped: synced, lock released");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "flint server stopped with an error");
                Err(error.into())
            }
        }
    }
}

/// Binds and serves until `shutdown` completes; see [`Server::bind`] and
/// [`Server::run`].
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Server::bind(config).await?.run(shutdown).await
}

/// Completes at the first SIGINT or SIGTERM.
pub async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bind: &str, token: Option<&str>) -> ServerConfig {
        let mut config = ServerConfig::new("unused");
        config.bind = bind.to_owned();
        config.token = token.map(str::to_owned);
        config
    }

    fn exposure(bind: &str, token: Option<&str>) -> Result<(), ServeError> {
        let config = config(bind, token);
        check_exposure(&config, &resolve(bind)?)
    }

    #[test]
    fn loopback_needs_no_token_and_anything_else_does() {
        assert!(exposure("127.0.0.1:7878", None).is_ok());
        assert!(
            exposure("[::1]:7878", None).is_ok(),
            "IPv6 loopback is loopback"
        );
        assert!(exposure("localhost:7878", None).is_ok());
        let refused = exposure("0.0.0.0:7878", None).unwrap_err().to_string();
        assert!(refused.contains("without a token"), "{refused}");
        assert!(refused.contains("--token"), "{refused}");
        assert!(exposure("[::]:7878", None).is_err());
        assert!(exposure("0.0.0.0:7878", Some("s3cret")).is_ok());
        let empty = exposure("127.0.0.1:7878", Some(""))
            .unwrap_err()
            .to_string();
        assert!(empty.contains("empty"), "{empty}");
        let bad = exposure("nonsense", None).unwrap_err().to_string();
        assert!(bad.contains("HOST:PORT"), "{bad}");
    }
}
