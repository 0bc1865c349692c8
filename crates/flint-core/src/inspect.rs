//! Read-only views of the limiter: status, top, doctor.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::algorithm::Quota;
use crate::clock::UnixNanos;
use crate::error::{Error, Result};
use crate::registry::Counters;

/// A key's limit, current capacity and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The key.
    pub key: String,
    /// Its limit.
    pub quota: Quota,
    /// Units available now.
    pub remaining: u64,
    /// When it is back to full capacity (now, if it is full).
    pub reset_at: UnixNanos,
    /// Its decision counters.
    pub counters: Counters,
    /// When it was last checked.
    pub last_seen: Option<UnixNanos>,
    /// The template the key takes its limit from, when it has no limit of its own
    /// (`None` for configured keys and for templates themselves).
    pub template: Option<String>,
}

impl Status {
    /// Whether this is a template (its key ends in `*`); its counters sum those of
    /// every key made from it.
    pub fn is_template(&self) -> bool {
        crate::templates::is_template(&self.key)
    }
}

/// Which entries `list()` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListKind {
    /// Keys and templates.
    #[default]
    All,
    /// Keys only: configured ones and those made from templates that hold state.
    Keys,
    /// Templates only.
    Templates,
}

impl ListKind {
    /// The name users write.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::All => "all",
            ListKind::Keys => "keys",
            ListKind::Templates => "templates",
        }
    }

    /// Whether an entry with this key is listed.
    pub fn includes(self, key: &str) -> bool {
        match self {
            ListKind::All => true,
            ListKind::Keys => !crate::templates::is_template(key),
            ListKind::Templates => crate::templates::is_template(key),
        }
    }
}

impl FromStr for ListKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        [ListKind::All, ListKind::Keys, ListKind::Templates]
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                Error::invalid(
                    None,
                    format!("list kind {name:?} is unknown: use one of all, keys, templates"),
                )
            })
    }
}

/// The orderings `top()` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    /// Most denied checks.
    Denied,
    /// Most allowed checks.
    Allowed,
    /// Most units denied.
    DeniedCost,
    /// Most units allowed.
    AllowedCost,
    /// Most checks of either kind.
    Checks,
    /// Most checks a shadow limit would have denied.
    ShadowDenied,
}

impl TopBy {
    /// The value a key is ranked by.
    pub fn metric(self, c: &Counters) -> u64 {
        match self {
            TopBy::Denied => c.denied,
            TopBy::Allowed => c.allowed,
            TopBy::DeniedCost => c.denied_cost,
            TopBy::AllowedCost => c.allowed_cost,
            TopBy::Checks => c.allowed.saturating_add(c.denied),
            TopBy::ShadowDenied => c.shadow_denied,
        }
    }

    /// The name users write.
    pub fn name(self) -> &'static str {
        match self {
            TopBy::Denied => "denied",
            TopBy::Allowed => "allowed",
            TopBy::DeniedCost => "denied_cost",
            TopBy::AllowedCost => "allowed_cost",
            TopBy::Checks => "checks",
            TopBy::ShadowDenied => "shadow_denied",
        }
    }
}

impl FromStr for TopBy {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        [
            TopBy::Denied,
            TopBy::Allowed,
            TopBy::DeniedCost,
            TopBy::AllowedCost,
            TopBy::Checks,
            TopBy::ShadowDenied,
        ]
        .into_iter()
        .find(|by| by.name() == name)
        .ok_or_else(|| {
            Error::invalid(
                None,
                format!("top(by={name:?}) is unknown: use one of denied, allowed, denied_cost, allowed_cost, checks, shadow_denied"),
            )
        })
    }
}

/// How a doctor check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckLevel {
    /// Fine.
    Ok,
    /// Worth a look; nothing is broken.
    Warn,
    /// Broken.
    Fail,
}

impl fmt::Display for CheckLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckLevel::Ok => "ok",
            CheckLevel::Warn => "warn",
            CheckLevel::Fail => "fail",
        })
    }
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorCheck {
    /// What was checked (`lock`, `permissions`, `log`, ...).
    pub name: &'static str,
    /// The outcome.
    pub level: CheckLevel,
    /// What was found, and the fix when something is wrong.
    pub detail: String,
}

/// The health of a data directory and of the engine using it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorReport {
    /// True when no check failed.
    pub ok: bool,
    /// Every check.
    pub checks: Vec<DoctorCheck>,
    /// `always` or `batch`.
    pub sync: &'static str,
    /// The engine's version.
    pub version: &'static str,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Logical size of the log.
    pub log_bytes: u64,
    /// Size of the snapshot (0 when none).
    pub snapshot_bytes: u64,
    /// Entries: configured keys, templates and keys made from templates that hold
    /// state.
    pub keys: usize,
    /// Events written but not yet synced.
    pub pending_events: u64,
    /// Every template with the keys made from it that hold state now, by template.
    pub templates: Vec<TemplateReport>,
    /// Memory the engine's state holds, approximately (keys, their state and
    /// history, the indexes, the template summaries).
    pub memory_bytes: u64,
    /// The resident memory of the whole process (from `/proc/self/statm`), when the
    /// system says.
    pub process_resident_bytes: Option<u64>,
}

/// One template in the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateReport {
    /// The template (ending in `*`).
    pub template: String,
    /// Keys made from it that hold state now (the others cost nothing).
    pub live_keys: usize,
    /// Dropped keys whose counters its summary remembers (at most 100).
    pub remembered_keys: usize,
}

/// The engine's running totals since it was opened (for metrics): cheap to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Entries: configured keys, templates and keys made from templates that hold
    /// state.
    pub keys: usize,
    /// Templates.
    pub templates: usize,
    /// Keys made from templates that hold state now.
    pub template_keys: usize,
    /// Logical size of the log.
    pub log_bytes: u64,
    /// Size of the snapshot (0 when none).
    pub snapshot_bytes: u64,
    /// Events written but not yet synced.
    pub pending_events: u64,
    /// Syncs (`fdatasync`) of the log that completed.
    pub syncs: u64,
    /// The time those syncs took in all, in nanoseconds.
    pub sync_nanos: u64,
    /// Compactions that completed (manual and automatic).
    pub compactions: u64,
    /// Keys checked and allowed by live `check` and `check_all` calls since open (not
    /// replay); a check-all counts each item.
    pub checks_allowed: u64,
    /// Keys checked and denied (every item of a denied check-all counts as denied).
    pub checks_denied: u64,
    /// Keys a shadow limit allowed but would have denied (not in `checks_allowed`).
    pub checks_shadow_denied: u64,
}
