//! The in-memory query view: what the list endpoint reads.
//!
//! sled holds the records durably; this view is derived from them at start-up and kept in step
//! by every commit, so no secondary index key is ever written to disk. Per project, rows sit in a
//! `BTreeMap` keyed by `order_id`: a page is a keyset walk down from the marker (never an
//! offset), and the total is a count over the same rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::domain::{FilterText, Marker, PageLimit, ProjectId, Status, TimeRange};
use crate::fold::Ticket;

/// `properties` of the list model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Properties {
    /// Regions, as the `created` event gave them.
    pub region_ids: String,
}

/// One ticket as the list endpoint shows it (COC's `JobScriptOrderListModel`, fields in the
/// spec's order), plus the lower-cased name the `name_like` filter searches.
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
    /// Creator (shared between the rows of one creator).
    pub creator: Arc<str>,
    /// Status.
    pub status: Status,
    /// Regions.
    pub properties: Properties,
    /// `order_name` lower-cased, for case-insensitive substring search.
    #[serde(skip)]
    pub name_lower: String,
    /// Job type, for the `coc:JobType` condition (shared between rows).
    #[serde(skip)]
    pub job_type: Arc<str>,
}

impl Row {
    fn from_ticket(t: &Ticket, creator: Arc<str>, job_type: Arc<str>) -> Self {
        Row {
            order_id: t.order_id,
            order_name: t.order_name.clone(),
            execute_uuid: t.execute_uuid.clone(),
            gmt_created: t.gmt_created,
            gmt_finished: t.gmt_finished,
            execute_costs: t.execute_costs,
            creator,
            status: t.status,
            properties: Properties {
                region_ids: t.region_ids.clone(),
            },
            name_lower: t.order_name.to_lowercase(),
            job_type,
        }
    }
}

/// A parsed list query. Every field is already valid (see [`crate::domain`]).
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

#[derive(Default)]
struct ProjectRows {
    rows: BTreeMap<u64, Row>,
    /// `execute_uuid` → `order_id`, for the detail endpoint.
    by_uuid: HashMap<String, u64>,
    /// Totals kept as rows come and change, so that a total filtered by nothing, status,
    /// creator, or creator and status is a look-up rather than a count over every row.
    counts: Counts,
}

/// Row counts by status, by creator, and by (creator, status).
#[derive(Default)]
struct Counts {
    by_status: HashMap<Status, u64>,
    by_creator: HashMap<Arc<str>, u64>,
    by_creator_status: HashMap<(Arc<str>, Status), u64>,
}

impl Counts {
    fn add(&mut self, r: &Row, delta: i64) {
        let bump = |n: &mut u64| *n = n.saturating_add_signed(delta);
        bump(self.by_status.entry(r.status).or_default());
        bump(self.by_creator.entry(r.creator.clone()).or_default());
        bump(
            self.by_creator_status
                .entry((r.creator.clone(), r.status))
                .or_default(),
        );
    }

    /// The total of a query whose only filters are status and/or creator, if it is one.
    fn total(&self, all: usize, q: &Query) -> Option<u64> {
        if q.time.is_some() || q.name_like.is_some() || q.job_types.is_some() {
            return None;
        }
        Some(match (&q.creator, q.status) {
            (None, None) => all as u64,
            (None, Some(s)) => self.by_status.get(&s).copied().unwrap_or(0),
            (Some(c), None) => self.by_creator.get(c.as_str()).copied().unwrap_or(0),
            (Some(c), Some(s)) => self
                .by_creator_status
                .get(&(Arc::from(c.as_str()), s))
                .copied()
                .unwrap_or(0),
        })
    }
}

/// The query view of every project.
#[derive(Default)]
pub struct Index {
    projects: HashMap<ProjectId, ProjectRows>,
    /// Interned creators and job types: many rows, few distinct values.
    interned: HashMap<String, Arc<str>>,
}

impl Index {
    /// Inserts or replaces a ticket's row.
    pub fn upsert(&mut self, t: &Ticket) {
        let creator = self.intern(&t.creator);
        let job_type = self.intern(&t.job_type);
        let p = self.projects.entry(t.project.clone()).or_default();
        p.by_uuid.insert(t.execute_uuid.clone(), t.order_id);
        let row = Row::from_ticket(t, creator, job_type);
        p.counts.add(&row, 1);
        if let Some(old) = p.rows.insert(t.order_id, row) {
            p.counts.add(&old, -1);
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(v) = self.interned.get(s) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(s);
        self.interned.insert(s.to_owned(), v.clone());
        v
    }

    /// The `order_id` of a project's ticket with this `execute_uuid`. (Should two tickets share a
    /// uuid, the one written last wins.)
    pub fn order_of(&self, project: &ProjectId, execute_uuid: &str) -> Option<u64> {
        self.projects
            .get(project)?
            .by_uuid
            .get(execute_uuid)
            .copied()
    }

    /// Number of tickets in all projects.
    pub fn len(&self) -> usize {
        self.projects.values().map(|p| p.rows.len()).sum()
    }

    /// Whether no ticket is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers a list query for one project.
    pub fn query(&self, project: &ProjectId, q: &Query) -> Page {
        let Some(p) = self.projects.get(project) else {
            return Page {
                total: 0,
                data: Vec::new(),
            };
        };
        let needle = q.name_like.as_ref().map(|n| n.as_str().to_lowercase());
        let matches = |r: &Row| {
            q.status.is_none_or(|s| r.status == s)
                && q.time.is_none_or(|t| t.contains(r.gmt_created))
                && q.creator.as_ref().is_none_or(|c| &*r.creator == c.as_str())
                && needle.as_deref().is_none_or(|n| r.name_lower.contains(n))
                && q.job_types
                    .as_ref()
                    .is_none_or(|j| j.iter().any(|t| **t == *r.job_type))
        };
        let below = q.marker.map_or(u64::MAX, |m| m.get());
        let data = p
            .rows
            .range(..below)
            .rev()
            .map(|(_, r)| r)
            .filter(|r| matches(r))
            .take(q.limit.get())
            .cloned()
            .collect();
        let total = p
            .counts
            .total(p.rows.len(), q)
            .unwrap_or_else(|| p.rows.values().filter(|r| matches(r)).count() as u64);
        Page { total, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            history: vec![],
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
