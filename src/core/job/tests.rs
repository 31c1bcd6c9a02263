//! The plan and instance rules, through the decoder and the fold, as ingest meets them.

use serde_json::{Value, json};

use crate::core::domain::{ProjectId, Status};
use crate::core::events::{self, Kind};
use crate::core::fold::{self, Effect, FoldRejection, Outcome, Ticket};
use crate::core::job::{self, InstanceStatus, MASK, Operation, OperationType, Refusal};
use crate::core::record;

const PREFIX: &str = "coc.job.script";

fn envelope(kind: &str, id: &str, time: &str, data: Value) -> (String, Vec<u8>) {
    let v = json!({
        "specversion": "1.0", "id": id, "source": "exec", "type": format!("coc.job.script.{kind}"),
        "time": time, "data": data,
    });
    (
        format!("{PREFIX}.p.{kind}"),
        serde_json::to_vec(&v).unwrap(),
    )
}

fn decode(
    kind: &str,
    id: &str,
    time: &str,
    data: Value,
) -> Result<events::Event, events::DecodeError> {
    let (subject, bytes) = envelope(kind, id, time, data);
    events::decode(&subject, &bytes, PREFIX, 1 << 20)
}

fn plan_data() -> Value {
    json!({
        "project_id": "p", "order_id": 5, "execute_uuid": "SCT5", "order_name": "patch",
        "creator": "alice", "region_ids": "cn-north-4",
        "script_uuid": "SC1", "script_name": "install", "script_version_uuid": 7,
        "script_version_name": "v7",
        "execute_param": {"resourceful": true, "timeout": 300, "success_rate": 99.5,
            "execute_user": "root", "script_params": [
                {"param_name": "pkg", "param_value": "nginx", "param_order": 1},
                {"param_name": "token", "param_value": "s3cret", "param_order": 2, "sensitive": true,
                 "param_refer": {"refer_type": "PARAM", "param_id": "x", "param_version": "1"}}]},
        "execute_batches": [
            {"batch_index": 2, "rotation_strategy": "PAUSE", "target_instances": [
                {"instance_id": 30, "resource_id": "r30"}]},
            {"batch_index": 1, "rotation_strategy": "CONTINUE", "properties": "{\"a\":1}",
             "target_instances": [
                {"instance_id": 20, "resource_id": "r20", "type": "ECS",
                 "custom_attributes": [{"key": "k", "value": "v"}],
                 "properties": {"host_name": "web-20", "fixed_ip": "10.0.0.20"}},
                {"instance_id": 10, "resource_id": "r10"}]}
        ]
    })
}

fn t(s: u32) -> String {
    format!("2026-01-01T00:00:{s:02}Z")
}

fn ticket() -> Ticket {
    let e = decode("created", "c", &t(0), plan_data()).unwrap();
    fold::apply(None, &e, 1).ticket.unwrap()
}

fn instance_event(kind: &str, id: &str, s: u32, batch: u64, instance: u64) -> events::Event {
    decode(
        kind,
        id,
        &t(s),
        json!({"project_id": "p", "order_id": 5, "batch_index": batch, "instance_id": instance,
               "message": format!("{kind} {instance}")}),
    )
    .unwrap()
}

fn step(t: &mut Option<Ticket>, e: events::Event, seq: u64) -> Effect {
    fold::apply_in_place(t, e, seq)
}

fn instance(t: &Ticket, id: u64) -> &job::Instance {
    t.plan
        .as_ref()
        .unwrap()
        .instances()
        .find(|(_, i)| i.id() == id)
        .unwrap()
        .1
}

#[test]
fn created_carries_the_plan_sorted_with_sensitive_values_masked() {
    let t = ticket();
    let plan = t.plan.as_ref().unwrap();
    assert_eq!(plan.script.script_version_uuid, Some(7));
    let p = plan.script.execute_param.as_ref().unwrap();
    assert_eq!(p.success_rate.unwrap().0, 99.5);
    assert_eq!(p.script_params[0].param_value, "nginx");
    assert_eq!(p.script_params[1].param_value, MASK);
    assert!(p.script_params[1].sensitive);
    let indexes: Vec<u32> = plan.batches.iter().map(|b| b.batch_index).collect();
    assert_eq!(indexes, [1, 2]);
    let ids: Vec<u64> = plan.batches[0].instances.iter().map(|i| i.id()).collect();
    assert_eq!(ids, [10, 20]);
    assert!(
        plan.instances()
            .all(|(_, i)| i.status == InstanceStatus::Ready)
    );
    let bytes = serde_json::to_vec(&t).unwrap();
    assert!(!String::from_utf8(bytes).unwrap().contains("s3cret"));
}

