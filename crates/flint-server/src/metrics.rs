//! `GET /metrics`: Prometheus text (OpenMetrics) without per-key series, so the number
//! of series stays bounded however many keys there are; and [`engine_text`], the same
//! engine metrics for a limiter embedded in another program (the Python package's
//! `flint.prometheus`).
//!
//! The names are listed once, in [`names`]. Request counters and the latency histogram
//! are kept by the server; the engine's totals (syncs, log size, compactions, checks by
//! outcome) and its per-template counters are read from the engine at each scrape, by
//! one renderer ([`EngineSnapshot`]) that the server and [`engine_text`] share.

use std::collections::HashMap;
use std::sync::Arc;

use flint_core::{Counters, Decision, Limiter, ListKind, MultiDecision, Stats, TopBy};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The metric names (as exposed, suffixes included), in one place.
pub mod names {
    /// Keys checked, by `outcome`: `allowed`, `denied`, or `shadow_denied` (allowed by
    /// a shadow limit that would have denied it; not counted as `allowed`). A check-all
    /// counts each item.
    pub const CHECKS: &str = "flint_checks_total";
    /// Error answers, by `code`.
    pub const ERRORS: &str = "flint_http_errors_total";
    /// Requests answered, with their latency, by `route` (the path template).
    pub const REQUEST_DURATION: &str = "flint_http_request_duration_seconds";
    /// Connections open now.
    pub const OPEN_CONNECTIONS: &str = "flint_http_open_connections";
    /// Syncs (fdatasync) of the log.
    pub const FSYNCS: &str = "flint_fsyncs_total";
    /// The time those syncs took.
    pub const FSYNC_SECONDS: &str = "flint_fsync_seconds_total";
    /// Logical size of the log.
    pub const LOG_BYTES: &str = "flint_log_bytes";
    /// Size of the snapshot.
    pub const SNAPSHOT_BYTES: &str = "flint_snapshot_bytes";
    /// Entries: configured keys, templates, and keys made from templates that hold
    /// state.
    pub const KEYS: &str = "flint_keys";
    /// Templates (configured keys ending in `*`).
    pub const TEMPLATES: &str = "flint_templates";
    /// Keys made from templates that hold state now (dropped when back at full
    /// capacity).
    pub const TEMPLATE_KEYS: &str = "flint_template_keys";
    /// Events written but not yet synced.
    pub const PENDING_EVENTS: &str = "flint_pending_events";
    /// Compactions completed.
    pub const COMPACTIONS: &str = "flint_compactions_total";
    /// Checks counted on the keys of each template, by `template` and `outcome`
    /// (`allowed`, `denied`, `shadow_denied`): the template's counters, which sum
    /// those of every key made from it, kept since the template was configured. One
    /// series per template and outcome.
    pub const TEMPLATE_CHECKS: &str = "flint_template_checks_total";
    /// Checks counted on a key, by `key` and `outcome`: opt-in only, for the top keys
    /// by checks, at most as many keys as asked for.
    pub const KEY_CHECKS: &str = "flint_key_checks_total";

    /// Every name above, in the order of this list.
    pub const ALL: &[&str] = &[
        CHECKS,
        ERRORS,
        REQUEST_DURATION,
        OPEN_CONNECTIONS,
        FSYNCS,
        FSYNC_SECONDS,
        LOG_BYTES,
        SNAPSHOT_BYTES,
        KEYS,
        TEMPLATES,
        TEMPLATE_KEYS,
        PENDING_EVENTS,
        COMPACTIONS,
        TEMPLATE_CHECKS,
        KEY_CHECKS,
    ];
    /// The histograms among them (exposed with `_bucket`, `_sum` and `_count`).
    pub const HISTOGRAMS: &[&str] = &[REQUEST_DURATION];
}

/// The content type of the text that [`Metrics::render`] and [`engine_text`] return.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The name a metric is registered under: the exposed name without the suffixes the
/// encoder adds (`_total` for counters, the unit).
fn base(name: &'static str, suffixes: &[&str]) -> &'static str {
    suffixes
        .iter()
        .fold(name, |n, suffix| n.strip_suffix(suffix).unwrap_or(n))
}

/// The `outcome` label of a check: a bounded set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allowed = 0,
    Denied = 1,
    ShadowDenied = 2,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Denied, Outcome::ShadowDenied];

    fn of(decision: &Decision) -> Outcome {
        if decision.shadow_denied {
            Outcome::ShadowDenied
        } else if decision.allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::ShadowDenied => "shadow_denied",
        }
    }
}

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

