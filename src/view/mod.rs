//! The in-memory query view: what the list endpoint reads.
//!
//! sled holds the records durably; this view is derived from them at start-up and kept in step
//! by every commit, so no secondary index key is ever written to disk (index keys, not records,
//! are what make sled slow). Everything a list query needs, its total included, is answered
//! here without counting every match:
//!
//! - **Groups.** Per project, every row sits in two [`Group`]s: all rows, and its creator's. A
//!   group is a list ordered by `order_id`, cut into blocks of at most [`BLOCK_MAX`] entries.
//!   A page is a keyset walk down from the marker in the group that matches the query's creator
//!   filter (never an offset), and a total with no time range is the group's length.
//! - **Status counts.** Each entry carries its row's status, and each block and group counts its
//!   entries per status. A status filter skips the blocks that hold none of it and counts whole
//!   blocks from their counts, so it needs no group of its own; and a status change, the most
//!   common update, rewrites one byte and two counts in place instead of moving the row between
//!   groups.
//! - **Zone maps.** Each block keeps the lowest and highest `gmt_created` of its entries. A time
//!   range skips the blocks it cannot touch and counts whole the blocks it covers, so only the
//!   blocks at its two edges are looked into. This is fast because `gmt_created` rises with
//!   `order_id` (both are assigned at creation); were they unrelated, the same code would still be
//!   right, only slower, looking into more blocks.
//! - **Grams.** Per project, each run of one, two and three bytes of the lower-cased names maps
//!   to a bitmap of the row slots whose name holds it. A `name_like` of three bytes or less is
//!   one gram, whose bitmap is exactly its matches: alone, its total is the bitmap's length and
//!   its page the bitmap's last slots (while slots are in `order_id` order). A longer needle
//!   intersects its trigrams' bitmaps, smallest first, and checks the few candidates left. The
//!   `coc:JobType` condition is checked on the rows walked. The planner takes whichever candidate
//!   set is smaller.
//! - **Checking candidates is memory-bound**, so it is laid out for the memory: a project's
//!   names lie back to back in one string ([`Names`]) in row order, the candidates are visited
//!   in row order with their rows and names requested some candidates ahead ([`prefetch`]), and
//!   the page is chosen among `(order_id, slot)` pairs rather than through row pointers. At 1M
//!   tickets (100k in the project, rows in `order_id` order as the daemon builds them), in-process
//!   on this machine: `name_like=kalo` (~3,100 candidates) went from 434–441 to 217–226 µs at the
//!   median, and `name_like=ka` (a walk over all 100k rows) from 18.9 to 5.4 ms.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::core::domain::{FilterText, Marker, PageLimit, ProjectId, Status, TimeRange};
pub use groups::BLOCK_MAX;
use groups::{Entry, Group};
use names::{Gram, Names, Span, add_name, index_all, lowered, remove_name};
use roaring::RoaringBitmap;

mod groups;
mod names;
mod plan;
use crate::core::fold::Ticket;

/// `properties` of the list model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Properties {
    /// Regions, as the `created` event gave them.
    pub region_ids: String,
}

/// One ticket as the list endpoint shows it (COC's `JobScriptOrderListModel`, fields in the
/// spec's order). Built for the page only; the view keeps a compact [`Slot`] per ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Ticket key.
    pub order_id: u64,
    /// Name.
    pub order_name: String,
    /// Details-page id.
    pub execute_uuid: String,
    /// Creation time, ms.
    pub gmt_created: i64,
    /// End time, ms; null while not over.
    pub gmt_finished: Option<i64>,
    /// Duration, ms; null while not over.
    pub execute_costs: Option<i64>,
    /// Creator.
    pub creator: Arc<str>,
    /// Status.
    pub status: Status,
    /// Regions.
    pub properties: Properties,
}

