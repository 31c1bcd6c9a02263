//! Folding a batch of raw stream messages into one [`Commit`].
//!
//! Still the functional core: given the messages and a way to look up a ticket's state before the
//! batch, the result is fixed. Each ticket the batch touches is looked up once, folded as many
//! times as it has events, and written once. The shell ([`crate::ops::ingest`]) reads the messages from
//! JetStream, looks tickets up in sled and commits; the tests and `verify` use a map instead.

use rustc_hash::FxHashMap;

use crate::core::domain::ProjectId;
use crate::core::events;
use serde::{Deserialize, Serialize};

use crate::core::fold::{self, Ticket};

/// One message as read from the stream.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// Stream sequence.
    pub seq: u64,
    /// Subject, as received (a slice of the read buffer, not a copy); read it as text with
    /// [`RawMessage::subject_text`].
    pub subject: bytes::Bytes,
    /// Payload bytes.
    pub payload: bytes::Bytes,
    /// Set when `ticket-ledger redrive` republished a dead letter: the sequence of the original
    /// (header [`REDRIVE_HEADER`]).
    pub redrive_of: Option<u64>,
    /// The headers of a binary-mode CloudEvent (`ce-*` and `content-type`; names lower-cased,
    /// values as received), in order; empty for a structured event.
    pub ce_headers: Vec<(String, String)>,
}

/// Header that marks a republished dead letter with the sequence of the original.
pub const REDRIVE_HEADER: &str = "Ledger-Redrive-Of";

impl RawMessage {
    /// The subject as text (borrowed; a byte that is not UTF-8 becomes U+FFFD, which no valid
    /// subject of an event holds, so such a message is dead-lettered, not misread).
    pub fn subject_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.subject)
    }
}

/// An event that was refused, kept with everything needed to understand and redrive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was published on.
    pub subject: String,
    /// Stable reason code (`malformed_json`, `unknown_ticket`, ...).
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
    /// The raw payload, byte for byte.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// A binary-mode event's `ce-*` and `content-type` headers, as received (a redrive sends
    /// them again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ce_headers: Vec<(String, String)>,
    /// The stream sequence of the copy `ticket-ledger redrive` republished, once it has been
    /// folded (whatever its outcome: a copy that is refused again is a dead letter of its own).
    #[serde(default)]
    pub redriven_by: Option<u64>,
}

/// Everything one batch changes, written atomically.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    /// The final state of every ticket the batch touched (each once).
    pub tickets: Vec<Ticket>,
    /// The events the batch refused.
    pub dead_letters: Vec<DeadLetter>,
    /// Dead letters whose redriven copy the batch folded: (original sequence, copy's sequence).
    pub redriven: Vec<(u64, u64)>,
    /// The stream sequence of the batch's last message.
    pub applied_seq: u64,
    /// Messages folded (those above the applied position).
    pub events: u64,
    /// Events skipped as duplicates of one already applied to their ticket.
    pub duplicates: u64,
    /// The parts of plans the batch changed (see [`PlanPart`]), for the store to rewrite.
    pub plan_parts: Vec<(TicketKey, PlanPart)>,
}

/// A part of a ticket's plan, as the store keeps it: the whole plan, or one batch's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlanPart {
    /// The head (the script) and every batch: written when the plan is made, or when the
    /// ticket's end closes its running instances.
    Whole,
    /// One batch, by its index: an instance event named one of its instances.
    Batch(u32),
}

/// Which part of its ticket's plan an event may change, judged before it is folded (so it may
/// name a part that did not change: rewriting it is harmless).
fn plan_part(event: &events::Event) -> Option<PlanPart> {
    use events::Kind;
    match (&event.detail, event.kind) {
        (events::Detail::Instance(i), _) => Some(PlanPart::Batch(i.batch_index)),
        (_, Kind::Created) if event.created.as_ref().is_some_and(|c| c.plan.is_some()) => {
            Some(PlanPart::Whole)
        }
        (_, Kind::Finished | Kind::Cancelled) => Some(PlanPart::Whole),
        _ => None,
    }
}

/// What a fold did, for the log and the metrics.
#[derive(Debug, Default, Clone)]
pub struct FoldReport {
    /// Messages folded.
    pub events: u64,
    /// Of them, duplicates skipped.
    pub duplicates: u64,
    /// Of them, refused: kept as dead letters.
    pub dead_letters: Vec<DeadLetter>,
}

