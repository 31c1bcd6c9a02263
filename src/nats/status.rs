//! What the ingest loop last saw of the broker, shared with `/readyz` and the rebuild.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Why the reader started its consumer again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Nothing, not even a heartbeat, arrived for a while.
    Silence,
    /// The connection or the subscription ended.
    Connection,
    /// A heartbeat said more was sent than arrived.
    Heartbeat,
    /// A consumer sequence was skipped.
    Sequence,
    /// A delivery the protocol does not allow.
    Protocol,
    /// Nothing was delivered for a while although the stream holds more.
    Stalled,
}

impl Restart {
    /// Every reason, in the order of [`BrokerStatus::consumer_restarts`].
    pub const ALL: [Restart; 6] = [
        Restart::Silence,
        Restart::Connection,
        Restart::Heartbeat,
        Restart::Sequence,
        Restart::Protocol,
        Restart::Stalled,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Silence => "silence",
            Restart::Connection => "connection",
            Restart::Heartbeat => "heartbeat",
            Restart::Sequence => "sequence",
            Restart::Protocol => "protocol",
            Restart::Stalled => "stalled",
        }
    }
}

/// Connected or not, the stream's last sequence as last reported, and how often the connection
/// dropped and the reader's consumer started over.
#[derive(Debug, Default)]
pub struct BrokerStatus {
    connected: AtomicBool,
    stream_last_seq: AtomicU64,
    /// When the broker last told the stream's last sequence.
    told_at: Mutex<Option<Instant>>,
    /// The stream's last sequence as first told after the start: a replica is not ready before
    /// it has applied that much (everything it may have served before a crash lies below it).
    at_start: OnceLock<u64>,
    disconnects: AtomicU64,
    restarts: [AtomicU64; Restart::ALL.len()],
}

impl BrokerStatus {
    /// Records what the broker said: connected or not, and the stream's last sequence if known.
    pub fn set(&self, connected: bool, stream_last_seq: Option<u64>) {
        self.connected.store(connected, Ordering::Release);
        if let Some(s) = stream_last_seq {
            self.stream_last_seq.store(s, Ordering::Release);
            let _ = self.at_start.set(s);
            *self.told_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// How long ago the broker last told the stream's last sequence (`None`: never).
    pub fn last_seq_age(&self) -> Option<Duration> {
        self.told_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    /// The stream's last sequence as first told after the start (`None`: not yet told).
    pub fn last_seq_at_start(&self) -> Option<u64> {
        self.at_start.get().copied()
    }

    /// Whether the ingest loop is connected to JetStream.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Counts a dropped connection (the client library reconnects by itself).
    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections dropped so far.
    pub fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }

    /// Counts a consumer restart.
    pub fn consumer_restarted(&self, why: Restart) {
        self.restarts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Consumer restarts so far, by reason.
    pub fn consumer_restarts(&self) -> [(Restart, u64); Restart::ALL.len()] {
        Restart::ALL.map(|r| (r, self.restarts[r as usize].load(Ordering::Relaxed)))
    }

    /// Last stream sequence the broker reported (0 if unknown).
    pub fn stream_last_seq(&self) -> u64 {
        self.stream_last_seq.load(Ordering::Acquire)
    }
}
