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
//! - **Trigrams.** Per project, each trigram of the lower-cased names maps to the (ascending) row
//!   slots whose name holds it. `name_like` of three bytes or more intersects the needle's
//!   trigram lists, smallest first, and checks the few candidates left; shorter needles, and the
//!   `coc:JobType` condition, are checked on the rows of the chosen group. The planner takes
//!   whichever candidate set is smaller.
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
use names::{Names, Span, Trigram, add_name, lowered, trigrams};

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
    /// Trigram → slots (ascending) whose lower-cased name holds it.
    names: FxHashMap<Trigram, Vec<u32>>,
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
        for (i, s) in slots.iter().enumerate() {
            add_name(names, i as u32, &lowered(text.get(s.name)));
        }
    }

    fn unindex_name(&mut self, slot: u32, lower: &str) {
        for g in trigrams(lower) {
            if let Some(list) = self.names.get_mut(&g)
                && let Ok(i) = list.binary_search(&slot)
            {
                list.remove(i);
            }
        }
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
mod tests {
    use super::names::intersect;
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn intersecting_keeps_exactly_the_common_slots_whichever_way_it_goes() {
        let mut seed = 7u64;
        let mut list = |n: usize, spread: u64| -> Vec<u32> {
            let mut v: Vec<u32> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) % spread) as u32
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        // Like lengths (merged) and one far longer (searched), and empty sides.
        for (a, b) in [(50, 60), (10, 2000), (0, 30), (30, 0), (200, 200)] {
            let (x, y) = (list(a, 500), list(b, 5000));
            let want: Vec<u32> = x.iter().copied().filter(|s| y.contains(s)).collect();
            let mut got = x.clone();
            intersect(&mut got, &y);
            assert_eq!(got, want, "{a} and {b}");
        }
    }

    fn ticket(order_id: u64, creator: &str, status: Status, name: &str, created: i64) -> Ticket {
        Ticket {
            project: ProjectId::parse("p").unwrap(),
            order_id,
            order_name: name.into(),
            execute_uuid: format!("u{order_id}"),
            creator: creator.into(),
            region_ids: "r".into(),
            job_type: "SCRIPT".into(),
            gmt_created: created,
            gmt_finished: None,
            execute_costs: None,
            status,
            current_execute_batch_index: None,
            duplicates_unrecorded: 0,
            history: vec![],
            plan: None,
        }
    }

    fn index() -> Index {
        let mut ix = Index::default();
        for i in 1..=30u64 {
            let creator = if i % 2 == 0 { "even" } else { "odd" };
            let status = if i % 3 == 0 {
                Status::Finished
            } else {
                Status::Ready
            };
            let name = if i % 5 == 0 { "Patch-Night" } else { "deploy" };
            ix.upsert(&ticket(i, creator, status, name, i as i64 * 100));
        }
        ix
    }

    fn ids(p: &Page) -> Vec<u64> {
        p.data.iter().map(|r| r.order_id).collect()
    }

    #[test]
    fn newest_first_with_keyset_paging() {
        let ix = index();
        let p = ProjectId::parse("p").unwrap();
        let mut q = Query::all();
        let first = ix.query(&p, &q);
        assert_eq!(first.total, 30);
        assert_eq!(ids(&first), (21..=30).rev().collect::<Vec<_>>());
        q.marker = Some(Marker::parse("21").unwrap());
        let second = ix.query(&p, &q);
        assert_eq!(second.total, 30, "total ignores the marker");
        assert_eq!(ids(&second), (11..=20).rev().collect::<Vec<_>>());
        q.marker = Some(Marker::parse("1").unwrap());
        assert!(ix.query(&p, &q).data.is_empty());
    }

    #[test]
    fn filters_combine_with_and_and_count_all_matches() {
        let ix = index();
        let p = ProjectId::parse("p").unwrap();
        let mut q = Query::all();
        q.creator = Some(FilterText::parse("even", "creator").unwrap());
        q.status = Some(Status::Finished);
        let page = ix.query(&p, &q);
        assert_eq!(ids(&page), [30, 24, 18, 12, 6]);
        assert_eq!(page.total, 5);
        q.name_like = Some(FilterText::parse("PATCH", "name_like").unwrap());
        assert_eq!(ids(&ix.query(&p, &q)), [30]);
        let mut q = Query::all();
        q.time = TimeRange::parse(Some("500"), Some("700")).unwrap();
        assert_eq!(ids(&ix.query(&p, &q)), [7, 6, 5]);
    }

    #[test]
    fn an_unknown_project_has_no_tickets() {
        let ix = index();
        let page = ix.query(&ProjectId::parse("other").unwrap(), &Query::all());
        assert_eq!(page.total, 0);
        assert!(page.data.is_empty());
    }

    #[test]
    fn kept_totals_equal_counted_totals_after_changes() {
        let mut ix = index();
        // Status changes and a creator change move rows between counts.
        ix.upsert(&ticket(3, "odd", Status::Canceled, "deploy", 300));
        ix.upsert(&ticket(4, "odd", Status::Finished, "deploy", 400));
        let p = ProjectId::parse("p").unwrap();
        for creator in [None, Some("even"), Some("odd"), Some("nobody")] {
            for status in [
                None,
                Some(Status::Ready),
                Some(Status::Finished),
                Some(Status::Canceled),
            ] {
                let mut q = Query::all();
                q.creator = creator.map(|c| FilterText::parse(c, "creator").unwrap());
                q.status = status;
                let kept = ix.query(&p, &q).total;
                // The same filters plus an always-true time range force the counting path.
                q.time = TimeRange::parse(Some("0"), None).unwrap();
                let counted = ix.query(&p, &q).total;
                assert_eq!(kept, counted, "{creator:?} {status:?}");
            }
        }
    }

    /// The reference: every filter checked on every ticket, sorted, counted.
    fn naive(tickets: &HashMap<u64, Ticket>, q: &Query) -> (u64, Vec<u64>) {
        let needle = q.name_like.as_ref().map(|n| n.as_str().to_lowercase());
        let mut m: Vec<&Ticket> = tickets
            .values()
            .filter(|t| {
                q.status.is_none_or(|s| t.status == s)
                    && q.time.is_none_or(|r| r.contains(t.gmt_created))
                    && q.creator.as_ref().is_none_or(|c| t.creator == c.as_str())
                    && needle
                        .as_deref()
                        .is_none_or(|n| t.order_name.to_lowercase().contains(n))
                    && q.job_types.as_ref().is_none_or(|j| j.contains(&t.job_type))
            })
            .collect();
        m.sort_by_key(|t| std::cmp::Reverse(t.order_id));
        let below = q.marker.map_or(u64::MAX, |m| m.get());
        let page = m
            .iter()
            .filter(|t| t.order_id < below)
            .take(q.limit.get())
            .map(|t| t.order_id)
            .collect();
        (m.len() as u64, page)
    }

    #[test]
    fn every_plan_agrees_with_checking_every_ticket() {
        // Several thousand tickets (many blocks), created at times unrelated to order_id (so the
        // zone maps overlap), then changed at random: status, creator, even the name.
        let mut seed = 7u64;
        let mut rnd = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let words = [
            "Alpha",
            "beta",
            "gamma",
            "delta",
            "Patch",
            "night",
            "数据库",
            "x",
        ];
        let statuses = [
            Status::Ready,
            Status::Processing,
            Status::Abnormal,
            Status::Finished,
            Status::Canceled,
        ];
        let mut ix = Index::default();
        let mut all = HashMap::new();
        for i in 0..6_000u64 {
            let order_id = if i < 5_000 {
                i * 3 + 1
            } else {
                rnd(15_000) + 1
            };
            let created = if rnd(4) == 0 {
                rnd(1_000_000) as i64
            } else {
                order_id as i64 * 60
            };
            let mut t = ticket(
                order_id,
                &format!("c{}", rnd(7)),
                statuses[rnd(5) as usize],
                &format!(
                    "{}-{}{}",
                    words[rnd(8) as usize],
                    words[rnd(8) as usize],
                    rnd(50)
                ),
                created,
            );
            t.job_type = if rnd(3) == 0 { "SHELL" } else { "SCRIPT" }.into();
            ix.upsert(&t);
            all.insert(order_id, t);
        }
        // The usual update: a status change alone, rewritten in place.
        for _ in 0..2_000 {
            let order_id = rnd(5_000) * 3 + 1;
            let t = all
                .get_mut(&order_id)
                .expect("the first 5,000 are all there");
            t.status = statuses[rnd(5) as usize];
            ix.upsert(t);
        }
        let p = ProjectId::parse("p").unwrap();
        let filter = |s: &str, what| FilterText::parse(s, what).unwrap();
        for n in 0..3_000 {
            let mut q = Query::all();
            q.limit = PageLimit::parse(&(1 + rnd(30)).to_string()).unwrap();
            if rnd(2) == 0 {
                q.marker = Some(Marker::parse(&rnd(16_000).to_string()).unwrap());
            }
            if rnd(2) == 0 {
                let a = rnd(1_000_000);
                let b = a + rnd(400_000);
                q.time = TimeRange::parse(Some(&a.to_string()), Some(&b.to_string())).unwrap();
            }
            if rnd(2) == 0 {
                q.creator = Some(filter(&format!("c{}", rnd(8)), "creator"));
            }
            if rnd(2) == 0 {
                q.status = Some(statuses[rnd(5) as usize]);
            }
            if rnd(2) == 0 {
                let needles = [
                    "a", "pa", "PAT", "ta-b", "night", "ght1", "据库", "zzz", "-",
                ];
                q.name_like = Some(filter(needles[rnd(9) as usize], "name_like"));
            }
            if rnd(4) == 0 {
                q.job_types = Some(vec!["SHELL".into()]);
            }
            let page = ix.query(&p, &q);
            assert_eq!(
                (page.total, ids(&page)),
                naive(&all, &q),
                "query {n}: {q:?}"
            );
            if n % 3 == 0 {
                // Change a ticket between queries.
                let id = *all.keys().nth(rnd(all.len() as u64) as usize).unwrap();
                let t = all.get_mut(&id).unwrap();
                t.status = statuses[rnd(5) as usize];
                if rnd(5) == 0 {
                    t.creator = format!("c{}", rnd(7));
                }
                if rnd(10) == 0 {
                    t.order_name = "renamed Night".into();
                }
                ix.upsert(t);
                if rnd(10) == 0 {
                    let t = all.remove(&id).unwrap();
                    ix.remove(&t.project, t.order_id);
                    assert!(ix.order_of(&t.project, &t.execute_uuid).is_none());
                }
            }
        }
        assert_eq!(ix.len(), all.len());
    }

    #[test]
    fn a_bulk_build_answers_as_upserts_do() {
        let mut seed = 7u64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let words = ["alpha", "Beta", "gamma", "数据库", "night-Job"];
        let statuses = [Status::Ready, Status::Processing, Status::Finished];
        let mut tickets = Vec::new();
        for i in 0..3_000u64 {
            let name = format!("{}-{}", words[rnd(5) as usize], rnd(40));
            let mut t = ticket(
                i + 1,
                &format!("c{}", rnd(5)),
                statuses[rnd(3) as usize],
                &name,
                i as i64 * 60,
            );
            t.project = ProjectId::parse(&format!("p{}", rnd(5))).unwrap();
            tickets.push(t);
        }
        let mut one_by_one = Index::default();
        tickets.iter().for_each(|t| one_by_one.upsert(t));
        let mut bulk = Index::bulk(tickets.iter().cloned());
        assert_eq!(bulk.len(), one_by_one.len());
        // A rename after the build moves the ticket in the name index of the bulk view too.
        let mut renamed = tickets[10].clone();
        renamed.order_name = "zebra crossing".into();
        for ix in [&mut one_by_one, &mut bulk] {
            ix.upsert(&renamed);
        }
        let filter = |s: &str, what| FilterText::parse(s, what).unwrap();
        let mut checked = 0;
        for p in 0..5 {
            let p = ProjectId::parse(&format!("p{p}")).unwrap();
            for needle in [
                None,
                Some("a"),
                Some("ETA"),
                Some("据库"),
                Some("ht-j"),
                Some("zebra"),
            ] {
                for creator in [None, Some("c3")] {
                    let mut q = Query::all();
                    q.limit = PageLimit::parse("50").unwrap();
                    q.name_like = needle.map(|n| filter(n, "name_like"));
                    q.creator = creator.map(|c| filter(c, "creator"));
                    let (a, b) = (one_by_one.query(&p, &q), bulk.query(&p, &q));
                    assert_eq!((a.total, ids(&a)), (b.total, ids(&b)), "{p:?} {q:?}");
                    checked += usize::from(a.total > 0);
                }
            }
        }
        assert!(checked > 40, "too few queries found anything: {checked}");
        let zebra = {
            let mut q = Query::all();
            q.name_like = Some(filter("zebra", "name_like"));
            bulk.query(&renamed.project, &q)
        };
        assert_eq!(ids(&zebra), vec![renamed.order_id]);
    }

    #[test]
    fn names_rewritten_after_renames_and_removals_still_answer() {
        // Long names renamed again and again, and rows removed, leave enough dead bytes that the
        // names string is rewritten several times; every name query must still be right.
        let mut ix = Index::default();
        let mut all = HashMap::new();
        let p = ProjectId::parse("p").unwrap();
        let name = |id: u64, round: u64| format!("ticket {id} Round-{round} {}", "x".repeat(40));
        for id in 1..=400u64 {
            let t = ticket(id, "c", Status::Ready, &name(id, 0), id as i64);
            ix.upsert(&t);
            all.insert(id, t);
        }
        for round in 1..=6u64 {
            for id in (1..=400u64).filter(|id| id % 7 != round) {
                if let Some(t) = all.get_mut(&id) {
                    t.order_name = name(id, round);
                    ix.upsert(t);
                }
            }
            for id in round * 50..round * 50 + 10 {
                if all.remove(&id).is_some() {
                    ix.remove(&p, id);
                }
            }
            let live: usize = all.values().map(|t| t.order_name.len()).sum();
            let rows = &ix.projects[&p];
            assert!(
                rows.text.text.len() <= 2 * live + 4096 + 64,
                "round {round}: {} bytes held for {live} live",
                rows.text.text.len()
            );
            for needle in [
                "round-",
                &format!("round-{round} "),
                "ticket 1",
                "T 39",
                "xxx",
            ] {
                let mut q = Query::all();
                q.limit = PageLimit::parse("100").unwrap();
                q.name_like = Some(FilterText::parse(needle, "name_like").unwrap());
                let page = ix.query(&p, &q);
                assert_eq!(
                    (page.total, ids(&page)),
                    naive(&all, &q),
                    "{round} {needle}"
                );
                for row in &page.data {
                    assert_eq!(row.order_name, all[&row.order_id].order_name);
                }
            }
        }
    }

    #[test]
    fn upsert_replaces_a_row() {
        let mut ix = index();
        ix.upsert(&ticket(30, "even", Status::Canceled, "x", 3000));
        assert_eq!(ix.len(), 30);
        let p = ProjectId::parse("p").unwrap();
        let mut q = Query::all();
        q.status = Some(Status::Canceled);
        assert_eq!(ids(&ix.query(&p, &q)), [30]);
    }
}
