//! Contract v1.1: what `created` may carry beyond v1 (the script and the batches of hosts), and
//! the data of the kinds v1.1 adds. Read by serde only (the scanner hands any payload with these
//! fields to the serde path, see `scan`); checked here, encoded here.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Value, json};

use super::scan::Data;
use super::{DecodeError, Detail, InstanceEvent, Kind, MAX_TEXT_BYTES, OperationRequest};
use crate::core::job::{
    self, Batch, ExecuteParam, Instance, Operation, OperationType, ParamRefer, Plan, Rate,
    Rotation, Script, ScriptParam, Target,
};

/// Keys of `data` that only the serde path reads: the scanner gives up when it meets one.
pub(super) const SERDE_ONLY_KEYS: [&str; 8] = [
    "script_uuid",
    "script_name",
    "script_version_uuid",
    "script_version_name",
    "execute_param",
    "execute_batches",
    "operation_type",
    "requested_by",
];

/// The serde-only fields of `data`, borrowed from where serde read them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Extra<'a> {
    pub script_uuid: Option<&'a str>,
    pub script_name: Option<&'a str>,
    pub script_version_uuid: Option<i64>,
    pub script_version_name: Option<&'a str>,
    pub execute_param: Option<&'a ExecuteParamIn>,
    pub execute_batches: Option<&'a [BatchIn]>,
    pub operation_type: Option<&'a str>,
    pub requested_by: Option<&'a str>,
}

impl Eq for Extra<'_> {}

/// `execute_param` as events carry it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct ExecuteParamIn {
    resourceful: Option<bool>,
    timeout: Option<i64>,
    success_rate: Option<f64>,
    execute_user: Option<String>,
    #[serde(default)]
    script_params: Vec<ScriptParamIn>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct ScriptParamIn {
    param_name: String,
    param_value: String,
    param_order: i64,
    param_refer: Option<ParamRefer>,
    #[serde(default)]
    sensitive: bool,
}

/// One of `execute_batches`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(super) struct BatchIn {
    batch_index: u64,
    rotation_strategy: String,
    properties: Option<String>,
    #[serde(default)]
    target_instances: Vec<Target>,
}

fn data_err(msg: impl Into<String>) -> DecodeError {
    DecodeError::Data(msg.into())
}

fn text(field: &str, v: Option<&str>) -> Result<Option<String>, DecodeError> {
    match v {
        Some(s) if s.len() > MAX_TEXT_BYTES => Err(data_err(format!(
            "{field} is longer than {MAX_TEXT_BYTES} bytes"
        ))),
        other => Ok(other.map(str::to_owned)),
    }
}

/// The plan of a `created` event, if it carries any of the v1.1 fields.
pub(super) fn plan(x: &Extra<'_>) -> Result<Option<Box<Plan>>, DecodeError> {
    if x.script_uuid.is_none()
        && x.script_name.is_none()
        && x.script_version_uuid.is_none()
        && x.script_version_name.is_none()
        && x.execute_param.is_none()
        && x.execute_batches.is_none()
    {
        return Ok(None);
    }
    let script = Script {
        script_uuid: text("script_uuid", x.script_uuid)?,
        script_name: text("script_name", x.script_name)?,
        script_version_uuid: x.script_version_uuid,
        script_version_name: text("script_version_name", x.script_version_name)?,
        execute_param: x.execute_param.map(execute_param).transpose()?,
    };
    let mut batches = Vec::new();
    let mut ids = HashSet::new();
    for b in x.execute_batches.unwrap_or(&[]) {
        batches.push(std::sync::Arc::new(batch(b, &mut ids)?));
    }
    batches.sort_by_key(|b| b.batch_index);
    if let Some(w) = batches
        .windows(2)
        .find(|w| w[0].batch_index == w[1].batch_index)
    {
        return Err(data_err(format!(
            "batch_index {} is given twice",
            w[0].batch_index
        )));
    }
    Ok(Some(Box::new(Plan { script, batches })))
}

fn execute_param(p: &ExecuteParamIn) -> Result<ExecuteParam, DecodeError> {
    if p.success_rate.is_some_and(|r| !(0.0..=100.0).contains(&r)) {
        return Err(data_err("execute_param.success_rate must be from 0 to 100"));
    }
    Ok(ExecuteParam {
        resourceful: p.resourceful,
        timeout: p.timeout,
        success_rate: p.success_rate.map(Rate),
        execute_user: text("execute_user", p.execute_user.as_deref())?,
        script_params: p
            .script_params
            .iter()
            .map(|s| ScriptParam {
                param_name: s.param_name.clone(),
                // A sensitive value is never kept: not in the record, not in an answer.
                param_value: if s.sensitive {
                    job::MASK.to_owned()
                } else {
                    s.param_value.clone()
                },
                param_order: s.param_order,
                param_refer: s.param_refer.clone(),
                sensitive: s.sensitive,
            })
            .collect(),
    })
}

