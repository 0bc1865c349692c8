//! The JSON bodies of the HTTP API: one definition, used by the server (and its
//! OpenAPI document), the client, the CLI's `--json` output and the Python dicts.
//!
//! Field names and units are those of the Python API: times are float Unix seconds,
//! durations float seconds, periods the normalised string ("1m") and `per_ms`.

use flint_core::{
    to_unix_seconds, CompactReport, Decision, DoctorReport, HistoryEvent, ItemDecision,
    LimitChange, MultiDecision, Quota, Status,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always true when the server answers.
    pub ok: bool,
    /// The server's version.
    pub version: String,
}

/// `POST /v1/limits`: configure a limit, of a key or of a template (a key ending in
/// `*`: the limit of every key that starts with the text before it and has no limit of
/// its own; the longest such prefix wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// The key (1 to 1,024 bytes of UTF-8), or a template such as `ip:*`.
    #[schema(example = "api:user-42")]
    pub key: String,
    /// Units allowed per period (≥ 1).
    #[schema(example = 100, minimum = 1)]
    pub rate: u64,
    /// The period: a positive integer and a unit (`ms`, `s`, `m`, `h`, `d`).
    #[schema(example = "1m")]
    pub per: String,
    /// `token_bucket` (default), `sliding_window_log` or `fixed_window_counter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "token_bucket")]
    pub algorithm: Option<String>,
    /// The capacity of a token bucket: the most units available at once, refilled at
    /// `rate` per `per` (1 to 10^12; default: the rate). Any burst, below or above the
    /// rate, is allowed for `token_bucket`; the other algorithms accept only the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 500, minimum = 1)]
    pub burst: Option<u64>,
    /// `enforce` (default) or `shadow`: a shadow limit allows every check and counts
    /// the ones it would have denied as `shadow_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "enforce")]
    pub mode: Option<String>,
}

impl LimitRequest {
    /// The quota this request asks for, or the engine's error naming the bad value and
    /// the fix: the one reading of a request, for the server and the CLI.
    pub fn quota(&self) -> flint_core::Result<Quota> {
        let algorithm = self.algorithm.as_deref().unwrap_or("token_bucket");
        let mut quota = Quota::new(self.rate, self.per.parse()?, algorithm.parse()?)?;
        if let Some(burst) = self.burst {
            quota = quota.with_burst(burst)?;
        }
        if let Some(mode) = &self.mode {
            quota = quota.with_mode(mode.parse()?);
        }
        Ok(quota)
    }
}

/// What `POST /v1/limits` did, and the limit after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LimitResponse {
    /// `created`, `updated` or `unchanged` (the same settings again write nothing).
    pub change: String,
    /// The key's status after the change.
    pub status: KeyStatus,
}

/// The name of a [`LimitChange`].
pub fn change_name(change: LimitChange) -> &'static str {
    match change {
        LimitChange::Created => "created",
        LimitChange::Updated => "updated",
        LimitChange::Unchanged => "unchanged",
    }
}

/// `POST /v1/check`: check a key and consume `cost` units when allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The key.
    #[schema(example = "api:user-42")]
    pub key: String,
    /// Units to consume (default 1; at most the limit's capacity: its burst, which is
    /// the rate unless set).
    #[serde(default = "one")]
    #[schema(example = 1, minimum = 1, default = 1)]
    pub cost: u64,
}

fn one() -> u64 {
    1
}

/// `POST /v1/acquire`: wait until `cost` units are granted or `timeout` passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The key.
    #[schema(example = "api:user-42")]
    pub key: String,
    /// Units to consume (default 1; at most the limit's capacity: its burst, which is
    /// the rate unless set).
    #[serde(default = "one")]
    #[schema(example = 1, minimum = 1, default = 1)]
    pub cost: u64,
    /// The longest to wait, in seconds (default and cap: the server's request timeout
    /// less one second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 2.5, minimum = 0)]
    pub timeout: Option<f64>,
}

/// The outcome of a check: a denial is `200` with `allowed: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckResult {
    /// The key.
    pub key: String,
    /// Whether the cost was consumed.
    pub allowed: bool,
    /// Units left after this decision.
    pub remaining: u64,
    /// Unix seconds at which the key is back to full capacity.
    pub reset_at: f64,
    /// Seconds until a request of this cost would be allowed; 0 when allowed.
    pub retry_after: f64,
    /// The limit's capacity: its burst, which is the rate unless a token bucket was
    /// given another.
    pub limit: u64,
    /// The limit's algorithm.
    pub algorithm: String,
    /// The cost asked for.
    pub cost: u64,
    /// True when a shadow limit allowed a request it would have denied (`allowed` is
    /// true and nothing was consumed).
    pub shadow_denied: bool,
}

