//! Where tickets' plans live in sled: apart from the chunks of ticket records, one key for a
//! plan's head (the script) and one per batch (its instances, their state and history).
//!
//! | key                                              | value                          |
//! |--------------------------------------------------|--------------------------------|
//! | `p` project `\0` order_id (u64 BE) `0` (u32 BE)  | the plan's head                |
//! | `p` project `\0` order_id (u64 BE) batch (u32 BE)| one batch ([`crate::core::record::encode_batch`]) |
//!
//! Why apart: a chunk holds 128 neighbouring tickets and is rewritten whenever one of them
//! changes, so a plan of thousands of hosts inside it would be rewritten with every event of
//! every neighbour. Here an instance event rewrites its own batch alone, and the query view,
//! built from the chunks, never reads a plan.

use super::StoreError;
use crate::core::batch::PlanPart;
use crate::core::domain::ProjectId;
use crate::core::fold::Ticket;
use crate::core::record;

pub(super) const PLAN: u8 = b'p';

fn plan_prefix(project: &ProjectId, order_id: u64) -> Vec<u8> {
    super::records::keyed(PLAN, project, order_id)
}

fn part_key(project: &ProjectId, order_id: u64, part: u32) -> Vec<u8> {
    let mut k = plan_prefix(project, order_id);
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// Adds the keys and values of what `part` of `t`'s plan is now to `writes`.
pub(super) fn write_part(writes: &mut Vec<(Vec<u8>, Vec<u8>)>, t: &Ticket, part: PlanPart) {
    let Some(plan) = t.plan.as_ref() else {
        return;
    };
    let mut put = |key: Vec<u8>, value: Vec<u8>| writes.push((key, value));
    match part {
        PlanPart::Whole => {
            put(
                part_key(&t.project, t.order_id, 0),
                record::encode_plan_head(&plan.script),
            );
            for b in &plan.batches {
                put(
                    part_key(&t.project, t.order_id, b.batch_index),
                    record::encode_batch(b),
                );
            }
        }
        PlanPart::Batch(i) => {
            if let Some(b) = plan.batch(i) {
                put(part_key(&t.project, t.order_id, i), record::encode_batch(b));
            }
        }
    }
}

/// Reads `t`'s plan back (the ticket record said it has one).
pub(super) fn load(db: &sled::Db, t: &mut Ticket) -> Result<(), StoreError> {
    let prefix = plan_prefix(&t.project, t.order_id);
    let corrupt = |reason: String| StoreError::Corrupt {
        key: hex::encode(&prefix),
        reason,
    };
    let mut parts = Vec::new();
    for kv in db.scan_prefix(&prefix) {
        parts.push(kv?.1);
    }
    let Some((head, batches)) = parts.split_first() else {
        return Err(corrupt("the record has a plan, but sled has none".into()));
    };
    let plan = record::decode_plan(head, batches.iter().map(|b| &b[..]))
        .map_err(|e| corrupt(e.to_string()))?;
    t.plan = Some(Box::new(plan));
    Ok(())
}
