//! The engine's metrics renderer: the names of `metrics::names`, exact counter values,
//! one series per template and outcome, per-key series only when asked for and never
//! more keys than the cap; the server's `/metrics` shows the same template series.

use std::sync::Arc;

use flint_core::{Algorithm, Limiter, Mode, Options, Quota};
use flint_server::metrics::{self, names, EngineMetricsOptions, Metrics};

fn open() -> (tempfile::TempDir, Limiter) {
    let tmp = tempfile::tempdir().unwrap();
    let limiter = Limiter::open(tmp.path().join(".flint"), Options::default()).unwrap();
    (tmp, limiter)
}

fn quota(rate: u64) -> Quota {
    Quota::new(rate, "1h".parse().unwrap(), Algorithm::TokenBucket).unwrap()
}

/// The value of one series (`name{labels}` exactly as written), if present.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// The metric names of the samples of a text (labels and value cut off).
fn sample_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_text_counts_checks_by_outcome_and_template_with_the_listed_names() {
    let (_tmp, limiter) = open();
    limiter.limit("ip:*", quota(2)).unwrap();
    limiter.limit("user:*", quota(1)).unwrap();
    limiter
        .limit("s", quota(1).with_mode(Mode::Shadow))
        .unwrap();
    for _ in 0..3 {
        limiter.check("ip:1.2.3.4", 1).unwrap(); // 2 allowed, 1 denied
    }
    limiter.check("ip:5.6.7.8", 1).unwrap(); // allowed
    limiter.check("s", 1).unwrap(); // allowed
    limiter.check("s", 1).unwrap(); // shadow-denied

    let text = metrics::engine_text(&limiter, &EngineMetricsOptions::default()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let checks = |outcome: &str| {
        series(
            &text,
            &format!("{}{{outcome=\"{outcome}\"}}", names::CHECKS),
        )
    };
    assert_eq!(checks("allowed"), Some(4.0), "{text}");
    assert_eq!(checks("denied"), Some(1.0), "{text}");
    assert_eq!(checks("shadow_denied"), Some(1.0), "{text}");
    let template = |t: &str, outcome: &str| {
        series(
            &text,
            &format!(
                "{}{{template=\"{t}\",outcome=\"{outcome}\"}}",
                names::TEMPLATE_CHECKS
            ),
        )
    };
    assert_eq!(template("ip:*", "allowed"), Some(3.0), "{text}");
    assert_eq!(template("ip:*", "denied"), Some(1.0), "{text}");
    assert_eq!(template("ip:*", "shadow_denied"), Some(0.0), "{text}");
    assert_eq!(
        template("user:*", "allowed"),
        Some(0.0),
        "every template shows"
    );
    assert_eq!(series(&text, names::TEMPLATES), Some(2.0));
    assert_eq!(series(&text, names::TEMPLATE_KEYS), Some(2.0));
    assert_eq!(series(&text, names::KEYS), Some(5.0));
    assert!(series(&text, names::LOG_BYTES).unwrap() > 0.0);
    assert!(series(&text, names::FSYNCS).unwrap() > 0.0);
    assert!(series(&text, names::FSYNC_SECONDS).unwrap() > 0.0);
    assert_eq!(series(&text, names::COMPACTIONS), Some(0.0));
    assert!(
        series(&text, names::PENDING_EVENTS).is_some(),
        "a denial waits for no sync"
    );
    assert_eq!(series(&text, names::SNAPSHOT_BYTES), Some(0.0));
    assert!(!text.contains("1.2.3.4"), "no key names without per_key");
    assert!(!text.contains(names::KEY_CHECKS));
    for name in sample_names(&text) {
        assert!(names::ALL.contains(&name.as_str()), "{name} is not listed");
    }
}

#[test]
fn per_key_series_show_the_top_keys_by_checks_up_to_the_cap() {
    let (_tmp, limiter) = open();
    limiter.limit("k:*", quota(100)).unwrap();
    for i in 0..10u64 {
        for _ in 0..=i {
            limiter.check(&format!("k:{i}"), 1).unwrap();
        }
    }
    let text = metrics::engine_text(&limiter, &EngineMetricsOptions { per_key: Some(3) }).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(names::KEY_CHECKS) && l.contains("outcome=\"allowed\""))
        .collect();
    assert_eq!(keys.len(), 3, "{text}");
    for (key, checks) in [("k:9", 10.0), ("k:8", 9.0), ("k:7", 8.0)] {
        let name = format!("{}{{key=\"{key}\",outcome=\"allowed\"}}", names::KEY_CHECKS);
        assert_eq!(series(&text, &name), Some(checks), "{text}");
    }
    assert!(!text.contains("\"k:6\""), "{text}");
    let none = metrics::engine_text(&limiter, &EngineMetricsOptions { per_key: Some(0) }).unwrap();
    assert!(!none.contains(names::KEY_CHECKS));
    let all = metrics::engine_text(
        &limiter,
        &EngineMetricsOptions {
            per_key: Some(1000),
        },
    )
    .unwrap();
    assert_eq!(
        all.lines()
            .filter(|l| l.starts_with(names::KEY_CHECKS))
            .count(),
        30,
        "ten keys, three outcomes each"
    );
}

#[test]
fn check_all_counts_each_item_and_a_denied_one_as_denied() {
    let (_tmp, limiter) = open();
    limiter.limit("a", quota(1)).unwrap();
    limiter.limit("b", quota(5)).unwrap();
    limiter.check_all(&[("a", 1), ("b", 1)]).unwrap();
    limiter.check_all(&[("a", 1), ("b", 1)]).unwrap();
    let text = metrics::engine_text(&limiter, &EngineMetricsOptions::default()).unwrap();
    let checks = |outcome: &str| {
        series(
            &text,
            &format!("{}{{outcome=\"{outcome}\"}}", names::CHECKS),
        )
    };
    assert_eq!(
        (checks("allowed"), checks("denied")),
        (Some(2.0), Some(2.0)),
        "{text}"
    );
}

#[test]
fn a_closed_limiter_is_an_error() {
    let (_tmp, limiter) = open();
    limiter.close().unwrap();
    assert!(metrics::engine_text(&limiter, &EngineMetricsOptions::default()).is_err());
}

#[test]
fn the_server_metrics_show_the_template_series_with_the_same_names() {
    let (_tmp, limiter) = open();
    let limiter = Arc::new(limiter);
    limiter.limit("ip:*", quota(1)).unwrap();
    limiter.check("ip:1", 1).unwrap();
    limiter.check("ip:1", 1).unwrap();
    let server = Metrics::new(Arc::clone(&limiter), &["/v1/check".to_owned()]);
    let text = server.render();
    let name = |outcome: &str| {
        format!(
            "{}{{template=\"ip:*\",outcome=\"{outcome}\"}}",
            names::TEMPLATE_CHECKS
        )
    };
    assert_eq!(series(&text, &name("allowed")), Some(1.0), "{text}");
    assert_eq!(series(&text, &name("denied")), Some(1.0), "{text}");
    assert!(!text.contains("ip:1\""), "no key names: {text}");
    let mut seen = sample_names(&text);
    seen.dedup();
    for name in &seen {
        let listed = names::ALL.contains(&name.as_str())
            || names::HISTOGRAMS.iter().any(|h| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| *name == format!("{h}{s}"))
            });
        assert!(listed, "{name} is not listed");
    }
    assert!(
        seen.iter().any(|n| n == names::FSYNCS),
        "the engine's totals"
    );
    assert!(
        seen.iter().any(|n| n == names::CHECKS),
        "the server's checks"
    );
}
