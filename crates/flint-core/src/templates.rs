//! Key templates: a configured key that ends in `*` is the limit of every key that
//! starts with the text before the `*` and has no limit of its own; when several
//! templates match, the longest prefix wins. `*` anywhere else in a key is an ordinary
//! character.
//!
//! This module holds the two data structures behind them: the lookup from a key to its
//! template ([`TemplateIndex`]) and, per template, the bounded summary of the counters
//! of keys dropped at full capacity ([`TopKeys`]). The rules that use them (making a
//! key from its template, dropping it, reconfiguring) live in the registry.

use hashbrown::HashMap;

use crate::registry::Counters;

/// How many dropped keys each template remembers the counters of (see [`TopKeys`]).
pub const TOP_KEYS_PER_TEMPLATE: usize = 100;

/// Whether `key` is a template: it ends in `*`.
pub fn is_template(key: &str) -> bool {
    key.ends_with('*')
}

/// The prefix a template covers: the template without its final `*`.
pub fn prefix_of(template: &str) -> &str {
    template.strip_suffix('*').unwrap_or(template)
}

/// The templates by prefix, for the longest match of a key.
#[derive(Debug, Clone, Default)]
pub struct TemplateIndex {
    by_prefix: HashMap<Box<str>, u32>,
    /// The distinct prefix lengths in bytes, longest first: a lookup tries one hash
    /// probe per length, not one per template.
    lengths: Vec<usize>,
}

impl TemplateIndex {
    /// Adds the template `template` (ending in `*`) with key id `id`.
    pub fn insert(&mut self, template: &str, id: u32) {
        let prefix = prefix_of(template);
        self.by_prefix.insert(prefix.into(), id);
        if let Err(at) = self.lengths.binary_search_by(|l| prefix.len().cmp(l)) {
            self.lengths.insert(at, prefix.len());
        }
    }

    /// Forgets the template `template`.
    pub fn remove(&mut self, template: &str) {
        let prefix = prefix_of(template);
        self.by_prefix.remove(prefix);
        if !self.by_prefix.keys().any(|p| p.len() == prefix.len()) {
            self.lengths.retain(|&l| l != prefix.len());
        }
    }

    /// The id of the template whose prefix is the longest that `key` starts with.
    #[inline]
    pub fn find(&self, key: &str) -> Option<u32> {
        if self.lengths.is_empty() {
            return None;
        }
        self.lengths.iter().find_map(|&len| {
            let prefix = key.get(..len)?;
            self.by_prefix.get(prefix).copied()
        })
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// Whether there is no template.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// Bytes of memory the index holds, approximately.
    pub fn memory_bytes(&self) -> usize {
        self.by_prefix.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + self.by_prefix.keys().map(|p| p.len()).sum::<usize>()
            + self.lengths.capacity() * std::mem::size_of::<usize>()
    }
}

/// One key of a [`TopKeys`] summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopKey {
    /// The key.
    pub key: Box<str>,
    /// Its counters, summed over every time it was dropped while in the summary.
    pub counters: Counters,
    /// The denials (enforced and shadow) of the key it replaced: its rank in the
    /// summary is its own denials plus this, an overestimate by at most this much.
    pub overcount: u64,
}

impl TopKey {
    /// The space-saving estimate the summary ranks by: denials (enforced and shadow)
    /// plus the inherited overcount, then checks.
    fn weight(&self) -> (u64, u64) {
        let c = &self.counters;
        (
            c.denied
                .saturating_add(c.shadow_denied)
                .saturating_add(self.overcount),
            c.allowed.saturating_add(c.denied),
        )
    }
}

/// The counters of keys that a template dropped at full capacity, for the most denied
/// ones only: a space-saving summary (Metwally et al.) of at most
/// [`TOP_KEYS_PER_TEMPLATE`] keys ranked by denials. A key denied more than `1/100` of
/// all the denials of dropped keys is always in it; a dropped key that was never denied
/// takes a free place but never pushes another out. It is what lets `top()` name the
/// clients denied most after their state is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopKeys {
    items: Vec<TopKey>,
}