fn batch(b: &BatchIn, ids: &mut HashSet<u64>) -> Result<Batch, DecodeError> {
    let batch_index = batch_index(Some(b.batch_index))?;
    let rotation_strategy = match b.rotation_strategy.as_str() {
        "CONTINUE" => Rotation::Continue,
        "PAUSE" => Rotation::Pause,
        other => {
            return Err(data_err(format!(
                "rotation_strategy must be CONTINUE or PAUSE, not {other:?}"
            )));
        }
    };
    let mut instances = Vec::with_capacity(b.target_instances.len());
    for t in &b.target_instances {
        if t.instance_id == 0 {
            return Err(data_err("instance_id must be greater than 0"));
        }
        if !ids.insert(t.instance_id) {
            return Err(data_err(format!(
                "instance_id {} is given twice in the ticket",
                t.instance_id
            )));
        }
        instances.push(Instance::planned(t.clone()));
    }
    instances.sort_by_key(Instance::id);
    Ok(Batch {
        batch_index,
        rotation_strategy,
        properties: b.properties.clone(),
        instances,
    })
}

fn batch_index(v: Option<u64>) -> Result<u32, DecodeError> {
    let v = v.ok_or_else(|| data_err("missing field `batch_index`"))?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| data_err("batch_index must be an integer from 1 to 4294967295"))
}

/// What a kind says beyond its ticket.
pub(super) fn detail(kind: Kind, d: &Data<'_>) -> Result<Detail, DecodeError> {
    Ok(match kind {
        Kind::BatchStarted => Detail::Batch {
            batch_index: batch_index(d.batch_index)?,
        },
        k if k.is_instance() => Detail::Instance(InstanceEvent {
            batch_index: batch_index(d.batch_index)?,
            instance_id: d
                .instance_id
                .filter(|i| *i > 0)
                .ok_or_else(|| data_err("instance_id must be an integer greater than 0"))?,
            message: d.message.map(job::bounded),
        }),
        Kind::OperationRequested => {
            let required = |field: &str, v: Option<&str>| {
                super::required_text(field, v).map_err(|_| {
                    data_err(format!(
                        "operation_requested needs {field}, 1 to {MAX_TEXT_BYTES} bytes"
                    ))
                })
            };
            let operation_type = d.extra.operation_type.and_then(OperationType::parse);
            Detail::Operation(Box::new(OperationRequest {
                execute_uuid: required("execute_uuid", d.execute_uuid)?.into(),
                operation: Operation {
                    operation_type: operation_type.ok_or_else(|| {
                        data_err("operation_type must be one of CANCEL_INSTANCE, SKIP_BATCH, CANCEL_ORDER, PAUSE_ORDER, CONTINUE_ORDER")
                    })?,
                    batch_index: d.batch_index.map(|b| batch_index(Some(b))).transpose()?,
                    instance_id: d.instance_id,
                },
                requested_by: required("requested_by", d.extra.requested_by)?.into(),
            }))
        }
        _ => Detail::None,
    })
}

/// Adds a plan's fields to a `created` event's `data`.
pub(super) fn plan_json(plan: &Plan, data: &mut Value) {
    let s = &plan.script;
    data["script_uuid"] = json!(s.script_uuid);
    data["script_name"] = json!(s.script_name);
    data["script_version_uuid"] = json!(s.script_version_uuid);
    data["script_version_name"] = json!(s.script_version_name);
    if let Some(p) = &s.execute_param {
        // Its derive writes the event's own field names (`sensitive` included).
        data["execute_param"] = json!(p);
    }
    data["execute_batches"] = plan
        .batches
        .iter()
        .map(|b| {
            json!({
                "batch_index": b.batch_index,
                "rotation_strategy": b.rotation_strategy,
                "properties": b.properties,
                "target_instances": b.instances.iter().map(|i| &i.target).collect::<Vec<_>>(),
            })
        })
        .collect();
}

/// Adds a v1.1 kind's fields to its event's `data`.
pub(super) fn detail_json(detail: &Detail, data: &mut Value) {
    match detail {
        Detail::None => {}
        Detail::Batch { batch_index } => data["batch_index"] = json!(batch_index),
        Detail::Instance(i) => {
            data["batch_index"] = json!(i.batch_index);
            data["instance_id"] = json!(i.instance_id);
            if let Some(m) = &i.message {
                data["message"] = json!(m);
            }
        }
        Detail::Operation(o) => {
            data["execute_uuid"] = json!(o.execute_uuid);
            data["operation_type"] = json!(o.operation.operation_type.as_str());
            if let Some(b) = o.operation.batch_index {
                data["batch_index"] = json!(b);
            }
            if let Some(i) = o.operation.instance_id {
                data["instance_id"] = json!(i);
            }
            data["requested_by"] = json!(o.requested_by);
        }
    }
}
