use super::*;
use crate::core::domain::Status;

pub(crate) fn ticket(order_id: u64, status: Status) -> Ticket {
    Ticket {
        project: ProjectId::parse("p").unwrap(),
        order_id,
        order_name: format!("job {order_id}").into(),
        execute_uuid: format!("u{order_id}").into(),
        creator: "c".into(),
        region_ids: "r".into(),
        job_type: "SCRIPT".into(),
        gmt_created: order_id as i64,
        gmt_finished: None,
        execute_costs: None,
        status,
        history: vec![],
        current_execute_batch_index: None,
        duplicates_unrecorded: 0,
        plan: None,
    }
}

pub(crate) fn commit(p: &Projection, tickets: Vec<Ticket>, seq: u64) {
    p.commit(Commit {
        tickets,
        applied_seq: seq,
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn write_behind_never_stores_a_position_ahead_of_its_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let policy = FlushPolicy {
        max_events: 1_000,
        max_interval: Duration::from_secs(3600),
        cache_mb: 1,
        lock_wait: Duration::from_secs(5),
        min_free_bytes: 0,
    };
    let p = Projection::open(dir.path(), policy).unwrap();
    let key = ProjectId::parse("p").unwrap();
    commit(&p, vec![ticket(1, Status::Ready)], 10);
    // Visible at once, not yet in sled.
    assert_eq!(p.applied_seq(), 10);
    assert_eq!(p.durable_seq(), 0);
    assert_eq!(p.store().ticket(&key, 1).unwrap(), None);
    assert_eq!(p.ticket(&key, 1).unwrap().unwrap().status, Status::Ready);
    // 1,000 messages since the last write: handed to the writer with the position they reach.
    commit(&p, vec![ticket(1, Status::Processing)], 1_000);
    commit(&p, vec![ticket(2, Status::Ready)], 1_001);
    assert_eq!(
        p.ticket(&key, 1).unwrap().unwrap().status,
        Status::Processing
    );
    assert!(p.durable_seq() <= 1_000, "1,001 has not been handed off");
    assert_eq!(p.persist().unwrap(), 1_001);
    drop(p);
    // Reopened: exactly what was written, at exactly its position.
    let p = Projection::open(dir.path(), policy).unwrap();
    assert_eq!(p.applied_seq(), 1_001);
    assert_eq!(p.store().applied_seq().unwrap(), 1_001);
    assert_eq!(
        p.store().ticket(&key, 1).unwrap().unwrap().status,
        Status::Processing
    );
    assert_eq!(p.ticket_count(), 2);
}

/// A ticket no longer in the buffer is read in its latest written state, whether the last
/// write (kept for the events that follow it) or only sled holds it.
#[test]
fn a_written_ticket_is_read_back_in_its_latest_state() {
    let dir = tempfile::tempdir().unwrap();
    let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
    let key = ProjectId::parse("p").unwrap();
    commit(
        &p,
        vec![ticket(1, Status::Ready), ticket(2, Status::Ready)],
        1,
    );
    p.persist().unwrap();
    commit(&p, vec![ticket(1, Status::Processing)], 2);
    p.persist().unwrap();
    assert_eq!(
        p.ticket(&key, 1).unwrap().unwrap().status,
        Status::Processing
    );
    assert_eq!(p.ticket(&key, 2).unwrap().unwrap().status, Status::Ready);
    commit(&p, vec![ticket(2, Status::Finished)], 3);
    p.persist().unwrap();
    for (order_id, status) in [(1, Status::Processing), (2, Status::Finished)] {
        assert_eq!(p.ticket(&key, order_id).unwrap().unwrap().status, status);
        assert_eq!(
            p.store().ticket(&key, order_id).unwrap().unwrap().status,
            status
        );
    }
}

/// Look-ups skip sled only above the largest `order_id` held, and that bound is rebuilt from
/// sled at start-up: an event for a stored ticket still finds it after a restart.
#[test]
fn a_ticket_below_the_newest_is_looked_up_and_found_after_a_restart() {
    use crate::core::batch::{Decoded, RawMessage};
    use crate::core::events::{Event, Kind};
    let dir = tempfile::tempdir().unwrap();
    let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
    commit(
        &p,
        vec![ticket(5, Status::Ready), ticket(10, Status::Ready)],
        2,
    );
    p.persist().unwrap();
    drop(p);
    let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
    let started = |order_id: u64, seq: u64| Decoded {
        raw: RawMessage {
            seq,
            subject: Default::default(),
            payload: Default::default(),
            redrive_of: None,
            ce_headers: Vec::new(),
        },
        event: Ok(Event {
            id: format!("e{seq}").into(),
            source: "s".into(),
            kind: Kind::Started,
            time_ms: 100,
            project: ProjectId::parse("p").unwrap(),
            order_id,
            created: None,
            detail: Default::default(),
        }),
    };
    // 5 is below the newest (10): looked up in sled and moved on. 11 is above: no ticket.
    let dead = p
        .fold(vec![started(5, 3), started(11, 4)])
        .unwrap()
        .dead_letters;
    let key = ProjectId::parse("p").unwrap();
    assert_eq!(
        p.ticket(&key, 5).unwrap().unwrap().status,
        Status::Processing
    );
    assert_eq!(dead.len(), 1, "a start of a ticket that does not exist");
    assert_eq!(dead[0].seq, 4);
}

/// While the view is suspended, commits reach the records but not the view, whose position
/// stays where it was; resuming rebuilds it from the records.
#[test]
fn a_suspended_view_stays_put_and_resuming_rebuilds_it_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = Projection::open(dir.path(), FlushPolicy::default()).unwrap();
    let key = ProjectId::parse("p").unwrap();
    commit(&p, vec![ticket(1, Status::Ready)], 1);
    p.suspend_view();
    commit(
        &p,
        vec![ticket(1, Status::Processing), ticket(2, Status::Ready)],
        3,
    );
    assert!(!p.view_kept());
    assert_eq!((p.applied_seq(), p.view_seq()), (3, 1));
    let page = p.query(&key, &Query::all());
    assert_eq!(page.total, 1);
    assert_eq!(page.data[0].status, Status::Ready);
    // The records are current all along.
    assert_eq!(
        p.ticket(&key, 1).unwrap().unwrap().status,
        Status::Processing
    );
    p.resume_view().unwrap();
    assert_eq!((p.view_kept(), p.view_seq()), (true, 3));
    let page = p.query(&key, &Query::all());
    assert_eq!(page.total, 2);
    assert_eq!(page.data[1].status, Status::Processing);
    commit(&p, vec![ticket(3, Status::Ready)], 4);
    assert_eq!(p.query(&key, &Query::all()).total, 3);
}