/// How messages are decoded.
#[derive(Debug, Clone)]
pub struct DecodeRules {
    /// Subject prefix before `<project>.<kind>`.
    pub subject_prefix: String,
    /// Largest accepted payload.
    pub max_event_bytes: usize,
    /// The projects this instance holds (`ingest.projects`); `None`: every project. A message
    /// whose subject names another is passed over (not decoded, not dead-lettered).
    pub projects: Option<std::sync::Arc<rustc_hash::FxHashSet<String>>>,
}

impl DecodeRules {
    /// Whether the message's subject names a project this instance does not hold.
    fn passes_over(&self, subject: &[u8]) -> bool {
        let Some(held) = &self.projects else {
            return false;
        };
        let project = subject
            .strip_prefix(self.subject_prefix.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"."))
            .and_then(|rest| rest.split(|&b| b == b'.').next())
            .and_then(|p| std::str::from_utf8(p).ok());
        // A subject that names no project is decoded, to be dead-lettered with its reason.
        project.is_some_and(|p| !held.contains(p))
    }
}

/// The key of a ticket.
pub type TicketKey = (ProjectId, u64);

/// A message with its decoded event (or why it is not one).
#[derive(Debug)]
pub struct Decoded {
    /// The message.
    pub raw: RawMessage,
    /// Its event.
    pub event: Result<events::Event, events::DecodeError>,
}

/// Decodes every message of a batch. Separate from the fold so that the shell can decode one
/// batch on one thread while it folds the previous one on another.
pub fn decode_batch(messages: Vec<RawMessage>, rules: &DecodeRules) -> Vec<Decoded> {
    messages
        .into_iter()
        .map(|raw| {
            let event = if rules.passes_over(&raw.subject) {
                Err(events::DecodeError::NotHeld)
            } else if raw.ce_headers.is_empty() {
                events::decode(
                    &raw.subject_text(),
                    &raw.payload,
                    &rules.subject_prefix,
                    rules.max_event_bytes,
                )
            } else {
                events::decode_binary(
                    &raw.subject_text(),
                    &raw.ce_headers,
                    &raw.payload,
                    &rules.subject_prefix,
                    rules.max_event_bytes,
                )
            };
            Decoded { raw, event }
        })
        .collect()
}

/// Folds `messages` (in stream order) into one commit: [`decode_batch`], then [`fold_decoded`].
pub fn fold_batch<E>(
    messages: &[RawMessage],
    applied_seq: u64,
    rules: &DecodeRules,
    lookup: impl FnMut(&TicketKey) -> Result<Option<Ticket>, E>,
) -> Result<Commit, E> {
    fold_decoded(
        decode_batch(messages.to_vec(), rules),
        (applied_seq, 0),
        lookup,
    )
}

/// Folds decoded messages (in stream order) into one commit.
///
/// `lookup` gives a ticket's state before the batch; it is called at most once per ticket.
/// Messages at or below `applied_seq` are skipped, so a batch that overlaps what is already
/// stored (a redelivery after reconnect) applies nothing twice. Up to `redo_until` (0: none),
/// a message a looked-up ticket already holds (at or below its [`Ticket::last_seq`]) is skipped
/// too: after a crash cut a flush short, some records are ahead of the stored position (see
/// `store::records`), and the stream delivers their last events again.
pub fn fold_decoded<E>(
    messages: Vec<Decoded>,
    (applied_seq, redo_until): (u64, u64),
    mut lookup: impl FnMut(&TicketKey) -> Result<Option<Ticket>, E>,
) -> Result<Commit, E> {
    // Sized once for the usual share of distinct tickets (an event in two or three touches a
    // ticket already in the batch), not grown by rehashing as the batch goes.
    let expected = messages.len() / 2 + 1;
    let mut touched: FxHashMap<TicketKey, Option<Ticket>> =
        FxHashMap::with_capacity_and_hasher(expected, Default::default());
    let mut order: Vec<TicketKey> = Vec::with_capacity(expected);
    let mut dead_letters = Vec::new();
    let mut last = applied_seq;
    let mut redriven = Vec::new();
    let (mut events, mut duplicates) = (0, 0);
    let mut plan_parts = Vec::new();
    for d in messages.into_iter().filter(|d| d.raw.seq > applied_seq) {
        let m = &d.raw;
        last = last.max(m.seq);
        events += 1;
        if let Some(original) = m.redrive_of {
            redriven.push((original, m.seq));
        }
        let event = match d.event {
            Ok(e) => e,
            Err(events::DecodeError::NotHeld) => continue,
            Err(e) => {
                dead_letters.push(dead_letter(m, e.code(), e.to_string()));
                continue;
            }
        };
        let key = (event.project.clone(), event.order_id);
        let slot = match touched.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                order.push(v.key().clone());
                let found = lookup(v.key())?;
                v.insert(found)
            }
        };
        if m.seq <= redo_until && slot.as_ref().is_some_and(|t| m.seq <= t.last_seq()) {
            continue; // already in the record (see above)
        }
        let part = plan_part(&event);
        match fold::apply_in_place(slot, event, m.seq) {
            fold::Effect::Rejected(r) => dead_letters.push(dead_letter(m, r.code(), r.to_string())),
            fold::Effect::Duplicate => duplicates += 1,
            fold::Effect::Applied => {}
        }
        if let Some(part) = part
            && let Some(t) = slot.as_ref().filter(|t| t.plan.is_some())
        {
            plan_parts.push(((t.project.clone(), t.order_id), part));
        }
    }
    let tickets = order
        .into_iter()
        .filter_map(|k| touched.remove(&k).flatten())
        .collect();
    Ok(Commit {
        tickets,
        dead_letters,
        redriven,
        applied_seq: last,
        events,
        duplicates,
        plan_parts,
    })
}

