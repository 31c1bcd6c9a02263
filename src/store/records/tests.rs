use super::*;
use crate::core::domain::Status;

const PER_CHUNK: u64 = 1 << CHUNK_BITS;

pub(crate) fn ticket(project: &str, order_id: u64) -> Ticket {
    Ticket {
        project: ProjectId::parse(project).unwrap(),
        order_id,
        order_name: "n".into(),
        execute_uuid: "u".into(),
        creator: "c".into(),
        region_ids: "r".into(),
        job_type: "SCRIPT".into(),
        gmt_created: 1,
        gmt_finished: None,
        execute_costs: None,
        status: Status::Ready,
        history: vec![],
        current_execute_batch_index: None,
        duplicates_unrecorded: 0,
        plan: None,
    }
}

/// A store whose lock is held is opened once the holder lets go (within the lock wait), not
/// refused at once; held past it, the error says so.
#[test]
fn a_locked_store_is_opened_once_its_holder_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    first.write(&[ticket("a", 1)], [], [], 1).unwrap();
    first.flush().unwrap();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let path = dir.path().to_owned();
    let second = std::thread::spawn(move || {
        let s = Store::open(&path);
        opened_tx.send(()).unwrap();
        s
    });
    // While the first holds the lock, the second waits rather than failing.
    assert!(
        opened_rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "opened while the lock was held"
    );
    drop(first);
    let second = second
        .join()
        .unwrap()
        .expect("opened once the lock was released");
    assert_eq!(second.applied_seq().unwrap(), 1);
}

/// Every flush marks the position it reaches before anything else and the position last:
/// once it is all written nothing is ahead of the position and every record reads back; cut
/// short, the mark says how far records may be ahead.
#[test]
fn a_flush_marks_where_it_reaches_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tickets: Vec<Ticket> = (1..=8_000)
        .map(|i| Ticket {
            order_name: format!("a job with a name long enough to matter {i:>40}").into(),
            ..ticket("a", i)
        })
        .collect();
    store.write(&tickets, [], [], 42).unwrap();
    let redo = store.db.get(REDO_UNTIL).unwrap().expect("marked");
    assert_eq!(u64_value(REDO_UNTIL, &redo).unwrap(), 42);
    assert_eq!(
        (store.applied_seq().unwrap(), store.redo_until().unwrap()),
        (42, 0)
    );
    for t in &tickets {
        assert_eq!(
            store.ticket(&t.project, t.order_id).unwrap().as_ref(),
            Some(t)
        );
    }
    // As a crash before the position leaves it: records ahead of the position.
    store.db.insert(APPLIED_SEQ, &40u64.to_be_bytes()).unwrap();
    assert_eq!(store.redo_until().unwrap(), 42);
    // The next run's first flush reaches less far, and is cut short too: the mark stays
    // where the records ahead reach (a crash test found it lowered, and events folded
    // twice).
    store.write(&tickets[..1], [], [], 41).unwrap();
    store.db.insert(APPLIED_SEQ, &40u64.to_be_bytes()).unwrap();
    assert_eq!(store.redo_until().unwrap(), 42);
    // No plan changed: no journal.
    assert!(!dir.path().join(JOURNAL).exists());
}

/// A ticket with a plan of two batches, folded from its `created` event at sequence 1.
fn planned(order_id: u64) -> Ticket {
    let data = serde_json::json!({
        "project_id": "p", "order_id": order_id, "execute_uuid": "SCT5",
        "order_name": "patch", "creator": "alice", "region_ids": "cn-north-4",
        "script_uuid": "SC1", "script_name": "install", "script_version_uuid": 7,
        "script_version_name": "v7",
        "execute_param": {"resourceful": true, "timeout": 300, "success_rate": 99.5,
            "execute_user": "root", "script_params": []},
        "execute_batches": [
            {"batch_index": 1, "rotation_strategy": "CONTINUE", "target_instances": [
                {"instance_id": 10, "resource_id": "r10"}]},
            {"batch_index": 2, "rotation_strategy": "PAUSE", "target_instances": [
                {"instance_id": 30, "resource_id": "r30"}]}]
    });
    let e = event("created", "c", data);
    let t = crate::core::fold::apply(None, &e, 1).ticket.unwrap();
    assert!(t.plan.is_some());
    t
}

