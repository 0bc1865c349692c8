//! In-memory limiter state: the registry of keys, their algorithm state, counters and
//! history. No I/O here. Live operation and recovery change it through the same
//! `apply_*` functions, so replay rebuilds exactly the state that was live.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use crate::algorithm::{LimitState, Quota};
use crate::clock::{UnixNanos, MAX_TIME};
use crate::storage::codec::DecodeReason;
use crate::storage::record::{CheckAllItem, Event};
use crate::templates::{self, TemplateIndex, TopKeys};

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
    /// Checks a shadow limit allowed but would have denied (counted apart from
    /// `allowed` and `denied`).
    pub shadow_denied: u64,
}

impl Counters {
    /// Adds `other` in, saturating: a stuck maximum beats a wrap to zero.
    pub fn add(&mut self, other: &Counters) {
        self.allowed = self.allowed.saturating_add(other.allowed);
        self.denied = self.denied.saturating_add(other.denied);
        self.allowed_cost = self.allowed_cost.saturating_add(other.allowed_cost);
        self.denied_cost = self.denied_cost.saturating_add(other.denied_cost);
        self.shadow_denied = self.shadow_denied.saturating_add(other.shadow_denied);
    }
}

/// One remembered decision of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEvent {
    /// When it was decided.
    pub at: UnixNanos,
    /// The cost asked for.
    pub cost: u64,
    /// Whether it was allowed (a shadow limit allows what it would have denied).
    pub allowed: bool,
    /// Units left after the decision.
    pub remaining: u64,
    /// True when the request was denied only because another key of the same
    /// all-or-nothing check lacked room (this key had room; no denial was counted on
    /// it).
    pub blocked_by_other: bool,
    /// True when a shadow limit allowed a request it would have denied (nothing was
    /// consumed, as an enforced limit would not have).
    pub shadow_denied: bool,
}

/// How one key took part in a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Allowed: its cost was consumed.
    Allowed,
    /// Denied for lack of room on this key (on a shadow limit: allowed through,
    /// counted as shadow-denied, nothing consumed).
    Denied,
    /// Lacked room in a check-all that was denied: counted as `Denied` (a shadow
    /// denial on a shadow limit), but nothing went through, the shadow key neither.
    LackedInDeniedCall,
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
    /// A decision on a template itself: only the keys it covers are checked.
    Template,
}

/// Everything the engine knows about one key (or template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Box<str>,
    /// Its limit.
    pub quota: Quota,
    /// Its algorithm state (a template's is unused: always full).
    pub state: LimitState,
    /// Its decision counters; a template's sum those of every key made from it.
    pub counters: Counters,
    /// When it was last checked; 0 when never.
    pub last_seen: UnixNanos,
    /// Its most recent decisions, oldest first; allocated on the first check, so idle
    /// keys cost nothing for it.
    pub history: Option<Box<VecDeque<HistoryEvent>>>,
    /// The id of the template this key was made from, when it has no limit of its own.
    pub template: Option<u32>,
}

impl Entry {
    /// Whether this entry is a template (its key ends in `*`).
    pub fn is_template(&self) -> bool {
        templates::is_template(&self.key)
    }
}

/// What the registry keeps for each template besides its entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateState {
    /// Keys made from it that hold state now.
    pub live: usize,
    /// The counters of its most denied keys that were dropped at full capacity.
    pub top: TopKeys,
}

/// One slot of the index: a key id and its key's hash (see [`spread`]).
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u32,
    hash: u32,
}

