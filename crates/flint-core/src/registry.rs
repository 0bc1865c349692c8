//! In-memory limiter state: the registry of keys, their algorithm state, counters and
//! history. No I/O here. Live operation and recovery change it through the same
//! `apply_*` functions, so replay rebuilds exactly the state that was live.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::algorithm::{LimitState, Quota};
use crate::clock::{UnixNanos, MAX_TIME};
use crate::storage::codec::DecodeReason;
use crate::storage::record::{CheckAllItem, Event};

/// How many decisions a key remembers for `history()` unless configured otherwise.
pub const DEFAULT_HISTORY_CAPACITY: usize = 100;

/// Per-key counters of decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Checks allowed.
    pub allowed: u64,
    /// Checks denied.
    pub denied: u64,
    /// Units consumed by allowed checks.
    pub allowed_cost: u64,
    /// Units asked for by denied checks.
    pub denied_cost: u64,
}

/// One remembered decision of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEvent {
    /// When it was decided.
    pub at: UnixNanos,
    /// The cost asked for.
    pub cost: u64,
    /// Whether it was allowed.
    pub allowed: bool,
    /// Units left after the decision.
    pub remaining: u64,
    /// True when the request was denied only because another key of the same
    /// all-or-nothing check lacked room (this key had room; no denial was counted on
    /// it).
    pub blocked_by_other: bool,
}

/// How one key took part in a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Allowed: its cost was consumed.
    Allowed,
    /// Denied for lack of room on this key.
    Denied,
    /// Denied only because another key of the same check-all lacked room.
    Blocked,
}

/// Why [`Registry::record`] refused a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    UnknownKey,
    CostOutOfRange,
    BeyondQuota,
    /// A refund on a key at full capacity: the engine writes no such record.
    NothingToRefund,
}

/// Everything the engine knows about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Box<str>,
    /// Its limit.
    pub quota: Quota,
    /// Its algorithm state.
    pub state: LimitState,
    /// Its decision counters.
    pub counters: Counters,
    /// When it was last checked; 0 when never.
    pub last_seen: UnixNanos,
    /// Its most recent decisions, oldest first; allocated on the first check, so idle
    /// keys cost nothing for it.
    pub history: Option<Box<VecDeque<HistoryEvent>>>,
}

/// All keys, by id and by name.
#[derive(Debug, Clone)]
pub struct Registry {
    entries: Vec<Option<Entry>>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    live: usize,
    /// The latest time of any event: the engine never decides at an earlier time, so a
    /// clock stepping backwards gains no key any quota.
    pub high_water: UnixNanos,
    history_capacity: usize,
}

impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.high_water == other.high_water
    }
}

impl Registry {
    /// An empty registry keeping `history_capacity` decisions per key.
    pub fn new(history_capacity: usize) -> Self {
        Registry {
            entries: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            live: 0,
            high_water: 0,
            history_capacity,
        }
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The id the next new key gets.
    pub fn next_id(&self) -> u32 {
        self.entries.len() as u32
    }

    /// The id of `key`, if configured.
    pub fn lookup(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        self.index
            .find(hash, |&id| {
                entries
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|e| &*e.key == key)
            })
            .copied()
    }

    /// The entry of `id`.
    pub fn get(&self, id: u32) -> Option<&Entry> {
        self.entries.get(id as usize).and_then(Option::as_ref)
    }

