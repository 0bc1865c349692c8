//! What a check returns: a decision is a value, allowed or not.

use crate::algorithm::Algorithm;
use crate::clock::UnixNanos;

/// The outcome of one check. A denial is an ordinary `Decision` with `allowed == false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the cost was consumed.
    pub allowed: bool,
    /// Units left after this decision.
    pub remaining: u64,
    /// When the key is back to full capacity.
    pub reset_at: UnixNanos,
    /// Nanoseconds until a request of this cost would be allowed; 0 when allowed.
    pub retry_after: u64,
    /// The limit's capacity: its burst, which is the rate unless a token bucket has
    /// another (so `remaining <= limit`).
    pub limit: u64,
    /// The limit's algorithm.
    pub algorithm: Algorithm,
    /// The cost that was asked for.
    pub cost: u64,
    /// True when a shadow limit allowed a request it would have denied: `allowed` is
    /// true, nothing was consumed, and `remaining`, `reset_at` are what an enforced
    /// limit would show (`retry_after` is 0: the request went through).
    pub shadow_denied: bool,
}

/// One item of an all-or-nothing check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDecision {
    /// The item's key.
    pub key: String,
    /// The decision for it. `allowed` is the call's decision; `cost` is this item's own
    /// cost; `remaining`, `reset_at` and `retry_after` are the key's, with duplicate
    /// keys' costs summed.
    pub decision: Decision,
}

/// The outcome of an all-or-nothing check of several keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiDecision {
    /// Whether every key allowed its cost (and all were consumed).
    pub allowed: bool,
    /// The first key (in the order given) that denied, if any.
    pub denied_key: Option<String>,
    /// One result per item, in the order given.
    pub results: Vec<ItemDecision>,
}

/// What `limit()` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitChange {
    /// A new limit was created.
    Created,
    /// The limit already had these settings; nothing was written.
    Unchanged,
    /// The limit's settings were replaced.
    Updated,
}
