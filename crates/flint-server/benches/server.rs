//! The server's throughput targets, each next to a baseline measured in the same run
//! (`make bench`; results in BENCHMARKS.md). A load generator of keep-alive HTTP/1.1
//! connections (hyper's client) drives an in-process server on 127.0.0.1, each on
//! its own runtime.
//!
//! Under `cargo test --benches` (no `--bench` argument) every scenario runs for a few
//! milliseconds: a smoke test of the code, no figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flint_core::SyncMode;
use flint_server::{DurabilityWait, Server, ServerConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use tokio::net::TcpStream;

const TOKEN: &str = "bench-token";

struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts a server on its own two-thread runtime (as `flint server start` runs it on
/// this two-core machine).
fn start(sync: SyncMode, wait: DurabilityWait) -> Running {
    let dir = tempfile::tempdir_in(".").expect("a temporary directory beside the sources");
    let mut config = ServerConfig::new(dir.path().join(".flint"));
    "127.0.0.1:0".clone_into(&mut config.bind);
    config.token = Some(TOKEN.to_owned());
    config.sync = sync;
    config.durability_wait = wait;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = Server::bind(config).await.unwrap();
            addr_tx.send(server.local_addr()).unwrap();
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();
    Running {
        addr,
        stop,
        thread,
        _dir: dir,
    }
}

impl Running {
    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

#[derive(Clone, Copy)]
enum Call {
    Health,
    Check,
}

fn request(call: Call, addr: std::net::SocketAddr, key: &str) -> Request<Full<Bytes>> {
    let builder = Request::builder()
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"));
    match call {
        Call::Health => builder
            .method("GET")
            .uri("/v1/health")
            .body(Full::new(Bytes::new())),
        Call::Check => builder
            .method("POST")
            .uri("/v1/check")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(
                "{{\"key\":\"{key}\",\"cost\":1}}"
            )))),
    }
    .unwrap()
}

/// Requests per second over `connections` keep-alive connections for `duration`.
fn throughput(
    addr: std::net::SocketAddr,
    call: Call,
    connections: usize,
    duration: Duration,
) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                while !stop.load(Ordering::Relaxed) {
                    let response = sender
                        .send_request(request(call, addr, "bench"))
                        .await
                        .unwrap();
                    assert!(response.status().is_success(), "{}", response.status());
                    response.into_body().collect().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Configures the benchmark key: a rate no run can exhaust, so every check consumes.
fn configure(addr: std::net::SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .method("POST")
            .uri("/v1/limits")
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                "{\"key\":\"bench\",\"rate\":1000000000000,\"per\":\"365d\"}",
            )))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    });
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let duration = if measuring {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(20)
    };
    let mut rows: Vec<[String; 5]> = Vec::new();

    // 1. sync=batch, 64 connections: check vs health.
    let server = start(SyncMode::Batch, DurabilityWait::Async);
    configure(server.addr);
    let health = throughput(server.addr, Call::Health, 64, duration);
    let check = throughput(server.addr, Call::Check, 64, duration);
    server.stop();
    rows.push([
        "POST /v1/check, sync=batch, 64 connections".into(),
        format!("{check:.0}/s"),
        format!("GET /v1/health {health:.0}/s"),
        format!("{:.2}×", check / health),
        "≥ 0.8× and ≥ 100k/s".into(),
    ]);

    // 2. sync=always: 64 connections vs 1, for each way of waiting for durability.
    for (wait, name) in [
        (DurabilityWait::Async, "async wait"),
        (DurabilityWait::Blocking, "spawn_blocking wait"),
    ] {
        let server = start(SyncMode::Always, wait);
        configure(server.addr);
        let one = throughput(server.addr, Call::Check, 1, duration);
        let many = throughput(server.addr, Call::Check, 64, duration);
        server.stop();
        rows.push([
            format!("POST /v1/check, sync=always, 64 connections ({name})"),
            format!("{many:.0}/s"),
            format!("1 connection {one:.0}/s"),
            format!("{:.1}×", many / one),
            "≥ 10×".into(),
        ]);
    }

    if !measuring {
        println!("server bench: smoke run done ({} scenarios)", rows.len());
        return;
    }
    let header = ["target", "measured", "baseline (same run)", "ratio", "goal"];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