    /// Every configured entry with its id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(id, e)| e.as_ref().map(|e| (id as u32, e)))
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Entry> {
        self.entries.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn see(&mut self, at: UnixNanos) {
        self.high_water = self.high_water.max(at);
    }

    /// Inserts a whole entry (from a snapshot) under `id`.
    pub fn insert_entry(&mut self, id: u32, entry: Entry) {
        let index = id as usize;
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, || None);
        }
        let hash = self.hasher.hash_one(&*entry.key);
        let entries = &self.entries;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, id, |&other| {
            entries
                .get(other as usize)
                .and_then(Option::as_ref)
                .map_or(0, |e| hasher.hash_one(&*e.key))
        });
        if let Some(slot) = self.entries.get_mut(index) {
            *slot = Some(entry);
        }
        self.live += 1;
    }

    /// Like [`reserve_ids`](Self::reserve_ids), but fails instead of aborting when the
    /// memory for `next_id` slots (one per id ever given, as live) cannot be allocated.
    pub fn try_reserve_ids(
        &mut self,
        next_id: u32,
    ) -> Result<(), std::collections::TryReserveError> {
        let wanted = next_id as usize;
        if let Some(more) = wanted.checked_sub(self.entries.len()) {
            self.entries.try_reserve_exact(more)?;
            self.entries.resize_with(wanted, || None);
        }
        Ok(())
    }

    /// Reserves ids below `next_id` (a snapshot's removed keys keep their ids unused).
    pub fn reserve_ids(&mut self, next_id: u32) {
        if self.entries.len() < next_id as usize {
            self.entries.resize_with(next_id as usize, || None);
        }
    }

    /// Creates (new id) or reconfigures (existing id) a limit.
    pub fn apply_configure(&mut self, id: u32, key: &str, quota: Quota, at: UnixNanos) {
        self.see(at);
        if let Some(entry) = self.get_mut(id) {
            entry.state = entry.state.reconfigure(&entry.quota, &quota, at);
            entry.quota = quota;
            return;
        }
        self.insert_entry(
            id,
            Entry {
                key: key.into(),
                quota,
                state: LimitState::full(quota.algorithm()),
                counters: Counters::default(),
                last_seen: 0,
                history: None,
            },
        );
    }

    /// Records one decision of `id`; consumes `cost` when allowed. `remaining` is the
    /// decision's own figure when live; replay recomputes it (the same number).
    /// Returns false when `id` is unknown, or when an allowed check left the key beyond
    /// its quota (a decision the algorithm would not have allowed).
    pub fn apply_check(
        &mut self,
        id: u32,
        at: UnixNanos,
        cost: u64,
        allowed: bool,
        remaining: Option<u64>,
    ) -> bool {
        let part = if allowed { Part::Allowed } else { Part::Denied };
        self.record(id, at, cost, part, remaining).is_ok()
    }

    /// Records the part of `id` in an all-or-nothing check: consumed when the check
    /// was `allowed`; otherwise a denial counted on `id` only when it `lacked_room`, and
    /// a decision blocked by another key (history only) when it had room. Returns what
    /// [`apply_check`](Self::apply_check) returns.
    pub fn apply_check_all_item(
        &mut self,
        id: u32,
        at: UnixNanos,
        cost: u64,
        allowed: bool,
        lacked_room: bool,
        remaining: Option<u64>,
    ) -> bool {
        let part = match (allowed, lacked_room) {
            (true, _) => Part::Allowed,
            (false, true) => Part::Denied,
            (false, false) => Part::Blocked,
        };
        self.record(id, at, cost, part, remaining).is_ok()
    }

    /// Records one decision. Refuses it (changing nothing but the high-water time) when
    /// `id` is unknown or `cost` is outside `1..=rate`; records it but reports
    /// `BeyondQuota` when an allowed decision left the key beyond its quota (one the
    /// algorithm would have denied). Live calls validate and decide first, so neither
    /// happens to them; replay reports either as corruption.
    #[inline]
    fn record(
        &mut self,
        id: u32,
        at: UnixNanos,
        cost: u64,
        part: Part,
        remaining: Option<u64>,
    ) -> Result<(), Refusal> {
        self.see(at);
        let capacity = self.history_capacity;
        let Some(entry) = self.get_mut(id) else {
            return Err(Refusal::UnknownKey);
        };
        if cost == 0 || cost > entry.quota.burst() {
            return Err(Refusal::CostOutOfRange);
        }
        let mut after = None;
        let mut beyond = false;
        // Counters saturate: a key checked at the largest rate for long enough would
        // pass u64::MAX in its cost counters, and a stuck maximum beats a wrap to zero.
        let c = &mut entry.counters;
        match part {
            Part::Allowed => {
                after = entry.state.consume(&entry.quota, at, cost);
                beyond = after.is_none();
                c.allowed = c.allowed.saturating_add(1);
                c.allowed_cost = c.allowed_cost.saturating_add(cost);
            }
            Part::Denied => {
                c.denied = c.denied.saturating_add(1);
                c.denied_cost = c.denied_cost.saturating_add(cost);
            }
            Part::Blocked => {}
        }
        entry.last_seen = at;
        if capacity > 0 {
            let remaining = remaining
                .or(after)
                .unwrap_or_else(|| entry.state.remaining(&entry.quota, at));
            let history = entry.history.get_or_insert_with(Box::default);
            if history.len() >= capacity {
                history.pop_front();
            }
            history.push_back(HistoryEvent {
                at,
                cost,
                allowed: part == Part::Allowed,
                remaining,
                blocked_by_other: part == Part::Blocked,
            });
        }
        if beyond {
            return Err(Refusal::BeyondQuota);
        }
        Ok(())
    }

    /// Gives back `cost` units of `id` (see [`LimitState::refund`]); counters, history
    /// and last-seen time are left as they are (a refund is not a decision). Live calls
    /// and replay both go through here. Refuses (changing nothing but the high-water
    /// time) an unknown `id`, a `cost` outside `1..=rate`, and a refund on a key at
    /// full capacity, which changes nothing: the engine writes no record for it, so
    /// replay reports such a record as corruption.
    pub fn apply_refund(&mut self, id: u32, at: UnixNanos, cost: u64) -> bool {
        self.refund(id, at, cost).is_ok()
    }

    fn refund(&mut self, id: u32, at: UnixNanos, cost: u64) -> Result<(), Refusal> {
        self.see(at);
        let Some(entry) = self.get_mut(id) else {
            return Err(Refusal::UnknownKey);
        };
        if cost == 0 || cost > entry.quota.burst() {
            return Err(Refusal::CostOutOfRange);
        }
        if entry.state.refund(&entry.quota, at, cost) {
            Ok(())
        } else {
            Err(Refusal::NothingToRefund)
        }
    }

    /// Puts `id` back to full capacity.
    pub fn apply_reset(&mut self, id: u32, at: UnixNanos) -> bool {
        self.see(at);
        let Some(entry) = self.get_mut(id) else {
            return false;
        };
        entry.state = LimitState::full(entry.quota.algorithm());
        true
    }

    /// Deletes the limit of `id`.
    pub fn apply_remove(&mut self, id: u32, at: UnixNanos) -> bool {
        self.see(at);
        let Some(entry) = self.entries.get_mut(id as usize).and_then(Option::take) else {
            return false;
        };
        let hash = self.hasher.hash_one(&*entry.key);
        if let Ok(found) = self.index.find_entry(hash, |&other| other == id) {
            found.remove();
        }
        self.live -= 1;
        true
    }

    /// Applies a logged event (recovery), after checking that it is one the engine
    /// could have written in this state. A record that passes its checksum but breaks
    /// an invariant (a key id that does not exist, a cost outside the limit, an allowed
    /// check the algorithm would have denied, time going backwards) means the log was
    /// edited or damaged: the error says which invariant, and nothing of the event is
    /// kept worth anything (recovery fails).
    pub fn apply(&mut self, event: &Event) -> Result<(), DecodeReason> {
        match event {
            // The common record first: replay speed is mostly this arm.
            Event::Check {
                id,
                at,
                cost,
                allowed,
            } => {
                self.check_time(*at)?;
                let part = if *allowed {
                    Part::Allowed
                } else {
                    Part::Denied
                };
                self.record(*id, *at, *cost, part, None)
                    .map_err(|refusal| self.refused(refusal, *id, *cost))
            }
            Event::Configure { id, at, quota, key } => {
                self.check_time(*at)?;
                self.check_configure(*id, key)?;
                self.apply_configure(*id, key, *quota, *at);
                Ok(())
            }
            Event::CheckAll { at, allowed, items } => {
                self.check_time(*at)?;
                self.check_check_all(*allowed, items)?;
                for &CheckAllItem {
                    id,
                    cost,
                    lacked_room,
                } in items
                {
                    let part = match (*allowed, lacked_room) {
                        (true, _) => Part::Allowed,
                        (false, true) => Part::Denied,
                        (false, false) => Part::Blocked,
                    };
                    self.record(id, *at, cost, part, None)
                        .map_err(|refusal| self.refused(refusal, id, cost))?;
                }
                Ok(())
            }
            Event::Reset { id, at } => {
                self.check_time(*at)?;
                self.known(*id)?;
                self.apply_reset(*id, *at);
                Ok(())
            }
            Event::Remove { id, at } => {
                self.check_time(*at)?;
                self.known(*id)?;
                self.apply_remove(*id, *at);
                Ok(())
            }
            Event::Refund { id, at, cost } => {
                self.check_time(*at)?;
                let burst = self.known(*id)?.quota.burst();
                if *cost == 0 || *cost > burst {
                    return Err(inconsistent(format!(
                        "the record refunds {cost} units to key id {id}, outside 1 to its capacity {burst}"
                    )));
                }
                self.refund(*id, *at, *cost)
                    .map_err(|refusal| self.refused(refusal, *id, *cost))
            }
            // The durability watermark is for recovery; the limiter's state is unchanged
            // (not even its high-water time: the record is not a decision).
            Event::Synced { .. } => Ok(()),
        }
    }

    /// The engine decides at max(clock, high water), under the lock that orders the
    /// log, and never past `MAX_TIME`: a decision's time is neither before the
    /// previous one nor after `MAX_TIME`.
    #[inline]
    fn check_time(&self, at: UnixNanos) -> Result<(), DecodeReason> {
        if at < self.high_water {
            return Err(inconsistent(format!(
                "the record's time {at} is before the time of an earlier event ({}); recorded times never go backwards",
                self.high_water
            )));
        }
        if at > MAX_TIME {
            return Err(inconsistent(format!(
                "the record's time {at} is after MAX_TIME ({MAX_TIME})"
            )));
        }
        Ok(())
    }

    /// Why a logged decision was refused, in words.
    fn refused(&self, refusal: Refusal, id: u32, cost: u64) -> DecodeReason {
        let Some(entry) = self.get(id) else {
            return self
                .known(id)
                .err()
                .unwrap_or_else(|| inconsistent(String::new()));
        };
        let (key, burst) = (&entry.key, entry.quota.burst());
        inconsistent(match refusal {
            Refusal::UnknownKey | Refusal::CostOutOfRange => {
                format!("the record checks key {key:?} for {cost} units, outside 1 to its capacity {burst}")
            }
            Refusal::BeyondQuota => format!(
                "the record allows key {key:?} {cost} units that its limit had no room for (the algorithm denies such a check)"
            ),
            Refusal::NothingToRefund => format!(
                "the record refunds {cost} units to key {key:?}, which was at full capacity (the engine writes no refund that changes nothing)"
            ),
        })
    }

    fn known(&self, id: u32) -> Result<&Entry, DecodeReason> {
        self.get(id).ok_or_else(|| {
            let why = if id < self.next_id() {
                "a removed key"
            } else {
                "no key"
            };
            inconsistent(format!("the record names key id {id}, which is {why}"))
        })
    }

    /// A configure record either changes the limit of the key that has `id`, or
    /// creates a new key with the next id; key ids are never reused or skipped.
    fn check_configure(&self, id: u32, key: &str) -> Result<(), DecodeReason> {
        if key.is_empty() {
            return Err(inconsistent("a configure record holds an empty key".into()));
        }
        if let Some(entry) = self.get(id) {
            if &*entry.key != key {
                return Err(inconsistent(format!(
                    "a configure record gives key id {id}, which is key {:?}, to key {key:?}",
                    entry.key
                )));
            }
            return Ok(());
        }
        let next = self.next_id();
        if id != next || id == u32::MAX {
            return Err(inconsistent(format!(
                "a configure record creates key {key:?} with id {id}, but the next key id is {next} (ids are never reused or skipped)"
            )));
        }
        if let Some(other) = self.lookup(key) {
            return Err(inconsistent(format!(
                "a configure record gives key {key:?}, which has id {other}, a second id {id}"
            )));
        }
        Ok(())
    }

    /// A checked cost is between 1 and the key's capacity (its burst, which is its rate
    /// unless set): the engine refuses others.
    fn check_cost(&self, id: u32, cost: u64) -> Result<(), DecodeReason> {
        let entry = self.known(id)?;
        let burst = entry.quota.burst();
        if cost == 0 || cost > burst {
            return Err(inconsistent(format!(
                "the record checks key {:?} for {cost} units, outside 1 to its capacity {burst}",
                entry.key
            )));
        }
        Ok(())
    }

    /// A check-all names distinct known keys, each with a cost within its rate; when
    /// allowed no key lacked room, when denied at least one did.
    fn check_check_all(&self, allowed: bool, items: &[CheckAllItem]) -> Result<(), DecodeReason> {
        if items.is_empty() {
            return Err(inconsistent("a check-all record names no key".into()));
        }
        for (n, item) in items.iter().enumerate() {
            self.check_cost(item.id, item.cost)?;
            if items.iter().take(n).any(|other| other.id == item.id) {
                return Err(inconsistent(format!(
                    "a check-all record names key id {} twice",
                    item.id
                )));
            }
        }
        let lacking = items.iter().filter(|i| i.lacked_room).count();
        if allowed && lacking > 0 {
            return Err(inconsistent(
                "an allowed check-all record says a key lacked room".into(),
            ));
        }
        if !allowed && lacking == 0 {
            return Err(inconsistent(
                "a denied check-all record says no key lacked room".into(),
            ));
        }
        Ok(())
    }
}

