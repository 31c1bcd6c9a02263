use super::*;
use crate::core::events::CreatedData;

fn event(kind: Kind, id: &str, time_ms: i64) -> Event {
    Event {
        id: id.into(),
        source: "exec".into(),
        kind,
        time_ms,
        project: ProjectId::parse("p").unwrap(),
        order_id: 7,
        created: (kind == Kind::Created).then(|| CreatedData {
            execute_uuid: "u".into(),
            order_name: "n".into(),
            creator: "c".into(),
            region_ids: "r".into(),
            job_type: "SCRIPT".into(),
            plan: None,
        }),
        detail: Default::default(),
    }
}

fn created_at(t: i64) -> Ticket {
    apply(None, &event(Kind::Created, "c0", t), 1)
        .ticket
        .unwrap()
}

fn in_status(status: Status) -> Ticket {
    let mut t = created_at(1_000);
    t.status = status;
    t
}

/// Every (status, kind) pair: the table in the module docs, checked exhaustively.
#[test]
fn every_transition_matches_the_table() {
    use Status::*;
    let allowed: &[(Kind, &[Status], Status)] = &[
        (Kind::Started, &[Ready], Processing),
        (Kind::Paused, &[Ready, Processing], Paused),
        (Kind::Resumed, &[Paused, Abnormal], Processing),
        (Kind::Abnormal, &[Ready, Processing, Paused], Abnormal),
        (Kind::Finished, &[Ready, Processing], Finished),
        (
            Kind::Cancelled,
            &[Ready, Processing, Paused, Abnormal],
            Canceled,
        ),
    ];
    for &(kind, from, to) in allowed {
        for status in Status::ALL {
            let t = in_status(status);
            let got = fold(Some(&t), &event(kind, "x", 2_000));
            if from.contains(&status) {
                let Ok(Folded::Applied(next)) = got else {
                    panic!("{kind:?} from {status:?} refused: {got:?}")
                };
                assert_eq!(next.status, to, "{kind:?} from {status:?}");
            } else if status.is_terminal() {
                assert_eq!(got, Err(FoldRejection::Closed { status, kind }));
            } else {
                assert_eq!(
                    got,
                    Err(FoldRejection::IllegalTransition { status, kind }),
                    "{kind:?} from {status:?}"
                );
            }
        }
    }
}

#[test]
fn created_makes_a_ready_ticket_from_the_event() {
    let t = created_at(1_690_200_829_451);
    assert_eq!(t.status, Status::Ready);
    assert_eq!(t.gmt_created, 1_690_200_829_451);
    assert_eq!((t.gmt_finished, t.execute_costs), (None, None));
    assert_eq!(t.history.len(), 1);
    assert_eq!(t.history[0].outcome, Outcome::Applied);
    assert_eq!(t.history[0].seq, 1);
}

#[test]
fn only_created_may_name_an_unknown_ticket() {
    for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Created) {
        let step = apply(None, &event(kind, "x", 5), 2);
        assert_eq!(step.ticket, None);
        assert_eq!(step.rejection, Some(FoldRejection::UnknownTicket));
    }
}

#[test]
fn second_created_with_another_id_is_rejected_in_every_status() {
    for status in Status::ALL {
        let t = in_status(status);
        assert_eq!(
            fold(Some(&t), &event(Kind::Created, "other", 5)),
            Err(FoldRejection::AlreadyCreated(status))
        );
    }
}

#[test]
fn ending_sets_finish_time_and_cost_in_milliseconds() {
    // The spec's first example ticket: 1690200850293 - 1690200829451 = 20842.
    for (kind, status) in [
        (Kind::Finished, Status::Finished),
        (Kind::Cancelled, Status::Canceled),
    ] {
        let t = created_at(1_690_200_829_451);
        let step = apply(Some(t), &event(kind, "end", 1_690_200_850_293), 9);
        let t = step.ticket.unwrap();
        assert_eq!(t.status, status);
        assert_eq!(t.gmt_finished, Some(1_690_200_850_293));
        assert_eq!(t.execute_costs, Some(20_842));
    }
}

#[test]
fn an_end_at_the_creation_instant_costs_zero() {
    let t = created_at(50);
    let Ok(Folded::Applied(t)) = fold(Some(&t), &event(Kind::Finished, "f", 50)) else {
        panic!()
    };
    assert_eq!(t.execute_costs, Some(0));
}

#[test]
fn an_end_before_creation_is_rejected() {
    for kind in [Kind::Finished, Kind::Cancelled] {
        let t = created_at(1_000);
        assert_eq!(
            fold(Some(&t), &event(kind, "f", 999)),
            Err(FoldRejection::EndBeforeCreated {
                end_ms: 999,
                created_ms: 1_000
            })
        );
    }
}

