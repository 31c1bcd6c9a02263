//! The fold: the ticket state machine as a pure function.
//!
//! `(ticket or none, event) -> new ticket | rejection`. No I/O, no clock, no randomness: the
//! projection is a function of the stream's order alone, so replaying the same stream gives
//! byte-identical records, and an auditor can recompute any record from the events.
//!
//! # Transitions
//!
//! | kind        | from                                  | to         |
//! |-------------|---------------------------------------|------------|
//! | `created`   | (no ticket)                           | READY      |
//! | `started`   | READY                                 | PROCESSING |
//! | `paused`    | READY, PROCESSING                     | PAUSED     |
//! | `resumed`   | PAUSED, ABNORMAL                      | PROCESSING |
//! | `abnormal`  | READY, PROCESSING, PAUSED             | ABNORMAL   |
//! | `finished`  | READY, PROCESSING                     | FINISHED   |
//! | `cancelled` | READY, PROCESSING, PAUSED, ABNORMAL   | CANCELED   |
//!
//! `finished` and `cancelled` end a ticket: they set `gmt_finished` to the event time and
//! `execute_costs = gmt_finished - gmt_created` in milliseconds (the spec's example proves the
//! unit), and close the instances still running ([`crate::core::job`]). Everything else is a
//! [`FoldRejection`].
//!
//! Contract v1.1 adds: `batch_started` (any status that is not final; sets
//! `current_execute_batch_index`), `operation_requested` (any status: it changes nothing and is
//! kept in the history, with what was asked, as a note), and the instance events, whose rules
//! are in [`crate::core::job`]. An instance event is kept in its instance's own history, so that
//! a ticket of thousands of hosts does not carry them all in its record; one that names no
//! instance of the ticket is kept in the ticket's.

use serde::{Deserialize, Serialize};

use crate::core::domain::{ProjectId, Status, Text};
use crate::core::events::{Detail, Event, InstanceEvent, Kind};
use crate::core::job::{self, InstanceStatus, Plan};

/// A materialised ticket: the API's list model plus what audit needs.
///
/// Field order is the serialised order; records are compared byte for byte by replay checks, so
/// it must not depend on anything but the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Tenant: the project of the ticket's events.
    pub project: ProjectId,
    /// Key within the project; the list is ordered by it, newest (largest) first.
    pub order_id: u64,
    /// Ticket name, from `created`.
    pub order_name: Text,
    /// Details-page id, from `created`.
    pub execute_uuid: Text,
    /// Creator, from `created`.
    pub creator: Text,
    /// `properties.region_ids`, from `created`.
    pub region_ids: Text,
    /// Job type (`coc:JobType`), from `created`.
    pub job_type: Text,
    /// Time of `created`, ms.
    pub gmt_created: i64,
    /// Time of `finished`/`cancelled`, ms; `None` while the ticket is not over.
    pub gmt_finished: Option<i64>,
    /// `gmt_finished - gmt_created`, ms; `None` while the ticket is not over.
    pub execute_costs: Option<i64>,
    /// Current status.
    pub status: Status,
    /// The batch the last `batch_started` named.
    #[serde(default)]
    pub current_execute_batch_index: Option<u32>,
    /// Duplicates no longer in a history because it holds the last [`DUPLICATES_KEPT`] of them
    /// (the ticket's own and its instances' together): a publisher stuck in a retry loop must
    /// not grow a record without bound, yet nothing it sent goes uncounted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duplicates_unrecorded: u64,
    /// Every event that touched this ticket, in stream order, with its outcome: the audit trail.
    /// The fields above are the ticket's state; a rejected or duplicate event never changes them,
    /// it is only recorded here (and, if rejected, in the dead letters). Instance events are in
    /// their instance's history instead.
    pub history: Vec<HistoryEntry>,
    /// The script, batches and instances, when `created` carried them (contract v1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<Plan>>,
}

