//! The client against the real server, in process on 127.0.0.1: every method, keys with
//! any character, the mapping of the server's errors, and a keep-alive connection that
//! the server closed while idle (the check goes once, on a new connection).

use std::thread;
use std::time::Duration;

use flint_core::ListKind;
use flint_server::api::{KeyStatus, LimitRequest};
use flint_server::client::{Client, ErrorKind};
use flint_server::{Server, ServerConfig};
use tokio::sync::oneshot;

const TOKEN: &str = "s3cret";

/// A server on a free port of 127.0.0.1 over a fresh directory; stopped when dropped.
struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(header_timeout: Duration) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join(".flint"));
        "127.0.0.1:0".clone_into(&mut config.bind);
        config.token = Some(TOKEN.to_owned());
        config.header_timeout = header_timeout;
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, address) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind(config).await.unwrap();
                ready.send(server.local_addr()).unwrap();
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = address.recv_timeout(Duration::from_secs(10)).unwrap();
        Running {
            url: format!("http://{addr}"),
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url, Some(TOKEN), Duration::from_secs(10)).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn limit(client: &Client, key: &str, rate: u64) -> String {
    client
        .limit(&LimitRequest {
            key: key.to_owned(),
            rate,
            per: "1h".to_owned(),
            algorithm: None,
            burst: None,
            mode: None,
        })
        .unwrap()
        .change
}

