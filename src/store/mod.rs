//! The durable shell: sled, the projection kept in step with the query view, and blue/green
//! generations. May use [`crate::core`] and [`crate::view`]; knows nothing of NATS or HTTP.
//!
//! - [`records`]: the sled store itself: ticket records in chunks, dead letters and the stream
//!   position, written one key at a time, a crash in a flush's middle made exact again.
//! - `chunks`: the bytes of a chunk, up to 128 tickets' records under one key.
//! - `journal`: the plan journal, which makes a flush that changed plans whole after a crash.
//! - `plans`: tickets' plans (script, batches, instances), kept apart from the records.
//! - [`projection`]: the store and the query view kept in step, with a write-behind buffer
//!   between them; what ingest writes and the API reads.
//! - `writer`: the write-behind thread and its hand-off protocol.
//! - `seen`: which tickets a projection may hold, so that most look-ups of new ones skip sled.
//! - [`generations`]: the live generation, a rebuilt one beside it, and `CURRENT`.

mod chunks;
pub(crate) mod generations;
mod journal;
mod plans;
pub(crate) mod projection;
pub(crate) mod records;
mod seen;
pub(crate) mod writer;

pub use generations::{Ledger, fresh_generation, keep_aside_and_make_live};
pub use projection::{FlushPolicy, Projection};
pub use records::{
    DEFAULT_CACHE_MB, DEFAULT_LOCK_WAIT, Store, encode_ticket, ticket_json, ticket_key_parts,
};
pub use writer::WriteStats;

/// A failure of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled itself failed (I/O, corruption it detected, lock held by another process...).
    #[error("sled: {0}")]
    Sled(sled::Error),
    /// Another process holds the store's lock, and did not let go within the lock wait.
    #[error(
        "the store at {} is locked by another process (waited {waited:?}): stop the other daemon using it, or point store.path elsewhere",
        dir.display()
    )]
    Locked {
        /// The store's directory.
        dir: std::path::PathBuf,
        /// How long the start waited.
        waited: std::time::Duration,
    },
    /// A file or directory of the store beside sled's own could not be read or written.
    #[error("store I/O: {0}")]
    Io(std::io::Error),
    /// `CURRENT`, which names the live generation, is missing, unreadable or damaged: the store
    /// refuses to open rather than guess, and deletes nothing.
    #[error("{}: {problem}; the store was left as it is", path.display())]
    Current {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it, and what to do.
        problem: String,
    },
    /// sled's own file (or the plan journal beside it) failed its checks (truncated, bytes
    /// changed) when the store was opened: the daemon refuses to start over it, and deletes
    /// nothing.
    #[error(
        "{} is damaged ({detail}); the daemon will not start over it. Fold the stream into a new generation with `ticket-ledger rebuild-store` (the damaged generation is kept beside it), or restore the store from a backup",
        file.display()
    )]
    Damaged {
        /// The damaged file.
        file: std::path::PathBuf,
        /// What was found.
        detail: String,
    },
    /// The store's filesystem is nearly full, so what was folded last is not written yet.
    #[error("{0}")]
    DiskFull(String),
    /// A value could not be decoded: the store was written by something else.
    #[error(
        "corrupt record under key {key}: {reason} (`ticket-ledger rebuild-store` folds the stream into a new generation)"
    )]
    Corrupt {
        /// The key, hex.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A fold failed halfway and the in-memory buffer no longer matches the stream; the daemon
    /// must restart from what sled holds.
    #[error("the projection is inconsistent after a failed fold; restart the daemon")]
    Inconsistent,
    /// The store was written by an incompatible version of the daemon.
    #[error("store format {found} is not the supported format {FORMAT_VERSION}; `ticket-ledger rebuild-store` folds the stream into a new generation of this format, keeping the old one beside it", FORMAT_VERSION = records::FORMAT_VERSION)]
    Format {
        /// The version found.
        found: u64,
    },
}

// The inner errors are shown in the message, not chained as sources, so that a logged chain
// names each cause once.
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e)
    }
}