/// How many duplicates one history (a ticket's, or one instance's) records; older ones are only
/// counted in [`Ticket::duplicates_unrecorded`].
pub const DUPLICATES_KEPT: usize = 16;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Appends an event's entry to a history. A duplicate beyond [`DUPLICATES_KEPT`] takes the place
/// of the oldest one recorded, which is then only counted: the history stays bounded, and still
/// ends with the last event that touched it (what `verify` anchors a moving record at).
fn record(history: &mut Vec<HistoryEntry>, unrecorded: &mut u64, entry: HistoryEntry) {
    let is_duplicate = |h: &HistoryEntry| h.outcome == Outcome::Duplicate;
    if is_duplicate(&entry) && history.iter().filter(|h| is_duplicate(h)).count() >= DUPLICATES_KEPT
    {
        let oldest = history
            .iter()
            .position(is_duplicate)
            .expect("counted above");
        history.remove(oldest);
        *unrecorded += 1;
    }
    history.push(entry);
}

impl Ticket {
    /// The stream sequence of the last event that touched the ticket or one of its instances.
    pub fn last_seq(&self) -> u64 {
        let own = self.history.last().map_or(0, |h| h.seq);
        let instances = self.plan.iter().flat_map(|p| p.instances());
        instances
            .filter_map(|(_, i)| i.history.last().map(|h| h.seq))
            .fold(own, u64::max)
    }
}

/// One event as seen by one ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// JetStream stream sequence of the event.
    pub seq: u64,
    /// CloudEvents `id`.
    pub id: Text,
    /// Event kind.
    pub kind: Kind,
    /// CloudEvents `time`, ms.
    pub time_ms: i64,
    /// CloudEvents `source`.
    pub source: Text,
    /// What the fold did with it.
    pub outcome: Outcome,
    /// What an `operation_requested` asked for, and who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the fold did with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// It changed the ticket.
    Applied,
    /// An event with the same `id` was applied before: skipped (redelivery or publisher retry).
    Duplicate,
    /// Refused; the ticket is unchanged and the event is in the dead letters.
    Rejected {
        /// Stable reason code.
        code: String,
        /// Human-readable reason.
        reason: String,
    },
}

/// Why a well-formed event cannot be applied to the ticket it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldRejection {
    /// Only `created` may name a ticket that does not exist yet.
    #[error("no ticket with this project and order_id has been created")]
    UnknownTicket,
    /// A ticket is created once; a second `created` with another `id` is not a retry.
    #[error("ticket already exists (status {0})")]
    AlreadyCreated(Status),
    /// FINISHED and CANCELED are final.
    #[error("ticket is {status}, which is final: {kind} is not allowed")]
    Closed {
        /// The final status.
        status: Status,
        /// The refused kind.
        kind: Kind,
    },
    /// The state machine has no edge for this kind from this status.
    #[error("{kind} is not allowed from {status}")]
    IllegalTransition {
        /// Current status.
        status: Status,
        /// The refused kind.
        kind: Kind,
    },
    /// An end time before the creation time would give a negative `execute_costs`.
    #[error("end time {end_ms} is before gmt_created {created_ms}")]
    EndBeforeCreated {
        /// The event's time.
        end_ms: i64,
        /// The ticket's creation time.
        created_ms: i64,
    },
    /// The ticket has no batch with this index (or no plan at all).
    #[error("the ticket has no batch {0}")]
    UnknownBatch(u32),
    /// The batch has no instance with this id.
    #[error("batch {batch_index} has no instance {instance_id}")]
    UnknownInstance {
        /// The batch named.
        batch_index: u32,
        /// The instance named.
        instance_id: u64,
    },
    /// Instance events stop when the ticket is over.
    #[error("the ticket is {0}, which is final: its instances no longer change")]
    InstanceOfClosedTicket(Status),
    /// The instance state machine has no edge for this kind from this status.
    #[error("{kind} is not allowed from instance status {status}")]
    IllegalInstanceTransition {
        /// The instance's status.
        status: InstanceStatus,
        /// The refused kind.
        kind: Kind,
    },
    /// An instance cannot end before it started.
    #[error("end time {end_ms} is before the instance's start {started_ms}")]
    InstanceEndBeforeStart {
        /// The event's time.
        end_ms: i64,
        /// The instance's start.
        started_ms: i64,
    },
}