impl TopKeys {
    /// A summary of `items` (from a snapshot), in the order given.
    pub fn from_items(items: Vec<TopKey>) -> Self {
        TopKeys { items }
    }

    /// Adds the counters of `key`, dropped with `counters`.
    pub fn add(&mut self, key: &str, counters: &Counters) {
        let checks = counters
            .allowed
            .saturating_add(counters.denied)
            .saturating_add(counters.shadow_denied);
        if checks == 0 {
            return;
        }
        if let Some(item) = self.items.iter_mut().find(|i| &*i.key == key) {
            item.counters.add(counters);
            return;
        }
        if self.items.len() < TOP_KEYS_PER_TEMPLATE {
            self.items.push(TopKey {
                key: key.into(),
                counters: *counters,
                overcount: 0,
            });
            return;
        }
        let denials = counters.denied.saturating_add(counters.shadow_denied);
        if denials == 0 {
            return;
        }
        // Space-saving: the newcomer takes the place of the smallest estimate and
        // inherits it as its possible overcount.
        let smallest = self
            .items
            .iter_mut()
            .min_by_key(|item| item.weight())
            .map(|item| {
                let inherited = item.weight().0;
                *item = TopKey {
                    key: key.into(),
                    counters: *counters,
                    overcount: inherited,
                };
            });
        debug_assert!(smallest.is_some());
    }

    /// The keys remembered, in no particular order.
    pub fn items(&self) -> &[TopKey] {
        &self.items
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of memory the summary holds, approximately.
    pub fn memory_bytes(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<TopKey>()
            + self.items.iter().map(|i| i.key.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_prefix_wins_and_a_key_must_start_with_it() {
        let mut index = TemplateIndex::default();
        index.insert("ip:*", 1);
        index.insert("ip:10.*", 2);
        index.insert("*", 3);
        assert_eq!(index.find("ip:10.0.0.1"), Some(2));
        assert_eq!(index.find("ip:192.0.2.1"), Some(1));
        assert_eq!(index.find("user:7"), Some(3));
        index.remove("*");
        assert_eq!(index.find("user:7"), None);
        assert_eq!(index.find("ip"), None);
        // A prefix that would end inside a multi-byte character matches nothing.
        index.insert("é*", 4);
        assert_eq!(index.find("éa"), Some(4));
        assert_eq!(index.find("e"), None);
        assert_eq!(index.len(), 3);
    }

    fn denied(n: u64) -> Counters {
        Counters {
            allowed: 1,
            denied: n,
            allowed_cost: 1,
            denied_cost: n,
            shadow_denied: 0,
        }
    }

    #[test]
    fn the_summary_keeps_the_most_denied_keys_within_its_bound() {
        let mut top = TopKeys::default();
        for n in 0..1_000u64 {
            top.add(&format!("ip:{n}"), &denied(n % 3));
        }
        // The heavy hitter arrives last, after the summary is full.
        top.add("ip:attacker", &denied(5_000));
        top.add("ip:attacker", &denied(5_000));
        assert!(top.items().len() <= TOP_KEYS_PER_TEMPLATE);
        let attacker = top
            .items()
            .iter()
            .find(|i| &*i.key == "ip:attacker")
            .expect("the most denied key is remembered");
        assert_eq!(attacker.counters.denied, 10_000);
        // Space-saving's bound: the overcount is at most the denials seen / capacity.
        let seen: u64 = (0..1_000u64).map(|n| n % 3).sum();
        assert!(attacker.overcount <= seen / TOP_KEYS_PER_TEMPLATE as u64);
    }

    #[test]
    fn keys_never_denied_do_not_push_out_denied_ones() {
        let mut top = TopKeys::default();
        for n in 0..TOP_KEYS_PER_TEMPLATE {
            top.add(&format!("d{n}"), &denied(1));
        }
        top.add("quiet", &denied(0));
        assert!(top.items().iter().all(|i| &*i.key != "quiet"));
        assert_eq!(top.items().len(), TOP_KEYS_PER_TEMPLATE);
    }
}
