//! The daemon's Prometheus metrics: one registry per [`crate::app::App`] (no global, so that
//! daemons in one process, as in the tests, keep their own), served at `GET /metrics` in the
//! Prometheus text format. Names and units follow Prometheus' conventions; every label's values
//! are a bounded set (reason codes, declared routes, status codes).
//!
//! Counters and histograms are recorded where things happen (ingest, the access log); the
//! positions, the lag and the ticket count are read from the ledger at each scrape.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::core::batch::FoldReport;
use crate::nats::BrokerStatus;
use crate::store::{Projection, WriteStats};

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    events_read: IntCounter,
    events_applied: IntCounter,
    events_duplicate: IntCounter,
    dead_letters: IntCounterVec,
    fold_batch_events: Histogram,
    fold_seconds: Histogram,
    view_rebuild_seconds: Histogram,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
    /// Read at scrape time.
    pub(crate) applied_seq: IntGauge,
    pub(crate) durable_seq: IntGauge,
    pub(crate) stream_last_seq: IntGauge,
    pub(crate) lag_events: IntGauge,
    pub(crate) lag_seconds: Gauge,
    pub(crate) tickets: IntGauge,
    pub(crate) nats_connected: IntGauge,
    pub(crate) view_in_step: IntGauge,
    pub(crate) rebuild_done: IntGauge,
    pub(crate) rebuild_total: IntGauge,
    nats_disconnects: IntCounter,
    consumer_restarts: IntCounterVec,
    store_writes: IntCounter,
    store_write_seconds: prometheus::Counter,
    store_written_bytes: IntCounter,
    /// The live projection's write statistics at the last scrape (by the projection's address,
    /// so that a switch-over to a rebuilt generation starts its own count).
    last_writes: std::sync::Mutex<(usize, WriteStats)>,
}

/// `metric`, registered: every name is valid and unique by construction, so a failure is a bug.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("a unique metric name");
    metric
}

fn seconds_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.0, 18).expect("valid buckets")
}

