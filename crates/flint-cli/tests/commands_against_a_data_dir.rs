//! Every command of the real `flint` binary against a data directory: output, `--json`
//! shapes and exit codes (0 allowed/success, 1 denied/failed check, 2 error).

use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use serde_json::Value;

fn flint(dir: &Path) -> Command {
    let mut command = Command::cargo_bin("flint").unwrap();
    command
        .env("FLINT_DATA_DIR", dir)
        .env_remove("FLINT_URL")
        .env_remove("FLINT_SERVER_TOKEN")
        .env("TZ", "UTC")
        // No command may hang a test run (a server started by mistake, a prompt).
        .timeout(std::time::Duration::from_secs(60));
    command
}

/// Runs `flint --json ARGS` and returns the exit code and the parsed document.
fn json(dir: &Path, args: &[&str]) -> (i32, Value) {
    let output = flint(dir).args(args).arg("--json").output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON document ({e}): {stdout}"));
    (output.status.code().unwrap(), value)
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".flint");
    (tmp, dir)
}

#[test]
fn limit_add_creates_then_reports_unchanged_and_updated() {
    let (_tmp, dir) = data_dir();
    let (code, value) = json(
        &dir,
        &["limit", "add", "api:a", "--rate", "3", "--per", "1m"],
    );
    assert_eq!(code, 0);
    assert_eq!(value["change"], "created");
    assert_eq!(value["status"]["rate"], 3);
    assert_eq!(value["status"]["per"], "1m");
    assert_eq!(value["status"]["per_ms"], 60_000);
    assert_eq!(value["status"]["algorithm"], "token_bucket");
    let (_, value) = json(
        &dir,
        &["limit", "add", "api:a", "--rate", "3", "--per", "60s"],
    );
    assert_eq!(value["change"], "unchanged");
    let (_, value) = json(
        &dir,
        &[
            "limit",
            "add",
            "api:a",
            "--rate",
            "5",
            "--per",
            "1m",
            "--algorithm",
            "sliding_window_log",
        ],
    );
    assert_eq!(value["change"], "updated");
    assert_eq!(value["status"]["algorithm"], "sliding_window_log");

    flint(&dir)
        .args(["limit", "add", "web", "--rate", "10", "--per", "1s"])
        .assert()
        .success()
        .stdout("created web: 10 per 1s (token_bucket)\n");
}

