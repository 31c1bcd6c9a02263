//! A ticket's plan (event contract v1.1) and the state of its instances: the script it runs,
//! its parameters, its batches and the hosts of each batch, as `created` carries them, and what
//! the instance events did to each host since. Pure data and rules; no I/O.
//!
//! # Instance transitions
//!
//! | kind                 | from                         | to         |
//! |----------------------|------------------------------|------------|
//! | `instance_started`   | READY                        | PROCESSING |
//! | `instance_finished`  | PROCESSING                   | FINISHED   |
//! | `instance_abnormal`  | READY, PROCESSING            | ABNORMAL   |
//! | `instance_cancelled` | READY, PROCESSING, ABNORMAL  | CANCELED   |
//!
//! An instance's `gmt_created` is the time of its `instance_started` (none while READY); its
//! `gmt_finished` is the time of the event that last took it to FINISHED, ABNORMAL or CANCELED;
//! `execute_costs` is their difference, known only when both are. When the ticket itself ends
//! (`finished` or `cancelled`), every instance still READY or PROCESSING becomes CANCELED at that
//! time: nothing runs on a ticket that is over, and the statistics say so.
//!
//! Why the plan is not part of the list's record: a ticket of 20 batches of 200 hosts is hundreds
//! of KiB, and the list's records are rewritten in chunks of neighbouring tickets. The store keeps
//! the plan apart, one key for its head and one per batch (see [`crate::store`]), and the list view
//! never sees it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::domain::Status;
use crate::core::fold::{HistoryEntry, Ticket};

/// What a sensitive parameter's value is stored and shown as: the value itself never is.
pub const MASK: &str = "******";
/// Longest instance `message` kept, in bytes; a longer one is cut and marked (see [`bounded`]).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The status of one instance (host) of a ticket, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InstanceStatus {
    /// Planned, not started.
    Ready,
    /// Running.
    Processing,
    /// Failed; may still be cancelled.
    Abnormal,
    /// Cancelled (by an operation or because the ticket ended first).
    Canceled,
    /// Completed.
    Finished,
}

impl InstanceStatus {
    /// Every status, in the order the statistics list them.
    pub const ALL: [InstanceStatus; 5] = [
        InstanceStatus::Ready,
        InstanceStatus::Processing,
        InstanceStatus::Abnormal,
        InstanceStatus::Canceled,
        InstanceStatus::Finished,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Ready => "READY",
            InstanceStatus::Processing => "PROCESSING",
            InstanceStatus::Abnormal => "ABNORMAL",
            InstanceStatus::Canceled => "CANCELED",
            InstanceStatus::Finished => "FINISHED",
        }
    }

    /// Parses the API spelling (upper case, exact).
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// FINISHED and CANCELED admit no further transition.
    pub fn has_ended(self) -> bool {
        matches!(self, InstanceStatus::Canceled | InstanceStatus::Finished)
    }
}

impl std::fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the executor does after a batch with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Rotation {
    /// Go on with the next batch.
    Continue,
    /// Pause the ticket.
    Pause,
}

/// The plan a `created` event carries: the script and how it runs, and the batches of hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The script and its parameters.
    pub script: Script,
    /// The batches, ascending by `batch_index`. Shared, copied on write: a ticket is copied
    /// whenever a fold finds it in the write in progress, and with `Arc` that copies pointers,
    /// not hundreds of hosts; an instance event then copies its own batch only.
    pub batches: Vec<Arc<Batch>>,
}

/// The script a ticket runs (`JobScriptOrderInfoProp` without the batch index).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Script {
    /// COC's script id.
    pub script_uuid: Option<String>,
    /// Script name.
    pub script_name: Option<String>,
    /// Script version: an integer in COC's model.
    pub script_version_uuid: Option<i64>,
    /// Version name.
    pub script_version_name: Option<String>,
    /// How it runs.
    pub execute_param: Option<ExecuteParam>,
}

/// `ScriptExecuteParam`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteParam {
    /// Whether the script runs with resource limits.
    pub resourceful: Option<bool>,
    /// Timeout, seconds.
    pub timeout: Option<i64>,
    /// Share of hosts that must succeed.
    pub success_rate: Option<Rate>,
    /// The OS user it runs as.
    pub execute_user: Option<String>,
    /// Its parameters, sensitive values masked.
    pub script_params: Vec<ScriptParam>,
}

/// A share as a float. Equal by its bits: a rate comes from JSON, which has no NaN, so this is
/// the float's own equality on every value a ticket can hold.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rate(pub f64);

impl PartialEq for Rate {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Rate {}

/// One script parameter (`ScriptExecuteInputParam`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptParam {
    /// Name.
    pub param_name: String,
    /// Value; [`MASK`] when `sensitive`.
    pub param_value: String,
    /// Position.
    pub param_order: i64,
    /// Where the value comes from, if referenced.
    pub param_refer: Option<ParamRefer>,
    /// Whether the value was masked.
    pub sensitive: bool,
}