fn event(kind: &str, id: &str, data: serde_json::Value) -> crate::core::events::Event {
    let v = serde_json::json!({
        "specversion": "1.0", "id": id, "source": "exec",
        "type": format!("coc.job.script.{kind}"), "time": "2026-01-01T00:00:00Z", "data": data,
    });
    let subject = format!("coc.job.script.p.{kind}");
    let bytes = serde_json::to_vec(&v).unwrap();
    crate::core::events::decode(&subject, &bytes, "coc.job.script", 1 << 20).unwrap()
}

/// A flush that changed a plan and was cut short after its plan journal (some of the
/// ticket's keys of the old state, some of the new) is completed when the store is opened:
/// the record and its plan are of one state again, the new one. A journal whose flush
/// completed is not written again over what came after it, even when a later flush is cut
/// short.
#[test]
fn a_flush_cut_short_after_its_plan_journal_is_completed_at_opening() {
    let dir = tempfile::tempdir().unwrap();
    let p = ProjectId::parse("p").unwrap();
    let first = planned(5);
    let mut second = Some(first.clone());
    let started = event(
        "instance_started",
        "s",
        serde_json::json!({"project_id": "p", "order_id": 5, "batch_index": 1,
                           "instance_id": 10}),
    );
    crate::core::fold::apply_in_place(&mut second, started, 2);
    // And the ticket's own state moved in the same flush, so its record changed too.
    let second = Ticket {
        status: Status::Processing,
        ..second.unwrap()
    };
    let chunk = chunk_key(&p, 5);
    let batch_1 = {
        let mut k = keyed(super::super::plans::PLAN, &p, 5);
        k.extend_from_slice(&1u32.to_be_bytes());
        k
    };
    let store = {
        let store = Store::open(dir.path()).unwrap();
        store
            .write(
                [&first, &ticket("a", 1)],
                [(&first, PlanPart::Whole)],
                [],
                1,
            )
            .unwrap();
        let old = |k: &[u8]| store.db.get(k).unwrap().unwrap();
        let (old_chunk, old_batch) = (old(&chunk), old(&batch_1));
        store
            .write(
                [&second, &ticket("a", 2)],
                [(&second, PlanPart::Batch(1))],
                [],
                2,
            )
            .unwrap();
        // Cut short after the journal: the record's new state lost, the batch's kept, and
        // the mark too (sled had not written it out yet when the journal was on disk).
        assert_ne!(store.db.get(&chunk).unwrap().unwrap(), old_chunk);
        store.db.insert(&chunk, old_chunk).unwrap();
        store.db.insert(REDO_UNTIL, &1u64.to_be_bytes()).unwrap();
        assert_ne!(store.db.get(&batch_1).unwrap().unwrap(), old_batch);
        store
    };
    let store = cut_and_reopen(store, dir.path(), 1);
    assert_eq!(store.ticket(&p, 5).unwrap().as_ref(), Some(&second));
    assert_eq!(
        (store.applied_seq().unwrap(), store.redo_until().unwrap()),
        (1, 2)
    );
    // The flush completes; a later one, with no plan part, changes the ticket again and is
    // cut short: the earlier journal is not its own, so it is left alone.
    store.write([&second], [], [], 2).unwrap();
    let third = Ticket {
        status: Status::Finished,
        ..second.clone()
    };
    store.write([&third], [], [], 3).unwrap();
    let store = cut_and_reopen(store, dir.path(), 2);
    assert_eq!(store.redo_until().unwrap(), 3);
    assert_eq!(store.ticket(&p, 5).unwrap(), Some(third.clone()));
    // Records of a flush cut short earlier reach 10; a plan's flush to 4 is cut short after
    // its journal: the mark stays at 10, and the journal is still written again.
    store.write([&third], [], [], 3).unwrap();
    store.db.insert(REDO_UNTIL, &10u64.to_be_bytes()).unwrap();
    let before = store.db.get(&chunk).unwrap().unwrap();
    let fourth = Ticket {
        order_name: "patched".into(),
        ..third.clone()
    };
    store
        .write([&fourth], [(&fourth, PlanPart::Whole)], [], 4)
        .unwrap();
    store.db.insert(&chunk, before).unwrap();
    let store = cut_and_reopen(store, dir.path(), 3);
    assert_eq!(store.redo_until().unwrap(), 10);
    assert_eq!(store.ticket(&p, 5).unwrap(), Some(fourth));
}