impl FoldRejection {
    /// Stable machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            FoldRejection::UnknownTicket => "unknown_ticket",
            FoldRejection::AlreadyCreated(_) => "already_created",
            FoldRejection::Closed { .. } => "ticket_closed",
            FoldRejection::IllegalTransition { .. } => "illegal_transition",
            FoldRejection::EndBeforeCreated { .. } => "end_before_created",
            FoldRejection::UnknownBatch(_) => "unknown_batch",
            FoldRejection::UnknownInstance { .. } => "unknown_instance",
            FoldRejection::InstanceOfClosedTicket(_) => "instance_ticket_closed",
            FoldRejection::IllegalInstanceTransition { .. } => "illegal_instance_transition",
            FoldRejection::InstanceEndBeforeStart { .. } => "instance_end_before_start",
        }
    }
}

/// The result of folding one event into one ticket's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built once per event and consumed at once: boxing buys nothing
pub enum Folded {
    /// The new state (history appended).
    Applied(Ticket),
    /// The event's `id` was already applied to this ticket (or instance).
    Duplicate,
}

/// What one event did (see [`apply_in_place`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// It changed the ticket (or was kept as applied: `operation_requested`).
    Applied,
    /// Its `id` was applied before.
    Duplicate,
    /// Refused: it goes to the dead letters.
    Rejected(FoldRejection),
}

/// The statuses each ticket-level kind may leave, and the status it leads to (`None`: it
/// changes no status). `created` is handled apart because its source is "no ticket".
fn edge(kind: Kind) -> (&'static [Status], Option<Status>) {
    use Status::*;
    match kind {
        Kind::Created => (&[], Some(Ready)),
        Kind::Started => (&[Ready], Some(Processing)),
        Kind::Paused => (&[Ready, Processing], Some(Paused)),
        Kind::Resumed => (&[Paused, Abnormal], Some(Processing)),
        Kind::Abnormal => (&[Ready, Processing, Paused], Some(Abnormal)),
        Kind::Finished => (&[Ready, Processing], Some(Finished)),
        Kind::Cancelled => (&[Ready, Processing, Paused, Abnormal], Some(Canceled)),
        Kind::BatchStarted => (&[Ready, Processing, Paused, Abnormal], None),
        Kind::OperationRequested => (&Status::ALL, None),
        // Instance kinds never reach here (see `apply_instance`).
        _ => (&[], None),
    }
}

/// The instance statuses each instance kind may leave, and the one it leads to.
fn instance_edge(kind: Kind) -> (&'static [InstanceStatus], InstanceStatus) {
    use InstanceStatus::*;
    match kind {
        Kind::InstanceStarted => (&[Ready], Processing),
        Kind::InstanceFinished => (&[Processing], Finished),
        Kind::InstanceAbnormal => (&[Ready, Processing], Abnormal),
        _ => (&[Ready, Processing, Abnormal], Canceled),
    }
}

/// Folds one event into a ticket's state. Pure; the ticket is copied (see [`apply_in_place`]
/// for the form ingest uses).
pub fn fold(ticket: Option<&Ticket>, event: &Event) -> Result<Folded, FoldRejection> {
    let mut t = ticket.cloned();
    match apply_in_place(&mut t, event.clone(), 0) {
        Effect::Applied => Ok(Folded::Applied(
            t.expect("an applied event leaves a ticket"),
        )),
        Effect::Duplicate => Ok(Folded::Duplicate),
        Effect::Rejected(r) => Err(r),
    }
}

/// What a ticket-level event does to a ticket, decided without copying the ticket.
enum Change {
    /// The first `created` of a ticket: [`created`] makes it.
    Create,
    /// A legal transition; `finished_at` is set when it ends the ticket.
    Move {
        to: Option<Status>,
        finished_at: Option<i64>,
    },
    /// Already applied.
    Duplicate,
}