fn dead_letter(m: &RawMessage, code: &str, reason: String) -> DeadLetter {
    DeadLetter {
        seq: m.seq,
        subject: m.subject_text().into_owned(),
        code: code.to_owned(),
        reason,
        payload: m.payload.to_vec(),
        ce_headers: m.ce_headers.clone(),
        redriven_by: None,
    }
}

/// The whole projection of a stream, folded in memory: what a single uninterrupted run of the
/// daemon must store. Used by tests and audits to check the store against the events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryProjection {
    /// Tickets by key.
    pub tickets: std::collections::BTreeMap<TicketKey, Ticket>,
    /// Dead letters in stream order.
    pub dead_letters: Vec<DeadLetter>,
    /// Last sequence folded.
    pub applied_seq: u64,
}

impl MemoryProjection {
    /// Folds more messages (in stream order), in batches of any size: the result does not depend
    /// on how the stream is cut into batches.
    pub fn fold(&mut self, messages: &[RawMessage], rules: &DecodeRules) {
        let tickets = &self.tickets;
        let commit =
            fold_batch::<std::convert::Infallible>(messages, self.applied_seq, rules, |k| {
                Ok(tickets.get(k).cloned())
            })
            .unwrap_or_else(|e| match e {});
        for t in commit.tickets {
            self.tickets.insert((t.project.clone(), t.order_id), t);
        }
        for (original, by) in commit.redriven {
            if let Some(d) = self.dead_letters.iter_mut().find(|d| d.seq == original) {
                d.redriven_by = Some(by);
            }
        }
        self.dead_letters.extend(commit.dead_letters);
        self.applied_seq = commit.applied_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::domain::Status;
    use crate::core::events::{CreatedData, Event, Kind};

    const RULES: fn() -> DecodeRules = || DecodeRules {
        subject_prefix: "coc.job.script".into(),
        max_event_bytes: 4096,
        projects: None,
    };

    fn msg(seq: u64, kind: Kind, order_id: u64, id: &str, t: i64) -> RawMessage {
        let e = Event {
            id: id.into(),
            source: "s".into(),
            kind,
            time_ms: t,
            project: ProjectId::parse("p").unwrap(),
            order_id,
            created: (kind == Kind::Created).then(|| CreatedData {
                execute_uuid: format!("u{order_id}").into(),
                order_name: "n".into(),
                creator: "c".into(),
                region_ids: "r".into(),
                job_type: "SCRIPT".into(),
                plan: None,
            }),
            detail: Default::default(),
        };
        RawMessage {
            seq,
            subject: e.subject("coc.job.script").into(),
            payload: e.to_bytes().into(),
            redrive_of: None,
            ce_headers: Vec::new(),
        }
    }

    fn stream() -> Vec<RawMessage> {
        vec![
            msg(1, Kind::Created, 1, "a", 10),
            msg(2, Kind::Created, 2, "b", 20),
            msg(3, Kind::Started, 1, "c", 30),
            RawMessage {
                seq: 4,
                subject: "coc.job.script.p.started".into(),
                payload: b"{oops".to_vec().into(),
                redrive_of: None,
                ce_headers: Vec::new(),
            },
            msg(5, Kind::Finished, 1, "d", 40),
            msg(6, Kind::Started, 1, "e", 50),
            msg(7, Kind::Started, 9, "f", 60),
            msg(8, Kind::Started, 1, "c", 30),
            msg(9, Kind::Cancelled, 2, "g", 70),
        ]
    }

    #[test]
    fn a_batch_writes_each_touched_ticket_once_in_its_final_state() {
        let mut lookups = 0;
        let commit = fold_batch::<()>(&stream(), 0, &RULES(), |_| {
            lookups += 1;
            Ok(None)
        })
        .unwrap();
        assert_eq!(lookups, 3, "tickets 1, 2 and the unknown 9");
        assert_eq!(commit.applied_seq, 9);
        let states: Vec<_> = commit
            .tickets
            .iter()
            .map(|t| (t.order_id, t.status, t.execute_costs))
            .collect();
        assert_eq!(
            states,
            [
                (1, Status::Finished, Some(30)),
                (2, Status::Canceled, Some(50))
            ]
        );
        let dead: Vec<_> = commit
            .dead_letters
            .iter()
            .map(|d| (d.seq, d.code.as_str()))
            .collect();
        assert_eq!(
            dead,
            [
                (4, "malformed_json"),
                (6, "ticket_closed"),
                (7, "unknown_ticket")
            ]
        );
        assert_eq!(&commit.dead_letters[0].payload[..], b"{oops");
    }

    #[test]
    fn the_result_does_not_depend_on_batch_boundaries() {
        let all = stream();
        let mut whole = MemoryProjection::default();
        whole.fold(&all, &RULES());
        for cut in 1..all.len() {
            let mut parts = MemoryProjection::default();
            parts.fold(&all[..cut], &RULES());
            parts.fold(&all[cut..], &RULES());
            assert_eq!(parts, whole, "cut at {cut}");
        }
    }

    /// A flush cut short by a crash leaves any set of its tickets' records ahead of the stored
    /// position: folding the stream again from that position, with `redo_until` at the flush's
    /// position, gives every ticket the state of an uninterrupted fold.
    #[test]
    fn records_ahead_of_the_position_are_not_folded_twice() {
        let all = stream();
        let mut whole = MemoryProjection::default();
        whole.fold(&all, &RULES());
        for cut in 0..all.len() {
            let mut at_cut = MemoryProjection::default();
            at_cut.fold(&all[..cut], &RULES());
            for ahead in [[false, false], [true, false], [false, true], [true, true]] {
                let mut stored = at_cut.tickets.clone();
                for (k, t) in &whole.tickets {
                    if ahead[(k.1 - 1) as usize] {
                        stored.insert(k.clone(), t.clone());
                    }
                }
                let positions = (at_cut.applied_seq, whole.applied_seq);
                fold_onto(&mut stored, &all[cut..], positions);
                assert_eq!(stored, whole.tickets, "cut at {cut}, ahead {ahead:?}");
            }
        }
        // Without the rule, a record ahead takes its events twice (as duplicates).
        let mut stored = whole.tickets.clone();
        fold_onto(&mut stored, &all[2..], (2, 0));
        assert_ne!(stored, whole.tickets);
    }

    /// Folds `messages` onto the records `stored`, as a projection at `positions` would.
    fn fold_onto(
        stored: &mut std::collections::BTreeMap<TicketKey, Ticket>,
        messages: &[RawMessage],
        positions: (u64, u64),
    ) {
        let decoded = decode_batch(messages.to_vec(), &RULES());
        let commit =
            fold_decoded::<()>(decoded, positions, |k| Ok(stored.get(k).cloned())).unwrap();
        for t in commit.tickets {
            stored.insert((t.project.clone(), t.order_id), t);
        }
    }

    #[test]
    fn messages_already_applied_are_skipped() {
        let all = stream();
        let mut p = MemoryProjection::default();
        p.fold(&all, &RULES());
        let before = p.clone();
        p.fold(&all[3..], &RULES());
        assert_eq!(p, before);
    }
}
