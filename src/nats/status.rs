//! What the ingest loop last saw of the broker, shared with `/readyz` and the rebuild.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Connected or not, and the stream's last sequence as last reported.
#[derive(Debug, Default)]
pub struct BrokerStatus {
    connected: AtomicBool,
    stream_last_seq: AtomicU64,
}

impl BrokerStatus {
    /// Records what the broker said: connected or not, and the stream's last sequence if known.
    pub fn set(&self, connected: bool, stream_last_seq: Option<u64>) {
        self.connected.store(connected, Ordering::Release);
        if let Some(s) = stream_last_seq {
            self.stream_last_seq.store(s, Ordering::Release);
        }
    }

    /// Whether the ingest loop is connected to JetStream.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Last stream sequence the broker reported (0 if unknown).
    pub fn stream_last_seq(&self) -> u64 {
        self.stream_last_seq.load(Ordering::Acquire)
    }
}