impl CheckResult {
    /// A decision of the engine for `key`.
    pub fn new(key: &str, d: &Decision) -> Self {
        CheckResult {
            key: key.to_owned(),
            allowed: d.allowed,
            remaining: d.remaining,
            reset_at: to_unix_seconds(d.reset_at),
            retry_after: d.retry_after as f64 / 1e9,
            limit: d.limit,
            algorithm: d.algorithm.name().to_owned(),
            cost: d.cost,
            shadow_denied: d.shadow_denied,
        }
    }
}

/// One item of `POST /v1/check-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckItem {
    /// The key.
    pub key: String,
    /// Units to consume (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1, default = 1)]
    pub cost: u64,
}

/// `POST /v1/check-all`: all or nothing. Duplicate keys' costs are summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckAllRequest {
    /// The items, checked together.
    #[serde(deserialize_with = "objects")]
    pub items: Vec<CheckItem>,
}

/// A request body (or item) read from a JSON object only. serde's derived structs also
/// accept an array of the field values (`["api:user-42", 5]` as a check): the API
/// documents objects, and a client's array must be a 400, not a consumed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(MapOnly(deserializer)).map(Object)
    }
}

fn objects<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    let items = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(items.into_iter().map(|Object(item)| item).collect())
}

/// A deserializer that reads a struct as a map only (an array is an invalid type).
struct MapOnly<D>(D);

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// The outcome of an all-or-nothing check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckAllResult {
    /// Whether every key had room (and all were consumed).
    pub allowed: bool,
    /// The first key, in the order given, that lacked room.
    pub denied_key: Option<String>,
    /// One result per item, in order.
    pub results: Vec<CheckResult>,
}

impl From<&MultiDecision> for CheckAllResult {
    fn from(m: &MultiDecision) -> Self {
        CheckAllResult {
            allowed: m.allowed,
            denied_key: m.denied_key.clone(),
            results: m
                .results
                .iter()
                .map(|ItemDecision { key, decision }| CheckResult::new(key, decision))
                .collect(),
        }
    }
}

/// `POST /v1/reset`: put a key back to full capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// The key.
    pub key: String,
}

/// `POST /v1/refund`: give back units of a key consumed earlier (a request that failed
/// and should not count). Answered with `{"ok": true}`, also when the key was already
/// at full capacity (then nothing changes and nothing is written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The key.
    #[schema(example = "api:user-42")]
    pub key: String,
    /// Units to give back (default 1; at most the limit's capacity, its burst). A token
    /// bucket gets them back up to its capacity; a fixed window counter subtracts them from the
    /// current window; a sliding window log removes them from its newest events inside
    /// the window; never below zero.
    #[serde(default = "one")]
    #[schema(example = 1, minimum = 1, default = 1)]
    pub cost: u64,
}

/// The answer of a call that returns nothing else (reset, refund, remove, flush).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Done {
    /// Always true: a failure is an error body instead.
    pub ok: bool,
}

/// A key's limit, capacity and counters (the flat dict of Python's `status()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyStatus {
    /// The key.
    pub key: String,
    /// Units per period.
    pub rate: u64,
    /// The capacity: the most units available at once (the rate, unless a token
    /// bucket was given another burst).
    pub burst: u64,
    /// The period, normalised ("1m").
    pub per: String,
    /// The period in milliseconds.
    pub per_ms: u64,
    /// The algorithm.
    pub algorithm: String,
    /// `enforce` or `shadow`.
    pub mode: String,
    /// The template the key takes its limit from (a key with no limit of its own), or
    /// null: for configured keys and for templates (whose keys end in `*`, and whose
    /// counters sum those of their keys).
    pub template: Option<String>,
    /// Units available now.
    pub remaining: u64,
    /// Unix seconds at which the key is back to full capacity (now, when full).
    pub reset_at: f64,
    /// Checks allowed.
    pub allowed: u64,
    /// Checks denied.
    pub denied: u64,
    /// Units consumed by allowed checks.
    pub allowed_cost: u64,
    /// Units asked for by denied checks.
    pub denied_cost: u64,
    /// Checks a shadow limit allowed but would have denied.
    pub shadow_denied: u64,
    /// Unix seconds of the last check, or null.
    pub last_seen: Option<f64>,
}

