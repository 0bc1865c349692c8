//! Every `limit`, `log` and `doctor` command through `--url` (a real `flint server`
//! started as a child process) prints what it prints through `--data-dir` on an
//! equivalent directory, with the same exit code: the same API types, one renderer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command as StdCommand, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "test-token";

fn flint() -> StdCommand {
    let mut command = StdCommand::new(assert_cmd::cargo::cargo_bin("flint"));
    command
        .env_remove("FLINT_DATA_DIR")
        .env_remove("FLINT_URL")
        .env_remove("FLINT_SERVER_TOKEN")
        .env("TZ", "UTC")
        .stdin(Stdio::null());
    command
}

/// A `flint server` child process; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        // A port the system just gave out; the server binds it a moment later.
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let bind = format!("127.0.0.1:{port}");
        let child = flint()
            .arg("--data-dir")
            .arg(dir)
            // The token before the subcommand is the server's too.
            .args(["--token", TOKEN, "server", "start", "--bind", &bind])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            url: format!("http://{bind}"),
        };
        server.wait_healthy(&bind);
        server
    }

    /// Polls `GET /v1/health` for at most 60 seconds.
    fn wait_healthy(&mut self, bind: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("the server exited ({status}) before answering: {stderr}");
            }
            if health(bind) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer /v1/health within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = StdCommand::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /v1/health` answers 200.
fn health(bind: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(bind) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v1/health HTTP/1.1\r\nHost: {bind}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

/// The fields that hold times: they differ between two runs a moment apart.
const TIMES: &[&str] = &["reset_at", "retry_after", "last_seen", "at"];

/// A JSON document with its times replaced by whether they are null.
fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if TIMES.contains(&k.as_str()) {
                        Value::String(if v.is_null() { "null" } else { "time" }.into())
                    } else {
                        without_times(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// The structure of a document: its fields, recursively, without values.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

/// Tables with their times masked and their borders and padding gone (a masked time
/// changes column widths).
fn normalized(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let words: Vec<String> = line
                .replace(|c: char| "│┌┐└┘╞╡═─".contains(c), " ")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let mut out = Vec::new();
            let mut i = 0;
            while i < words.len() {
                let w = &words[i];
                // 2026-11-22T22:48:02+00:00 (in 2s) / (now) / (3m ago)
                if w.len() >= 25 && w.as_bytes()[4] == b'-' && w.contains('T') {
                    out.push("<time>".to_owned());
                    i += 1;
                    while i < words.len() && !words[i - 1].ends_with(')') {
                        i += 1;
                    }
                    continue;
                }
                // a relative time alone (the list's "last seen"), seconds ("0.123s")
                let relative = w == "now"
                    || (w == "in" && i + 1 < words.len())
                    || (i + 1 < words.len() && words[i + 1] == "ago");
                if relative {
                    out.push("<time>".to_owned());
                    i += if w == "now" { 1 } else { 2 };
                    continue;
                }
                if w.ends_with('s') && w[..w.len() - 1].parse::<f64>().is_ok() && w.contains('.') {
                    out.push("<seconds>".to_owned());
                } else {
                    out.push(w.clone());
                }
                i += 1;
            }
            out.join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn run(place: &[&str], args: &[&str], json: bool) -> Output {
    let mut command = flint();
    command.args(place).args(args);
    if json {
        command.arg("--json");
    }
    command.output().unwrap()
}

/// What both ways must agree on for `args`: exit codes always; stdout as documents
/// without times, or as normalised tables; for doctor and compaction (whose figures
/// depend on the process holding the directory) the shape and the verdict. Returns the
/// exit code of the first run (`--json`).
fn compare(local: &[&str], remote: &[&str], args: &[&str]) -> Option<i32> {
    let mut code = None;
    for json in [true, false] {
        let l = run(local, args, json);
        let r = run(remote, args, json);
        let context = format!(
            "{args:?} json={json}\nlocal:  {}{}\nremote: {}{}",
            String::from_utf8_lossy(&l.stdout),
            String::from_utf8_lossy(&l.stderr),
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(l.status.code(), r.status.code(), "{context}");
        code = code.or(l.status.code());
        let (ls, rs) = (
            String::from_utf8(l.stdout).unwrap(),
            String::from_utf8(r.stdout).unwrap(),
        );
        if l.status.code() == Some(2) {
            assert!(ls.is_empty() && rs.is_empty(), "{context}");
            let (le, re) = (
                String::from_utf8(l.stderr).unwrap(),
                String::from_utf8(r.stderr).unwrap(),
            );
            assert_eq!(re.lines().count(), 1, "{context}");
            if le.contains("no limit is configured") {
                assert_eq!(le, re, "a missing limit reads the same: {context}");
            }
            continue;
        }
        let figures_differ = matches!(args, ["doctor", ..] | ["log", "compact"]);
        if json {
            let (lv, rv): (Value, Value) = (
                serde_json::from_str(&ls).unwrap(),
                serde_json::from_str(&rs).unwrap(),
            );
            if figures_differ {
                assert_eq!(shape(&lv), shape(&rv), "{context}");
                assert_eq!(lv.get("ok"), rv.get("ok"), "{context}");
            } else {
                assert_eq!(without_times(&lv), without_times(&rv), "{context}");
            }
        } else if figures_differ {
            // The same lines, by their first word (the check names; "compacted:").
            let first = |text: &str| -> Vec<String> {
                normalized(text)
                    .iter()
                    .map(|l| l.split(' ').next().unwrap_or("").to_owned())
                    .collect()
            };
            assert_eq!(first(&ls), first(&rs), "{context}");
        } else {
            assert_eq!(normalized(&ls), normalized(&rs), "{context}");
        }
    }
    code
}

#[test]
fn every_command_through_url_matches_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let local_dir = tmp.path().join("local");
    let served_dir = tmp.path().join("served");
    // The server's directory starts as the local one: created by `limit add`.
    let seed: &[&str] = &["limit", "add", "seed", "--rate", "1", "--per", "1d"];
    for dir in [&local_dir, &served_dir] {
        let output = flint()
            .arg("--data-dir")
            .arg(dir)
            .args(seed)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0));
    }
    let server = Server::start(&served_dir);
    let local_dir = local_dir.to_str().unwrap();
    let local = ["--data-dir", local_dir];
    let remote = ["--url", server.url.as_str(), "--token", TOKEN];

    let commands: &[&[&str]] = &[
        &["limit", "add", "api:a", "--rate", "3", "--per", "1h"],
        &["limit", "add", "api:a", "--rate", "3", "--per", "60m"],
        &[
            "limit",
            "add",
            "org/x",
            "--rate",
            "5",
            "--per",
            "1d",
            "--algorithm",
            "fixed_window_counter",
        ],
        &[
            "limit",
            "add",
            "web",
            "--rate",
            "4",
            "--per",
            "1h",
            "--algorithm",
            "sliding_window_log",
        ],
        &[
            "limit", "add", "burst", "--rate", "2", "--per", "1h", "--burst", "6",
        ],
        &[
            "limit", "add", "burst", "--rate", "2", "--per", "1h", "--burst", "6",
        ],
        &["limit", "check", "burst", "--cost", "5"],
        &[
            "limit", "add", "burst", "--rate", "2", "--per", "1h", "--burst", "3",
        ],
        &["limit", "check", "burst", "--cost", "3"],
        &["limit", "refund", "burst", "--cost", "3"],
        &[
            "limit",
            "add",
            "burst",
            "--rate",
            "2",
            "--per",
            "1h",
            "--algorithm",
            "fixed_window_counter",
            "--burst",
            "3",
        ],
        &[
            "limit", "add", "burst", "--rate", "2", "--per", "1h", "--burst", "0",
        ],
        &["limit", "add", "bad", "--rate", "0", "--per", "1m"],
        &["limit", "add", "bad", "--rate", "1", "--per", "1M"],
        &["limit", "peek", "api:a", "--cost", "2"],
        &["limit", "check", "api:a", "--cost", "2"],
        &["limit", "check", "api:a", "--cost", "2"],
        &["limit", "peek", "api:a", "--cost", "9"],
        &["limit", "peek", "missing"],
        &["limit", "check", "web"],
        &["limit", "check", "api:a", "--cost", "9"],
        &["limit", "check", "missing"],
        &["limit", "check-all", "api:a", "org/x", "--cost", "org/x=2"],
        &["limit", "check-all", "api:a", "org/x"],
        &["limit", "check-all", "org/x", "missing"],
        &["limit", "refund", "api:a", "--cost", "2"],
        &["limit", "refund", "web"],
        &["limit", "refund", "api:a", "--cost", "9"],
        &["limit", "refund", "api:a", "--cost", "0"],
        &["limit", "refund", "missing"],
        &["limit", "status", "api:a"],
        &["limit", "status", "org/x"],
        &["limit", "status", "burst"],
        &["limit", "status", "missing"],
        &["limit", "list"],
        &["limit", "list", "--prefix", "api:"],
        &["limit", "list", "--prefix", "none"],
        &["limit", "history", "api:a"],
        &["limit", "history", "org/x", "--limit", "1"],
        &["limit", "history", "seed"],
        &["limit", "history", "missing"],
        &["limit", "top"],
        &["limit", "top", "--by", "checks", "--limit", "2"],
        &["limit", "top", "--by", "allowed_cost"],
        &["limit", "top", "--by", "loudest"],
        &["limit", "reset", "api:a"],
        &["limit", "status", "api:a"],
        &["limit", "reset", "missing"],
        &["limit", "remove", "web"],
        &["limit", "remove", "web"],
        &["limit", "list"],
    ];
    for args in commands {
        compare(&local, &remote, args);
    }
    // Templates and shadow limits, with the exit code each must give: 0 done or
    // allowed, 1 denied, 2 an error. `compare` runs each command twice on each side
    // (--json, then tables): a check consumes twice, and the code is the first run's.
    let dynamic: &[(&[&str], i32)] = &[
        // A template is the limit of every key it covers.
        (&["limit", "add", "ip:*", "--rate", "4", "--per", "1h"], 0),
        (&["limit", "add", "ip:*", "--rate", "4", "--per", "1h"], 0),
        (
            &["limit", "add", "ip:10.*", "--rate", "10", "--per", "1h"],
            0,
        ),
        (&["limit", "check", "ip:1.2.3.4"], 0),
        (&["limit", "check", "ip:1.2.3.4"], 0),
        (&["limit", "check", "ip:1.2.3.4"], 1),
        (&["limit", "check", "ip:10.0.0.1", "--cost", "4"], 0),
        (&["limit", "peek", "ip:9.9.9.9", "--cost", "2"], 0),
        (&["limit", "peek", "ip:9.9.9.9", "--cost", "5"], 2),
        // A template itself is not a key to check.
        (&["limit", "check", "ip:*"], 2),
        (&["limit", "peek", "ip:*"], 2),
        (&["limit", "refund", "ip:*"], 2),
        (&["limit", "status", "ip:1.2.3.4"], 0),
        (&["limit", "status", "ip:5.5.5.5"], 0),
        (&["limit", "status", "ip:*"], 0),
        (&["limit", "status", "other:1"], 2),
        (&["limit", "history", "ip:1.2.3.4"], 0),
        (&["limit", "list", "--kind", "templates"], 0),
        (&["limit", "list", "--kind", "keys", "--prefix", "ip:"], 0),
        (&["limit", "list", "--prefix", "ip:1"], 0),
        (&["limit", "list", "--kind", "nope"], 2),
        (&["limit", "check-all", "ip:1.2.3.4", "ip:7.7.7.7"], 1),
        (&["limit", "check-all", "ip:7.7.7.7", "ip:10.0.0.1"], 0),
        // A shadow limit allows every check and counts the would-be denials.
        (
            &[
                "limit", "add", "shadow", "--rate", "1", "--per", "1h", "--mode", "shadow",
            ],
            0,
        ),
        (
            &[
                "limit", "add", "shadow", "--rate", "1", "--per", "1h", "--mode", "loud",
            ],
            2,
        ),
        (&["limit", "check", "shadow"], 0),
        (&["limit", "check", "shadow"], 0),
        (&["limit", "peek", "shadow"], 0),
        (&["limit", "check-all", "shadow", "ip:8.8.8.8"], 0),
        (&["limit", "status", "shadow"], 0),
        (&["limit", "history", "shadow"], 0),
        (&["limit", "list", "--prefix", "sh"], 0),
        (&["limit", "top", "--by", "shadow_denied"], 0),
        // Enforced again: denied.
        (&["limit", "add", "shadow", "--rate", "1", "--per", "1h"], 0),
        (&["limit", "check", "shadow"], 1),
        // Removing a template removes its keys.
        (&["limit", "remove", "ip:10.*"], 0),
        (&["limit", "status", "ip:10.0.0.1"], 0),
        (&["limit", "list", "--kind", "templates"], 0),
        (&["limit", "remove", "ip:*"], 0),
        (&["limit", "status", "ip:1.2.3.4"], 2),
        (&["limit", "add", "ip:*", "--rate", "4", "--per", "1h"], 0),
        (&["limit", "check", "ip:1.2.3.4"], 0),
        (&["log", "flush"], 0),
        (&["log", "compact"], 0),
        (&["doctor"], 0),
    ];
    for (args, code) in dynamic {
        assert_eq!(compare(&local, &remote, args), Some(*code), "{args:?}");
    }
    // What those commands showed, read once more through the server.
    let json = |args: &[&str]| -> Value {
        let output = run(&remote, args, true);
        serde_json::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap()
    };
    let status = json(&["limit", "status", "ip:1.2.3.4"]);
    assert_eq!(status["template"], "ip:*", "{status}");
    assert_eq!(status["remaining"], 2, "{status}");
    let shadow = json(&["limit", "status", "shadow"]);
    assert_eq!(
        (&shadow["mode"], &shadow["shadow_denied"], &shadow["denied"]),
        (&Value::from("enforce"), &Value::from(5), &Value::from(2)),
        "{shadow}"
    );
    let templates = json(&["limit", "list", "--kind", "templates"]);
    let keys: Vec<&str> = templates["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["ip:*"]);
    let doctor = json(&["doctor"]);
    assert_eq!(doctor["templates"][0]["template"], "ip:*", "{doctor}");
    assert_eq!(doctor["templates"][0]["live_keys"], 1, "{doctor}");
    let text = String::from_utf8(run(&remote, &["doctor"], false).stdout).unwrap();
    assert!(
        text.contains("live keys") && text.contains("memory: engine state"),
        "{text}"
    );
    // doctor --repair needs the directory.
    let output = run(&remote, &["doctor", "--repair", "--yes"], false);
    assert_eq!(output.status.code(), Some(2));
    // Without the token the server refuses, and the CLI says how to pass one.
    let output = run(&["--url", server.url.as_str()], &["limit", "list"], false);
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(
        message.contains("--token or FLINT_SERVER_TOKEN"),
        "{message}"
    );
    // The served directory is locked by the server; the message says to use --url.
    let output = flint()
        .arg("--data-dir")
        .arg(&served_dir)
        .args(["limit", "list"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(
        message.contains(&format!("pid {}", server.child.id())),
        "{message}"
    );
    assert!(message.contains("flint --url"), "{message}");
}
