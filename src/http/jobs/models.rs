//! The answers of the script-ticket family in the official SDK's shapes (`huaweicloudsdkcoc`
//! `v1/model/`), field for field: `null` where the events gave no value, never another type.
//! Keys the SDK does not know (the ticket's history, an instance's history, `sensitive`) are
//! extra: the SDK ignores them.

use serde::Serialize;
use utoipa::ToSchema;

use crate::core::domain::Status;
use crate::core::fold::{HistoryEntry, Ticket};
use crate::core::job::{
    Attribute, Batch, ExecuteParam, HostProperties, Instance, InstanceStatus, ParamRefer, Rotation,
    ScriptParam,
};
use crate::http::ledger::EventView;

/// `JobScriptOrderInfoModel`, with the ledger's `order_id`, `order_name`, `job_type` and event
/// history (`events`) beside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderInfo<'a> {
    execute_uuid: &'a str,
    gmt_created: i64,
    gmt_finished: Option<i64>,
    execute_costs: Option<i64>,
    creator: &'a str,
    #[schema(value_type = crate::http::openapi::StatusDoc)]
    status: Status,
    properties: OrderInfoProp<'a>,
    order_id: u64,
    order_name: &'a str,
    job_type: &'a str,
    events: Vec<EventView>,
}

/// `JobScriptOrderInfoProp`, with the list's `region_ids` beside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderInfoProp<'a> {
    script_uuid: Option<&'a str>,
    script_name: Option<&'a str>,
    script_version_uuid: Option<i64>,
    script_version_name: Option<&'a str>,
    current_execute_batch_index: Option<u32>,
    execute_param: Option<ExecuteParamView<'a>>,
    region_ids: &'a str,
}

/// `ScriptExecuteParam`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteParamView<'a> {
    resourceful: Option<bool>,
    timeout: Option<i64>,
    success_rate: Option<f64>,
    execute_user: Option<&'a str>,
    script_params: Vec<ScriptParamView<'a>>,
}

/// `ScriptExecuteInputParam`; `param_value` of a sensitive parameter is `******`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptParamView<'a> {
    param_name: &'a str,
    param_value: &'a str,
    param_order: i64,
    #[schema(value_type = Option<ParamReferDoc>)]
    param_refer: Option<&'a ParamRefer>,
    sensitive: bool,
}

/// `ScriptExecuteParamReference`.
#[derive(ToSchema)]
#[schema(as = ParamRefer)]
#[allow(dead_code)]
pub(crate) struct ParamReferDoc {
    refer_type: Option<String>,
    param_id: Option<String>,
    param_version: Option<String>,
}

impl<'a> OrderInfo<'a> {
    /// The ticket as `get_script_job_info` reads it.
    pub fn of(t: &'a Ticket) -> Self {
        let script = t.plan.as_ref().map(|p| &p.script);
        OrderInfo {
            execute_uuid: &t.execute_uuid,
            gmt_created: t.gmt_created,
            gmt_finished: t.gmt_finished,
            execute_costs: t.execute_costs,
            creator: &t.creator,
            status: t.status,
            properties: OrderInfoProp {
                script_uuid: script.and_then(|s| s.script_uuid.as_deref()),
                script_name: script.and_then(|s| s.script_name.as_deref()),
                script_version_uuid: script.and_then(|s| s.script_version_uuid),
                script_version_name: script.and_then(|s| s.script_version_name.as_deref()),
                current_execute_batch_index: t.current_execute_batch_index,
                execute_param: script
                    .and_then(|s| s.execute_param.as_ref())
                    .map(ExecuteParamView::of),
                region_ids: &t.region_ids,
            },
            order_id: t.order_id,
            order_name: &t.order_name,
            job_type: &t.job_type,
            events: events(&t.history),
        }
    }
}

impl<'a> ExecuteParamView<'a> {
    fn of(p: &'a ExecuteParam) -> Self {
        ExecuteParamView {
            resourceful: p.resourceful,
            timeout: p.timeout,
            success_rate: p.success_rate.map(|r| r.0),
            execute_user: p.execute_user.as_deref(),
            script_params: p
                .script_params
                .iter()
                .map(|s: &'a ScriptParam| ScriptParamView {
                    param_name: &s.param_name,
                    param_value: &s.param_value,
                    param_order: s.param_order,
                    param_refer: s.param_refer.as_ref(),
                    sensitive: s.sensitive,
                })
                .collect(),
        }
    }
}

/// A history as the API shows it.
pub(crate) fn events(history: &[HistoryEntry]) -> Vec<EventView> {
    history.iter().cloned().map(EventView::from).collect()
}

/// `JobScriptBatchListModel`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchSummary<'a> {
    batch_index: u32,
    total_instances: usize,
    #[schema(value_type = RotationDoc)]
    rotation_strategy: Rotation,
    properties: Option<&'a str>,
}