/// `ScriptExecuteParamReference`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamRefer {
    /// Kind of reference.
    pub refer_type: Option<String>,
    /// Referenced parameter.
    pub param_id: Option<String>,
    /// Its version.
    pub param_version: Option<String>,
}

/// One batch of hosts and where each stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// 1-based, unique in the ticket.
    pub batch_index: u32,
    /// What happens after a failure in it.
    pub rotation_strategy: Rotation,
    /// COC's opaque `properties` string.
    pub properties: Option<String>,
    /// Its instances, ascending by id.
    pub instances: Vec<Instance>,
}

/// One host of a batch: its target and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The host, as planned.
    pub target: Target,
    /// Where it stands.
    pub status: InstanceStatus,
    /// Time of its `instance_started`, ms.
    pub gmt_created: Option<i64>,
    /// Time it last ended (FINISHED, ABNORMAL, CANCELED), ms.
    pub gmt_finished: Option<i64>,
    /// Its output or error, at most [`MAX_MESSAGE_BYTES`].
    pub message: Option<String>,
    /// The instance events that named it, in stream order, with their outcomes.
    pub history: Vec<HistoryEntry>,
}

impl Instance {
    /// A planned host, READY.
    pub fn planned(target: Target) -> Self {
        Instance {
            target,
            status: InstanceStatus::Ready,
            gmt_created: None,
            gmt_finished: None,
            message: None,
            history: Vec::new(),
        }
    }

    /// The instance's id (`instance_id` in events, `id` in answers).
    pub fn id(&self) -> u64 {
        self.target.instance_id
    }

    /// `gmt_finished - gmt_created`, ms, when both are known.
    pub fn execute_costs(&self) -> Option<i64> {
        Some(self.gmt_finished? - self.gmt_created?)
    }
}

/// A host (`target_instance`, COC's `ResourceInstance`), with the ledger's id for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// > 0, unique in the ticket.
    pub instance_id: u64,
    /// Cloud resource id.
    pub resource_id: Option<String>,
    /// Cloud service.
    pub provider: Option<String>,
    /// Region.
    pub region_id: Option<String>,
    /// Resource type.
    #[serde(rename = "type")]
    pub resource_type: Option<String>,
    /// Custom attributes.
    #[serde(default)]
    pub custom_attributes: Vec<Attribute>,
    /// The host agent's id.
    pub agent_sn: Option<String>,
    /// The host agent's status.
    pub agent_status: Option<String>,
    /// The host's properties.
    pub properties: Option<Box<HostProperties>>,
}

/// One custom attribute of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// `ResourceInstanceProp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProperties {
    pub host_name: Option<String>,
    pub fixed_ip: Option<String>,
    pub floating_ip: Option<String>,
    pub region_id: Option<String>,
    pub zone_id: Option<String>,
    pub application: Option<String>,
    pub group: Option<String>,
    pub project_id: Option<String>,
}

impl Plan {
    /// The batch with this index.
    pub fn batch(&self, batch_index: u32) -> Option<&Batch> {
        self.batches
            .iter()
            .find(|b| b.batch_index == batch_index)
            .map(|b| &**b)
    }

    /// Every instance.
    pub fn instances(&self) -> impl Iterator<Item = (&Batch, &Instance)> {
        self.batches
            .iter()
            .flat_map(|b| b.instances.iter().map(move |i| (&**b, i)))
    }

    /// Ends every instance still READY or PROCESSING: the ticket ended at `end_ms` by `how`
    /// (`finished` or `cancelled`).
    pub(crate) fn close_running(&mut self, end_ms: i64, how: &str) {
        let running =
            |i: &Instance| matches!(i.status, InstanceStatus::Ready | InstanceStatus::Processing);
        for b in &mut self.batches {
            if !b.instances.iter().any(running) {
                continue;
            }
            for i in Arc::make_mut(b).instances.iter_mut().filter(|i| running(i)) {
                i.status = InstanceStatus::Canceled;
                i.gmt_finished = Some(end_ms);
                i.message
                    .get_or_insert_with(|| format!("not run to its end: the ticket was {how}"));
            }
        }
    }
}

/// A message cut to [`MAX_MESSAGE_BYTES`] at a character boundary, with a visible mark of how
/// long it was, so a reader never mistakes a cut message for a whole one.
pub fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mark = format!(" …[cut: {} bytes in all]", message.len());
    let mut end = MAX_MESSAGE_BYTES - mark.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &message[..end])
}

/// The operations of `PUT …/operation` (`JobScriptOrderOperationBody.operation_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    /// Cancel one instance.
    CancelInstance,
    /// Skip a batch.
    SkipBatch,
    /// Cancel the ticket.
    CancelOrder,
    /// Pause the ticket.
    PauseOrder,
    /// Resume a paused or abnormal ticket.
    ContinueOrder,
}

