//! Groups: a project's rows ordered by `order_id`, in blocks with zone maps (the `gmt_created`
//! bounds) and status counts, so that a page is a keyset walk and a total is mostly sums of
//! counts (see the module notes of [`super`]).

use crate::core::domain::{Status, TimeRange};

/// A group entry: enough to order, filter by time and status, and find the row without touching
/// it. (The status fits in what would otherwise be padding.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) order_id: u64,
    pub(super) created: i64,
    pub(super) slot: u32,
    pub(super) status: Status,
}

/// Entries per status, indexed by a status's place in [`Status::ALL`].
pub(super) type Counts = [u32; Status::ALL.len()];

/// The place of `s` in [`Status::ALL`] (the enum is declared in that order).
pub(super) fn at(s: Status) -> usize {
    s as usize
}

/// Largest block of a [`Group`]; a fuller block splits in two. Small enough that an insert's
/// shift and an edge block's scan are cheap, large enough that a walk over the blocks is short.
pub const BLOCK_MAX: usize = 256;

/// Entries ordered by `order_id`, with the `gmt_created` bounds of each block, and its first
/// `order_id` kept beside them so that finding a block never touches the entries' memory.
#[derive(Debug, Default)]
pub(super) struct Block {
    pub(super) first: u64,
    pub(super) entries: Vec<Entry>,
    pub(super) min_created: i64,
    pub(super) max_created: i64,
    pub(super) counts: Counts,
}

impl Block {
    pub(super) fn new(entries: Vec<Entry>) -> Self {
        let mut b = Block {
            first: 0,
            entries,
            min_created: 0,
            max_created: 0,
            counts: Counts::default(),
        };
        b.rezone();
        b
    }

    /// Recomputes the first key, the zone map and the status counts.
    pub(super) fn rezone(&mut self) {
        self.first = self.entries.first().map_or(0, |e| e.order_id);
        self.min_created = self.entries.iter().map(|e| e.created).min().unwrap_or(0);
        self.max_created = self.entries.iter().map(|e| e.created).max().unwrap_or(0);
        self.counts = Counts::default();
        for e in &self.entries {
            self.counts[at(e.status)] += 1;
        }
    }

    /// Entries of the block with `status` (all of them without one).
    pub(super) fn holding(&self, status: Option<Status>) -> usize {
        status.map_or(self.entries.len(), |s| self.counts[at(s)] as usize)
    }

    /// Whether no entry of the block can fall in `t`.
    pub(super) fn disjoint(&self, t: &TimeRange) -> bool {
        self.max_created < t.start || self.min_created > t.end
    }

    /// Whether every entry of the block falls in `t`.
    pub(super) fn inside(&self, t: &TimeRange) -> bool {
        self.min_created >= t.start && self.max_created <= t.end
    }
}

/// A set of rows ordered by `order_id` (see the module notes).
#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) blocks: Vec<Block>,
    pub(super) len: usize,
    pub(super) counts: Counts,
}

impl Group {
    /// The block that holds, or would hold, `order_id`.
    pub(super) fn block_of(&self, order_id: u64) -> usize {
        self.blocks
            .partition_point(|b| b.first <= order_id)
            .saturating_sub(1)
    }

    /// The slot of `order_id`, if the group holds it.
    pub(super) fn find(&self, order_id: u64) -> Option<u32> {
        let b = self.blocks.get(self.block_of(order_id))?;
        let i = b
            .entries
            .binary_search_by_key(&order_id, |x| x.order_id)
            .ok()?;
        Some(b.entries[i].slot)
    }