/// A parsed list query. Every field is already valid (see [`crate::core::domain`]).
#[derive(Debug, Clone)]
pub struct Query {
    /// Page size.
    pub limit: PageLimit,
    /// Keyset marker: rows with `order_id < marker`.
    pub marker: Option<Marker>,
    /// Bounds on `gmt_created`.
    pub time: Option<TimeRange>,
    /// Exact creator.
    pub creator: Option<FilterText>,
    /// Exact status.
    pub status: Option<Status>,
    /// Case-insensitive substring of `order_name`.
    pub name_like: Option<FilterText>,
    /// The caller's `coc:JobType` condition: only these job types (`None`: all).
    pub job_types: Option<Vec<String>>,
}

impl Query {
    /// A query with no filter and the default page size.
    pub fn all() -> Self {
        Query {
            limit: PageLimit::DEFAULT,
            marker: None,
            time: None,
            creator: None,
            status: None,
            name_like: None,
            job_types: None,
        }
    }
}

/// A page of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    /// Every row matching the filters, ignoring marker and limit.
    pub total: u64,
    /// The page, newest first.
    pub data: Vec<Row>,
}

/// An interned string's number: creators, job types and regions repeat across many rows.
type Sym = u32;

/// What the view keeps of one ticket (80 bytes, plus its uuid, and its name in [`Names`]).
#[derive(Debug, Clone)]
struct Slot {
    order_id: u64,
    gmt_created: i64,
    /// `execute_costs` is not kept: the fold always sets it to `gmt_finished - gmt_created`.
    gmt_finished: Option<i64>,
    status: Status,
    creator: Sym,
    job_type: Sym,
    region_ids: Sym,
    /// Where the name is in its project's [`Names`].
    name: Span,
    execute_uuid: Box<str>,
}

/// The view of one project.
#[derive(Default)]
///
/// Maps use FxHash: fast, and their keys come from the event publishers (trusted, like the
/// stream itself), never from requests, which only look keys up.
struct ProjectRows {
    slots: Vec<Slot>,
    /// Every row's name (a span in each slot points into it).
    text: Names,
    by_uuid: FxHashMap<Box<str>, u32>,
    all: Group,
    by_creator: FxHashMap<Sym, Group>,
    /// Gram → the slots whose lower-cased name holds it.
    names: FxHashMap<Gram, RoaringBitmap>,
    /// Whether a slot was ever added after one with a larger `order_id`. Until then slots are in
    /// `order_id` order, as they are when tickets arrive in the order they were created (the
    /// records are read back in that order at start-up), so a posting list's last slots are the
    /// newest rows and a page can be read off its end. A live executor creates tickets a little
    /// out of order, so this is set soon after start-up; the planner then walks the rows newest
    /// first instead (see `Index::newest`).
    disordered: bool,
}

impl ProjectRows {
    fn groups_mut(&mut self, creator: Sym) -> [&mut Group; 2] {
        [&mut self.all, self.by_creator.entry(creator).or_default()]
    }

    fn index_name(&mut self, slot: u32, lower: &str) {
        add_name(&mut self.names, slot, lower);
    }

    /// Puts every row's name in the name index (a bulk build leaves them out until the end).
    fn index_all_names(&mut self) {
        let ProjectRows {
            slots, names, text, ..
        } = self;
        let rows = slots.iter().enumerate();
        index_all(
            names,
            rows.map(|(i, s)| (i as u32, lowered(text.get(s.name)))),
        );
    }

    fn unindex_name(&mut self, slot: u32, lower: &str) {
        remove_name(&mut self.names, slot, lower);
    }
}

/// The query view of every project.
#[derive(Default)]
pub struct Index {
    projects: FxHashMap<ProjectId, ProjectRows>,
    /// Interned creators, job types and regions.
    symbols: Vec<Arc<str>>,
    symbol_ids: FxHashMap<Arc<str>, Sym>,
    len: usize,
}