#[test]
fn a_bad_plan_is_invalid_data_with_its_reason() {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = plan_data();
        f(&mut d);
        decode("created", "c", &t(0), d).unwrap_err()
    };
    for (e, says) in [
        (
            with(&|d| d["script_version_uuid"] = json!("v7")),
            "invalid type",
        ),
        (
            with(&|d| d["execute_batches"][0]["rotation_strategy"] = json!("STOP")),
            "rotation_strategy",
        ),
        (
            with(&|d| d["execute_batches"][0]["batch_index"] = json!(0)),
            "batch_index",
        ),
        (
            with(&|d| d["execute_batches"][1]["batch_index"] = json!(2)),
            "given twice",
        ),
        (
            with(&|d| d["execute_batches"][0]["target_instances"][0]["instance_id"] = json!(10)),
            "instance_id 10",
        ),
        (
            with(&|d| d["execute_batches"][0]["target_instances"][0]["instance_id"] = json!(0)),
            "greater than 0",
        ),
        (
            with(&|d| d["execute_param"]["success_rate"] = json!(101)),
            "success_rate",
        ),
    ] {
        assert_eq!(e.code(), "invalid_data", "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn instance_events_need_their_batch_and_instance() {
    let d = |v: Value| {
        decode("instance_started", "i", &t(1), v)
            .unwrap_err()
            .code()
    };
    assert_eq!(
        d(json!({"project_id": "p", "order_id": 5, "instance_id": 1})),
        "invalid_data"
    );
    assert_eq!(
        d(json!({"project_id": "p", "order_id": 5, "batch_index": 1})),
        "invalid_data"
    );
    assert_eq!(
        d(json!({"project_id": "p", "order_id": 5, "batch_index": 1, "instance_id": 0})),
        "invalid_data"
    );
    // The scanner hands a v1.1 field it does not read to serde instead of skipping it.
    let e = decode(
        "operation_requested",
        "o",
        &t(1),
        json!({"project_id": "p", "order_id": 5,
        "execute_uuid": "SCT5", "operation_type": "PAUSE_ORDER", "requested_by": "bob"}),
    )
    .unwrap();
    assert!(
        matches!(e.detail, events::Detail::Operation(ref o) if o.operation.operation_type == OperationType::PauseOrder)
    );
    let long = "x".repeat(10_000);
    let e = decode(
        "instance_finished",
        "f",
        &t(1),
        json!({"project_id": "p", "order_id": 5,
        "batch_index": 1, "instance_id": 10, "message": long}),
    )
    .unwrap();
    let events::Detail::Instance(i) = e.detail else {
        panic!()
    };
    assert!(i.message.unwrap().len() <= job::MAX_MESSAGE_BYTES);
}

#[test]
fn every_instance_transition_matches_the_table() {
    use InstanceStatus::*;
    let table: &[(&str, &[InstanceStatus], InstanceStatus)] = &[
        ("instance_started", &[Ready], Processing),
        ("instance_finished", &[Processing], Finished),
        ("instance_abnormal", &[Ready, Processing], Abnormal),
        (
            "instance_cancelled",
            &[Ready, Processing, Abnormal],
            Canceled,
        ),
    ];
    for &(kind, from, to) in table {
        for status in InstanceStatus::ALL {
            let mut tk = ticket();
            let plan = tk.plan.as_mut().unwrap();
            let first = &mut std::sync::Arc::make_mut(&mut plan.batches[0]).instances[0];
            first.status = status;
            first.gmt_created = Some(0);
            let mut tk = Some(tk);
            let effect = step(&mut tk, instance_event(kind, "x", 5, 1, 10), 2);
            let i = instance(tk.as_ref().unwrap(), 10);
            if from.contains(&status) {
                assert_eq!(effect, Effect::Applied, "{kind} from {status}");
                assert_eq!(i.status, to);
                assert_eq!(i.message.as_deref(), Some(&*format!("{kind} 10")));
            } else {
                let want = FoldRejection::IllegalInstanceTransition {
                    status,
                    kind: Kind::parse(kind).unwrap(),
                };
                assert_eq!(effect, Effect::Rejected(want), "{kind} from {status}");
                assert_eq!(i.status, status);
            }
            // Either way the event is in the instance's history, not the ticket's.
            assert_eq!(i.history.len(), 1);
            assert_eq!(tk.as_ref().unwrap().history.len(), 1);
        }
    }
}

#[test]
fn an_instance_keeps_its_times_and_costs() {
    let mut tk = Some(ticket());
    assert_eq!(
        step(
            &mut tk,
            instance_event("instance_started", "s", 3, 1, 10),
            2
        ),
        Effect::Applied
    );
    let i = instance(tk.as_ref().unwrap(), 10);
    assert_eq!(
        (i.gmt_created.is_some(), i.gmt_finished, i.execute_costs()),
        (true, None, None)
    );
    assert_eq!(
        step(
            &mut tk,
            instance_event("instance_finished", "f", 8, 1, 10),
            3
        ),
        Effect::Applied
    );
    let i = instance(tk.as_ref().unwrap(), 10);
    assert_eq!(i.execute_costs(), Some(5_000));
    // A redelivery is a duplicate, in the instance's history.
    assert_eq!(
        step(
            &mut tk,
            instance_event("instance_finished", "f", 9, 1, 10),
            4
        ),
        Effect::Duplicate
    );
    assert_eq!(
        instance(tk.as_ref().unwrap(), 10).history[2].outcome,
        Outcome::Duplicate
    );
    // So many redeliveries are recorded; the rest are counted on the ticket.
    for n in 0..crate::core::fold::DUPLICATES_KEPT as u64 + 2 {
        step(
            &mut tk,
            instance_event("instance_finished", "f", 9, 1, 10),
            100 + n,
        );
    }
    let recorded = instance(tk.as_ref().unwrap(), 10).history.iter();
    let duplicates = recorded.filter(|h| h.outcome == Outcome::Duplicate).count();
    assert_eq!(duplicates, crate::core::fold::DUPLICATES_KEPT);
    assert_eq!(tk.as_ref().unwrap().duplicates_unrecorded, 3);
    // An end before the start is refused.
    step(
        &mut tk,
        instance_event("instance_started", "s2", 6, 1, 20),
        5,
    );
    assert_eq!(
        step(
            &mut tk,
            instance_event("instance_abnormal", "a2", 4, 1, 20),
            6
        ),
        Effect::Rejected(FoldRejection::InstanceEndBeforeStart {
            end_ms: 1_767_225_604_000,
            started_ms: 1_767_225_606_000
        })
    );
}

#[test]
fn unknown_batches_and_instances_are_refused_in_the_tickets_history() {
    let mut tk = Some(ticket());
    let codes: Vec<&str> = [
        instance_event("instance_started", "a", 1, 9, 10),
        instance_event("instance_started", "b", 1, 2, 10),
        instance_event("instance_started", "c", 1, 1, 99),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, e)| match step(&mut tk, e, 2 + n as u64) {
        Effect::Rejected(r) => r.code(),
        other => panic!("{other:?}"),
    })
    .collect();
    assert_eq!(
        codes,
        ["unknown_batch", "unknown_instance", "unknown_instance"]
    );
    assert_eq!(tk.as_ref().unwrap().history.len(), 4);
    // A ticket without a plan has no batch at all.
    let mut plain = ticket();
    plain.plan = None;
    let mut plain = Some(plain);
    assert_eq!(
        step(
            &mut plain,
            instance_event("instance_started", "a", 1, 1, 10),
            2
        ),
        Effect::Rejected(FoldRejection::UnknownBatch(1))
    );
    assert_eq!(
        step(
            &mut None,
            instance_event("instance_started", "a", 1, 1, 10),
            2
        ),
        Effect::Rejected(FoldRejection::UnknownTicket)
    );
}