/// Leaves `store` as a crash before its last position was written leaves it (the position
/// back at `applied`, the seal gone with it), and opens it again.
fn cut_and_reopen(store: Store, dir: &Path, applied: u64) -> Store {
    store
        .db
        .insert(APPLIED_SEQ, &applied.to_be_bytes())
        .unwrap();
    store.flush().unwrap();
    drop(store);
    std::fs::remove_file(dir.join(SEAL)).unwrap();
    Store::open(dir).unwrap()
}

/// A journal that is not one (cut, or damaged) is refused at opening, naming its file.
#[test]
fn a_damaged_plan_journal_is_refused() {
    assert!(journal::decode(&[0; 7]).is_err());
    let mut j = journal::Builder::new(9);
    j.push(journal::PART, b"k", &[b"val", b"ue"]);
    j.push(journal::RECORD, b"c", &[&5u64.to_be_bytes(), b"r"]);
    let good = j.0;
    let record = [&5u64.to_be_bytes()[..], b"r"].concat();
    assert_eq!(
        journal::decode(&good).unwrap(),
        (
            9,
            vec![
                (journal::PART, &b"k"[..], &b"value"[..]),
                (journal::RECORD, &b"c"[..], &record[..])
            ]
        )
    );
    assert!(journal::decode(&good[..good.len() - 1]).is_err());
    let mut unknown = good.clone();
    unknown[8] = 7;
    assert!(journal::decode(&unknown).is_err());
    // At opening, beside a store: refused, naming the file.
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    std::fs::write(dir.path().join(JOURNAL), &good[..good.len() - 1]).unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains(JOURNAL), "{err}");
}

/// A store whose sled position is below the one its last flush sealed has lost the end of
/// its log: refused, naming sled's file.
#[test]
fn a_store_behind_its_seal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.write(&[ticket("a", 1)], [], [], 7).unwrap();
        store.flush().unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join(SEAL)).unwrap(),
        "7\n"
    );
    Store::open(dir.path()).expect("at its seal: opens");
    std::fs::write(dir.path().join(SEAL), "9\n").unwrap();
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("db") && text.contains("through sequence 9"),
        "{text}"
    );
}

/// A store written by another format version is refused with both versions named, and
/// left as it was.
#[test]
fn a_store_of_another_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.write(&[ticket("a", 1)], [], [], 1).unwrap();
        store.db.insert(FORMAT, &5u64.to_be_bytes()).unwrap();
        store.flush().unwrap();
    }
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(matches!(err, StoreError::Format { found: 5 }), "{err}");
    assert!(
        err.to_string().contains('5') && err.to_string().contains(&FORMAT_VERSION.to_string()),
        "{err}"
    );
    let db = sled::open(dir.path()).unwrap();
    assert_eq!(
        db.get(FORMAT).unwrap().unwrap().as_ref(),
        5u64.to_be_bytes()
    );
    assert!(
        db.get(APPLIED_SEQ).unwrap().is_some(),
        "the data is still there"
    );
}