fn inconsistent(why: String) -> DecodeReason {
    DecodeReason::Inconsistent(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;

    fn registry_with_key(algorithm: Algorithm) -> Registry {
        let mut registry = Registry::new(4);
        let quota = Quota::new(crate::MAX_RATE, "1ms".parse().unwrap(), algorithm).unwrap();
        registry.apply_configure(0, "k", quota, 1);
        registry
    }

    #[test]
    fn counters_saturate_at_the_end_of_u64_instead_of_wrapping() {
        let mut registry = registry_with_key(Algorithm::TokenBucket);
        registry.get_mut(0).unwrap().counters = Counters {
            allowed: u64::MAX,
            denied: u64::MAX - 1,
            allowed_cost: u64::MAX - 5,
            denied_cost: u64::MAX - 5,
        };
        registry.apply_check(0, 10, crate::MAX_RATE, true, None);
        registry.apply_check(0, 10, crate::MAX_RATE, false, None);
        registry.apply_check(0, 10, crate::MAX_RATE, false, None);
        assert_eq!(
            registry.get(0).unwrap().counters,
            Counters {
                allowed: u64::MAX,
                denied: u64::MAX,
                allowed_cost: u64::MAX,
                denied_cost: u64::MAX,
            }
        );
    }

    #[test]
    fn a_synced_event_changes_nothing() {
        let mut registry = registry_with_key(Algorithm::SlidingWindowLog);
        let before = registry.clone();
        registry
            .apply(&Event::Synced {
                at: 1_000,
                through: 64,
                salt: 7,
            })
            .unwrap();
        assert_eq!(registry, before);
        assert_eq!(registry.high_water, 1);
    }
}
