//! The client against a hand-made HTTP server on 127.0.0.1 that answers fixed bytes:
//! the requests it sends, how it maps every kind of answer to an error, and the retry
//! rule (a request that may have consumed quota is never sent twice).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flint_server::api::LimitRequest;
use flint_server::client::{Client, ErrorKind};

/// A request as the fake server read it.
#[derive(Debug, Clone)]
struct Seen {
    /// `POST /v1/check`
    line: String,
    /// Header lines, lower-cased names.
    headers: Vec<(String, String)>,
    body: String,
    /// Which connection (0, 1, ...) it came on.
    connection: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake server does with a request.
enum Act {
    /// Answer with this status and body, and keep the connection open.
    Answer(u16, &'static str, String),
    /// Close the connection without answering.
    Close,
    /// Never answer (keep the connection open for a while).
    Hang,
    /// Answer 200 with this JSON, then close the connection (as an idle timeout would,
    /// without announcing it).
    AnswerThenClose(String),
}

fn json(status: u16, body: &str) -> Act {
    Act::Answer(status, "application/json", body.to_owned())
}

fn error(status: u16, code: &str, message: &str) -> Act {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// Serves on 127.0.0.1 at a free port; `act(n, request)` decides for the n-th
    /// request (from 0, over all connections).
    fn start(act: impl Fn(usize, &Seen) -> Act + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let act = Arc::new(act);
        let log = seen.clone();
        thread::spawn(move || {
            for (connection, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let (act, log) = (act.clone(), log.clone());
                thread::spawn(move || serve(stream, connection, &*act, &log));
            }
        });
        Fake { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    connection: usize,
    act: &(dyn Fn(usize, &Seen) -> Act + Send + Sync),
    log: &Mutex<Vec<Seen>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return; // the client closed the connection
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap();
            headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let request = Seen {
            line: line.trim_end().to_owned(),
            headers,
            body: String::from_utf8(body).unwrap(),
            connection,
        };
        let n = {
            let mut log = log.lock().unwrap();
            log.push(request.clone());
            log.len() - 1
        };
        match act(n, &request) {
            Act::Answer(status, content_type, body) => {
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
            Act::AnswerThenClose(body) => {
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = writer.write_all(answer.as_bytes());
                return;
            }
            Act::Close => return,
            Act::Hang => {
                thread::sleep(Duration::from_secs(5));
                return;
            }
        }
    }
}

const STATUS: &str = r#"{"key":"k","rate":10,"burst":10,"per":"1m","per_ms":60000,"algorithm":"token_bucket","mode":"enforce","template":null,"remaining":10,"reset_at":1700000000.0,"allowed":0,"denied":0,"allowed_cost":0,"denied_cost":0,"shadow_denied":0,"last_seen":null}"#;

fn check_json(key: &str) -> String {
    serde_json::json!({"key": key, "allowed": true, "remaining": 9, "reset_at": 1.7e9, "retry_after": 0.0, "limit": 10, "algorithm": "token_bucket", "cost": 1, "shadow_denied": false}).to_string()
}

fn client(url: &str) -> Client {
    Client::new(url, Some("t0ken"), Duration::from_secs(5)).unwrap()
}

#[test]
fn requests_carry_the_token_json_and_percent_encoded_keys() {
    let fake = Fake::start(|_, r| {
        if r.line.starts_with("POST /v1/check ") {
            json(200, &check_json("route:/v1/chat"))
        } else if r.line.starts_with("GET /v1/limits/") {
            json(200, STATUS)
        } else if r.line.starts_with("GET /v1/limits") {
            json(200, &format!("{{\"limits\":[{STATUS}]}}"))
        } else if r.line.starts_with("GET /v1/top") {
            json(200, &format!("{{\"top\":[{STATUS}]}}"))
        } else if r.line.starts_with("GET /v1/history/") {
            json(
                200,
                r#"{"key":"k","events":[{"at":1.5,"cost":1,"allowed":true,"blocked_by_other":false,"shadow_denied":false,"remaining":9}]}"#,
            )
        } else if r.line.starts_with("POST /v1/limits ") {
            json(
                200,
                &format!("{{\"change\":\"created\",\"status\":{STATUS}}}"),
            )
        } else if r.line.starts_with("GET /metrics") {
            Act::Answer(200, "text/plain", "flint_up 1\n".into())
        } else {
            json(200, r#"{"ok":true}"#)
        }
    });
    let c = client(&format!("{}/", fake.url));
    assert_eq!(c.url(), fake.url, "the trailing slash is dropped");
    let key = "route:/v1/chat é%?#";
    assert!(c.check(key, 2).unwrap().allowed);
    assert!(c.status(key).unwrap().is_some());
    assert_eq!(
        c.list(Some("a b/"), flint_core::ListKind::All)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(c.history(key, 7).unwrap()[0].cost, 1);
    assert_eq!(c.top("denied_cost", 3).unwrap()[0].key, "k");
    c.reset(key).unwrap();
    c.refund(key, 2).unwrap();
    c.remove(key).unwrap();
    c.flush().unwrap();
    let change = c
        .limit(&LimitRequest {
            key: "k".into(),
            rate: 10,
            per: "1m".into(),
            algorithm: None,
            burst: None,
            mode: None,
        })
        .unwrap();
    assert_eq!(change.change, "created");
    assert_eq!(c.metrics().unwrap(), "flint_up 1\n");

    let seen = fake.seen();
    let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
    let encoded = "route%3A%2Fv1%2Fchat%20%C3%A9%25%3F%23";
    assert_eq!(
        lines,
        [
            "POST /v1/check HTTP/1.1".to_owned(),
            format!("GET /v1/limits/{encoded} HTTP/1.1"),
            "GET /v1/limits?prefix=a%20b%2F HTTP/1.1".to_owned(),
            format!("GET /v1/history/{encoded}?limit=7 HTTP/1.1"),
            "GET /v1/top?by=denied_cost&limit=3 HTTP/1.1".to_owned(),
            "POST /v1/reset HTTP/1.1".to_owned(),
            "POST /v1/refund HTTP/1.1".to_owned(),
            format!("DELETE /v1/limits/{encoded} HTTP/1.1"),
            "POST /v1/log/flush HTTP/1.1".to_owned(),
            "POST /v1/limits HTTP/1.1".to_owned(),
            "GET /metrics HTTP/1.1".to_owned(),
        ]
    );
    for s in &seen {
        assert_eq!(
            s.header("authorization"),
            Some("Bearer t0ken"),
            "{}",
            s.line
        );
    }
    let check: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(check, serde_json::json!({"key": key, "cost": 2}));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert!(
        seen[1].header("content-length").is_none(),
        "a GET has no body"
    );
    // One keep-alive connection served every request.
    assert!(seen.iter().all(|s| s.connection == 0));
}

#[test]
fn error_answers_map_to_kinds_with_the_servers_message() {
    let fake = Fake::start(|_, r| {
        let key = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| {
                let item = &v["items"][1]["key"];
                v["key"].as_str().or(item.as_str()).map(str::to_owned)
            })
            .unwrap_or_default();
        match key.as_str() {
            "bad" => error(400, "invalid_argument", "cost 11 for key \"bad\" is invalid: the cost must be between 1 and the limit's rate (10); a larger cost could never be allowed"),
            "missing" => error(404, "limit_not_found", "no limit is configured for key \"missing\": call limit(\"missing\", rate=..., per=...) first"),
            "token" => error(401, "unauthorized", "missing or wrong bearer token: pass Authorization: Bearer <token>"),
            "disk" => error(500, "storage_error", "sync /d/flint.aof failed: No space left on device"),
            "proxy" => Act::Answer(502, "text/html", "<html>Bad Gateway</html>".into()),
            "garbage" => Act::Answer(200, "text/plain", "hello".into()),
            "route" => error(404, "not_found", "no route GET /v1/nope"),
            _ => json(418, "{}"),
        }
    });
    let c = client(&fake.url);

    let e = c.check("bad", 11).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        (e.status(), e.code(), e.key()),
        (Some(400), Some("invalid_argument"), Some("bad"))
    );
    assert!(
        e.message()
            .starts_with("cost 11 for key \"bad\" is invalid"),
        "verbatim: {e}"
    );
    assert!(
        e.to_string().contains(&fake.url),
        "Display names the URL: {e}"
    );

    let e = c.check("missing", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitNotFound);
    assert_eq!(e.key(), Some("missing"));
    let e = c.check_all(&[("a", 1), ("missing", 2)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitNotFound);
    assert_eq!(e.key(), Some("missing"), "the key is found among the items");

    let e = c.check("token", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication);
    assert!(
        e.to_string().contains("bearer token") && e.to_string().contains(&fake.url),
        "{e}"
    );

    let e = c.check("disk", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Server);
    assert_eq!(e.code(), Some("storage_error"));
    assert!(
        e.to_string().contains("No space left") && e.to_string().contains(&fake.url),
        "{e}"
    );

    let e = c.check("proxy", 1).unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Server, Some(502)));
    assert!(e.to_string().contains("Bad Gateway"), "{e}");

    for key in ["garbage", "route", "teapot"] {
        let e = c.check(key, 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{key}: {e}");
        assert!(e.to_string().contains(&fake.url), "{e}");
    }
}

#[test]
fn status_of_an_unknown_key_is_none() {
    let fake = Fake::start(|_, _| {
        error(
            404,
            "limit_not_found",
            "no limit is configured for key \"x\"",
        )
    });
    let c = client(&fake.url);
    assert_eq!(c.status("x").unwrap(), None);
    assert_eq!(c.status("").unwrap(), None, "answered without a request");
    let e = c.history("", 5).unwrap_err();
    assert_eq!((e.kind(), e.key()), (ErrorKind::LimitNotFound, Some("")));
    assert_eq!(fake.seen().len(), 1);
}

#[test]
fn a_refused_connection_names_the_url_and_the_fix() {
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let c = client(&url);
    let e = c.check("k", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert_eq!(
        e.to_string(),
        format!("cannot reach the Flint server at {url}: connection refused; is `flint server start` running there?")
    );
    assert_eq!(c.health().unwrap_err().kind(), ErrorKind::Connection);
}

/// The rule: a POST that may have reached the server is sent once. The server reads it
/// and closes without answering.
#[test]
fn a_check_that_got_no_answer_is_never_sent_again() {
    let fake = Fake::start(|_, _| Act::Close);
    let c = client(&fake.url);
    let e = c.check("k", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(
        e.to_string()
            .contains("closed the connection before answering POST /v1/check"),
        "{e}"
    );
    assert!(
        e.to_string().contains("may or may not have been applied"),
        "{e}"
    );
    assert_eq!(fake.seen().len(), 1, "sent exactly once");

    for call in [
        Box::new(|c: &Client| c.check_all(&[("a", 1)]).map(drop)) as Box<dyn Fn(&Client) -> _>,
        Box::new(|c: &Client| c.reset("a")),
        Box::new(|c: &Client| c.refund("a", 1)),
        Box::new(|c: &Client| c.remove("a")),
        Box::new(|c: &Client| c.compact().map(drop)),
        Box::new(|c: &Client| c.flush()),
        Box::new(|c: &Client| {
            c.limit(&LimitRequest {
                key: "a".into(),
                rate: 1,
                per: "1s".into(),
                algorithm: None,
                burst: None,
                mode: None,
            })
            .map(drop)
        }),
    ] {
        let before = fake.seen().len();
        assert_eq!(call(&c).unwrap_err().kind(), ErrorKind::Connection);
        assert_eq!(fake.seen().len(), before + 1, "{:?}", fake.seen().last());
    }
}

/// A read changes nothing: it is sent once more when the server closed the connection
/// without answering, and only once more.
#[test]
fn a_read_is_retried_once() {
    let fake = Fake::start(|_, _| Act::Close);
    let e = client(&fake.url).status("k").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.to_string().contains("changed nothing"), "{e}");
    assert_eq!(fake.seen().len(), 2);

    // The second attempt succeeds.
    let fake = Fake::start(|n, _| {
        if n == 0 {
            Act::Close
        } else {
            json(200, STATUS)
        }
    });
    assert!(client(&fake.url).status("k").unwrap().is_some());
    assert_eq!(fake.seen().len(), 2);
}

/// The race of a pooled keep-alive connection: the server answers one request, then
/// closes the connection as the next arrives on it. A check is reported, not resent;
/// a read goes again on a new connection.
#[test]
fn a_reused_connection_closed_by_the_server_does_not_send_a_check_twice() {
    let fake = Fake::start(|_, r| {
        if r.line.starts_with("GET /v1/health") {
            return json(200, r#"{"ok":true,"version":"0.1.0"}"#);
        }
        if r.connection == 0 {
            Act::Close
        } else {
            json(200, STATUS)
        }
    });
    let c = client(&fake.url);
    c.health().unwrap(); // connection 0 now idle in the pool
    let e = c.check("k", 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].connection, 0,
        "the check went on the pooled connection"
    );

    let fake2 = Fake::start(|_, r| {
        if r.line.starts_with("GET /v1/health") {
            return json(200, r#"{"ok":true,"version":"0.1.0"}"#);
        }
        if r.connection == 0 {
            Act::Close
        } else {
            json(200, STATUS)
        }
    });
    let c = client(&fake2.url);
    c.health().unwrap();
    assert!(c.status("k").unwrap().is_some());
    let seen = fake2.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!((seen[1].connection, seen[2].connection), (0, 1));
}

/// ureq probes a pooled connection before it writes anything: one that the server
/// closed while idle is dropped, and the request goes on a new connection, once.
#[test]
fn an_idle_connection_closed_by_the_server_is_not_used() {
    let fake = Fake::start(|_, _| Act::AnswerThenClose(check_json("k")));
    let c = client(&fake.url);
    assert!(c.check("k", 1).unwrap().allowed);
    // The server has closed connection 0 (as after its idle timeout); let the FIN land.
    thread::sleep(Duration::from_millis(100));
    assert!(c.check("k", 1).unwrap().allowed);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].connection, seen[1].connection), (0, 1));
}

/// A server that accepts and never answers: the timeout bounds the call, and the check
/// is not sent again.
#[test]
fn a_server_that_never_answers_times_out() {
    let fake = Fake::start(|_, _| Act::Hang);
    let c = Client::new(&fake.url, None, Duration::from_millis(500)).unwrap();
    let started = Instant::now();
    let e = c.check("k", 1).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.is_timeout());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        e.to_string().contains(&fake.url) && e.to_string().contains("0.5 s"),
        "{e}"
    );
    assert_eq!(fake.seen().len(), 1);
    // A read that times out is not retried either.
    let e = c.status("k").unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(fake.seen().len(), 2);
}