type Labels = [(&'static str, &'static str); 1];
/// The route template of a request: a bounded set (the API's routes and `unmatched`).
type RouteLabel = [(&'static str, String); 1];

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The checks counter of each [`Outcome`], made at start (so that every outcome
    /// shows, at zero until it happens).
    outcomes: [Counter; 3],
    errors: Family<Labels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    /// The histogram of each route, made at start: a request finds its own without
    /// allocating its label.
    routes: HashMap<String, Histogram>,
    connections: Gauge,
}

impl Metrics {
    /// The metrics of a server over `limiter`.
    /// `routes` are the API's path templates (and any other label to expect).
    pub fn new(limiter: Arc<Limiter>, routes: &[String]) -> Self {
        let mut registry = Registry::default();
        let checks = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        // 50 µs to ~1.6 s: a sync is a few milliseconds on a disk, a check microseconds.
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        let connections = Gauge::default();
        registry.register(
            base(names::CHECKS, &["_total"]),
            CHECKS_HELP,
            checks.clone(),
        );
        registry.register(
            base(names::ERRORS, &["_total"]),
            "Error answers, by error code",
            errors.clone(),
        );
        registry.register_with_unit(
            base(names::REQUEST_DURATION, &["_seconds"]),
            "Time to answer a request, by route",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register(
            names::OPEN_CONNECTIONS,
            "HTTP connections open now",
            connections.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { limiter }));
        let outcomes =
            Outcome::ALL.map(|o| checks.get_or_create(&[("outcome", o.label())]).clone());
        Metrics {
            registry,
            outcomes,
            errors,
            routes: routes
                .iter()
                .chain(std::iter::once(&UNMATCHED.to_owned()))
                .map(|route| {
                    let histogram = latency.get_or_create(&[("route", route.clone())]).clone();
                    (route.clone(), histogram)
                })
                .collect(),
            latency,
            connections,
        }
    }

    /// Counts a key checked with this decision.
    pub fn checked(&self, decision: &Decision) {
        self.outcome(Outcome::of(decision)).inc();
    }

    /// Counts the items of a check-all: each by its own decision when the check was
    /// allowed (an item may be shadow-denied), all denied when it was not.
    pub fn checked_all(&self, decision: &MultiDecision) {
        if decision.allowed {
            for item in &decision.results {
                self.checked(&item.decision);
            }
        } else {
            self.outcome(Outcome::Denied)
                .inc_by(decision.results.len() as u64);
        }
    }

    fn outcome(&self, outcome: Outcome) -> &Counter {
        &self.outcomes[outcome as usize]
    }

    /// Counts an error answer.
    pub fn error(&self, code: &'static str) {
        self.errors.get_or_create(&[("code", code)]).inc();
    }

    /// Records a request's latency under its route template (`None`: no route).
    pub fn observe(&self, route: Option<&str>, seconds: f64) {
        let route = route.unwrap_or(UNMATCHED);
        match self.routes.get(route) {
            Some(histogram) => histogram.observe(seconds),
            None => self
                .latency
                .get_or_create(&[("route", route.to_owned())])
                .observe(seconds),
        }
    }

    /// The open-connections gauge.
    pub fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an engine error skips its metrics.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// What [`engine_text`] shows besides the engine's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineMetricsOptions {
    /// Per-key series ([`names::KEY_CHECKS`]): `None` for none (the default), or at
    /// most this many keys, the top ones by checks (allowed and denied). Every key is a
    /// series of its own: keep it small (the keys of a hundred clients, not a million).
    pub per_key: Option<usize>,
}

/// The Prometheus text (OpenMetrics, see [`CONTENT_TYPE`]) of an embedded limiter: the
/// engine's totals, the checks since it was opened by outcome ([`names::CHECKS`]), one
/// series per template and outcome, and the top keys when asked for; the same names as
/// the server's `GET /metrics` (which adds its HTTP metrics).
///
/// # Errors
///
/// When the limiter is closed, or unusable (forked, poisoned).
pub fn engine_text(
    limiter: &Limiter,
    options: &EngineMetricsOptions,
) -> flint_core::Result<String> {
    let snapshot = EngineSnapshot::read(limiter, options.per_key, true)?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    Ok(text)
}

/// Reads the engine's metrics at each scrape of the server.
#[derive(Debug)]
struct EngineCollector {
    limiter: Arc<Limiter>,
}

impl Collector for EngineCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A closed or poisoned engine has no totals to show; the errors say why. The
        // server counts the checks it answers itself (the outcome series show from
        // its start): not the engine's.
        match EngineSnapshot::read(&self.limiter, None, false) {
            Ok(snapshot) => snapshot.encode(encoder),
            Err(_) => Ok(()),
        }
    }
}

/// The engine's metrics at one moment, and the one place that encodes them.
#[derive(Debug)]
pub struct EngineSnapshot {
    stats: Stats,
    /// Whether to show the engine's checks by outcome ([`names::CHECKS`]).
    checks: bool,
    /// Each template and its counters (one series per template and outcome).
    templates: Vec<(String, Counters)>,
    /// The top keys by checks, when asked for.
    keys: Vec<(String, Counters)>,
}