impl Ticket {
    fn apply_move(&mut self, event: &Event, to: Option<Status>, finished_at: Option<i64>) {
        if let Some(to) = to {
            self.status = to;
        }
        if let Detail::Batch { batch_index } = event.detail {
            self.current_execute_batch_index = Some(batch_index);
        }
        if let Some(end) = finished_at {
            self.gmt_finished = Some(end);
            self.execute_costs = Some(end - self.gmt_created);
            if let Some(plan) = self.plan.as_mut() {
                plan.close_running(end, event.kind.as_str());
            }
        }
    }
}

/// The ticket a `created` event makes (READY, no history yet), moving the event's strings.
fn created(event: Event) -> Ticket {
    let c = event.created.unwrap_or_default();
    Ticket {
        project: event.project,
        order_id: event.order_id,
        order_name: c.order_name,
        execute_uuid: c.execute_uuid,
        creator: c.creator,
        region_ids: c.region_ids,
        job_type: c.job_type,
        gmt_created: event.time_ms,
        gmt_finished: None,
        execute_costs: None,
        status: Status::Ready,
        current_execute_batch_index: None,
        duplicates_unrecorded: 0,
        history: Vec::new(),
        plan: c.plan,
    }
}

fn applied_before(history: &[HistoryEntry], id: &str) -> bool {
    history
        .iter()
        .any(|h| h.outcome == Outcome::Applied && h.id == id)
}

/// The state machine's decision for a ticket-level event (the rules of [`fold`]).
fn decide(ticket: Option<&Ticket>, event: &Event) -> Result<Change, FoldRejection> {
    let Some(t) = ticket else {
        return match &event.created {
            Some(_) if event.kind == Kind::Created => Ok(Change::Create),
            _ => Err(FoldRejection::UnknownTicket),
        };
    };
    if applied_before(&t.history, &event.id) {
        return Ok(Change::Duplicate);
    }
    if event.kind == Kind::Created {
        return Err(FoldRejection::AlreadyCreated(t.status));
    }
    if t.status.is_terminal() && event.kind != Kind::OperationRequested {
        return Err(FoldRejection::Closed {
            status: t.status,
            kind: event.kind,
        });
    }
    let (from, to) = edge(event.kind);
    if !from.contains(&t.status) {
        return Err(FoldRejection::IllegalTransition {
            status: t.status,
            kind: event.kind,
        });
    }
    if let Detail::Batch { batch_index } = event.detail
        && t.plan.as_ref().and_then(|p| p.batch(batch_index)).is_none()
    {
        return Err(FoldRejection::UnknownBatch(batch_index));
    }
    let ends = to.is_some_and(Status::is_terminal);
    if ends && event.time_ms < t.gmt_created {
        return Err(FoldRejection::EndBeforeCreated {
            end_ms: event.time_ms,
            created_ms: t.gmt_created,
        });
    }
    Ok(Change::Move {
        to,
        finished_at: ends.then_some(event.time_ms),
    })
}

/// The effect of one event at stream sequence `seq` on the ticket it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The ticket after the event (`None`: there is still no ticket).
    pub ticket: Option<Ticket>,
    /// Set when the event was rejected: it goes to the dead letters.
    pub rejection: Option<FoldRejection>,
}

/// Folds an event and records it in the ticket's history. Pure.
pub fn apply(ticket: Option<Ticket>, event: &Event, seq: u64) -> Step {
    apply_owned(ticket, event.clone(), seq)
}

/// [`apply`], taking the event too, so that its strings move into the ticket and its history
/// instead of being copied.
pub fn apply_owned(mut ticket: Option<Ticket>, event: Event, seq: u64) -> Step {
    let rejection = match apply_in_place(&mut ticket, event, seq) {
        Effect::Rejected(r) => Some(r),
        _ => None,
    };
    Step { ticket, rejection }
}

/// The history entry of an event, its strings moved out of it.
fn entry(event: &mut Event, seq: u64, effect: &Effect) -> HistoryEntry {
    HistoryEntry {
        seq,
        id: std::mem::take(&mut event.id),
        kind: event.kind,
        time_ms: event.time_ms,
        source: std::mem::take(&mut event.source),
        outcome: match effect {
            Effect::Applied => Outcome::Applied,
            Effect::Duplicate => Outcome::Duplicate,
            Effect::Rejected(r) => Outcome::Rejected {
                code: r.code().to_owned(),
                reason: r.to_string(),
            },
        },
        note: match &event.detail {
            Detail::Operation(op) => Some(op.note()),
            _ => None,
        },
    }
}

