//! A full disk under the store: the daemon keeps answering from memory, says it is not ready
//! and why, pauses ingest without crashing, and catches up once space is freed, with records
//! identical to the stream's fold. The store lives on a small tmpfs the test mounts (CI runs as
//! root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ticket_ledger::core::events::Kind;
use ticket_ledger::ops::audit::AdminClient;
use ticket_ledger::ops::verify::verify;

use crate::helpers::*;

/// A tmpfs of `mb` MiB mounted on a temp dir, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.path()).unwrap();
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills `disk` until `leave` bytes are free; returns the file that fills it.
fn fill(disk: &SmallDisk, leave: u64) -> PathBuf {
    let file = disk.path().join("filler");
    let size = disk.free().saturating_sub(leave);
    std::fs::write(&file, vec![0u8; size as usize]).unwrap();
    file
}

async fn readyz(app: &TestApp) -> (u16, serde_json::Value) {
    let (status, body) = app.get("/readyz", &[]).await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn a_full_disk_pauses_writes_and_loses_nothing() {
    let nats = NatsServer::start();
    let disk = SmallDisk::mount(40);
    let mut s = settings(&nats.url(), &disk.path().join("ledger"));
    s.store.min_free_mb = 8;
    s.store.flush_events = 200;
    s.store.flush_interval_ms = 100;
    let app = TestApp::spawn_with(s).await;
    let js = nats.jetstream().await;
    let first: Vec<_> = (1..=300)
        .map(|id| created("proj-a", id, 1_700_000_000_000, "n", "alice", "u", "r"))
        .collect();
    let seq = publish(&js, &first).await;
    app.wait_applied(seq).await;
    assert_eq!(readyz(&app).await.0, 200);

    // Below the reserve, then more events.
    let filler = fill(&disk, 4 * 1024 * 1024);
    let more: Vec<_> = (1..=300)
        .flat_map(|id| [ev("proj-a", id, Kind::Started, 1_700_000_001_000)])
        .chain((301..=600).map(|id| created("proj-a", id, 1_700_000_002_000, "n", "bob", "u", "r")))
        .collect();
    let last = publish(&js, &more).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = readyz(&app).await;
        if status == 503 && body["store"] == "writes paused" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with a full disk: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("store.min_free_mb"), "{reason}");
    assert!(
        body["durable_seq"].as_u64() <= body["applied_seq"].as_u64(),
        "{body}"
    );
    // Reads go on from memory, and what was folded before the pause is listed.
    let page = app.list("?limit=1").await;
    assert!(page["data"]["total"].as_u64().unwrap() >= 300, "{page}");
    // Retried with backoff, not crashed: still paused a while later, the process still serving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["durable_seq"].as_u64().unwrap() < last,
        "nothing written: {body}"
    );

    // Space again: it catches up, and its records are the stream's fold.
    std::fs::remove_file(filler).unwrap();
    app.wait_applied(last).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&app).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready after space was freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = app.list("?limit=1").await;
    assert_eq!(page["data"]["total"], 600);
    let admin = AdminClient::new(&app.url(""), TOKEN_ADMIN);
    let report = verify(&app.settings, &admin, None).await.unwrap();
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    assert_eq!(report.through_seq, last);
    app.stop().await;
}