impl EngineSnapshot {
    /// Reads the engine: its totals, its templates, and the top `per_key` keys.
    ///
    /// # Errors
    ///
    /// When the limiter is closed, or unusable (forked, poisoned).
    pub fn read(
        limiter: &Limiter,
        per_key: Option<usize>,
        checks: bool,
    ) -> flint_core::Result<Self> {
        let stats = limiter.stats()?;
        let templates = if stats.templates == 0 {
            Vec::new()
        } else {
            limiter
                .list_kind(None, ListKind::Templates)?
                .into_iter()
                .map(|s| (s.key, s.counters))
                .collect()
        };
        let keys = match per_key {
            None | Some(0) => Vec::new(),
            Some(n) => {
                let mut top: Vec<(String, Counters)> = limiter
                    .top(TopBy::Checks, n)?
                    .into_iter()
                    .filter(|s| !s.is_template())
                    .map(|s| (s.key, s.counters))
                    .collect();
                top.truncate(n);
                top
            }
        };
        Ok(EngineSnapshot {
            stats,
            checks,
            templates,
            keys,
        })
    }

    /// Encodes the snapshot.
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        if self.checks {
            let mut family = encoder.encode_descriptor(
                base(names::CHECKS, &["_total"]),
                CHECKS_HELP,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (outcome, value) in [
                (Outcome::Allowed, stats.checks_allowed),
                (Outcome::Denied, stats.checks_denied),
                (Outcome::ShadowDenied, stats.checks_shadow_denied),
            ] {
                ConstCounter::new(value)
                    .encode(family.encode_family(&[("outcome", outcome.label())])?)?;
            }
        }
        let counter = |encoder: &mut DescriptorEncoder, name, help, value: u64| {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(
                base(name, &["_total"]),
                help,
                None,
                metric.metric_type(),
            )?)
        };
        counter(
            &mut encoder,
            names::FSYNCS,
            "Syncs (fdatasync) of the log",
            stats.syncs,
        )?;
        counter(
            &mut encoder,
            names::COMPACTIONS,
            "Compactions completed",
            stats.compactions,
        )?;
        let seconds = ConstCounter::new(stats.sync_nanos as f64 / 1e9);
        seconds.encode(encoder.encode_descriptor(
            base(names::FSYNC_SECONDS, &["_total", "_seconds"]),
            "Time spent syncing the log",
            Some(&Unit::Seconds),
            seconds.metric_type(),
        )?)?;
        let gauge = |encoder: &mut DescriptorEncoder, name, help, unit, value: u64| {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
        };
        gauge(
            &mut encoder,
            base(names::LOG_BYTES, &["_bytes"]),
            "Logical size of the log",
            Some(&Unit::Bytes),
            stats.log_bytes,
        )?;
        gauge(
            &mut encoder,
            base(names::SNAPSHOT_BYTES, &["_bytes"]),
            "Size of the snapshot",
            Some(&Unit::Bytes),
            stats.snapshot_bytes,
        )?;
        gauge(
            &mut encoder,
            names::KEYS,
            "Entries: configured keys, templates, and keys made from templates that hold state",
            None,
            stats.keys as u64,
        )?;
        gauge(
            &mut encoder,
            names::TEMPLATES,
            "Templates (configured keys ending in *)",
            None,
            stats.templates as u64,
        )?;
        gauge(
            &mut encoder,
            names::TEMPLATE_KEYS,
            "Keys made from templates that hold state now (dropped when back at full capacity)",
            None,
            stats.template_keys as u64,
        )?;
        gauge(
            &mut encoder,
            names::PENDING_EVENTS,
            "Events written but not yet synced",
            None,
            stats.pending_events,
        )?;
        by_outcome(
            &mut encoder,
            names::TEMPLATE_CHECKS,
            "Checks counted on the keys of each template (its counters sum its keys'), by template and outcome",
            "template",
            &self.templates,
        )?;
        if !self.keys.is_empty() {
            by_outcome(
                &mut encoder,
                names::KEY_CHECKS,
                "Checks counted on each of the top keys by checks (opt-in, capped), by key and outcome",
                "key",
                &self.keys,
            )?;
        }
        Ok(())
    }
}

impl Collector for EngineSnapshot {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        EngineSnapshot::encode(self, encoder)
    }
}

const CHECKS_HELP: &str = "Keys checked, by outcome: allowed, denied, or shadow_denied (allowed by a shadow limit that would have denied it); a check-all counts each item";

/// A counter family with one series per entry and outcome, the entry named by `label`.
fn by_outcome(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    label: &'static str,
    entries: &[(String, Counters)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        base(name, &["_total"]),
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (entry, counters) in entries {
        for (outcome, value) in [
            (Outcome::Allowed, counters.allowed),
            (Outcome::Denied, counters.denied),
            (Outcome::ShadowDenied, counters.shadow_denied),
        ] {
            ConstCounter::new(value).encode(
                family.encode_family(&[(label, entry.as_str()), ("outcome", outcome.label())])?,
            )?;
        }
    }
    Ok(())
}
