//! The operations that move events and the commands people run: the ingest loop, the
//! blue/green rebuild, the auditor's client and `verify`, and the command line. The outermost
//! shell: may use every other layer.
//!
//! - [`ingest`]: the loop: ordered consumer from the stored position, fold, commit; reconnects.
//! - [`replay`]: blue/green rebuild of the projection from the start of the stream.
//! - [`audit`]: the auditor's commands against a live daemon: history, dead letters, redrive,
//!   rebuild with progress.
//! - [`operator`]: the operator's `list` and `status`, for those without curl.
//! - [`verify`]: the stream folded afresh and compared, record by record, with a live daemon.
//! - [`compare`]: two live replicas compared record by record, differences checked against
//!   the stream.
//! - [`repair`]: `rebuild-store`, offline: the way out of a store the daemon refuses to open.
//! - `refold`: the stream folded from its start into a projection no one queries (both above).
//! - `progress`: the progress bar (or lines) of the long commands.
//! - [`cli`]: the command line (`serve`, `emit`, the auditor's commands, `hash-token`).

pub mod audit;
pub mod cli;
pub mod compare;
pub(crate) mod ingest;
pub mod operator;
mod progress;
mod refold;
pub mod repair;
pub(crate) mod replay;
pub mod verify;