/// What the executor does after a batch with a failure.
#[derive(ToSchema)]
#[schema(as = RotationStrategy)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub(crate) enum RotationDoc {
    CONTINUE,
    PAUSE,
}

impl<'a> BatchSummary<'a> {
    /// A batch as `list_script_job_batches` reads it.
    pub fn of(b: &'a Batch) -> Self {
        BatchSummary {
            batch_index: b.batch_index,
            total_instances: b.instances.len(),
            rotation_strategy: b.rotation_strategy,
            properties: b.properties.as_deref(),
        }
    }
}

/// `JobScriptBatchDetailModel`: one page of a batch's instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchDetail<'a> {
    pub(super) batch_index: u32,
    /// Every instance of the batch, whatever the page or the filter.
    pub(super) total_instances: usize,
    pub(super) execute_instances: Vec<InstanceView<'a>>,
}

/// `ExectionInstanceModel` (the SDK's spelling), with the instance's history beside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView<'a> {
    id: u64,
    target_instance: TargetView<'a>,
    gmt_created: Option<i64>,
    gmt_finished: Option<i64>,
    execute_costs: Option<i64>,
    #[schema(value_type = InstanceStatusDoc)]
    status: InstanceStatus,
    message: Option<&'a str>,
    events: Vec<EventView>,
}

/// An instance's status.
#[derive(ToSchema)]
#[schema(as = InstanceStatus)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub(crate) enum InstanceStatusDoc {
    READY,
    PROCESSING,
    ABNORMAL,
    CANCELED,
    FINISHED,
}

/// `ResourceInstance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView<'a> {
    resource_id: Option<&'a str>,
    provider: Option<&'a str>,
    region_id: Option<&'a str>,
    #[serde(rename = "type")]
    resource_type: Option<&'a str>,
    #[schema(value_type = Vec<AttributeDoc>)]
    custom_attributes: &'a [Attribute],
    agent_sn: Option<&'a str>,
    agent_status: Option<&'a str>,
    #[schema(value_type = Option<HostPropertiesDoc>)]
    properties: Option<&'a HostProperties>,
}

/// `Customttribute` (the SDK's spelling).
#[derive(ToSchema)]
#[schema(as = CustomAttribute)]
#[allow(dead_code)]
pub(crate) struct AttributeDoc {
    key: String,
    value: String,
}

/// `ResourceInstanceProp`.
#[derive(ToSchema)]
#[schema(as = HostProperties)]
#[allow(dead_code)]
pub(crate) struct HostPropertiesDoc {
    host_name: Option<String>,
    fixed_ip: Option<String>,
    floating_ip: Option<String>,
    region_id: Option<String>,
    zone_id: Option<String>,
    application: Option<String>,
    group: Option<String>,
    project_id: Option<String>,
}

impl<'a> InstanceView<'a> {
    /// An instance as `get_script_job_batch` reads it.
    pub fn of(i: &'a Instance) -> Self {
        let t = &i.target;
        InstanceView {
            id: i.id(),
            target_instance: TargetView {
                resource_id: t.resource_id.as_deref(),
                provider: t.provider.as_deref(),
                region_id: t.region_id.as_deref(),
                resource_type: t.resource_type.as_deref(),
                custom_attributes: &t.custom_attributes,
                agent_sn: t.agent_sn.as_deref(),
                agent_status: t.agent_status.as_deref(),
                properties: t.properties.as_deref(),
            },
            gmt_created: i.gmt_created,
            gmt_finished: i.gmt_finished,
            execute_costs: i.execute_costs(),
            status: i.status,
            message: i.message.as_deref(),
            events: events(&i.history),
        }
    }
}

/// `JobScriptOrderStatisticsModel`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Statistics {
    total_instance: usize,
    execute_statistics: Vec<StatusCount>,
}

/// `ExectuionStatistic` (the SDK's spelling).
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCount {
    #[schema(value_type = InstanceStatusDoc)]
    instance_status: InstanceStatus,
    instance_count: usize,
    batch_indexes: Vec<u32>,
}

impl Statistics {
    /// Every instance status with its count (zeros included) and the batches that hold it.
    pub fn of(t: &Ticket) -> Self {
        let batches = t.plan.as_ref().map_or(&[][..], |p| &p.batches[..]);
        let execute_statistics = InstanceStatus::ALL
            .into_iter()
            .map(|status| {
                let mut count = 0;
                let mut batch_indexes = Vec::new();
                for b in batches {
                    let n = b.instances.iter().filter(|i| i.status == status).count();
                    if n > 0 {
                        count += n;
                        batch_indexes.push(b.batch_index);
                    }
                }
                StatusCount {
                    instance_status: status,
                    instance_count: count,
                    batch_indexes,
                }
            })
            .collect();
        Statistics {
            total_instance: batches.iter().map(|b| b.instances.len()).sum(),
            execute_statistics,
        }
    }
}