impl From<&Status> for KeyStatus {
    fn from(s: &Status) -> Self {
        KeyStatus {
            key: s.key.clone(),
            rate: s.quota.rate(),
            burst: s.quota.burst(),
            per: s.quota.period().to_string(),
            per_ms: s.quota.period().as_millis(),
            algorithm: s.quota.algorithm().name().to_owned(),
            mode: s.quota.mode().name().to_owned(),
            template: s.template.clone(),
            remaining: s.remaining,
            reset_at: to_unix_seconds(s.reset_at),
            allowed: s.counters.allowed,
            denied: s.counters.denied,
            allowed_cost: s.counters.allowed_cost,
            denied_cost: s.counters.denied_cost,
            shadow_denied: s.counters.shadow_denied,
            last_seen: s.last_seen.map(to_unix_seconds),
        }
    }
}

/// `GET /v1/limits`: every limit, sorted by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LimitList {
    /// The limits.
    pub limits: Vec<KeyStatus>,
}

/// The query of `GET /v1/limits`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// `all` (default), `keys` (configured keys and keys made from templates that hold
    /// state) or `templates`.
    pub kind: Option<String>,
}

/// One remembered decision of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// Unix seconds of the decision.
    pub at: f64,
    /// The cost asked for.
    pub cost: u64,
    /// Whether it was allowed.
    pub allowed: bool,
    /// True when only another key of the same check-all lacked room.
    pub blocked_by_other: bool,
    /// True when a shadow limit allowed it but would have denied it.
    pub shadow_denied: bool,
    /// Units left after it.
    pub remaining: u64,
}

impl From<&HistoryEvent> for HistoryEntry {
    fn from(e: &HistoryEvent) -> Self {
        HistoryEntry {
            at: to_unix_seconds(e.at),
            cost: e.cost,
            allowed: e.allowed,
            blocked_by_other: e.blocked_by_other,
            shadow_denied: e.shadow_denied,
            remaining: e.remaining,
        }
    }
}

/// `GET /v1/history/{key}`: the key's most recent decisions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// The key.
    pub key: String,
    /// The decisions.
    pub events: Vec<HistoryEntry>,
}

/// The query of `GET /v1/history/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many decisions (default 100).
    #[serde(default = "hundred")]
    #[param(default = 100)]
    pub limit: usize,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery { limit: hundred() }
    }
}

fn hundred() -> usize {
    100
}

/// The query of `GET /v1/top`.
#[derive(Debug, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// `denied` (default), `allowed`, `denied_cost`, `allowed_cost`, `checks` or
    /// `shadow_denied`.
    #[serde(default = "denied")]
    #[param(default = "denied")]
    pub by: String,
    /// How many keys (default 20).
    #[serde(default = "twenty")]
    #[param(default = 20)]
    pub limit: usize,
}

impl Default for TopQuery {
    fn default() -> Self {
        TopQuery {
            by: denied(),
            limit: twenty(),
        }
    }
}

fn denied() -> String {
    "denied".to_owned()
}

fn twenty() -> usize {
    20
}

/// `GET /v1/top`: keys ranked, highest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Top {
    /// The keys' statuses.
    pub top: Vec<KeyStatus>,
}

/// One check of the doctor's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DoctorCheck {
    /// What was checked.
    pub name: String,
    /// False when the check failed.
    pub ok: bool,
    /// `ok`, `warn` or `fail`.
    pub level: String,
    /// What was found, and the fix when something is wrong.
    pub detail: String,
}

/// `GET /v1/doctor`: the health of the data directory and of the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Doctor {
    /// True when no check failed.
    pub ok: bool,
    /// Every check.
    pub checks: Vec<DoctorCheck>,
    /// `always` or `batch`.
    pub sync: String,
    /// The engine's version.
    pub version: String,
    /// The data directory (on the server's machine).
    pub data_dir: String,
    /// Logical size of the log.
    pub log_bytes: u64,
    /// Size of the snapshot.
    pub snapshot_bytes: u64,
    /// Entries: configured keys, templates, and keys made from templates that hold
    /// state.
    pub keys: usize,
    /// Events written but not yet synced.
    pub pending_events: u64,
    /// Every template with its keys that hold state now.
    pub templates: Vec<DoctorTemplate>,
    /// Memory the engine's state holds, approximately.
    pub memory_bytes: u64,
    /// The server process's resident memory, when the system says.
    pub process_resident_bytes: Option<u64>,
}

