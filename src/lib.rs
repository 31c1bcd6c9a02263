//! # ticket-ledger
//!
//! An event-sourced ledger of Huawei Cloud COC script tickets. A job executor publishes each
//! ticket's lifecycle events to NATS JetStream; the daemon folds them, in stream order, into
//! ticket records in sled and serves `GET /v1/job/script/orders` from that projection.
//!
//! # Layout
//!
//! The functional core (no I/O, tested exhaustively):
//! - [`domain`]: newtypes that parse, not validate: page size, marker, status, time range,
//!   project id.
//! - [`events`]: event contract v1 (CloudEvents 1.0 JSON): decode with a reason for every
//!   refusal, and encode for `emit`.
//! - [`fold`]: the ticket state machine, `(ticket?, event) -> ticket | rejection`.
//! - [`batch`]: many messages into one commit, each touched ticket written once.
//! - [`index`]: the in-memory query view: keyset pages, totals kept or zone-mapped, trigrams.
//! - [`record`]: the compact, deterministic binary form of a stored ticket record.
//! - [`sign`]: `SDK-HMAC-SHA256` request signatures of the official Huawei Cloud SDKs.
//!
//! The imperative shell:
//! - [`store`]: sled: records, dead letters and the stream position, one atomic batch per flush.
//! - [`projection`]: store + query view kept in step, with a write-behind buffer between them;
//!   what ingest writes and the API reads.
//! - [`broker`]: the NATS connection, the event stream, and a child `nats-server` when needed.
//! - [`wire`]: the reader's own NATS connection: the protocol for one subscription, no more.
//! - [`ingest`]: the loop: ordered consumer from the stored position, fold, commit; reconnects.
//! - [`replay`]: blue/green rebuild of the projection from the start of the stream.
//! - [`auth`]: hashed tokens, grants and tenancy.
//! - [`api`]: the axum router, handlers and Huawei-shaped errors.
//! - [`app`]: `App::build` / `App::run`: start-up and graceful shutdown.
//! - [`audit`]: the auditor's commands against a live daemon: history, dead letters, redrive,
//!   rebuild with progress, `verify`.
//! - [`bench`]: the benchmark: the ledger against the raw read rate of the same stream.
//! - [`config`], [`telemetry`], [`cli`]: settings, logging and the command line.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod batch;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod domain;
pub mod events;
pub mod fold;
pub mod index;
pub mod ingest;
pub mod projection;
pub mod record;
pub mod replay;
pub mod sign;
pub mod store;
pub mod telemetry;
pub mod wire;