/// The 64-bit hash the index works with, from the 32 bits it stores: both halves, so
/// that the table's bucket bits and its tag bits (the top 7) both come from them.
#[inline]
fn spread(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// All keys, by id and by name.
#[derive(Debug, Clone)]
pub struct Registry {
    entries: Vec<Option<Entry>>,
    /// Key id and the key's 32-bit hash: growing the table rehashes from the stored
    /// hash, without reading a million entries and their keys from memory.
    index: HashTable<Slot>,
    hasher: DefaultHashBuilder,
    live: usize,
    /// The empty slots of `entries`, lowest first: a new key takes the lowest, so that
    /// keys dropped by the million leave no id space behind and `entries` shrinks
    /// back. Exactly the empty slots below `entries.len()`.
    free: BinaryHeap<Reverse<u32>>,
    templates: TemplateIndex,
    template_states: HashMap<u32, TemplateState>,
    /// The latest time of any event: the engine never decides at an earlier time, so a
    /// clock stepping backwards gains no key any quota.
    pub high_water: UnixNanos,
    history_capacity: usize,
}

impl PartialEq for Registry {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
            && self.high_water == other.high_water
            && self.template_states == other.template_states
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
            free: BinaryHeap::new(),
            templates: TemplateIndex::default(),
            template_states: HashMap::new(),
            high_water: 0,
            history_capacity,
        }
    }

    /// Number of entries: configured keys, templates and keys made from templates that
    /// hold state.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The id the next new key gets: the lowest free one.
    pub fn next_id(&self) -> u32 {
        self.free
            .peek()
            .map_or(self.entries.len() as u32, |Reverse(id)| *id)
    }

    /// One more than the highest id in use (or in use at some point and not yet
    /// trimmed): ids are below it.
    pub fn id_bound(&self) -> u32 {
        self.entries.len() as u32
    }

    /// The 32-bit hash of `key` the index stores.
    #[inline]
    fn key_hash(&self, key: &str) -> u32 {
        (self.hasher.hash_one(key) >> 32) as u32
    }

    /// The id of `key`, if it has an entry.
    #[inline]
    pub fn lookup(&self, key: &str) -> Option<u32> {
        let hash = self.key_hash(key);
        let entries = &self.entries;
        self.index
            .find(spread(hash), |slot| {
                slot.hash == hash
                    && entries
                        .get(slot.id as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|e| &*e.key == key)
            })
            .map(|slot| slot.id)
    }

    /// The id of the template that covers `key` (the longest matching prefix), when
    /// `key` is not a template itself.
    #[inline]
    pub fn template_for(&self, key: &str) -> Option<u32> {
        if templates::is_template(key) {
            return None;
        }
        self.templates.find(key)
    }

    /// Number of templates.
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// Keys made from templates that hold state now.
    pub fn template_keys(&self) -> usize {
        self.template_states.values().map(|s| s.live).sum()
    }

    /// What the registry keeps for template `id`.
    pub fn template_state(&self, id: u32) -> Option<&TemplateState> {
        self.template_states.get(&id)
    }

    /// The entry of `id`.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&Entry> {
        self.entries.get(id as usize).and_then(Option::as_ref)
    }

    /// Every entry with its id, in id order.
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

    fn hash_of(&self, id: u32) -> u32 {
        self.get(id).map_or(0, |e| self.key_hash(&e.key))
    }

    /// Inserts a whole entry under `id`, a free id (from a snapshot, or a new key).
    /// A snapshot's loader calls [`finish_load`](Self::finish_load) afterwards.
    pub fn insert_entry(&mut self, id: u32, entry: Entry) {
        let index = id as usize;
        if self.entries.len() <= index {
            let first_gap = self.entries.len() as u32;
            self.free.extend((first_gap..id).map(Reverse));
            self.entries.resize_with(index + 1, || None);
        } else if self.free.peek() == Some(&Reverse(id)) {
            self.free.pop();
        } else {
            self.free.retain(|&Reverse(other)| other != id);
        }
        let hash = self.key_hash(&entry.key);
        self.index
            .insert_unique(spread(hash), Slot { id, hash }, |slot| spread(slot.hash));
        if let Some(slot) = self.entries.get_mut(index) {
            *slot = Some(entry);
        }
        self.live += 1;
    }

    /// Sets the dropped keys' summary of template `id` (from a snapshot).
    pub fn set_top_keys(&mut self, id: u32, top: TopKeys) {
        self.template_states.entry(id).or_default().top = top;
    }

    /// Ends a snapshot's load: ids below `id_bound` without an entry are free, and
    /// every template is indexed and counts its keys. Fails (naming the key) when a
    /// key names a template that is not one, or a summary belongs to no template.
    pub fn finish_load(&mut self, id_bound: u32) -> Result<(), String> {
        if self.entries.len() < id_bound as usize {
            self.entries.resize_with(id_bound as usize, || None);
        }
        self.free = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_none())
            .map(|(id, _)| Reverse(id as u32))
            .collect();
        let mut states = std::mem::take(&mut self.template_states);
        let mut index = TemplateIndex::default();
        for (id, entry) in self.iter() {
            if entry.is_template() {
                index.insert(&entry.key, id);
                states.entry(id).or_default();
            }
        }
        self.templates = index;
        for id in states.keys() {
            if !self.get(*id).is_some_and(Entry::is_template) {
                return Err(format!(
                    "dropped-key counters belong to key id {id}, which is not a template"
                ));
            }
        }
        for (_, entry) in self.iter() {
            let Some(template) = entry.template else {
                continue;
            };
            match states.get_mut(&template) {
                Some(state) if self.templates.find(&entry.key) == Some(template) && !entry.is_template() => {
                    state.live += 1;
                }
                _ => {
                    return Err(format!(
                        "key {:?} is made from key id {template}, which is not the template that covers it",
                        entry.key
                    ))
                }
            }
        }
        self.template_states = states;
        Ok(())
    }

    /// Reserves memory for ids below `id_bound`, failing instead of aborting when the
    /// memory cannot be allocated (a snapshot's claim is checked before it is trusted).
    pub fn try_reserve_ids(
        &mut self,
        id_bound: u32,
    ) -> Result<(), std::collections::TryReserveError> {
        let wanted = id_bound as usize;
        if let Some(more) = wanted.checked_sub(self.entries.len()) {
            self.entries.try_reserve_exact(more)?;
        }
        Ok(())
    }

    /// Takes the entry of `id` out: unindexed, its id free, its template's count of
    /// live keys lowered. Trimming is the caller's.
    fn take(&mut self, id: u32) -> Option<Entry> {
        let hash = self.hash_of(id);
        let entry = self.entries.get_mut(id as usize).and_then(Option::take)?;
        if let Ok(found) = self.index.find_entry(spread(hash), |slot| slot.id == id) {
            found.remove();
        }
        self.free.push(Reverse(id));
        self.live -= 1;
        if let Some(state) = entry
            .template
            .and_then(|t| self.template_states.get_mut(&t))
        {
            state.live -= 1;
        }
        Some(entry)
    }

    /// Gives back memory after entries were taken: trailing empty slots go, and
    /// containers far larger than what they hold shrink.
    fn trim(&mut self) {
        let before = self.entries.len();
        while matches!(self.entries.last(), Some(None)) {
            self.entries.pop();
        }
        let len = self.entries.len();
        if len < before {
            self.free.retain(|&Reverse(id)| (id as usize) < len);
        }
        if self.entries.capacity() > 2 * len + 64 {
            self.entries.shrink_to_fit();
        }
        if self.free.capacity() > 2 * self.free.len() + 64 {
            self.free.shrink_to_fit();
        }
        if self.index.capacity() > 2 * self.live + 64 {
            self.index.shrink_to_fit(|slot| spread(slot.hash));
        }
    }

    /// Bytes of memory the registry holds, approximately: its containers, keys,
    /// histories, sliding-window runs and template summaries. What `doctor` reports.
    pub fn memory_bytes(&self) -> usize {
        let slots = self.entries.capacity() * std::mem::size_of::<Option<Entry>>();
        let index = self.index.capacity() * (std::mem::size_of::<Slot>() + 1);
        let free = self.free.capacity() * std::mem::size_of::<u32>();
        let per_entry: usize = self
            .iter()
            .map(|(_, e)| {
                let history = e.history.as_ref().map_or(0, |h| {
                    std::mem::size_of::<VecDeque<HistoryEvent>>()
                        + h.capacity() * std::mem::size_of::<HistoryEvent>()
                });
                let runs = match &e.state {
                    LimitState::SlidingWindowLog(log) => {
                        std::mem::size_of_val(&**log)
                            + log.runs.capacity() * std::mem::size_of::<crate::algorithm::Run>()
                    }
                    _ => 0,
                };
                e.key.len() + history + runs
            })
            .sum();
        let templates = self.templates.memory_bytes()
            + self
                .template_states
                .values()
                .map(|s| std::mem::size_of::<TemplateState>() + s.top.memory_bytes())
                .sum::<usize>();
        slots + index + free + per_entry + templates
    }

    /// Creates (new id) or reconfigures (existing id) a limit. A template's new limit
    /// applies to every key made from it (consumed units carry over as for any key); a
    /// new template takes over the keys whose longest match it now is; a key made from
    /// a template that gets its own limit leaves the template.
    pub fn apply_configure(&mut self, id: u32, key: &str, quota: Quota, at: UnixNanos) {
        self.see(at);
        if let Some(entry) = self.get_mut(id) {
            entry.state = entry.state.reconfigure(&entry.quota, &quota, at);
            entry.quota = quota;
            let left = entry.template.take();
            if let Some(state) = left.and_then(|t| self.template_states.get_mut(&t)) {
                state.live -= 1;
            }
            if templates::is_template(key) {
                for entry in self.entries.iter_mut().flatten() {
                    if entry.template == Some(id) {
                        entry.state = entry.state.reconfigure(&entry.quota, &quota, at);
                        entry.quota = quota;
                    }
                }
            }
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
                template: None,
            },
        );
        if templates::is_template(key) {
            self.templates.insert(key, id);
            self.template_states.insert(id, TemplateState::default());
            self.take_over_keys(id, key, quota, at);
        }
    }

    /// Moves to the new template `id` the live keys it now covers by the longest match.
    fn take_over_keys(&mut self, id: u32, key: &str, quota: Quota, at: UnixNanos) {
        let prefix = templates::prefix_of(key);
        let mut moved = 0;
        for entry in self.entries.iter_mut().flatten() {
            let Some(old) = entry.template else {
                continue;
            };
            if old == id
                || !entry.key.starts_with(prefix)
                || self.templates.find(&entry.key) != Some(id)
            {
                continue;
            }
            entry.state = entry.state.reconfigure(&entry.quota, &quota, at);
            entry.quota = quota;
            entry.template = Some(id);
            moved += 1;
            if let Some(state) = self.template_states.get_mut(&old) {
                state.live -= 1;
            }
        }
        if let Some(state) = self.template_states.get_mut(&id) {
            state.live += moved;
        }
    }

    /// Makes key `key` (id `id`, free) from template `template`: its limit, at full
    /// capacity. Returns false (changing nothing but the high-water time) when
    /// `template` is not a template.
    pub fn apply_derive(&mut self, id: u32, template: u32, key: &str, at: UnixNanos) -> bool {
        self.see(at);
        let Some(quota) = self
            .get(template)
            .filter(|t| t.is_template())
            .map(|t| t.quota)
        else {
            return false;
        };
        self.insert_entry(
            id,
            Entry {
                key: key.into(),
                quota,
                state: LimitState::full(quota.algorithm()),
                counters: Counters::default(),
                last_seen: 0,
                history: None,
                template: Some(template),
            },
        );
        if let Some(state) = self.template_states.get_mut(&template) {
            state.live += 1;
        }
        true
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
    /// was `allowed` and the key had room; a denial counted on `id` when it
    /// `lacked_room` (on a shadow limit, a shadow denial, in an allowed check too);
    /// a decision blocked by another key (history only) when it had room in a denied
    /// check. Returns what [`apply_check`](Self::apply_check) returns.
    pub fn apply_check_all_item(
        &mut self,
        id: u32,
        at: UnixNanos,
        cost: u64,
        allowed: bool,
        lacked_room: bool,
        remaining: Option<u64>,
    ) -> bool {
        self.record(
            id,
            at,
            cost,
            check_all_part(allowed, lacked_room),
            remaining,
        )
        .is_ok()
    }

    /// Records one decision. Refuses it (changing nothing but the high-water time) when
    /// `id` is unknown or a template, or `cost` is outside `1..=burst`; records it but
    /// reports `BeyondQuota` when an allowed decision left the key beyond its quota (one
    /// the algorithm would have denied). Live calls validate and decide first, so none
    /// of these happens to them; replay reports each as corruption.
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
        if entry.is_template() {
            return Err(Refusal::Template);
        }
        if cost == 0 || cost > entry.quota.burst() {
            return Err(Refusal::CostOutOfRange);
        }
        let mut after = None;
        let mut beyond = false;
        let lacked = matches!(part, Part::Denied | Part::LackedInDeniedCall);
        let shadow = lacked && entry.quota.is_shadow();
        let mut delta = Counters::default();
        match part {
            Part::Allowed => {
                after = entry.state.consume(&entry.quota, at, cost);
                beyond = after.is_none();
                delta.allowed = 1;
                delta.allowed_cost = cost;
            }
            Part::Denied | Part::LackedInDeniedCall if shadow => delta.shadow_denied = 1,
            Part::Denied | Part::LackedInDeniedCall => {
                delta.denied = 1;
                delta.denied_cost = cost;
            }
            Part::Blocked => {}
        }
        entry.counters.add(&delta);
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
                allowed: part == Part::Allowed || (shadow && part == Part::Denied),
                remaining,
                blocked_by_other: part == Part::Blocked,
                shadow_denied: shadow,
            });
        }
        // A template's counters sum its keys'.
        if let Some(template) = entry.template.and_then(|t| self.get_mut(t)) {
            template.counters.add(&delta);
            template.last_seen = at;
        }
        if beyond {
            return Err(Refusal::BeyondQuota);
        }
        Ok(())
    }

    /// Gives back `cost` units of `id` (see [`LimitState::refund`]); counters, history
    /// and last-seen time are left as they are (a refund is not a decision). Live calls
    /// and replay both go through here. Refuses (changing nothing but the high-water
    /// time) an unknown `id` or a template, a `cost` outside `1..=burst`, and a refund
    /// on a key at full capacity, which changes nothing: the engine writes no record
    /// for it, so replay reports such a record as corruption.
    pub fn apply_refund(&mut self, id: u32, at: UnixNanos, cost: u64) -> bool {
        self.refund(id, at, cost).is_ok()
    }

    fn refund(&mut self, id: u32, at: UnixNanos, cost: u64) -> Result<(), Refusal> {
        self.see(at);
        let Some(entry) = self.get_mut(id) else {
            return Err(Refusal::UnknownKey);
        };
        if entry.is_template() {
            return Err(Refusal::Template);
        }
        if cost == 0 || cost > entry.quota.burst() {
            return Err(Refusal::CostOutOfRange);
        }
        if entry.state.refund(&entry.quota, at, cost) {
            Ok(())
        } else {
            Err(Refusal::NothingToRefund)
        }
    }

    /// Puts `id` back to full capacity; a template, every key made from it.
    pub fn apply_reset(&mut self, id: u32, at: UnixNanos) -> bool {
        self.see(at);
        let Some(entry) = self.get_mut(id) else {
            return false;
        };
        entry.state = LimitState::full(entry.quota.algorithm());
        if entry.is_template() {
            for entry in self.entries.iter_mut().flatten() {
                if entry.template == Some(id) {
                    entry.state = LimitState::full(entry.quota.algorithm());
                }
            }
        }
        true
    }

    /// Deletes the limit of `id`; a template's, with every key made from it (their
    /// state, counters and history, and its summary of dropped keys).
    pub fn apply_remove(&mut self, id: u32, at: UnixNanos) -> bool {
        self.see(at);
        let Some(entry) = self.take(id) else {
            return false;
        };
        if entry.is_template() {
            self.templates.remove(&entry.key);
            self.template_states.remove(&id);
            let made: Vec<u32> = self
                .iter()
                .filter(|(_, e)| e.template == Some(id))
                .map(|(id, _)| id)
                .collect();
            for key in made {
                self.take(key);
            }
        }
        self.trim();
        true
    }

    /// Takes out key `id`, made from a template by a derive record whose decision
    /// recovery found lost: as if it had never been made (no summary, no counters).
    pub(crate) fn drop_undecided(&mut self, id: u32) {
        if self.get(id).is_some_and(|e| e.template.is_some()) {
            self.take(id);
            self.trim();
        }
    }

    /// Drops the keys made from templates with ids in `from..to` that are at full
    /// capacity at `at`: their state goes (a key at full capacity decides exactly as a
    /// new one), their counters go into their template's summary. Returns how many
    /// were dropped. Live sweeps and replay both go through here, so replay drops
    /// exactly the keys the live engine dropped.
    pub fn apply_sweep(&mut self, at: UnixNanos, from: u32, to: u32) -> usize {
        self.see(at);
        let end = (to as usize).min(self.entries.len());
        let mut dropped = 0;
        for id in (from as usize).min(end)..end {
            let full = self
                .entries
                .get(id)
                .and_then(Option::as_ref)
                .is_some_and(|e| e.template.is_some() && e.state.is_full(&e.quota, at));
            if !full {
                continue;
            }
            if let Some(entry) = self.take(id as u32) {
                if let Some(state) = entry
                    .template
                    .and_then(|t| self.template_states.get_mut(&t))
                {
                    state.top.add(&entry.key, &entry.counters);
                }
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.trim();
        }
        dropped
    }

    /// How many keys [`apply_sweep`](Self::apply_sweep) would drop, without dropping
    /// them (the live engine writes a sweep record only when it drops something).
    pub fn sweepable(&self, at: UnixNanos, from: u32, to: u32) -> usize {
        let end = (to as usize).min(self.entries.len());
        self.entries
            .get((from as usize).min(end)..end)
            .unwrap_or_default()
            .iter()
            .flatten()
            .filter(|e| e.template.is_some() && e.state.is_full(&e.quota, at))
            .count()
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
            Event::Derive {
                id,
                at,
                template,
                key,
            } => {
                self.check_time(*at)?;
                self.check_new_id(*id, key)?;
                if self.template_for(key) != Some(*template) {
                    return Err(inconsistent(format!(
                        "a record makes key {key:?} from key id {template}, which is not the template that covers it"
                    )));
                }
                self.apply_derive(*id, *template, key, *at);
                Ok(())
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
                    self.record(id, *at, cost, check_all_part(*allowed, lacked_room), None)
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
            Event::Sweep { at, from, to } => {
                self.check_time(*at)?;
                if from >= to {
                    return Err(inconsistent(format!(
                        "a sweep record covers the key ids {from} to {to}, an empty range"
                    )));
                }
                if self.apply_sweep(*at, *from, *to) == 0 {
                    return Err(inconsistent(format!(
                        "a sweep record of the key ids {from} to {to} drops no key (the engine writes one only when it drops some)"
                    )));
                }
                Ok(())
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
            Refusal::Template => format!(
                "the record checks or refunds the template {key:?} itself (only the keys it covers are checked)"
            ),
        })
    }

    fn known(&self, id: u32) -> Result<&Entry, DecodeReason> {
        self.get(id).ok_or_else(|| {
            let why = if id < self.id_bound() {
                "a free id"
            } else {
                "no key"
            };
            inconsistent(format!("the record names key id {id}, which is {why}"))
        })
    }

    /// A new key takes a free id: an empty slot, or the one just past the last. Its key
    /// is not empty and has no entry yet.
    fn check_new_id(&self, id: u32, key: &str) -> Result<(), DecodeReason> {
        if key.is_empty() {
            return Err(inconsistent("a record creates an empty key".into()));
        }
        let bound = self.id_bound();
        if id > bound || id == u32::MAX || self.get(id).is_some() {
            return Err(inconsistent(format!(
                "a record creates key {key:?} with id {id}, which is not free (ids are free below {bound} when unused, and {bound} itself)"
            )));
        }
        if let Some(other) = self.lookup(key) {
            return Err(inconsistent(format!(
                "a record gives key {key:?}, which has id {other}, a second id {id}"
            )));
        }
        Ok(())
    }

    /// A configure record either changes the limit of the key that has `id`, or
    /// creates a new key with a free id.
    fn check_configure(&self, id: u32, key: &str) -> Result<(), DecodeReason> {
        if let Some(entry) = self.get(id) {
            if &*entry.key != key {
                return Err(inconsistent(format!(
                    "a configure record gives key id {id}, which is key {:?}, to key {key:?}",
                    entry.key
                )));
            }
            return Ok(());
        }
        self.check_new_id(id, key)
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

    /// A check-all names distinct known keys, each with a cost within its capacity;
    /// a denied one has an enforced key that lacked room, an allowed one none (a
    /// shadow limit lacking room lets it through).
    fn check_check_all(&self, allowed: bool, items: &[CheckAllItem]) -> Result<(), DecodeReason> {
        if items.is_empty() {
            return Err(inconsistent("a check-all record names no key".into()));
        }
        let mut enforced_lacking = 0;
        for (n, item) in items.iter().enumerate() {
            self.check_cost(item.id, item.cost)?;
            if items.iter().take(n).any(|other| other.id == item.id) {
                return Err(inconsistent(format!(
                    "a check-all record names key id {} twice",
                    item.id
                )));
            }
            let shadow = self.get(item.id).is_some_and(|e| e.quota.is_shadow());
            if item.lacked_room && !shadow {
                enforced_lacking += 1;
            }
        }
        if allowed && enforced_lacking > 0 {
            return Err(inconsistent(
                "an allowed check-all record says an enforced key lacked room".into(),
            ));
        }
        if !allowed && enforced_lacking == 0 {
            return Err(inconsistent(
                "a denied check-all record says no enforced key lacked room".into(),
            ));
        }
        Ok(())
    }
}

/// How a key took part in a check-all: denied for lack of its own room whenever it
/// lacked room (a shadow limit then lets the whole check through), consumed when the
/// check was allowed, blocked otherwise.
fn check_all_part(allowed: bool, lacked_room: bool) -> Part {
    match (allowed, lacked_room) {
        (true, true) => Part::Denied,
        (false, true) => Part::LackedInDeniedCall,
        (true, false) => Part::Allowed,
        (false, false) => Part::Blocked,
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
            shadow_denied: 0,
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
                shadow_denied: 0,
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