    /// Inserts `e`, or replaces the entry with its `order_id`.
    pub(super) fn insert(&mut self, e: Entry) {
        if self.blocks.is_empty() {
            self.blocks.push(Block::new(vec![e]));
            self.len = 1;
            self.counts[at(e.status)] += 1;
            return;
        }
        let bi = self.block_of(e.order_id);
        let last = bi + 1 == self.blocks.len();
        let b = &mut self.blocks[bi];
        // New tickets come with the largest order_id yet: appending is the common case.
        let i = match b.entries.last() {
            Some(l) if l.order_id < e.order_id => b.entries.len(),
            _ => match b.entries.binary_search_by_key(&e.order_id, |x| x.order_id) {
                Ok(i) => {
                    self.counts[at(b.entries[i].status)] -= 1;
                    self.counts[at(e.status)] += 1;
                    b.entries[i] = e;
                    b.rezone();
                    return;
                }
                Err(i) => i,
            },
        };
        self.len += 1;
        self.counts[at(e.status)] += 1;
        if i == b.entries.len() && b.entries.len() >= BLOCK_MAX && last {
            // Appending to a full last block (new tickets, in order): start the next block and
            // leave this one full, rather than splitting it in two half-empty ones.
            self.blocks.push(Block::new(vec![e]));
            return;
        }
        b.entries.insert(i, e);
        b.counts[at(e.status)] += 1;
        if i == 0 {
            b.first = e.order_id;
        }
        b.min_created = b.min_created.min(e.created);
        b.max_created = b.max_created.max(e.created);
        if b.entries.len() > BLOCK_MAX {
            let tail = b.entries.split_off(BLOCK_MAX / 2);
            // split_off leaves the whole capacity behind: give the unused half back.
            b.entries.shrink_to_fit();
            b.rezone();
            self.blocks.insert(bi + 1, Block::new(tail));
        }
    }

    /// Changes the status of the entry of `order_id` in place (nothing if the group lacks it).
    pub(super) fn set_status(&mut self, order_id: u64, status: Status) {
        let bi = self.block_of(order_id);
        let Some(b) = self.blocks.get_mut(bi) else {
            return;
        };
        let Ok(i) = b.entries.binary_search_by_key(&order_id, |x| x.order_id) else {
            return;
        };
        let old = std::mem::replace(&mut b.entries[i].status, status);
        b.counts[at(old)] -= 1;
        b.counts[at(status)] += 1;
        self.counts[at(old)] -= 1;
        self.counts[at(status)] += 1;
    }

    pub(super) fn remove(&mut self, order_id: u64) {
        if self.blocks.is_empty() {
            return;
        }
        let bi = self.block_of(order_id);
        let b = &mut self.blocks[bi];
        if let Ok(i) = b.entries.binary_search_by_key(&order_id, |x| x.order_id) {
            let gone = b.entries.remove(i);
            self.len -= 1;
            self.counts[at(gone.status)] -= 1;
            b.counts[at(gone.status)] -= 1;
            if b.entries.is_empty() {
                self.blocks.remove(bi);
            } else if i == 0 || gone.created == b.min_created || gone.created == b.max_created {
                b.rezone();
            }
        }
    }

    /// Entries with `status` (any without one) whose `gmt_created` falls in `time` (any without
    /// a range).
    pub(super) fn count(&self, time: Option<&TimeRange>, status: Option<Status>) -> u64 {
        let Some(t) = time else {
            return status.map_or(self.len, |s| self.counts[at(s)] as usize) as u64;
        };
        self.blocks
            .iter()
            .map(|b| {
                if b.disjoint(t) || b.holding(status) == 0 {
                    0
                } else if b.inside(t) {
                    b.holding(status)
                } else {
                    b.entries
                        .iter()
                        .filter(|e| t.contains(e.created) && status.is_none_or(|s| e.status == s))
                        .count()
                }
            })
            .sum::<usize>() as u64
    }

    /// Entries below `below`, in `time` and with `status`, newest first, while `f` returns true.
    pub(super) fn walk_desc(
        &self,
        below: u64,
        time: Option<&TimeRange>,
        status: Option<Status>,
        mut f: impl FnMut(&Entry) -> bool,
    ) {
        if self.blocks.is_empty() {
            return;
        }
        let top = self.block_of(below.saturating_sub(1));
        for b in self.blocks[..=top].iter().rev() {
            if time.is_some_and(|t| b.disjoint(t)) || b.holding(status) == 0 {
                continue;
            }
            let end = b.entries.partition_point(|e| e.order_id < below);
            for e in b.entries[..end].iter().rev() {
                if time.is_none_or(|t| t.contains(e.created))
                    && status.is_none_or(|s| e.status == s)
                    && !f(e)
                {
                    return;
                }
            }
        }
    }
}