impl Metrics {
    /// A fresh registry with every metric, and the process' own (CPU, memory, open files).
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| registered(&registry, IntCounter::new(name, help));
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help).buckets(buckets);
            registered(&registry, Histogram::with_opts(opts))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let dead_letters = counter_vec(
            "ticket_ledger_dead_letters_total",
            "Events refused and kept as dead letters, by reason code.",
            &["reason"],
        );
        let http_requests = counter_vec(
            "ticket_ledger_http_requests_total",
            "HTTP requests answered, by declared route and status code.",
            &["route", "status"],
        );
        let consumer_restarts = counter_vec(
            "ticket_ledger_consumer_restarts_total",
            "Times the reader started its consumer again, by reason.",
            &["reason"],
        );
        let http_seconds = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "ticket_ledger_http_request_duration_seconds",
                    "Time to answer an HTTP request, by declared route.",
                )
                .buckets(seconds_buckets()),
                &["route"],
            ),
        );
        let lag_seconds = registered(
            &registry,
            Gauge::new(
                "ticket_ledger_lag_seconds",
                "Age of the oldest event in the stream not yet applied; 0 when caught up.",
            ),
        );
        let store_write_seconds = registered(
            &registry,
            prometheus::Counter::new(
                "ticket_ledger_store_write_seconds_total",
                "Seconds spent writing batches to sled.",
            ),
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("a unique metric name");
        Metrics {
            events_read: counter(
                "ticket_ledger_events_read_total",
                "Messages read from the stream and folded.",
            ),
            events_applied: counter(
                "ticket_ledger_events_applied_total",
                "Events that changed a ticket.",
            ),
            events_duplicate: counter(
                "ticket_ledger_events_duplicate_total",
                "Events skipped as duplicates of one already applied to their ticket.",
            ),
            fold_batch_events: histogram(
                "ticket_ledger_fold_batch_events",
                "Messages per folded batch.",
                prometheus::exponential_buckets(1.0, 4.0, 9).expect("valid buckets"),
            ),
            fold_seconds: histogram(
                "ticket_ledger_fold_duration_seconds",
                "Time to fold and commit one batch.",
                seconds_buckets(),
            ),
            view_rebuild_seconds: histogram(
                "ticket_ledger_view_rebuild_duration_seconds",
                "Time to build the list view afresh from the records at the end of a catch-up.",
                prometheus::exponential_buckets(0.01, 2.0, 14).expect("valid buckets"),
            ),
            applied_seq: gauge(
                "ticket_ledger_applied_sequence",
                "Last stream sequence whose effects are visible.",
            ),
            durable_seq: gauge(
                "ticket_ledger_durable_sequence",
                "Last stream sequence whose effects are on disk.",
            ),
            stream_last_seq: gauge(
                "ticket_ledger_stream_last_sequence",
                "The stream's last sequence, as the broker last reported it.",
            ),
            lag_events: gauge(
                "ticket_ledger_lag_events",
                "Events in the stream not yet applied.",
            ),
            tickets: gauge("ticket_ledger_tickets", "Tickets held."),
            nats_connected: gauge(
                "ticket_ledger_nats_connected",
                "1 while the daemon is connected to NATS, else 0.",
            ),
            view_in_step: gauge(
                "ticket_ledger_view_in_step",
                "1 while the list view is kept in step with every batch, 0 while it catches up.",
            ),
            rebuild_done: gauge(
                "ticket_ledger_rebuild_done_events",
                "Events the running (or last) blue/green rebuild has folded.",
            ),
            rebuild_total: gauge(
                "ticket_ledger_rebuild_total_events",
                "Events the running (or last) blue/green rebuild has to fold.",
            ),
            nats_disconnects: counter(
                "ticket_ledger_nats_disconnects_total",
                "Times the NATS connection dropped (the client reconnects by itself).",
            ),
            store_writes: counter(
                "ticket_ledger_store_writes_total",
                "Atomic batches written to sled.",
            ),
            store_written_bytes: counter(
                "ticket_ledger_store_written_bytes_total",
                "Bytes of keys and values written to sled.",
            ),
            last_writes: Default::default(),
            consumer_restarts,
            store_write_seconds,
            lag_seconds,
            dead_letters,
            http_requests,
            http_seconds,
            registry,
        }
    }

    /// Records a folded batch and how long it took.
    pub fn folded(&self, report: &FoldReport, seconds: f64) {
        let dead = report.dead_letters.len() as u64;
        self.events_read.inc_by(report.events);
        self.events_duplicate.inc_by(report.duplicates);
        self.events_applied
            .inc_by(report.events.saturating_sub(report.duplicates + dead));
        for d in &report.dead_letters {
            self.dead_letters
                .with_label_values(&[d.code.as_str()])
                .inc();
        }
        self.fold_batch_events.observe(report.events as f64);
        self.fold_seconds.observe(seconds);
    }

    /// Records a rebuild of the list view.
    pub fn view_rebuilt(&self, seconds: f64) {
        self.view_rebuild_seconds.observe(seconds);
    }

    /// Records an answered request (`route` as declared, never the raw path).
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// Brings the counters kept elsewhere (by the broker's status and the live projection's
    /// writer) up to their values at this scrape.
    pub fn sync(&self, broker: &BrokerStatus, projection: &Projection) {
        let up_to = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        up_to(&self.nats_disconnects, broker.disconnects());
        for (why, n) in broker.consumer_restarts() {
            up_to(
                &self.consumer_restarts.with_label_values(&[why.as_str()]),
                n,
            );
        }
        let now = projection.write_stats();
        let id = std::ptr::from_ref(projection) as usize;
        let mut last = self.last_writes.lock().unwrap_or_else(|e| e.into_inner());
        let before = if last.0 == id {
            last.1
        } else {
            WriteStats::default()
        };
        self.store_writes
            .inc_by(now.writes.saturating_sub(before.writes));
        self.store_written_bytes
            .inc_by(now.bytes.saturating_sub(before.bytes));
        self.store_write_seconds
            .inc_by((now.seconds - before.seconds).max(0.0));
        *last = (id, now);
    }

    /// The text format of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing to a vector cannot fail, and every metric is valid by construction.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
