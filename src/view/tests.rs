//! The view against a reference that checks every ticket.

use super::*;
use std::collections::HashMap;

fn ticket(order_id: u64, creator: &str, status: Status, name: &str, created: i64) -> Ticket {
    Ticket {
        project: ProjectId::parse("p").unwrap(),
        order_id,
        order_name: name.into(),
        execute_uuid: format!("u{order_id}").into(),
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

/// A small seeded generator: `rnd(n)` is a number below `n`, the same every run.
fn lcg(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
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
                && q.job_types
                    .as_ref()
                    .is_none_or(|j| j.iter().any(|j| *j == t.job_type))
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
    let mut rnd = lcg(7);
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
                t.creator = format!("c{}", rnd(7)).into();
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
                t.order_name = name(id, round).into();
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

#[test]
fn short_needles_read_their_page_off_the_posting_list() {
    // Tickets arriving in order_id order (slots in order, the page read by rank), then changed,
    // renamed and removed, then one arriving out of order (the page found by a walk).
    let mut rnd = lcg(11);
    let words = ["ka", "lo", "Mi", "nu", "数据", "x-"];
    let name = |r: &mut dyn FnMut(u64) -> u64| {
        format!("{}{}-{}", words[r(6) as usize], words[r(6) as usize], r(10))
    };
    let mut ix = Index::default();
    let mut all = HashMap::new();
    for order_id in 1..=3_000u64 {
        let t = ticket(order_id, "c", Status::Ready, &name(&mut rnd), 0);
        ix.upsert(&t);
        all.insert(order_id, t);
    }
    let p = ProjectId::parse("p").unwrap();
    let needles = ["k", "ka", "m", "MI", "-", "7", "据", "q", "zz", "a-"];
    let ask = |ix: &Index, all: &HashMap<u64, Ticket>, rnd: &mut dyn FnMut(u64) -> u64| {
        for needle in needles {
            let mut q = Query::all();
            q.name_like = Some(FilterText::parse(needle, "name_like").unwrap());
            q.limit = PageLimit::parse(&(1 + rnd(20)).to_string()).unwrap();
            if rnd(2) == 0 {
                q.marker = Some(Marker::parse(&rnd(3_200).to_string()).unwrap());
            }
            let page = ix.query(&p, &q);
            assert_eq!((page.total, ids(&page)), naive(all, &q), "{q:?}");
        }
    };
    for _ in 0..50 {
        ask(&ix, &all, &mut rnd);
    }
    for _ in 0..500 {
        let id = 1 + rnd(3_000);
        if let Some(t) = all.get_mut(&id) {
            match rnd(3) {
                0 => t.order_name = name(&mut rnd).into(),
                1 => t.status = Status::Finished,
                _ => {
                    ix.remove(&t.project, id);
                    all.remove(&id);
                    continue;
                }
            }
            ix.upsert(t);
        }
    }
    for _ in 0..50 {
        ask(&ix, &all, &mut rnd);
    }
    let late = ticket(4_000, "c", Status::Ready, "ka-late", 0);
    ix.upsert(&late);
    all.insert(4_000, late);
    let early = ticket(3_500, "c", Status::Ready, "ka-early", 0);
    ix.upsert(&early);
    all.insert(3_500, early);
    for _ in 0..50 {
        ask(&ix, &all, &mut rnd);
    }
    // Newer rows, shuffled, none of which holds a `k`: a walk for `k` meets them first, and
    // gives up for the list when they cost it more than the list would.
    let mut late: Vec<u64> = (4_001..=4_300).collect();
    for i in (1..late.len()).rev() {
        late.swap(i, rnd(i as u64 + 1) as usize);
    }
    for order_id in late {
        let t = ticket(order_id, "c", Status::Ready, "nu-lo", 0);
        ix.upsert(&t);
        all.insert(order_id, t);
    }
    for _ in 0..50 {
        ask(&ix, &all, &mut rnd);
    }
}