impl OperationType {
    /// Every operation.
    pub const ALL: [OperationType; 5] = [
        OperationType::CancelInstance,
        OperationType::SkipBatch,
        OperationType::CancelOrder,
        OperationType::PauseOrder,
        OperationType::ContinueOrder,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::CancelInstance => "CANCEL_INSTANCE",
            OperationType::SkipBatch => "SKIP_BATCH",
            OperationType::CancelOrder => "CANCEL_ORDER",
            OperationType::PauseOrder => "PAUSE_ORDER",
            OperationType::ContinueOrder => "CONTINUE_ORDER",
        }
    }

    /// Parses the API spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == raw)
    }
}

/// An operation as it was asked for: what `operation_requested` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// What to do.
    pub operation_type: OperationType,
    /// The batch it names (SKIP_BATCH; optional for CANCEL_INSTANCE).
    pub batch_index: Option<u32>,
    /// The instance it names (CANCEL_INSTANCE).
    pub instance_id: Option<u64>,
}

/// Why the ledger refuses to pass an operation on: what it knows of the ticket says the
/// executor could not carry it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// CANCEL_ORDER, CANCEL_INSTANCE or SKIP_BATCH on a ticket that is over.
    #[error("the ticket is {0}, which is final")]
    TicketOver(Status),
    /// PAUSE_ORDER or CONTINUE_ORDER from a status it does not leave.
    #[error("{op} needs a ticket that is {needs}; this one is {status}")]
    WrongStatus {
        op: &'static str,
        needs: &'static str,
        status: Status,
    },
    /// SKIP_BATCH without a batch, CANCEL_INSTANCE without an instance.
    #[error("{op} needs {field}")]
    Missing {
        op: &'static str,
        field: &'static str,
    },
    /// No such batch in the ticket.
    #[error("the ticket has no batch {0}")]
    UnknownBatch(u32),
    /// No such instance in the ticket (or not in the batch named).
    #[error("the ticket has no instance {0}{1}")]
    UnknownInstance(u64, String),
    /// The instance has already ended.
    #[error("instance {0} is {1}, which is final")]
    InstanceEnded(u64, InstanceStatus),
}

/// Checks an operation against the ticket as the ledger knows it. Pure.
pub fn check(ticket: &Ticket, op: &Operation) -> Result<(), Refusal> {
    use OperationType::*;
    let status = ticket.status;
    let name = op.operation_type.as_str();
    let batches = ticket.plan.as_ref().map_or(&[][..], |p| &p.batches[..]);
    match op.operation_type {
        CancelOrder if status.is_terminal() => Err(Refusal::TicketOver(status)),
        CancelOrder => Ok(()),
        PauseOrder if matches!(status, Status::Ready | Status::Processing) => Ok(()),
        PauseOrder => Err(Refusal::WrongStatus {
            op: name,
            needs: "READY or PROCESSING",
            status,
        }),
        ContinueOrder if matches!(status, Status::Paused | Status::Abnormal) => Ok(()),
        ContinueOrder => Err(Refusal::WrongStatus {
            op: name,
            needs: "PAUSED or ABNORMAL",
            status,
        }),
        SkipBatch => {
            let b = op.batch_index.ok_or(Refusal::Missing {
                op: name,
                field: "batch_index",
            })?;
            if !batches.iter().any(|x| x.batch_index == b) {
                return Err(Refusal::UnknownBatch(b));
            }
            if status.is_terminal() {
                return Err(Refusal::TicketOver(status));
            }
            Ok(())
        }
        CancelInstance => {
            let id = op.instance_id.ok_or(Refusal::Missing {
                op: name,
                field: "instance_id",
            })?;
            let found = batches
                .iter()
                .filter(|b| op.batch_index.is_none_or(|i| i == b.batch_index))
                .find_map(|b| b.instances.iter().find(|i| i.id() == id));
            let Some(instance) = found else {
                let within = op
                    .batch_index
                    .map(|b| format!(" in batch {b}"))
                    .unwrap_or_default();
                return Err(Refusal::UnknownInstance(id, within));
            };
            if instance.status.has_ended() {
                return Err(Refusal::InstanceEnded(id, instance.status));
            }
            if status.is_terminal() {
                return Err(Refusal::TicketOver(status));
            }
            Ok(())
        }
    }
}

impl Refusal {
    /// Stable reason code (the API maps each to a Huawei error code).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TicketOver(_) => "ticket_over",
            Refusal::WrongStatus { .. } => "wrong_status",
            Refusal::Missing { .. } => "missing_field",
            Refusal::UnknownBatch(_) => "unknown_batch",
            Refusal::UnknownInstance(..) => "unknown_instance",
            Refusal::InstanceEnded(..) => "instance_ended",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_within_the_bound_and_says_so() {
        assert_eq!(bounded("ok"), "ok");
        let exact = "x".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(bounded(&exact), exact);
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with(&format!("[cut: {} bytes in all]", long.len())));
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn statuses_parse_their_api_spelling() {
        for s in InstanceStatus::ALL {
            assert_eq!(InstanceStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(InstanceStatus::parse("PAUSED"), None);
        for o in OperationType::ALL {
            assert_eq!(OperationType::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                serde_json::json!(o.as_str())
            );
        }
    }
}

#[cfg(test)]
#[path = "job/tests.rs"]
mod rules;
