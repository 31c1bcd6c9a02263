//! The planner: which set a list query walks (its creator's group, or a name's trigram
//! candidates, whichever is smaller) and how its page and total are read from it.

use super::names::{PREFETCH_AHEAD, candidates, name_holds, prefetch};
use super::{Index, Page, Query, Slot, Sym};
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
        let residual = |s: &Slot| {
            needle
                .as_deref()
                .is_none_or(|n| name_holds(p.text.get(s.name), n))
                && job_types.as_ref().is_none_or(|j| j.contains(&s.job_type))
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
        let mut total = 0u64;
        match postings {
            // Few rows hold the needle's trigrams: check those, then order the page.
            Some(slots) => {
                // (order_id, slot) of the matches below the marker: ordering them compares
                // numbers, not rows reached through pointers (that was a fifth of the time).
                let mut hits: Vec<(u64, u32)> = Vec::new();
                for (k, &i) in slots.iter().enumerate() {
                    // The candidates are scattered rows: ask for the rows some candidates ahead,
                    // and for the names of those half as far ahead (their rows have arrived by
                    // then), so that many loads are under way at once instead of one at a time.
                    if let Some(&ahead) = slots.get(k + PREFETCH_AHEAD) {
                        prefetch(&p.slots[ahead as usize]);
                    }
                    if let Some(&ahead) = slots.get(k + PREFETCH_AHEAD / 2) {
                        p.text.prefetch(p.slots[ahead as usize].name);
                    }
                    let s = &p.slots[i as usize];
                    let ok = q.status.is_none_or(|st| s.status == st)
                        && creator.is_none_or(|c| s.creator == c)
                        && time.is_none_or(|t| t.contains(s.gmt_created))
                        && residual(s);
                    if ok {
                        total += 1;
                        if s.order_id < below {
                            hits.push((s.order_id, i));
                        }
                    }
                }
                if hits.len() > limit {
                    hits.select_nth_unstable_by(limit, |a, b| b.cmp(a));
                    hits.truncate(limit);
                }
                hits.sort_unstable_by(|a, b| b.cmp(a));
                data.extend(
                    hits.into_iter()
                        .map(|(_, i)| self.row(p, &p.slots[i as usize])),
                );
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
}
