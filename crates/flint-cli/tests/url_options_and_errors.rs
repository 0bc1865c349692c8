//! `--url` (and `FLINT_URL`) where no real server is needed to tell: the options'
//! rules, an unreachable server, and the answers of a stand-in server (one canned HTTP
//! answer per connection) mapped to the CLI's messages and exit codes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn flint() -> Command {
    let mut command = Command::cargo_bin("flint").unwrap();
    command
        .env_remove("FLINT_DATA_DIR")
        .env_remove("FLINT_URL")
        .env_remove("FLINT_SERVER_TOKEN")
        .timeout(Duration::from_secs(60));
    command
}

/// Asserts exit 2, nothing on stdout and one line on stderr starting `flint: `; returns it.
fn one_error_line(output: &std::process::Output) -> String {
    let message = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(output.stdout.is_empty(), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.starts_with("flint: "), "{message}");
    message
}

/// A URL of 127.0.0.1 where nothing listens: a port the system just gave out, closed.
fn nothing_listens() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn url_and_data_dir_on_the_command_line_is_a_usage_error_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let url = nothing_listens();
    for args in [
        &["--url", &url, "--data-dir", ".flint", "limit", "list"][..],
        &["limit", "list", "--data-dir", ".flint", "--url", &url],
        &["--data-dir=.flint", "log", "flush", "--url", &url],
        &["doctor", "--url", &url, "--data-dir", ".flint"],
    ] {
        let output = flint().current_dir(tmp.path()).args(args).output().unwrap();
        let message = one_error_line(&output);
        assert!(
            message.contains("--url") && message.contains("--data-dir"),
            "{args:?}: {message}"
        );
        assert!(message.contains(&url), "{args:?}: {message}");
    }
    // FLINT_URL from the environment and --data-dir on the line: the same contradiction.
    let output = flint()
        .current_dir(tmp.path())
        .env("FLINT_URL", &url)
        .args(["--data-dir", ".flint", "limit", "list"])
        .output()
        .unwrap();
    one_error_line(&output);
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "nothing created"
    );
}

#[test]
fn flint_data_dir_from_the_environment_is_ignored_with_url() {
    let tmp = tempfile::tempdir().unwrap();
    let url = nothing_listens();
    for data_dir in [".flint", ""] {
        let output = flint()
            .current_dir(tmp.path())
            .env("FLINT_DATA_DIR", data_dir)
            .args(["--url", &url, "limit", "list"])
            .output()
            .unwrap();
        let message = one_error_line(&output);
        // The command went to the URL (and found nothing there), not to the directory.
        assert!(message.contains(&url), "{data_dir:?}: {message}");
        assert!(!message.contains("--data-dir"), "{data_dir:?}: {message}");
    }
    // An empty FLINT_URL is as good as unset: the directory is used.
    let output = flint()
        .current_dir(tmp.path())
        .env("FLINT_URL", "")
        .args(["limit", "list"])
        .output()
        .unwrap();
    let message = one_error_line(&output);
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn doctor_repair_through_a_server_is_refused() {
    let url = nothing_listens();
    for args in [
        &["--url", &url, "doctor", "--repair"][..],
        &["doctor", "--repair", "--yes", "--url", &url],
    ] {
        let output = flint().args(args).output().unwrap();
        let message = one_error_line(&output);
        assert!(
            message.contains("--repair") && message.contains("stop the server"),
            "{args:?}: {message}"
        );
        assert!(message.contains("--data-dir"), "{args:?}: {message}");
    }
    // FLINT_URL likewise.
    let output = flint()
        .env("FLINT_URL", &url)
        .args(["doctor", "--repair"])
        .output()
        .unwrap();
    one_error_line(&output);
}

#[test]
fn an_unreachable_server_is_exit_2_naming_the_url() {
    let url = nothing_listens();
    let commands: &[&[&str]] = &[
        &["limit", "add", "k", "--rate", "1", "--per", "1m"],
        &["limit", "check", "k"],
        &["limit", "check-all", "k", "j"],
        &["limit", "status", "k"],
        &["limit", "list"],
        &["limit", "reset", "k"],
        &["limit", "remove", "k"],
        &["limit", "history", "k"],
        &["limit", "top"],
        &["log", "flush"],
        &["log", "compact"],
        &["doctor"],
    ];
    for args in commands {
        for json in [false, true] {
            let mut command = flint();
            command.args(["--url", &url]).args(*args);
            if json {
                command.arg("--json");
            }
            let message = one_error_line(&command.output().unwrap());
            assert!(message.contains(&url), "{args:?}: {message}");
        }
    }
    let output = flint()
        .env("FLINT_URL", &url)
        .env("FLINT_SERVER_TOKEN", "secret")
        .args(["limit", "list"])
        .output()
        .unwrap();
    let message = one_error_line(&output);
    assert!(message.contains(&url), "{message}");
    assert!(
        !message.contains("secret"),
        "never shows the token: {message}"
    );
}

#[test]
fn an_empty_url_is_refused() {
    let message = one_error_line(
        &flint()
            .args(["--url", "", "limit", "list"])
            .output()
            .unwrap(),
    );
    assert!(message.contains("--url is empty"), "{message}");
}

/// A stand-in server on 127.0.0.1 that answers one request with `status` and the JSON
/// `body`, then stops. Joining it returns the request's text (line and headers).
fn answer_once(status: &str, body: &str) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no request within 20 s");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The head, then as much body as it announces.
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            assert_eq!(
                stream.read(&mut byte).unwrap(),
                1,
                "the request ended early"
            );
            request.push(byte[0]);
        }
        let head = String::from_utf8(request).unwrap();
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).unwrap();
        stream.write_all(response.as_bytes()).unwrap();
        head
    });
    (url, handle)
}

fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

#[test]
fn a_refused_token_says_how_to_pass_one() {
    let (url, server) = answer_once(
        "401 Unauthorized",
        &error_body("unauthorized", "missing or wrong bearer token"),
    );
    let output = flint()
        .args(["--url", &url, "--token", "wrong", "limit", "list"])
        .output()
        .unwrap();
    let message = one_error_line(&output);
    assert_eq!(
        message,
        format!(
            "flint: the server at {url} refused the token: pass --token or FLINT_SERVER_TOKEN\n"
        )
    );
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /v1/limits "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer wrong\r\n"),
        "the token is sent as a bearer token: {request}"
    );
}

#[test]
fn a_key_without_a_limit_reads_as_on_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".flint");
    flint()
        .args(["--data-dir"])
        .arg(&dir)
        .args(["limit", "add", "other", "--rate", "1", "--per", "1m"])
        .assert()
        .success();
    let server_message =
        "no limit is configured for key \"api:k\": call limit(\"api:k\", rate=..., per=...) first";
    for args in [
        &["limit", "status", "api:k"][..],
        &["limit", "check", "api:k"],
        &["limit", "reset", "api:k"],
        &["limit", "history", "api:k"],
    ] {
        let local = flint()
            .arg("--data-dir")
            .arg(&dir)
            .args(args)
            .output()
            .unwrap();
        let local = one_error_line(&local);
        assert!(local.contains("flint limit add api:k"), "{local}");
        let (url, server) = answer_once(
            "404 Not Found",
            &error_body("limit_not_found", server_message),
        );
        let remote = flint().args(["--url", &url]).args(args).output().unwrap();
        assert_eq!(one_error_line(&remote), local, "{args:?}");
        server.join().unwrap();
    }
}

#[test]
fn bad_input_is_the_servers_message_and_a_denial_exits_1() {
    let (url, server) = answer_once(
        "400 Bad Request",
        &error_body(
            "invalid_argument",
            "cost 7 is above the limit's rate 5: a check can never consume more than rate",
        ),
    );
    let output = flint()
        .args(["--url", &url, "limit", "check", "k", "--cost", "7"])
        .output()
        .unwrap();
    let message = one_error_line(&output);
    assert!(message.contains("cost 7 is above"), "{message}");
    assert!(message.contains(&url), "{message}");
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /v1/check "), "{request}");

    let denied = serde_json::json!({
        "key": "k", "allowed": false, "remaining": 0, "reset_at": 1.5e9,
        "retry_after": 2.5, "limit": 5, "algorithm": "token_bucket", "cost": 1,
        "shadow_denied": false,
    });
    for json in [true, false] {
        let (url, server) = answer_once("200 OK", &denied.to_string());
        let mut command = flint();
        command.args(["--url", &url, "limit", "check", "k"]);
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(1), "denied exits 1");
        let stdout = String::from_utf8(output.stdout).unwrap();
        if json {
            let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(value, denied, "the API's body, as it came");
        } else {
            assert!(
                stdout.contains("2.500s") && stdout.contains("0 of 5"),
                "{stdout}"
            );
        }
        server.join().unwrap();
    }
}