/// [`apply_owned`] on a ticket that stays where it is (what ingest does): the ticket is changed
/// in place, never moved, and the event recorded in the history it belongs to.
pub fn apply_in_place(ticket: &mut Option<Ticket>, mut event: Event, seq: u64) -> Effect {
    if let Detail::Instance(i) = &event.detail {
        let i = i.clone();
        return apply_instance(ticket, event, &i, seq);
    }
    let effect = match decide(ticket.as_ref(), &event) {
        Ok(Change::Create) => {
            let history = entry(&mut event, seq, &Effect::Applied);
            let mut t = created(event);
            t.history.push(history);
            *ticket = Some(t);
            return Effect::Applied;
        }
        Ok(Change::Move { to, finished_at }) => {
            if let Some(t) = ticket.as_mut() {
                t.apply_move(&event, to, finished_at);
            }
            Effect::Applied
        }
        Ok(Change::Duplicate) => Effect::Duplicate,
        Err(r) => Effect::Rejected(r),
    };
    if let Some(t) = ticket.as_mut() {
        let e = entry(&mut event, seq, &effect);
        record(&mut t.history, &mut t.duplicates_unrecorded, e);
    }
    effect
}

/// The instance events' rules (see [`crate::core::job`]).
fn apply_instance(
    ticket: &mut Option<Ticket>,
    mut event: Event,
    at: &InstanceEvent,
    seq: u64,
) -> Effect {
    let Some(t) = ticket.as_mut() else {
        return Effect::Rejected(FoldRejection::UnknownTicket);
    };
    let status = t.status;
    let place = t
        .plan
        .as_ref()
        .and_then(|p| {
            p.batches
                .iter()
                .position(|b| b.batch_index == at.batch_index)
        })
        .ok_or(FoldRejection::UnknownBatch(at.batch_index))
        .and_then(|b| {
            let batch = &t.plan.as_ref().expect("located above").batches[b];
            batch
                .instances
                .binary_search_by_key(&at.instance_id, job::Instance::id)
                .map(|i| (b, i))
                .map_err(|_| FoldRejection::UnknownInstance {
                    batch_index: at.batch_index,
                    instance_id: at.instance_id,
                })
        });
    let (b, pos) = match place {
        Ok(place) => place,
        Err(r) => {
            let effect = Effect::Rejected(r);
            t.history.push(entry(&mut event, seq, &effect));
            return effect;
        }
    };
    // Copied here if a snapshot still shares it (see `Plan::batches`).
    let batch = std::sync::Arc::make_mut(&mut t.plan.as_mut().expect("located above").batches[b]);
    let instance = &mut batch.instances[pos];
    let (from, to) = instance_edge(event.kind);
    let started = instance.gmt_created;
    let effect = if applied_before(&instance.history, &event.id) {
        Effect::Duplicate
    } else if status.is_terminal() {
        Effect::Rejected(FoldRejection::InstanceOfClosedTicket(status))
    } else if !from.contains(&instance.status) {
        Effect::Rejected(FoldRejection::IllegalInstanceTransition {
            status: instance.status,
            kind: event.kind,
        })
    } else if let Some(s) =
        started.filter(|s| to != InstanceStatus::Processing && event.time_ms < *s)
    {
        Effect::Rejected(FoldRejection::InstanceEndBeforeStart {
            end_ms: event.time_ms,
            started_ms: s,
        })
    } else {
        instance.status = to;
        if to == InstanceStatus::Processing {
            instance.gmt_created = Some(event.time_ms);
        } else {
            instance.gmt_finished = Some(event.time_ms);
        }
        if let Some(m) = &at.message {
            instance.message = Some(m.clone());
        }
        Effect::Applied
    };
    let e = entry(&mut event, seq, &effect);
    record(&mut instance.history, &mut t.duplicates_unrecorded, e);
    effect
}

#[cfg(test)]
mod tests;