#[test]
fn every_method_against_the_server() {
    let server = Running::start(Duration::from_secs(60));
    let c = server.client();
    assert!(c.health().unwrap().ok);
    assert_eq!(limit(&c, "a", 3), "created");
    assert_eq!(limit(&c, "a", 3), "unchanged");
    assert_eq!(limit(&c, "b", 1), "created");

    let r = c.check("a", 2).unwrap();
    assert!(r.allowed);
    assert_eq!(
        (r.key.as_str(), r.remaining, r.limit, r.cost),
        ("a", 1, 3, 2)
    );
    assert!(!c.check("a", 2).unwrap().allowed, "a denial is a result");

    let all = c.check_all(&[("a", 1), ("b", 1)]).unwrap();
    assert!(all.allowed && all.denied_key.is_none());
    let all = c.check_all(&[("a", 1), ("b", 1)]).unwrap();
    assert_eq!(all.denied_key.as_deref(), Some("a"));

    let status = c.status("a").unwrap().unwrap();
    assert_eq!(
        (status.rate, status.per.as_str(), status.remaining),
        (3, "1h", 0)
    );
    assert_eq!(c.status("nope").unwrap(), None);
    assert_eq!(
        c.list(None, ListKind::All)
            .unwrap()
            .iter()
            .map(|s| s.key.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(c.list(Some("b"), ListKind::All).unwrap().len(), 1);
    assert_eq!(c.history("a", 100).unwrap().len(), 4);
    assert_eq!(c.history("a", 1).unwrap().len(), 1);
    assert_eq!(c.top("denied", 20).unwrap()[0].key, "a");
    c.refund("a", 2).unwrap();
    assert_eq!(c.status("a").unwrap().unwrap().remaining, 2);
    assert!(c
        .refund("a", 4)
        .unwrap_err()
        .to_string()
        .contains("refund cost 4"));
    assert_eq!(
        c.refund("nope", 1).unwrap_err().kind(),
        ErrorKind::LimitNotFound
    );
    c.reset("a").unwrap();
    assert_eq!(c.status("a").unwrap().unwrap().remaining, 3);
    c.flush().unwrap();
    assert_eq!(c.compact().unwrap().keys, 2);
    let doctor = c.doctor().unwrap();
    assert!(doctor.ok && doctor.keys == 2, "{doctor:?}");
    assert!(c.metrics().unwrap().contains("flint_"));
    c.remove("b").unwrap();
    assert_eq!(c.status("b").unwrap(), None);
}

#[test]
fn keys_with_any_character_survive_the_path() {
    let server = Running::start(Duration::from_secs(60));
    let c = server.client();
    for key in [
        "route:/v1/chat",
        "a b%20c?d=e&f#g+h",
        "ключ/ü/🙂",
        "..",
        "/leading/and/trailing/",
        "%",
    ] {
        assert_eq!(limit(&c, key, 2), "created", "{key}");
        assert!(c.check(key, 1).unwrap().allowed);
        assert_eq!(c.status(key).unwrap().unwrap().key, key);
        assert_eq!(c.history(key, 10).unwrap().len(), 1, "{key}");
        assert_eq!(c.list(Some(key), ListKind::All).unwrap()[0].key, key);
        c.remove(key).unwrap();
        assert_eq!(c.status(key).unwrap(), None, "{key}");
    }
}

#[test]
fn the_servers_errors_map_to_kinds() {
    let server = Running::start(Duration::from_secs(60));
    let c = server.client();
    limit(&c, "k", 3);

    let e = c.check("nope", 1).unwrap_err();
    assert_eq!(
        (e.kind(), e.status(), e.key()),
        (ErrorKind::LimitNotFound, Some(404), Some("nope"))
    );
    assert!(
        e.message()
            .starts_with("no limit is configured for key \"nope\""),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with(&format!("(Flint server at {})", server.url)),
        "{e}"
    );
    let e = c.check_all(&[("k", 1), ("nope", 1)]).unwrap_err();
    assert_eq!(
        (e.kind(), e.key()),
        (ErrorKind::LimitNotFound, Some("nope"))
    );
    assert_eq!(
        c.remove("nope").unwrap_err().kind(),
        ErrorKind::LimitNotFound
    );
    assert_eq!(
        c.history("nope", 1).unwrap_err().kind(),
        ErrorKind::LimitNotFound
    );

    let e = c.check("k", 4).unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::InvalidArgument, Some("invalid_argument"))
    );
    assert!(
        e.message().starts_with("cost 4 for key \"k\" is invalid"),
        "{e}"
    );
    let e = c.top("nope", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let long = "x".repeat(1025);
    let e = c
        .limit(&LimitRequest {
            key: long,
            rate: 1,
            per: "1s".into(),
            algorithm: None,
            burst: None,
            mode: None,
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    let anonymous = Client::new(&server.url, None, Duration::from_secs(5)).unwrap();
    assert!(anonymous.health().unwrap().ok, "health needs no token");
    let e = anonymous.check("k", 1).unwrap_err();
    assert_eq!(
        (e.kind(), e.status()),
        (ErrorKind::Authentication, Some(401))
    );
    let wrong = Client::new(&server.url, Some("nope"), Duration::from_secs(5)).unwrap();
    assert_eq!(
        wrong.check("k", 1).unwrap_err().kind(),
        ErrorKind::Authentication
    );
    assert_eq!(
        c.status("k").unwrap().unwrap().allowed,
        0,
        "nothing was consumed"
    );

    let prefixed = Client::new(
        &format!("{}/proxy", server.url),
        Some(TOKEN),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        prefixed.list(None, ListKind::All).unwrap_err().kind(),
        ErrorKind::Protocol
    );
}

/// The server closes a keep-alive connection that stays idle past its header timeout
/// (1 s here, 60 s by default). The pool's probe sees it closed before the next
/// request is written: the check goes once, on a new connection, and succeeds.
#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_not_resent() {
    let server = Running::start(Duration::from_secs(1));
    let c = server.client();
    limit(&c, "k", 10);
    assert!(c.check("k", 1).unwrap().allowed);
    thread::sleep(Duration::from_millis(2500));
    assert!(c.check("k", 1).unwrap().allowed);
    let status = c.status("k").unwrap().unwrap();
    assert_eq!(status.allowed, 2, "each check counted once");
}

/// Many threads share one client (one pool): every check is counted exactly once.
#[test]
fn threads_share_one_client() {
    let server = Running::start(Duration::from_secs(60));
    let c = server.client();
    limit(&c, "k", 1000);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || (0..25).filter(|_| c.check("k", 1).unwrap().allowed).count())
        })
        .collect();
    let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(allowed, 200);
    assert_eq!(c.status("k").unwrap().unwrap().allowed, 200);
}