#[test]
fn limit_add_takes_a_burst_for_token_buckets_only() {
    let (_tmp, dir) = data_dir();
    let add = |args: &[&str]| {
        let mut all = vec!["limit", "add", "b", "--rate", "10", "--per", "1h"];
        all.extend_from_slice(args);
        flint(&dir).args(all).output().unwrap()
    };
    let created = add(&["--burst", "50"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr_of(&created));
    assert_eq!(
        String::from_utf8(created.stdout).unwrap(),
        "created b: 10 per 1h, burst 50 (token_bucket)\n"
    );
    let (_, status) = json(&dir, &["limit", "status", "b"]);
    assert_eq!(
        (&status["rate"], &status["burst"], &status["remaining"]),
        (&Value::from(10), &Value::from(50), &Value::from(50))
    );
    let (code, result) = json(&dir, &["limit", "check", "b", "--cost", "45"]);
    assert_eq!(code, 0);
    assert_eq!(
        (&result["remaining"], &result["limit"]),
        (&Value::from(5), &Value::from(50))
    );
    // The same settings change nothing; another burst carries the consumed units over.
    let (_, same) = json(
        &dir,
        &[
            "limit", "add", "b", "--rate", "10", "--per", "1h", "--burst", "50",
        ],
    );
    assert_eq!(same["change"], "unchanged");
    let (_, smaller) = json(
        &dir,
        &[
            "limit", "add", "b", "--rate", "10", "--per", "1h", "--burst", "46",
        ],
    );
    assert_eq!(
        (&smaller["change"], &smaller["status"]["remaining"]),
        (&Value::from("updated"), &Value::from(1))
    );
    // status and list show it.
    let human = flint(&dir).args(["limit", "status", "b"]).output().unwrap();
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(
        human.lines().any(|l| l.contains("burst       46 ")),
        "{human}"
    );
    let list = flint(&dir).args(["limit", "list"]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("burst") && list.contains("46"), "{list}");
    // A cost above the burst names it.
    let output = flint(&dir)
        .args(["limit", "check", "b", "--cost", "47"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("the limit's burst (46)"),
        "{}",
        stderr_of(&output)
    );
    // Other algorithms refuse a burst other than their rate, and create nothing.
    let refused = add(&["--algorithm", "sliding_window_log", "--burst", "50"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr_of(&refused).contains("burst applies to token_bucket only"),
        "{}",
        stderr_of(&refused)
    );
    let (_, status) = json(&dir, &["limit", "status", "b"]);
    assert_eq!(status["algorithm"], "token_bucket");
    for bad in ["0", "-1", "1.5"] {
        let output = add(&["--burst", bad]);
        assert_eq!(output.status.code(), Some(2), "--burst {bad}");
    }
}

#[test]
fn limit_check_exits_0_when_allowed_and_1_when_denied() {
    let (_tmp, dir) = data_dir();
    flint(&dir)
        .args(["limit", "add", "k", "--rate", "2", "--per", "1h"])
        .assert()
        .success();
    let (code, value) = json(&dir, &["limit", "check", "k", "--cost", "2"]);
    assert_eq!(code, 0);
    for field in [
        "key",
        "allowed",
        "remaining",
        "reset_at",
        "retry_after",
        "limit",
        "algorithm",
        "cost",
    ] {
        assert!(value.get(field).is_some(), "missing {field}: {value}");
    }
    assert_eq!(value["allowed"], true);
    assert_eq!(value["remaining"], 0);
    assert_eq!(value["retry_after"], 0.0);
    let (code, value) = json(&dir, &["limit", "check", "k"]);
    assert_eq!(code, 1, "denied exits 1");
    assert_eq!(value["allowed"], false);
    assert!(value["retry_after"].as_f64().unwrap() > 0.0);
    // The human form shows a table with the local time and the relative time.
    let output = flint(&dir).args(["limit", "check", "k"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("allowed") && stdout.contains("no"),
        "{stdout}"
    );
    assert!(stdout.contains("+00:00 (in "), "{stdout}");
}

#[test]
fn limit_peek_answers_like_check_and_consumes_nothing() {
    let (_tmp, dir) = data_dir();
    flint(&dir)
        .args(["limit", "add", "k", "--rate", "2", "--per", "1h"])
        .assert()
        .success();
    let (code, peeked) = json(&dir, &["limit", "peek", "k", "--cost", "2"]);
    assert_eq!(code, 0, "would be allowed");
    assert_eq!(
        (peeked["allowed"].clone(), peeked["remaining"].clone()),
        (true.into(), 0.into())
    );
    let (_, status) = json(&dir, &["limit", "status", "k"]);
    assert_eq!(status["remaining"], 2, "a peek consumes nothing: {status}");
    assert_eq!(status["allowed"], 0);
    flint(&dir)
        .args(["limit", "check", "k", "--cost", "2"])
        .assert()
        .success();
    let (code, peeked) = json(&dir, &["limit", "peek", "k"]);
    assert_eq!(code, 1, "would be denied");
    assert_eq!(peeked["allowed"], false);
    let (_, status) = json(&dir, &["limit", "status", "k"]);
    assert_eq!(status["denied"], 0, "a peek counts no denial: {status}");
}

#[test]
fn limit_refund_gives_units_back_and_rejects_bad_costs() {
    let (_tmp, dir) = data_dir();
    flint(&dir)
        .args([
            "limit",
            "add",
            "k",
            "--rate",
            "3",
            "--per",
            "1h",
            "--algorithm",
            "fixed_window_counter",
        ])
        .assert()
        .success();
    flint(&dir)
        .args(["limit", "check", "k", "--cost", "3"])
        .assert()
        .success();
    let (code, refunded) = json(&dir, &["limit", "refund", "k", "--cost", "2"]);
    assert_eq!(code, 0);
    assert_eq!(
        refunded,
        serde_json::json!({"key": "k", "cost": 2, "refunded": true, "ok": true})
    );
    let (_, status) = json(&dir, &["limit", "status", "k"]);
    assert_eq!(status["remaining"], 2, "{status}");
    assert_eq!(
        (status["allowed"].clone(), status["allowed_cost"].clone()),
        (1.into(), 3.into()),
        "counters keep what was admitted: {status}"
    );
    let output = flint(&dir).args(["limit", "refund", "k"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        "refunded k: 1 unit given back (never beyond full capacity)\n"
    );
    // At full capacity: allowed, changes nothing.
    flint(&dir)
        .args(["limit", "refund", "k", "--cost", "3"])
        .assert()
        .success();
    let (_, status) = json(&dir, &["limit", "status", "k"]);
    assert_eq!(status["remaining"], 3, "{status}");
    let output = flint(&dir)
        .args(["limit", "refund", "k", "--cost", "4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("refund cost 4 for key \"k\""), "{stderr}");
    let output = flint(&dir)
        .args(["limit", "refund", "nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("\"nope\""));
}

#[test]
fn check_all_is_all_or_nothing_with_per_key_costs() {
    let (_tmp, dir) = data_dir();
    flint(&dir)
        .args(["limit", "add", "user", "--rate", "10", "--per", "1h"])
        .assert()
        .success();
    flint(&dir)
        .args(["limit", "add", "org", "--rate", "3", "--per", "1h"])
        .assert()
        .success();
    let (code, value) = json(
        &dir,
        &["limit", "check-all", "user", "org", "--cost", "org=2"],
    );
    assert_eq!(code, 0);
    assert_eq!(value["allowed"], true);
    assert_eq!(value["denied_key"], Value::Null);
    assert_eq!(value["results"][1]["cost"], 2);
    assert_eq!(value["results"][1]["remaining"], 1);
    let (code, value) = json(
        &dir,
        &["limit", "check-all", "user", "org", "--cost", "org=2"],
    );
    assert_eq!(code, 1);
    assert_eq!(value["denied_key"], "org");
    let (_, user) = json(&dir, &["limit", "status", "user"]);
    assert_eq!(user["remaining"], 9, "nothing consumed by the denied call");

    let output = flint(&dir)
        .args(["limit", "check-all", "user", "--cost", "nope=2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("not among the keys"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn status_list_history_top_reset_and_remove() {
    let (_tmp, dir) = data_dir();
    for (key, rate) in [("api:a", "1"), ("api:b", "5"), ("web:c", "5")] {
        flint(&dir)
            .args(["limit", "add", key, "--rate", rate, "--per", "1h"])
            .assert()
            .success();
    }
    for expected in [0, 1, 1] {
        flint(&dir)
            .args(["limit", "check", "api:a"])
            .assert()
            .code(expected);
    }
    flint(&dir)
        .args(["limit", "check", "api:b"])
        .assert()
        .success();

    let (_, status) = json(&dir, &["limit", "status", "api:a"]);
    for field in [
        "key",
        "rate",
        "burst",
        "per",
        "per_ms",
        "algorithm",
        "remaining",
        "reset_at",
        "allowed",
        "denied",
        "allowed_cost",
        "denied_cost",
        "last_seen",
    ] {
        assert!(status.get(field).is_some(), "missing {field}: {status}");
    }
    assert_eq!(
        (status["allowed"].as_u64(), status["denied"].as_u64()),
        (Some(1), Some(2))
    );

    let (_, list) = json(&dir, &["limit", "list", "--prefix", "api:"]);
    let keys: Vec<&str> = list["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["api:a", "api:b"]);
    let human = flint(&dir).args(["limit", "list"]).output().unwrap();
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(
        human.contains("web:c") && human.contains("api:b"),
        "{human}"
    );

    let (_, history) = json(&dir, &["limit", "history", "api:a", "--limit", "2"]);
    assert_eq!(history["key"], "api:a");
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["allowed"], false);
    for field in ["at", "cost", "allowed", "remaining"] {
        assert!(events[0].get(field).is_some());
    }

    let (_, top) = json(&dir, &["limit", "top", "--by", "denied"]);
    assert_eq!(top["by"], "denied");
    assert_eq!(top["top"][0]["key"], "api:a");
    assert_eq!(top["top"].as_array().unwrap().len(), 1);
    let output = flint(&dir)
        .args(["limit", "top", "--by", "loudest"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));

    let (code, _) = json(&dir, &["limit", "reset", "api:a"]);
    assert_eq!(code, 0);
    let (_, status) = json(&dir, &["limit", "status", "api:a"]);
    assert_eq!(status["remaining"], 1);
    let (code, value) = json(&dir, &["limit", "remove", "api:a"]);
    assert_eq!((code, value["removed"].as_bool()), (0, Some(true)));
    let output = flint(&dir)
        .args(["limit", "status", "api:a"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("flint limit add api:a"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn log_flush_and_compact() {
    let (_tmp, dir) = data_dir();
    flint(&dir)
        .args(["limit", "add", "k", "--rate", "5", "--per", "1m"])
        .assert()
        .success();
    let (code, value) = json(&dir, &["log", "flush"]);
    assert_eq!((code, value["flushed"].as_bool()), (0, Some(true)));
    let (code, value) = json(&dir, &["log", "compact"]);
    assert_eq!(code, 0);
    assert_eq!(value["keys"], 1);
    assert!(value["log_bytes_after"].as_u64() < value["log_bytes_before"].as_u64());
    assert!(dir.join("flint.snapshot").exists());
}

#[test]
fn doctor_reports_checks_and_exit_codes() {
    let (_tmp, dir) = data_dir();
    flint(&dir)
        .args(["limit", "add", "k", "--rate", "5", "--per", "1m"])
        .assert()
        .success();
    let (code, value) = json(&dir, &["doctor"]);
    assert_eq!(code, 0);
    assert_eq!(value["ok"], true);
    for field in [
        "checks",
        "sync",
        "version",
        "data_dir",
        "log_bytes",
        "snapshot_bytes",
    ] {
        assert!(value.get(field).is_some(), "missing {field}");
    }
    let check = &value["checks"][0];
    for field in ["name", "ok", "detail"] {
        assert!(check.get(field).is_some(), "missing {field} in {check}");
    }
    let human = flint(&dir).arg("doctor").output().unwrap();
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(
        human.contains("torn_tail") && human.contains("ok"),
        "{human}"
    );
}

/// Damages the record after the configure record of `k`: the watermark the first check
/// writes (its process synced the log on open), with the four checks valid after it.
fn damaged_dir() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let (tmp, dir) = data_dir();
    flint(&dir)
        .args(["limit", "add", "k", "--rate", "100", "--per", "1h"])
        .assert()
        .success();
    let (_, doctor) = json(&dir, &["doctor"]);
    let damaged_at = doctor["log_bytes"].as_u64().unwrap() as usize;
    for cost in ["1", "2", "3", "4"] {
        flint(&dir)
            .args(["limit", "check", "k", "--cost", cost])
            .assert()
            .success();
    }
    let path = dir.join("flint.aof");
    let mut log = std::fs::read(&path).unwrap();
    log[damaged_at + 12] ^= 0x55;
    std::fs::write(&path, &log).unwrap();
    (tmp, dir, log)
}

#[test]
fn doctor_on_a_damaged_log_fails_and_repair_cuts_it_after_a_backup() {
    let (_tmp, dir, damaged) = damaged_dir();
    // Opening refuses, and says how to proceed.
    let output = flint(&dir).args(["limit", "list"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("flint doctor --repair"),
        "{}",
        stderr_of(&output)
    );
    let (code, value) = json(&dir, &["doctor"]);
    assert_eq!((code, value["ok"].as_bool()), (1, Some(false)));

    // Without --yes it asks, and a "no" changes nothing.
    let output = flint(&dir)
        .args(["doctor", "--repair"])
        .write_stdin("n\n")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("4 valid records"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(std::fs::read(dir.join("flint.aof")).unwrap(), damaged);

    let (code, value) = json(&dir, &["doctor", "--repair", "--yes"]);
    assert_eq!(code, 0, "{value}");
    let repaired = &value["repaired"];
    assert_eq!(repaired["dropped_records"], 4);
    assert!(repaired["dropped_bytes"].as_u64().unwrap() > 0);
    assert!(
        repaired["first_dropped_at"].as_f64().unwrap()
            <= repaired["last_dropped_at"].as_f64().unwrap()
    );
    let backup = repaired["backup"].as_str().unwrap();
    assert_eq!(
        std::fs::read(backup).unwrap(),
        damaged,
        "the backup holds the old log"
    );
    let (code, status) = json(&dir, &["limit", "status", "k"]);
    assert_eq!((code, status["allowed_cost"].as_u64()), (0, Some(0)));
}

#[test]
fn a_locked_directory_names_the_holder_and_the_way_out() {
    use std::io::Read;
    let (_tmp, dir, _) = damaged_dir();
    // A `flint doctor --repair` waiting at its prompt holds the directory's lock.
    let mut holder = StdCommand::new(assert_cmd::cargo::cargo_bin("flint"))
        .env("FLINT_DATA_DIR", &dir)
        .args(["doctor", "--repair"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = holder.stderr.take().unwrap();
    let mut prompt = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&prompt).contains("[y/N]") {
        assert_eq!(
            stderr.read(&mut byte).unwrap(),
            1,
            "the holder exited early"
        );
        prompt.push(byte[0]);
    }

    let output = flint(&dir).args(["limit", "list"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = stderr_of(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains(&format!("pid {}", holder.id())),
        "{message}"
    );
    assert!(message.contains("locked by another process"), "{message}");
    assert!(message.contains("Stop it first"), "{message}");
    assert!(
        message.contains("flint --url http://127.0.0.1:7878") && message.contains("FLINT_URL"),
        "suggests running the command through the server: {message}"
    );
    assert!(message.contains(&dir.display().to_string()), "{message}");

    drop(holder.stdin.take()); // EOF: the holder cancels and releases the lock
    assert_eq!(holder.wait().unwrap().code(), Some(2));
}

#[test]
fn errors_exit_2_with_one_line_on_stderr() {
    let (_tmp, dir) = data_dir();
    let cases: &[&[&str]] = &[
        &["limit", "add", "k", "--rate", "5", "--per", "1M"],
        &["limit", "add", "k", "--rate", "0", "--per", "1m"],
        &[
            "limit",
            "add",
            "k",
            "--rate",
            "5",
            "--per",
            "1m",
            "--algorithm",
            "leaky",
        ],
        &["limit", "add", "k", "--rate", "five", "--per", "1m"],
        &["limit", "frobnicate"],
        &["server", "start", "--bind", "0.0.0.0:0"],
    ];
    for args in cases {
        let output = flint(&dir).args(*args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let message = stderr_of(&output);
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.starts_with("flint: "), "{args:?}: {message}");
    }
    let output = flint(&dir)
        .args(["limit", "add", "k", "--rate", "5", "--per", "1M"])
        .output()
        .unwrap();
    assert!(stderr_of(&output).contains("minute or month"));
    let output = flint(&dir)
        .args(["server", "start", "--bind", "0.0.0.0:0"])
        .env_remove("FLINT_SERVER_TOKEN")
        .output()
        .unwrap();
    assert!(
        stderr_of(&output).contains("without a token"),
        "{}",
        stderr_of(&output)
    );
    // Commands other than `limit add` do not create a mistyped directory.
    let output = flint(&dir).args(["limit", "list"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("does not exist"));
    assert!(!dir.exists());
}

#[test]
fn json_is_accepted_anywhere_and_data_dir_comes_from_the_flag_too() {
    let (_tmp, dir) = data_dir();
    let mut command = Command::cargo_bin("flint").unwrap();
    let output = command
        .args(["--json", "--data-dir"])
        .arg(&dir)
        .args(["limit", "add", "k", "--rate", "5", "--per", "1m"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["change"], "created");
}

#[test]
fn version_and_completions() {
    let output = Command::cargo_bin("flint")
        .unwrap()
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .starts_with("flint 0."));
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::cargo_bin("flint")
            .unwrap()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{shell}");
        assert!(
            String::from_utf8(output.stdout)
                .unwrap()
                .contains("check-all"),
            "{shell}"
        );
    }
}

/// Asserts exit 2, nothing on stdout and one line on stderr starting `flint: `; returns it.
fn one_error_line(output: &std::process::Output) -> String {
    let message = stderr_of(output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(output.stdout.is_empty(), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.starts_with("flint: "), "{message}");
    message
}

#[cfg(unix)]
#[test]
fn a_non_utf8_argument_exits_2_naming_it() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let (_tmp, dir) = data_dir();
    let bad = OsStr::from_bytes(b"\xff");
    flint(&dir)
        .args(["limit", "add", "k", "--rate", "1", "--per", "1m"])
        .assert()
        .success();
    let message = one_error_line(
        &flint(&dir)
            .args(["limit", "check"])
            .arg(bad)
            .output()
            .unwrap(),
    );
    assert!(
        message.contains("<KEY>") && message.contains(r#""\xFF""#),
        "{message}"
    );
    assert!(message.contains("UTF-8"), "{message}");
    // Every string argument is named, options too.
    let message = one_error_line(
        &flint(&dir)
            .args(["limit", "add", "k", "--rate", "1", "--per"])
            .arg(bad)
            .output()
            .unwrap(),
    );
    assert!(
        message.contains("--per") && message.contains(r"\xFF"),
        "{message}"
    );
    // Arguments that are not text (numbers) are named by the argument before them.
    let message = one_error_line(
        &flint(&dir)
            .args(["limit", "check", "k", "--cost"])
            .arg(bad)
            .output()
            .unwrap(),
    );
    assert!(
        message.contains("after --cost") && message.contains(r#""\xFF""#),
        "{message}"
    );
    // A command name that is not UTF-8 is an unknown command, as clap says.
    one_error_line(&flint(&dir).arg("limit").arg(bad).output().unwrap());
    assert_eq!(
        json(&dir, &["limit", "status", "k"]).1["allowed"],
        0,
        "nothing consumed"
    );
}

#[test]
fn an_empty_data_dir_is_refused_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &[
            "--data-dir",
            "",
            "limit",
            "add",
            "k",
            "--rate",
            "1",
            "--per",
            "1m",
        ][..],
        &["--data-dir", "", "limit", "list"],
        &["--data-dir=", "doctor"],
    ] {
        let mut command = Command::cargo_bin("flint").unwrap();
        let output = command.current_dir(tmp.path()).args(args).output().unwrap();
        let message = one_error_line(&output);
        assert!(message.contains("--data-dir"), "{message}");
    }
    let mut command = Command::cargo_bin("flint").unwrap();
    let output = command
        .current_dir(tmp.path())
        .env("FLINT_DATA_DIR", "")
        .args(["limit", "add", "k", "--rate", "1", "--per", "1m"])
        .output()
        .unwrap();
    one_error_line(&output);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "nothing created in the current directory: {left:?}"
    );
}

#[test]
fn an_io_error_names_the_os_error_once() {
    let (_tmp, dir) = data_dir();
    std::fs::create_dir_all(dir.join("flint.aof")).unwrap();
    for args in [&["limit", "list"][..], &["doctor"], &["log", "flush"]] {
        let message = one_error_line(&flint(&dir).args(args).output().unwrap());
        assert_eq!(
            message.matches("(os error ").count(),
            1,
            "{args:?}: {message}"
        );
        assert!(message.contains("flint.aof"), "{message}");
    }
}

#[test]
fn another_programs_log_is_one_line_naming_it_and_no_repair_advice() {
    let (_tmp, dir) = data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("flint.aof"), "{\"key\": \"k\", \"cost\": 1}\n").unwrap();
    let output = flint(&dir).args(["limit", "list"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = stderr_of(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.starts_with("flint: "), "{message}");
    assert!(message.contains("is not a Flint log"), "{message}");
    assert!(!message.contains("--repair"), "{message}");
    // doctor reports it as a failed check (exit 1), and --repair has nothing to cut.
    let output = flint(&dir)
        .args(["doctor", "--repair", "--yes"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{report}{}",
        stderr_of(&output)
    );
    assert!(report.contains("is not a Flint log"), "{report}");
    assert!(!report.contains("--repair"), "{report}");
}

/// `flint ARGS` (tables) and its exit code.
fn text(dir: &Path, args: &[&str]) -> (i32, String) {
    let output = flint(dir).args(args).output().unwrap();
    let code = output.status.code().unwrap();
    (code, String::from_utf8(output.stdout).unwrap())
}

#[test]
fn templates_cover_keys_and_show_in_tables() {
    let (_tmp, dir) = data_dir();
    let (code, added) = text(
        &dir,
        &["limit", "add", "ip:*", "--rate", "2", "--per", "1h"],
    );
    assert_eq!(code, 0);
    assert!(
        added.contains("created ip:*") && added.contains("starting with \"ip:\""),
        "{added}"
    );
    // A covered key needs no `limit add`.
    let (code, value) = json(&dir, &["limit", "check", "ip:1.2.3.4"]);
    assert_eq!(
        (code, &value["limit"], &value["remaining"]),
        (0, &2.into(), &1.into())
    );
    let (_, status) = text(&dir, &["limit", "status", "ip:1.2.3.4"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("template") && l.contains("ip:*")),
        "{status}"
    );
    let (_, listed) = json(&dir, &["limit", "list", "--kind", "templates"]);
    assert_eq!(listed["limits"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["limits"][0]["key"], "ip:*");
    let (_, listed) = json(&dir, &["limit", "list", "--kind", "keys"]);
    assert_eq!(listed["limits"][0]["key"], "ip:1.2.3.4");
    assert_eq!(listed["limits"][0]["template"], "ip:*");
    let (_, table) = text(&dir, &["limit", "list"]);
    assert!(table.contains("template"), "{table}");
    // A template is not a key to check; a bad kind names the kinds.
    let output = flint(&dir)
        .args(["limit", "check", "ip:*"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("is a template"),
        "{}",
        stderr_of(&output)
    );
    let output = flint(&dir)
        .args(["limit", "list", "--kind", "nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("all, keys, templates"));
    let (_, doctor) = text(&dir, &["doctor"]);
    assert!(
        doctor
            .lines()
            .any(|l| l.contains("ip:*") && l.contains(" 1 ")),
        "the template with its one live key: {doctor}"
    );
    assert!(doctor.contains("memory: engine state about"), "{doctor}");
}

#[test]
fn shadow_limits_allow_and_count_what_they_would_deny() {
    let (_tmp, dir) = data_dir();
    // A bad mode is refused before a directory is created.
    let output = flint(&dir)
        .args([
            "limit", "add", "s", "--rate", "1", "--per", "1h", "--mode", "loud",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("\"loud\""),
        "{}",
        stderr_of(&output)
    );
    assert!(!dir.exists());

    let (_, added) = text(
        &dir,
        &[
            "limit", "add", "s", "--rate", "1", "--per", "1h", "--mode", "shadow",
        ],
    );
    assert!(added.contains("shadow"), "{added}");
    assert_eq!(json(&dir, &["limit", "check", "s"]).0, 0);
    let (code, checked) = text(&dir, &["limit", "check", "s"]);
    assert_eq!(code, 0, "a shadow limit allows: {checked}");
    assert!(checked.contains("would have been denied"), "{checked}");
    let (code, value) = json(&dir, &["limit", "check", "s"]);
    assert_eq!(
        (code, &value["allowed"], &value["shadow_denied"]),
        (0, &true.into(), &true.into())
    );
    let (_, status) = json(&dir, &["limit", "status", "s"]);
    assert_eq!(
        (&status["mode"], &status["shadow_denied"]),
        (&"shadow".into(), &2.into())
    );
    let (_, status) = text(&dir, &["limit", "status", "s"]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("mode") && l.contains("shadow")),
        "{status}"
    );
    let (_, top) = json(&dir, &["limit", "top", "--by", "shadow_denied"]);
    assert_eq!(
        (&top["by"], &top["top"][0]["key"]),
        (&"shadow_denied".into(), &"s".into())
    );
    let (_, top) = text(&dir, &["limit", "top", "--by", "shadow_denied"]);
    assert!(top.contains("shadow denied"), "{top}");
    // Enforced again, the next check is denied.
    text(
        &dir,
        &[
            "limit", "add", "s", "--rate", "1", "--per", "1h", "--mode", "enforce",
        ],
    );
    assert_eq!(json(&dir, &["limit", "check", "s"]).0, 1);
}