#[test]
fn abnormal_and_pause_leave_the_ticket_unfinished() {
    let t = created_at(1_000);
    let t = apply(Some(t), &event(Kind::Abnormal, "a", 2_000), 2)
        .ticket
        .unwrap();
    assert_eq!(t.status, Status::Abnormal);
    assert_eq!((t.gmt_finished, t.execute_costs), (None, None));
    let t = apply(Some(t), &event(Kind::Resumed, "r", 3_000), 3)
        .ticket
        .unwrap();
    let t = apply(Some(t), &event(Kind::Paused, "p", 4_000), 4)
        .ticket
        .unwrap();
    assert_eq!(t.status, Status::Paused);
    assert_eq!(t.gmt_finished, None);
}

#[test]
fn a_history_records_so_many_duplicates_and_counts_the_rest() {
    let mut t = Some(created_at(1_000));
    apply_in_place(&mut t, event(Kind::Started, "s", 2_000), 2);
    let extra = 5;
    for n in 0..DUPLICATES_KEPT as u64 + extra {
        let effect = apply_in_place(&mut t, event(Kind::Started, "s", 2_000), 3 + n);
        assert_eq!(effect, Effect::Duplicate);
    }
    let t = t.unwrap();
    let recorded = t.history.iter().filter(|h| h.outcome == Outcome::Duplicate);
    assert_eq!(recorded.count(), DUPLICATES_KEPT);
    assert_eq!(t.duplicates_unrecorded, extra);
    assert_eq!(t.status, Status::Processing);
    // The last duplicate is the history's last entry; other events are recorded as ever.
    assert_eq!(
        t.history.last().unwrap().seq,
        3 + DUPLICATES_KEPT as u64 + extra - 1
    );
    let mut t = Some(t);
    apply_in_place(&mut t, event(Kind::Finished, "f", 3_000), 100);
    assert_eq!(t.unwrap().history.last().unwrap().seq, 100);
}

#[test]
fn a_redelivered_event_is_a_duplicate_even_after_later_events() {
    let t = created_at(1_000);
    let t = apply(Some(t), &event(Kind::Started, "s", 2_000), 2)
        .ticket
        .unwrap();
    let t = apply(Some(t), &event(Kind::Finished, "f", 3_000), 3)
        .ticket
        .unwrap();
    for (kind, id) in [
        (Kind::Created, "c0"),
        (Kind::Started, "s"),
        (Kind::Finished, "f"),
    ] {
        let step = apply(Some(t.clone()), &event(kind, id, 9_999), 4);
        assert_eq!(step.rejection, None);
        let after = step.ticket.unwrap();
        assert_eq!(after.status, Status::Finished);
        assert_eq!(after.execute_costs, Some(2_000));
        assert_eq!(after.history.last().unwrap().outcome, Outcome::Duplicate);
    }
}

#[test]
fn a_rejected_event_changes_no_state_and_is_recorded() {
    let t = in_status(Status::Finished);
    let step = apply(Some(t.clone()), &event(Kind::Started, "late", 5_000), 8);
    assert_eq!(
        step.rejection,
        Some(FoldRejection::Closed {
            status: Status::Finished,
            kind: Kind::Started
        })
    );
    let after = step.ticket.unwrap();
    let mut state_only = after.clone();
    state_only.history.pop();
    assert_eq!(state_only, t, "state fields must not change");
    let last = after.history.last().unwrap();
    assert_eq!(last.seq, 8);
    assert!(matches!(&last.outcome, Outcome::Rejected { code, .. } if code == "ticket_closed"));
}

#[test]
fn a_rejected_id_may_be_applied_later() {
    // A rejected event is not "applied", so the same id is judged afresh, not as a duplicate.
    let t = created_at(1_000);
    let step = apply(Some(t), &event(Kind::Resumed, "x", 2_000), 2);
    assert!(step.rejection.is_some());
    let step = apply(step.ticket, &event(Kind::Started, "x", 2_000), 3);
    assert_eq!(step.rejection, None);
    assert_eq!(step.ticket.unwrap().status, Status::Processing);
}

#[test]
fn the_fold_is_deterministic() {
    let run = || {
        let mut t = None;
        for (i, (k, id)) in [
            (Kind::Created, "c"),
            (Kind::Started, "s"),
            (Kind::Paused, "p"),
            (Kind::Resumed, "r"),
            (Kind::Started, "bad"),
            (Kind::Cancelled, "x"),
        ]
        .into_iter()
        .enumerate()
        {
            t = apply(t, &event(k, id, 1_000 + i as i64), i as u64 + 1).ticket;
        }
        serde_json::to_vec(&t).unwrap()
    };
    assert_eq!(run(), run());
}