fn limit_with(client: &Client, key: &str, rate: u64, mode: Option<&str>) -> KeyStatus {
    client
        .limit(&LimitRequest {
            key: key.to_owned(),
            rate,
            per: "1h".to_owned(),
            algorithm: None,
            burst: None,
            mode: mode.map(str::to_owned),
        })
        .unwrap()
        .status
}

/// The value of one series of the metrics text, such as
/// `flint_checks_total{outcome="denied"}`.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A template is the limit of every key it covers: checked with no limit of their
/// own, listed by kind, shown with their template, refused as a key itself, counted
/// in the metrics and the doctor's report, and removed with its keys.
#[test]
fn templates_through_the_client() {
    let server = Running::start(Duration::from_secs(60));
    let c = server.client();
    let template = limit_with(&c, "ip:*", 2, None);
    assert_eq!(
        (template.key.as_str(), template.template.as_deref()),
        ("ip:*", None)
    );
    limit_with(&c, "ip:10.*", 5, None);
    limit_with(&c, "ip:own", 1, None);

    // A covered key needs no limit of its own; the longest prefix wins; its own wins.
    let r = c.check("ip:1.2.3.4", 1).unwrap();
    assert!(r.allowed && r.limit == 2 && r.remaining == 1, "{r:?}");
    assert_eq!(c.check("ip:10.0.0.1", 1).unwrap().limit, 5);
    assert_eq!(c.check("ip:own", 1).unwrap().limit, 1);
    assert!(c.check("ip:1.2.3.4", 1).unwrap().allowed);
    assert!(!c.check("ip:1.2.3.4", 1).unwrap().allowed);
    assert!(
        c.peek("ip:9.9.9.9", 2).unwrap().allowed,
        "a new key is full"
    );

    let status = c.status("ip:1.2.3.4").unwrap().unwrap();
    assert_eq!(status.template.as_deref(), Some("ip:*"));
    assert_eq!((status.remaining, status.denied), (0, 1));
    let fresh = c.status("ip:5.5.5.5").unwrap().unwrap();
    assert_eq!(
        (fresh.template.as_deref(), fresh.remaining, fresh.allowed),
        (Some("ip:*"), 2, 0)
    );
    assert_eq!(c.status("other").unwrap(), None, "no template covers it");
    assert_eq!(c.history("ip:1.2.3.4", 10).unwrap().len(), 3);

    let keys = |kind| -> Vec<String> {
        c.list(None, kind)
            .unwrap()
            .into_iter()
            .map(|s| s.key)
            .collect()
    };
    assert_eq!(keys(ListKind::Templates), ["ip:*", "ip:10.*"]);
    assert_eq!(
        keys(ListKind::Keys),
        ["ip:1.2.3.4", "ip:10.0.0.1", "ip:own"]
    );
    assert_eq!(keys(ListKind::All).len(), 5);
    assert_eq!(
        c.list(Some("ip:1"), ListKind::Keys).unwrap()[0]
            .template
            .as_deref(),
        Some("ip:*")
    );
    assert_eq!(c.top("denied", 1).unwrap()[0].key, "ip:1.2.3.4");

    // A template is not a key to check, peek or refund: a 400 naming the fix.
    for e in [
        c.check("ip:*", 1).unwrap_err(),
        c.peek("ip:*", 1).unwrap_err(),
        c.refund("ip:*", 1).unwrap_err(),
    ] {
        assert_eq!(
            (e.kind(), e.status(), e.code()),
            (
                ErrorKind::InvalidArgument,
                Some(400),
                Some("invalid_argument")
            ),
            "{e}"
        );
        assert!(e.message().contains("is a template"), "{e}");
    }

    let metrics = c.metrics().unwrap();
    assert_eq!(series(&metrics, "flint_templates"), Some(2.0), "{metrics}");
    assert_eq!(
        series(&metrics, "flint_template_keys"),
        Some(2.0),
        "{metrics}"
    );
    let doctor = c.doctor().unwrap();
    let ip = doctor
        .templates
        .iter()
        .find(|t| t.template == "ip:*")
        .unwrap();
    assert_eq!(ip.live_keys, 1, "{doctor:?}");
    assert!(doctor.memory_bytes > 0, "{doctor:?}");

    // Reconfiguring the template applies to its live keys; removing it removes them.
    limit_with(&c, "ip:*", 10, None);
    assert_eq!(c.status("ip:1.2.3.4").unwrap().unwrap().rate, 10);
    c.remove("ip:*").unwrap();
    assert_eq!(c.status("ip:1.2.3.4").unwrap(), None);
    assert_eq!(keys(ListKind::Templates), ["ip:10.*"]);
    let e = c.check("ip:1.2.3.4", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitNotFound, "{e}");
}