/// One template in the doctor's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DoctorTemplate {
    /// The template (ending in `*`).
    pub template: String,
    /// Keys made from it that hold state now (keys back at full capacity are dropped).
    pub live_keys: usize,
    /// Dropped keys whose counters its summary remembers for `top` (at most 100).
    pub remembered_keys: usize,
}

impl From<&DoctorReport> for Doctor {
    fn from(r: &DoctorReport) -> Self {
        Doctor {
            ok: r.ok,
            checks: r
                .checks
                .iter()
                .map(|c| DoctorCheck {
                    name: c.name.to_owned(),
                    ok: c.level != flint_core::CheckLevel::Fail,
                    level: c.level.to_string(),
                    detail: c.detail.clone(),
                })
                .collect(),
            sync: r.sync.to_owned(),
            version: r.version.to_owned(),
            data_dir: r.data_dir.display().to_string(),
            log_bytes: r.log_bytes,
            snapshot_bytes: r.snapshot_bytes,
            keys: r.keys,
            pending_events: r.pending_events,
            templates: r
                .templates
                .iter()
                .map(|t| DoctorTemplate {
                    template: t.template.clone(),
                    live_keys: t.live_keys,
                    remembered_keys: t.remembered_keys,
                })
                .collect(),
            memory_bytes: r.memory_bytes,
            process_resident_bytes: r.process_resident_bytes,
        }
    }
}

/// `POST /v1/log/compact`: what the compaction did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Compacted {
    /// Keys in the snapshot.
    pub keys: usize,
    /// Size of the new snapshot.
    pub snapshot_bytes: u64,
    /// Log size before.
    pub log_bytes_before: u64,
    /// Log size after.
    pub log_bytes_after: u64,
}

impl From<&CompactReport> for Compacted {
    fn from(r: &CompactReport) -> Self {
        Compacted {
            keys: r.keys,
            snapshot_bytes: r.snapshot_bytes,
            log_bytes_before: r.log_bytes_before,
            log_bytes_after: r.log_bytes_after,
        }
    }
}

/// Every failure: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code; see [`code`].
    pub code: String,
    /// What is wrong, with the value and the fix.
    pub message: String,
}

/// The error codes of the API, one place for the server and its clients.
pub mod code {
    /// Bad input (also malformed JSON, a wrong content type, a missing field). 400.
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    /// The key has no limit. 404.
    pub const LIMIT_NOT_FOUND: &str = "limit_not_found";
    /// No such route. 404.
    pub const NOT_FOUND: &str = "not_found";
    /// The route exists, the method does not. 405.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// Missing or wrong bearer token. 401.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The body is over 64 KiB. 413.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// A read, write or sync of the data directory failed. 500.
    pub const STORAGE_ERROR: &str = "storage_error";
    /// The data directory holds damaged data. 500.
    pub const CORRUPTED_DATA: &str = "corrupted_data";
    /// The engine stopped writing after a storage failure, or is closing. 503.
    pub const UNAVAILABLE: &str = "unavailable";
    /// The server is at its limit of blocking work. 503.
    pub const OVERLOADED: &str = "overloaded";
    /// A request took longer than the server's request timeout. 503.
    pub const TIMEOUT: &str = "timeout";
    /// Anything else that went wrong inside the server. 500.
    pub const INTERNAL: &str = "internal";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_objects_only() {
        let object: Object<CheckRequest> =
            serde_json::from_str(r#"{"key": "k", "cost": 2}"#).unwrap();
        assert_eq!(object.0.cost, 2);
        let array = serde_json::from_str::<Object<CheckRequest>>(r#"["k", 2]"#).unwrap_err();
        assert!(array.to_string().contains("sequence"), "{array}");
        let all: CheckAllRequest =
            serde_json::from_str(r#"{"items": [{"key": "a"}, {"key": "b", "cost": 3}]}"#).unwrap();
        assert_eq!(all.items[1].cost, 3);
        assert!(serde_json::from_str::<CheckAllRequest>(r#"{"items": [["a", 1]]}"#).is_err());
        assert!(serde_json::from_str::<Object<CheckAllRequest>>(r"[[]]").is_err());
        let duplicate = r#"{"key": "a", "key": "b"}"#;
        assert!(serde_json::from_str::<Object<CheckRequest>>(duplicate).is_err());
    }
}
