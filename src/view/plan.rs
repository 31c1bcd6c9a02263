//! The planner: which set a list query walks (its creator's group, or a name's gram
//! candidates, whichever is smaller) and how its page and total are read from it.

use roaring::RoaringBitmap;

use super::names::{Candidates, PREFETCH_AHEAD, candidates, name_holds, prefetch};
use super::{Index, Page, ProjectRows, Query, Row, Slot, Sym};
use crate::core::domain::ProjectId;

impl Index {
    /// Answers a list query for one project.
    pub fn query(&self, project: &ProjectId, q: &Query) -> Page {
        let empty = Page {
            total: 0,
            data: Vec::new(),
        };
        let Some(p) = self.projects.get(project) else {
            return empty;
        };
        let creator = match &q.creator {
            None => None,
            Some(c) => match self.symbol_ids.get(c.as_str()) {
                Some(&id) => Some(id),
                None => return empty,
            },
        };
        let group = match creator {
            None => Some(&p.all),
            Some(c) => p.by_creator.get(&c),
        };
        let Some(group) = group else {
            return empty;
        };
        let time = q.time.as_ref();
        let status = q.status;
        let below = q.marker.map_or(u64::MAX, |m| m.get());
        let limit = q.limit.get();
        let needle = q.name_like.as_ref().map(|n| n.as_str().to_lowercase());
        let job_types: Option<Vec<Sym>> = q.job_types.as_ref().map(|j| {
            j.iter()
                .filter_map(|t| self.symbol_ids.get(t.as_str()).copied())
                .collect()
        });
        let job_type_ok = |s: &Slot| job_types.as_ref().is_none_or(|j| j.contains(&s.job_type));
        let residual = |s: &Slot| {
            needle
                .as_deref()
                .is_none_or(|n| name_holds(p.text.get(s.name), n))
                && job_type_ok(s)
        };
        // What the candidates of a name must match besides it; the group's walk has it already.
        let matches = |s: &Slot| {
            status.is_none_or(|st| s.status == st)
                && creator.is_none_or(|c| s.creator == c)
                && time.is_none_or(|t| t.contains(s.gmt_created))
        };
        let mut data = Vec::with_capacity(limit);
        if needle.is_none() && job_types.is_none() {
            // Equality filters and a time range only: the group answers both.
            group.walk_desc(below, time, status, |e| {
                data.push(self.row(p, &p.slots[e.slot as usize]));
                data.len() < limit
            });
            return Page {
                total: group.count(time, status),
                data,
            };
        }
        let in_group = group.count(time, status);
        let postings = needle.as_deref().and_then(|n| candidates(p, n, in_group));
        let only_the_name =
            creator.is_none() && time.is_none() && status.is_none() && job_types.is_none();
        let mut total = 0u64;
        match postings {
            Some(Candidates::None) => {}
            // The needle alone, and its posting list is exactly its matches: the total is the
            // list's length, and the page its newest entries below the marker.
            Some(Candidates::Exact(list)) if only_the_name => {
                total = list.len();
                data = self.newest(p, list, below, limit);
            }
            // Few rows hold the needle's grams: check those, then order the page.
            Some(Candidates::Exact(list)) => {
                total = self.check(p, list, below, limit, &mut data, |s| {
                    matches(s) && job_type_ok(s)
                })
            }
            Some(Candidates::Holding(list)) => {
                total = self.check(p, &list, below, limit, &mut data, |s| {
                    matches(s) && residual(s)
                })
            }
            // The group (within the time range) is the smaller set: walk it all, counting.
            None => group.walk_desc(u64::MAX, time, status, |e| {
                let s = &p.slots[e.slot as usize];
                if residual(s) {
                    total += 1;
                    if e.order_id < below && data.len() < limit {
                        data.push(self.row(p, s));
                    }
                }
                true
            }),
        }
        Page { total, data }
    }

    /// The rows of the `limit` newest slots of `list` below the marker `below`.
    fn newest(&self, p: &ProjectRows, list: &RoaringBitmap, below: u64, limit: usize) -> Vec<Row> {
        let row = |i: u32| self.row(p, &p.slots[i as usize]);
        if !p.disordered {
            // Slots in order_id order: the slots below the marker are a prefix, and the page is
            // the last entries of the list within it, found by rank without walking the list.
            let end = p.slots.partition_point(|s| s.order_id < below) as u32;
            let before_end = if end == 0 { 0 } else { list.rank(end - 1) };
            let from = before_end.saturating_sub(limit as u64);
            return (from..before_end)
                .rev()
                .filter_map(|k| list.select(k as u32))
                .map(row)
                .collect();
        }
        // Out of order (tickets created out of order_id order, as an executor running many at
        // once sends them): walk the project's rows newest first and keep those on the list, which
        // meets a page after about `limit / density` rows. A list much smaller than that is cheaper
        // to go through whole, and so is any list once the walk has cost as much as it would
        // (its matches lie among the older rows).
        let budget = (limit as u64)
            .saturating_mul(p.slots.len() as u64)
            .checked_div(list.len())
            .unwrap_or(0)
            .saturating_mul(4)
            .saturating_add(64);
        if budget < list.len() {
            let (mut page, mut walked) = (Vec::with_capacity(limit), 0u64);
            p.all.walk_desc(below, None, None, |e| {
                walked += 1;
                if list.contains(e.slot) {
                    page.push(e.slot);
                }
                page.len() < limit && walked < budget
            });
            if page.len() == limit || walked < budget {
                return page.into_iter().map(row).collect();
            }
        }
        let mut data = Vec::with_capacity(limit);
        self.check(p, list, below, limit, &mut data, |_| true);
        data
    }

    /// Checks every slot of `list` with `keep`, pushes the page of those that pass (the newest
    /// `limit` below `below`) onto `data`, and returns how many passed.
    fn check(
        &self,
        p: &ProjectRows,
        list: &RoaringBitmap,
        below: u64,
        limit: usize,
        data: &mut Vec<Row>,
        keep: impl Fn(&Slot) -> bool,
    ) -> u64 {
        let mut total = 0;
        // (order_id, slot) of the matches below the marker: ordering them compares numbers, not
        // rows reached through pointers (that was a fifth of the time).
        let mut hits: Vec<(u64, u32)> = Vec::new();
        // The candidates are scattered rows: ask for the rows some candidates ahead, and for the
        // names of those half as far ahead (their rows have arrived by then), so that many loads
        // are under way at once instead of one at a time.
        let mut rows_ahead = list.iter().skip(PREFETCH_AHEAD);
        let mut names_ahead = list.iter().skip(PREFETCH_AHEAD / 2);
        for i in list {
            if let Some(ahead) = rows_ahead.next() {
                prefetch(&p.slots[ahead as usize]);
            }
            if let Some(ahead) = names_ahead.next() {
                p.text.prefetch(p.slots[ahead as usize].name);
            }
            let s = &p.slots[i as usize];
            if keep(s) {
                total += 1;
                if s.order_id < below {
                    hits.push((s.order_id, i));
                }
            }
        }
        data.extend(top(&mut hits, limit).map(|(_, i)| self.row(p, &p.slots[i as usize])));
        total
    }
}

/// The `limit` largest of `hits`, largest first.
fn top(hits: &mut Vec<(u64, u32)>, limit: usize) -> impl Iterator<Item = (u64, u32)> + '_ {
    if hits.len() > limit {
        hits.select_nth_unstable_by(limit, |a, b| b.cmp(a));
        hits.truncate(limit);
    }
    hits.sort_unstable_by(|a, b| b.cmp(a));
    hits.drain(..)
}
