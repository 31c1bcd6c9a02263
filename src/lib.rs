//! # ticket-ledger
//!
//! An event-sourced ledger of Huawei Cloud COC script tickets. A job executor publishes each
//! ticket's lifecycle events to NATS JetStream; the daemon folds them, in stream order, into
//! ticket records in sled and serves `GET /v1/job/script/orders` from that projection.
//!
//! # Layout
//!
//! Layers as folders, innermost first; each may use the ones above it in this list, never one
//! below (`scripts/check-layers.sh` checks the rules CI can check):
//!
//! - [`core`]: the functional core: domain types, events, the fold, batching, record encoding.
//!   No I/O of any kind.
//! - [`view`]: the in-memory query index (groups and zone maps, names and their gram postings,
//!   the planner). Uses `core` only; no I/O.
//! - [`store`]: sled, the projection that keeps it and the view in step, write-behind, and
//!   blue/green generations. Uses `core` and `view`.
//! - [`nats`]: everything that speaks to the broker: `nats.url`, launching `nats-server`, the
//!   stream, the reader and its own wire connection. Uses `core` and `config`.
//! - [`http`]: the axum router, one file per resource, Huawei-shaped errors, tokens and
//!   signatures. Uses the layers above.
//! - [`ops`]: ingest, rebuild, the auditor's client, `verify` and the command line.
//! - [`app`]: `App::build` / `App::run`: wires it all together, with graceful shutdown.
//! - [`config`], [`telemetry`], [`metrics`]: settings, logging and the Prometheus metrics, used by
//!   every shell layer.
//! - `fuzz`: the untrusted-input parsers, as the fuzz targets (`fuzz/`) call them.

pub mod app;
pub mod config;
pub mod core;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod store;
pub mod telemetry;
pub mod view;