impl Index {
    fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.symbol_ids.get(s) {
            return id;
        }
        let id = self.symbols.len() as Sym;
        let v: Arc<str> = Arc::from(s);
        self.symbols.push(v.clone());
        self.symbol_ids.insert(v, id);
        id
    }

    /// The symbol of `s`, reusing `known` when it already stands for `s` (no hashing: most
    /// upserts change a ticket's status, not its creator).
    fn intern_like(&mut self, known: Option<Sym>, s: &str) -> Sym {
        match known {
            Some(k) if *self.symbols[k as usize] == *s => k,
            _ => self.intern(s),
        }
    }

    /// The view of `tickets` (each ticket once), built in bulk: rows and groups on this thread
    /// as the tickets come, then the name index of each project on threads of their own, since
    /// projects share nothing there. For start-up and the end of a catch-up, when nothing else
    /// runs and the machine's cores are free; the name index is about a third of the work.
    pub fn bulk(tickets: impl IntoIterator<Item = Ticket>) -> Index {
        let mut index = Index::default();
        for t in tickets {
            index.upsert_with(&t, false);
        }
        let mut projects: Vec<&mut ProjectRows> = index.projects.values_mut().collect();
        projects.sort_by_key(|p| std::cmp::Reverse(p.slots.len()));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Largest project first, each to the least loaded thread.
        let mut parts: Vec<(usize, Vec<&mut ProjectRows>)> = Vec::new();
        for p in projects {
            if parts.len() < threads {
                parts.push((0, Vec::new()));
            }
            let part = parts
                .iter_mut()
                .min_by_key(|(load, _)| *load)
                .expect("a part was just made");
            part.0 += p.slots.len();
            part.1.push(p);
        }
        std::thread::scope(|s| {
            for (_, part) in parts {
                s.spawn(move || part.into_iter().for_each(ProjectRows::index_all_names));
            }
        });
        index
    }

    /// Inserts or replaces a ticket's row.
    pub fn upsert(&mut self, t: &Ticket) {
        self.upsert_with(t, true);
    }

    /// [`Index::upsert`]; `names: false` leaves the name index alone, for [`Index::bulk`].
    fn upsert_with(&mut self, t: &Ticket, names: bool) {
        let known = self
            .projects
            .get(&t.project)
            .and_then(|p| p.all.find(t.order_id));
        let old = known
            .map(|i| &self.projects[&t.project].slots[i as usize])
            .map(|s| (s.creator, s.job_type, s.region_ids));
        let creator = self.intern_like(old.map(|o| o.0), &t.creator);
        let job_type = self.intern_like(old.map(|o| o.1), &t.job_type);
        let region_ids = self.intern_like(old.map(|o| o.2), &t.region_ids);
        let lower = || lowered(&t.order_name);
        let slot = |name: Span| Slot {
            order_id: t.order_id,
            gmt_created: t.gmt_created,
            gmt_finished: t.gmt_finished,
            status: t.status,
            creator,
            job_type,
            region_ids,
            name,
            execute_uuid: t.execute_uuid.as_str().into(),
        };
        let p = self.projects.entry(t.project.clone()).or_default();
        let entry = |i: u32| Entry {
            order_id: t.order_id,
            created: t.gmt_created,
            slot: i,
            status: t.status,
        };
        match known {
            None => {
                let i = p.slots.len() as u32;
                for g in p.groups_mut(creator) {
                    g.insert(entry(i));
                }
                if names {
                    p.index_name(i, &lower());
                }
                p.by_uuid.insert(t.execute_uuid.as_str().into(), i);
                let name = p.text.push(&t.order_name);
                p.disordered |= p.slots.last().is_some_and(|s| s.order_id > t.order_id);
                p.slots.push(slot(name));
                self.len += 1;
            }
            Some(i) => {
                let old = &p.slots[i as usize];
                let (old_creator, old_status) = (old.creator, old.status);
                let moved = old.gmt_created != t.gmt_created;
                // Only the entries whose key changes move. A status change, the usual update,
                // is rewritten in place in both groups.
                if moved {
                    p.all.insert(entry(i)); // same order_id: replaces the entry in place
                } else if old_status != t.status {
                    p.all.set_status(t.order_id, t.status);
                }
                if moved || old_creator != creator {
                    p.by_creator
                        .get_mut(&old_creator)
                        .expect("every row is in its creator's group")
                        .remove(t.order_id);
                    p.by_creator.entry(creator).or_default().insert(entry(i));
                } else if old_status != t.status {
                    p.by_creator
                        .get_mut(&creator)
                        .expect("every row is in its creator's group")
                        .set_status(t.order_id, t.status);
                }
                let old = &p.slots[i as usize];
                let renamed = p.text.get(old.name) != t.order_name;
                if names && renamed {
                    let old_lower = lowered(p.text.get(old.name)).into_owned();
                    p.unindex_name(i, &old_lower);
                    p.index_name(i, &lower());
                }
                let old = &p.slots[i as usize];
                if *old.execute_uuid != *t.execute_uuid {
                    let old_uuid = old.execute_uuid.clone();
                    p.by_uuid.remove(&old_uuid);
                    p.by_uuid.insert(t.execute_uuid.as_str().into(), i);
                }
                if renamed {
                    let old = p.slots[i as usize].name;
                    p.slots[i as usize] = slot(p.text.push(&t.order_name));
                    p.text.free(old, &mut p.slots);
                    return;
                }
                let s = &mut p.slots[i as usize];
                // Only what an event can change; the uuid allocation is kept.
                s.gmt_finished = t.gmt_finished;
                s.status = t.status;
                s.creator = creator;
                s.gmt_created = t.gmt_created;
                s.job_type = job_type;
                s.region_ids = region_ids;
                if *s.execute_uuid != *t.execute_uuid {
                    s.execute_uuid = t.execute_uuid.as_str().into();
                }
            }
        }
    }

    /// Removes a ticket's row, if there is one. (Its slot stays, unreachable: slots are never
    /// renumbered.) Used when a rebuilt generation no longer has a ticket the view shows.
    pub fn remove(&mut self, project: &ProjectId, order_id: u64) {
        let Some(p) = self.projects.get_mut(project) else {
            return;
        };
        let Some(i) = p.all.find(order_id) else {
            return;
        };
        let s = &p.slots[i as usize];
        let creator = s.creator;
        let lower = lowered(p.text.get(s.name)).into_owned();
        let uuid = s.execute_uuid.clone();
        for g in p.groups_mut(creator) {
            g.remove(order_id);
        }
        p.unindex_name(i, &lower);
        // The slot stays; its name is no longer needed.
        let name = std::mem::take(&mut p.slots[i as usize].name);
        p.text.free(name, &mut p.slots);
        if p.by_uuid.get(&uuid) == Some(&i) {
            p.by_uuid.remove(&uuid);
        }
        self.len -= 1;
    }

    /// The `order_id` of a project's ticket with this `execute_uuid`. (Should two tickets share a
    /// uuid, the one written last wins.)
    pub fn order_of(&self, project: &ProjectId, execute_uuid: &str) -> Option<u64> {
        let p = self.projects.get(project)?;
        let i = *p.by_uuid.get(execute_uuid)?;
        Some(p.slots[i as usize].order_id)
    }

    /// Number of tickets in all projects.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no ticket is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn row(&self, p: &ProjectRows, s: &Slot) -> Row {
        Row {
            order_id: s.order_id,
            order_name: p.text.get(s.name).to_string(),
            execute_uuid: s.execute_uuid.to_string(),
            gmt_created: s.gmt_created,
            gmt_finished: s.gmt_finished,
            execute_costs: s.gmt_finished.map(|f| f - s.gmt_created),
            creator: self.symbols[s.creator as usize].clone(),
            status: s.status,
            properties: Properties {
                region_ids: self.symbols[s.region_ids as usize].to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests;
