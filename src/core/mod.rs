//! The functional core: what the ledger decides, with no I/O. Nothing here names sled, NATS,
//! tokio, axum or `std::{fs, io, net}`, and nothing outside `core` (`scripts/check-layers.sh`,
//! run by CI, fails if one does), so every rule is unit-tested without a broker or a disk.
//!
//! - [`domain`]: newtypes that parse, not validate: page size, marker, status, time range,
//!   project id.
//! - [`events`]: event contract v1.1 (CloudEvents 1.0 JSON): decode with a reason for every
//!   refusal, and encode for `emit`.
//! - [`fold`]: the ticket state machine, `(ticket?, event) -> ticket | rejection`.
//! - [`job`]: a ticket's plan (script, batches, hosts), the instance state machine, and the
//!   check of an operation against what the ledger knows.
//! - [`batch`]: many messages into one [`batch::Commit`], each touched ticket written once.
//! - [`record`]: the compact, deterministic binary form of a stored ticket record.

pub mod batch;
pub mod domain;
pub mod events;
pub mod fold;
pub mod job;
pub mod record;