fn ticket_event(kind: &str, id: &str, s: u32, extra: Value) -> events::Event {
    let mut d = json!({"project_id": "p", "order_id": 5});
    d.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    decode(kind, id, &t(s), d).unwrap()
}

#[test]
fn the_tickets_end_closes_running_instances_and_stops_instance_events() {
    for how in ["finished", "cancelled"] {
        let mut tk = Some(ticket());
        step(
            &mut tk,
            instance_event("instance_started", "s", 2, 1, 10),
            2,
        );
        step(
            &mut tk,
            instance_event("instance_abnormal", "a", 3, 1, 20),
            3,
        );
        step(&mut tk, ticket_event("started", "st", 1, json!({})), 4);
        assert_eq!(
            step(&mut tk, ticket_event(how, "end", 9, json!({})), 5),
            Effect::Applied
        );
        let t = tk.as_ref().unwrap();
        assert_eq!(instance(t, 10).status, InstanceStatus::Canceled);
        assert_eq!(instance(t, 10).gmt_finished, t.gmt_finished);
        assert_eq!(
            instance(t, 20).status,
            InstanceStatus::Abnormal,
            "an ended instance stays"
        );
        assert_eq!(instance(t, 30).status, InstanceStatus::Canceled);
        assert_eq!(
            step(
                &mut tk,
                instance_event("instance_cancelled", "late", 10, 1, 20),
                6
            ),
            Effect::Rejected(FoldRejection::InstanceOfClosedTicket(
                tk.as_ref().unwrap().status
            ))
        );
    }
}