#[test]
fn records_written_apart_merge_into_their_chunks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Three chunks' worth of ids, written in two halves that interleave in every chunk.
    let n = 3 * PER_CHUNK;
    let evens: Vec<Ticket> = (1..=n / 2).map(|o| ticket("a", o * 2)).collect();
    store.write(&evens, [], [], 1).unwrap();
    // Odd ones between them, one even rewritten, and another project, in no order.
    let mut later: Vec<Ticket> = (0..n / 2).rev().map(|o| ticket("a", o * 2 + 1)).collect();
    let mut changed = ticket("a", PER_CHUNK);
    changed.status = Status::Finished;
    later.push(changed.clone());
    later.push(ticket("b", 3));
    store.write(&later, [], [], 2).unwrap();
    let got: Vec<(String, u64)> = store
        .tickets()
        .map(|t| t.map(|t| (t.project.to_string(), t.order_id)).unwrap())
        .collect();
    let mut want: Vec<(String, u64)> = (1..=n).map(|o| ("a".to_owned(), o)).collect();
    want.push(("b".to_owned(), 3));
    assert_eq!(got, want);
    let a = ProjectId::parse("a").unwrap();
    assert_eq!(store.ticket(&a, PER_CHUNK).unwrap(), Some(changed));
    assert_eq!(
        store.ticket(&a, PER_CHUNK - 1).unwrap(),
        Some(ticket("a", PER_CHUNK - 1))
    );
}

#[test]
fn rewriting_one_ticket_of_a_chunk_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Three chunks and a bit; then one ticket of the second chunk rewritten, and one far
    // beyond the rest.
    let n = 3 * PER_CHUNK + 8;
    let all: Vec<Ticket> = (1..=n).map(|o| ticket("a", o)).collect();
    store.write(&all, [], [], n).unwrap();
    let inner = PER_CHUNK + 6;
    let far = 10 * PER_CHUNK;
    let mut changed = ticket("a", inner);
    changed.status = Status::Processing;
    store
        .write([&changed, &ticket("a", far)], [], [], n + 1)
        .unwrap();
    let got: Vec<Ticket> = store.tickets().map(Result::unwrap).collect();
    assert_eq!(got.len() as u64, n + 1);
    assert_eq!(got[inner as usize - 1], changed);
    assert_eq!(got[inner as usize - 2], ticket("a", inner - 1));
    assert_eq!(got[inner as usize], ticket("a", inner + 1));
    assert_eq!(got[n as usize].order_id, far);
    let keys: Vec<u64> = store
        .raw_tickets()
        .map(|r| ticket_key_parts(&r.unwrap().0).unwrap().1)
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order");
    assert_eq!(
        store
            .ticket(&ProjectId::parse("a").unwrap(), inner)
            .unwrap(),
        Some(changed)
    );
    assert_eq!(
        store
            .ticket(&ProjectId::parse("a").unwrap(), n + 1)
            .unwrap(),
        None
    );
}

#[test]
fn ticket_keys_split_back_into_project_and_order() {
    let p = ProjectId::parse("proj-1").unwrap();
    assert_eq!(ticket_key_parts(&ticket_key(&p, 258)), Some((p, 258)));
    assert_eq!(ticket_key_parts(b"d12345678"), None);
    assert_eq!(ticket_key_parts(b"t"), None);
}

#[test]
fn a_commit_stores_tickets_dead_letters_and_position_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.applied_seq().unwrap(), 0);
    let dl = DeadLetter {
        seq: 3,
        subject: "s".into(),
        code: "malformed_json".into(),
        reason: "bad".into(),
        payload: vec![0, 159, 146, 150, b'{'],
        redriven_by: None,
        ce_headers: Vec::new(),
    };
    store
        .write(
            &[ticket("a", 2), ticket("a", 10), ticket("b", 1)],
            [],
            [&dl],
            3,
        )
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.applied_seq().unwrap(), 3);
    let all: Vec<_> = store.tickets().map(Result::unwrap).collect();
    let keys: Vec<_> = all
        .iter()
        .map(|t| (t.project.as_str(), t.order_id))
        .collect();
    assert_eq!(keys, [("a", 2), ("a", 10), ("b", 1)]);
    assert_eq!(
        store.ticket(&ProjectId::parse("a").unwrap(), 10).unwrap(),
        Some(ticket("a", 10))
    );
    assert_eq!(
        store.ticket(&ProjectId::parse("b").unwrap(), 10).unwrap(),
        None
    );
    let dls: Vec<_> = store.dead_letters().map(Result::unwrap).collect();
    assert_eq!(dls, [dl]);
}