/// A shadow limit allows every check, reports the would-be denials, consumes nothing
/// for them, and counts them in the status, history, top and metrics.
#[test]
fn shadow_limits_through_the_client() {
    let server = Running::start(Duration::from_secs(60));
    let c = server.client();
    let status = limit_with(&c, "s", 1, Some("shadow"));
    assert_eq!(status.mode, "shadow");
    assert_eq!(limit_with(&c, "e", 1, None).mode, "enforce");

    let first = c.check("s", 1).unwrap();
    assert!(first.allowed && !first.shadow_denied, "{first:?}");
    let second = c.check("s", 1).unwrap();
    assert!(second.allowed && second.shadow_denied, "{second:?}");
    assert!(c.peek("s", 1).unwrap().shadow_denied);
    assert!(c.check("e", 1).unwrap().allowed);
    let denied = c.check("e", 1).unwrap();
    assert!(!denied.allowed && !denied.shadow_denied, "{denied:?}");

    let status = c.status("s").unwrap().unwrap();
    assert_eq!(
        (
            status.allowed,
            status.denied,
            status.shadow_denied,
            status.remaining
        ),
        (1, 0, 1, 0),
        "a shadow denial is counted as such, not as allowed"
    );
    let history = c.history("s", 10).unwrap();
    assert_eq!(
        history.iter().map(|e| e.shadow_denied).collect::<Vec<_>>(),
        [false, true]
    );
    let top = c.top("shadow_denied", 10).unwrap();
    assert_eq!(
        top.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
        ["s"]
    );

    let metrics = c.metrics().unwrap();
    for (outcome, count) in [("allowed", 2.0), ("denied", 1.0), ("shadow_denied", 1.0)] {
        let name = format!("flint_checks_total{{outcome=\"{outcome}\"}}");
        assert_eq!(series(&metrics, &name), Some(count), "{name}: {metrics}");
    }

    // Back to enforcing: the next check is denied.
    assert_eq!(limit_with(&c, "s", 1, Some("enforce")).mode, "enforce");
    assert!(!c.check("s", 1).unwrap().allowed);

    let e = c
        .limit(&LimitRequest {
            key: "s".to_owned(),
            rate: 1,
            per: "1h".to_owned(),
            algorithm: None,
            burst: None,
            mode: Some("loud".to_owned()),
        })
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.status()),
        (ErrorKind::InvalidArgument, Some(400))
    );
    assert!(
        e.message().contains("loud") && e.message().contains("shadow"),
        "{e}"
    );
    let e = c.top("shadowed", 1).unwrap_err();
    assert!(e.message().contains("shadow_denied"), "{e}");
}
