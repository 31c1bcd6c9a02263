//! Which tickets a projection may hold, so that a fold's look-up of a ticket that cannot exist
//! skips sled: the newest `order_id` per project, and a growing Bloom filter of every ticket.

use rustc_hash::FxHashMap;

use crate::core::batch::TicketKey;
use crate::core::domain::ProjectId;

/// Which tickets a projection may hold (in the buffer, the write in flight or sled), so that the
/// look-up of one it cannot hold skips sled:
/// - per project, the largest `order_id` held: a ticket above it cannot exist yet. That is most
///   `created` events of new tickets, since executors hand out `order_id`s in increasing order;
/// - a Bloom filter of every ticket held: a ticket it has never seen cannot exist either. That is
///   a `created` that arrives after a later ticket's, as executors running tickets side by side
///   emit them (about half of them in the benchmark's history, each a sled look-up that found
///   nothing). A false positive (about 1%) costs one look-up, never a wrong answer.
#[derive(Default)]
pub(super) struct Seen {
    newest: FxHashMap<ProjectId, u64>,
    filter: Bloom,
}

impl Seen {
    /// Whether no ticket `key` can exist.
    pub(super) fn is_unseen(&self, key: &TicketKey) -> bool {
        self.newest.get(&key.0).is_none_or(|&n| key.1 > n) || !self.filter.may_contain(key)
    }

    pub(super) fn saw(&mut self, project: &ProjectId, order_id: u64) {
        match self.newest.get_mut(project) {
            Some(n) => *n = (*n).max(order_id),
            None => {
                self.newest.insert(project.clone(), order_id);
            }
        }
        self.filter.insert(project.as_str(), order_id);
    }
}

/// A Bloom filter of ticket keys that grows: layers of doubling capacity, each about 1% false
/// positives at its capacity; a key is added to the newest layer and looked for in all. Each
/// key's probes fall in one 64-byte block (one cache miss per layer, not one per probe).
#[derive(Default)]
struct Bloom {
    layers: Vec<BloomLayer>,
}

struct BloomLayer {
    blocks: Vec<[u64; 8]>,
    capacity: usize,
    len: usize,
}

impl Bloom {
    /// Keys the first layer is sized for (1.25 MiB).
    const FIRST: usize = 1 << 20;
    /// Bits per key and probes per key: about 1% false positives.
    const BITS_PER_KEY: usize = 10;
    const PROBES: u32 = 7;

    /// Two independent 64-bit hashes of a key (splitmix64 over FxHash): one picks the block, the
    /// other's 9-bit pieces the bits in it.
    fn hashes(project: &str, order_id: u64) -> (u64, u64) {
        use std::hash::BuildHasher;
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let h = mix(rustc_hash::FxBuildHasher.hash_one((project, order_id)));
        (h, mix(h ^ 0x9e37_79b9_7f4a_7c15))
    }

    fn may_contain(&self, (project, order_id): &TicketKey) -> bool {
        let (h1, h2) = Self::hashes(project.as_str(), *order_id);
        self.layers.iter().any(|l| l.test(h1, h2))
    }

    fn insert(&mut self, project: &str, order_id: u64) {
        let (h1, h2) = Self::hashes(project, order_id);
        if self.layers.iter().any(|l| l.test(h1, h2)) {
            return; // (or a false positive: harmless, it only costs a look-up)
        }
        if self.layers.last().is_none_or(|l| l.len >= l.capacity) {
            let capacity = self.layers.last().map_or(Self::FIRST, |l| l.capacity * 2);
            self.layers.push(BloomLayer {
                blocks: vec![[0; 8]; (capacity * Self::BITS_PER_KEY).div_ceil(512)],
                capacity,
                len: 0,
            });
        }
        let layer = self.layers.last_mut().expect("a layer was just made");
        let block = (h1 % layer.blocks.len() as u64) as usize;
        for i in 0..Self::PROBES {
            let bit = (h2 >> (9 * i)) & 511;
            layer.blocks[block][(bit / 64) as usize] |= 1 << (bit % 64);
        }
        layer.len += 1;
    }
}

impl BloomLayer {
    fn test(&self, h1: u64, h2: u64) -> bool {
        let block = &self.blocks[(h1 % self.blocks.len() as u64) as usize];
        (0..Bloom::PROBES).all(|i| {
            let bit = (h2 >> (9 * i)) & 511;
            block[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ticket seen is known to the filter, across its growing layers; tickets never seen
    /// are mostly (not always: it is a Bloom filter) known not to exist.
    #[test]
    fn seen_never_forgets_a_ticket_and_rarely_imagines_one() {
        let mut seen = Seen::default();
        let projects: Vec<ProjectId> = (0..7)
            .map(|i| ProjectId::parse(&format!("p{i}")).unwrap())
            .collect();
        let key = |i: u64| (projects[(i % 7) as usize].clone(), i * 2);
        for i in 0..1_500_000 {
            let (p, o) = key(i);
            seen.saw(&p, o);
        }
        assert!(seen.filter.layers.len() >= 2, "the filter grew");
        assert!((0..1_500_000).all(|i| !seen.is_unseen(&key(i))));
        // Odd order_ids below the newest were never seen.
        let imagined = (0..100_000)
            .filter(|&i| {
                let (p, o) = key(i);
                !seen.is_unseen(&(p, o + 1))
            })
            .count();
        assert!(imagined < 5_000, "{imagined} of 100,000 unseen tickets");
        let (p, newest) = key(1_499_999);
        assert!(seen.is_unseen(&(p, newest + 14)), "above the newest");
    }
}