#[test]
fn batch_started_sets_the_current_batch_and_operations_are_noted() {
    let mut tk = Some(ticket());
    assert_eq!(
        step(
            &mut tk,
            ticket_event("batch_started", "b", 1, json!({"batch_index": 2})),
            2
        ),
        Effect::Applied
    );
    assert_eq!(tk.as_ref().unwrap().current_execute_batch_index, Some(2));
    assert_eq!(
        step(
            &mut tk,
            ticket_event("batch_started", "b9", 1, json!({"batch_index": 9})),
            3
        ),
        Effect::Rejected(FoldRejection::UnknownBatch(9))
    );
    step(&mut tk, ticket_event("cancelled", "x", 5, json!({})), 4);
    let op = json!({"execute_uuid": "SCT5", "operation_type": "CANCEL_INSTANCE", "batch_index": 1,
        "instance_id": 10, "requested_by": "bob"});
    // Noted even on a closed ticket: it is a request, not a transition.
    assert_eq!(
        step(&mut tk, ticket_event("operation_requested", "o", 6, op), 5),
        Effect::Applied
    );
    let last = tk.as_ref().unwrap().history.last().unwrap().clone();
    assert_eq!(
        last.note.as_deref(),
        Some("CANCEL_INSTANCE batch 1 instance 10, requested by bob")
    );
    assert_eq!(tk.unwrap().status, Status::Canceled);
}

#[test]
fn operations_are_checked_against_the_ticket() {
    let op = |o, b, i| Operation {
        operation_type: o,
        batch_index: b,
        instance_id: i,
    };
    use OperationType::*;
    let mut t = ticket();
    assert_eq!(job::check(&t, &op(CancelOrder, None, None)), Ok(()));
    assert_eq!(job::check(&t, &op(PauseOrder, None, None)), Ok(()));
    assert_eq!(
        job::check(&t, &op(ContinueOrder, None, None))
            .unwrap_err()
            .code(),
        "wrong_status"
    );
    assert_eq!(job::check(&t, &op(SkipBatch, Some(2), None)), Ok(()));
    assert_eq!(
        job::check(&t, &op(SkipBatch, Some(3), None)),
        Err(Refusal::UnknownBatch(3))
    );
    assert_eq!(
        job::check(&t, &op(SkipBatch, None, None))
            .unwrap_err()
            .code(),
        "missing_field"
    );
    assert_eq!(job::check(&t, &op(CancelInstance, None, Some(30))), Ok(()));
    assert_eq!(
        job::check(&t, &op(CancelInstance, Some(1), Some(30)))
            .unwrap_err()
            .code(),
        "unknown_instance"
    );
    std::sync::Arc::make_mut(&mut t.plan.as_mut().unwrap().batches[1]).instances[0].status =
        InstanceStatus::Finished;
    assert_eq!(
        job::check(&t, &op(CancelInstance, None, Some(30)))
            .unwrap_err()
            .code(),
        "instance_ended"
    );
    t.status = Status::Paused;
    assert_eq!(job::check(&t, &op(ContinueOrder, None, None)), Ok(()));
    assert_eq!(
        job::check(&t, &op(PauseOrder, None, None))
            .unwrap_err()
            .code(),
        "wrong_status"
    );
    t.status = Status::Finished;
    assert_eq!(
        job::check(&t, &op(CancelOrder, None, None)),
        Err(Refusal::TicketOver(Status::Finished))
    );
    assert_eq!(
        job::check(&t, &op(SkipBatch, Some(1), None))
            .unwrap_err()
            .code(),
        "ticket_over"
    );
}

#[test]
fn a_plan_survives_its_stored_form_and_encoding_round_trips() {
    let mut tk = Some(ticket());
    step(
        &mut tk,
        instance_event("instance_started", "s", 2, 1, 10),
        2,
    );
    let tk = tk.unwrap();
    let plan = tk.plan.as_ref().unwrap();
    let head = record::encode_plan_head(&plan.script);
    let batches: Vec<Vec<u8>> = plan
        .batches
        .iter()
        .map(|b| record::encode_batch(b))
        .collect();
    let back = record::decode_plan(&head, batches.iter().map(|b| &b[..])).unwrap();
    assert_eq!(&back, &**plan);
    let (head_only, has_plan) = record::decode_flagged(&record::encode(&tk)).unwrap();
    assert!(has_plan && head_only.plan.is_none());
    assert!(record::decode_plan(&head[..head.len() - 1], []).is_err());
    // The created event, encoded again, decodes to the same plan.
    let e = decode("created", "c", &t(0), plan_data()).unwrap();
    let again = events::decode(&e.subject(PREFIX), &e.to_bytes(), PREFIX, 1 << 20).unwrap();
    assert_eq!(again, e);
    assert_eq!(again.project, ProjectId::parse("p").unwrap());
}
