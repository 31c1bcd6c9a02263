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
        p.rows
            .insert(t.order_id, Row::from_ticket(t, creator, job_type));
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
        let total = p.rows.values().filter(|r| matches(r)).count() as u64;
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
