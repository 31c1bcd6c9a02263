//! Test harness: a real `nats-server` per test on a free port with its own JetStream dir, and the
//! real daemon (in-process via `App`, or as the compiled binary) with its own sled dir. Everything
//! is cleaned up on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use tempfile::TempDir;
use ticket_ledger::app::App;
use ticket_ledger::auth::hash_token;
use ticket_ledger::config::{
    AccessKeySettings, AuthSettings, Embedded, PrincipalSettings, Settings, TokenSettings,
};
use ticket_ledger::domain::ProjectId;
use ticket_ledger::events::{CreatedData, Event, Kind};
use ticket_ledger::projection::{Ledger, Projection};
use tokio_util::sync::CancellationToken;

pub const PREFIX: &str = "coc.job.script";
/// Grants proj-a only, with the list action.
pub const TOKEN_A: &str = "token-a";
/// Grants proj-a and proj-b, with the list action.
pub const TOKEN_AB: &str = "token-ab";
/// Grants proj-a, but no action.
pub const TOKEN_NO_ACTION: &str = "token-no-action";
/// Grants proj-a, every action including the ledger's administration.
pub const TOKEN_ADMIN: &str = "token-admin";
/// Grants proj-a, list and get, under the condition coc:JobType = SCRIPT.
pub const TOKEN_SCRIPTS_ONLY: &str = "token-scripts-only";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nats_binary() -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
    {
        let p = dir.join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!("nats-server not found: `apt-get install nats-server` (.ci/run does it)")
}

/// A real nats-server with JetStream, on a free port, with its own store dir.
pub struct NatsServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let mut s = NatsServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.start_again();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and dir.
    pub fn start_again(&mut self) {
        let child = Command::new(nats_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A JetStream context with a generous ack timeout: the whole suite runs in parallel on
    /// two cores, and a slow ack is not what any test is about.
    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::connect(self.url()).await.unwrap();
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(30))
            .build(client)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Settings for a daemon under test: its own store, a free HTTP port, the test broker.
pub fn settings(nats_url: &str, store: &Path) -> Settings {
    let mut s = Settings::defaults();
    s.http.listen = "127.0.0.1:0".parse().unwrap();
    s.store.path = store.to_owned();
    s.nats.url = nats_url.to_owned();
    s.nats.embedded = Embedded::Never;
    s.auth = AuthSettings {
        principals: vec![
            principal("a", &["proj-a"], &["coc:job:list", "coc:job:get"], None),
            principal("ab", &["proj-a", "proj-b"], &["coc:job:list"], None),
            principal("no-action", &["proj-a"], &[], None),
            principal(
                "admin",
                &["proj-a"],
                &["coc:job:list", "coc:job:get", "coc:ledger:admin"],
                None,
            ),
            principal(
                "scripts-only",
                &["proj-a"],
                &["coc:job:list", "coc:job:get"],
                Some(&["SCRIPT"]),
            ),
            principal("sdk", &["proj-a", "proj-b"], &["coc:job:list"], None),
            principal("sdk-b", &["proj-b"], &["coc:job:list"], None),
        ],
        tokens: vec![
            token("a", TOKEN_A),
            token("ab", TOKEN_AB),
            token("no-action", TOKEN_NO_ACTION),
            token("admin", TOKEN_ADMIN),
            token("scripts-only", TOKEN_SCRIPTS_ONLY),
        ],
        access_keys: vec![
            access_key("sdk", AK, SK_ENV),
            access_key("sdk-b", AK_B, SK_B_ENV),
        ],
    };
    // SAFETY: every test sets the same values, before any thread reads them.
    unsafe {
        std::env::set_var(SK_ENV, SK);
        std::env::set_var(SK_B_ENV, SK_B);
    }
    s
}

/// An access key of principal "sdk" (projects proj-a and proj-b, coc:job:list).
pub const AK: &str = "TESTAK0000000000000A";
/// Its secret key.
pub const SK: &str = "test-secret-key-of-sdk";
const SK_ENV: &str = "TICKET_LEDGER_TEST_SK";
/// An access key of principal "sdk-b" (project proj-b only).
pub const AK_B: &str = "TESTAK0000000000000B";
/// Its secret key.
pub const SK_B: &str = "test-secret-key-of-sdk-b";
const SK_B_ENV: &str = "TICKET_LEDGER_TEST_SK_B";

fn principal(
    name: &str,
    projects: &[&str],
    actions: &[&str],
    job_types: Option<&[&str]>,
) -> PrincipalSettings {
    PrincipalSettings {
        name: name.into(),
        projects: projects.iter().map(|s| s.to_string()).collect(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
        job_types: job_types.map(|j| j.iter().map(|s| s.to_string()).collect()),
    }
}

fn token(principal: &str, token: &str) -> TokenSettings {
    TokenSettings {
        principal: principal.into(),
        sha256: hash_token(token),
    }
}

fn access_key(principal: &str, ak: &str, env: &str) -> AccessKeySettings {
    AccessKeySettings {
        principal: principal.into(),
        access_key: ak.into(),
        secret_key_env: Some(env.into()),
        secret_key_file: None,
    }
}

/// The daemon, in-process.
pub struct TestApp {
    pub port: u16,
    pub settings: Settings,
    pub ledger: Arc<Ledger>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn spawn(nats_url: &str, store: &Path) -> Self {
        Self::spawn_with(settings(nats_url, store)).await
    }

    /// The daemon with these settings.
    pub async fn spawn_with(settings: Settings) -> Self {
        let app = App::build(settings.clone()).await.expect("build");
        let port = app.port();
        let ledger = app.ledger();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(app.run(cancel.clone()));
        TestApp {
            port,
            settings,
            ledger,
            cancel,
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// The live projection.
    pub fn projection(&self) -> Arc<Projection> {
        self.ledger.current()
    }

    /// Graceful stop: waits for the current batch, flushes the store.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// Waits until every event through `seq` is applied and the list view shows it.
    pub async fn wait_applied(&self, seq: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.projection().view_seq() < seq {
            assert!(
                Instant::now() < deadline,
                "applied {} of {seq}",
                self.projection().applied_seq()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }

    /// GET with headers; returns status and raw body.
    pub async fn get(&self, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.http.get(self.url(path_and_query));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// GET the list as token A; returns the parsed body.
    pub async fn list(&self, query: &str) -> serde_json::Value {
        let (status, body) = self
            .get(
                &format!("/v1/job/script/orders{query}"),
                &[("X-Auth-Token", TOKEN_A)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A test's own broker, store dir and daemon, and a JetStream context to publish with. Keep
/// every part bound until the test ends: dropping the server or the dir stops or deletes them.
pub async fn start_env() -> (NatsServer, TempDir, TestApp, jetstream::Context) {
    let nats = NatsServer::start();
    let store = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&nats.url(), store.path()).await;
    let js = nats.jetstream().await;
    (nats, store, app, js)
}

/// Builds an event.
pub fn ev(project: &str, order_id: u64, kind: Kind, time_ms: i64) -> Event {
    Event {
        id: uuid::Uuid::new_v4().to_string(),
        source: "test-executor".into(),
        kind,
        time_ms,
        project: ProjectId::parse(project).unwrap(),
        order_id,
        created: None,
    }
}

/// Builds a `created` event.
pub fn created(
    project: &str,
    order_id: u64,
    time_ms: i64,
    name: &str,
    creator: &str,
    execute_uuid: &str,
    region_ids: &str,
) -> Event {
    let mut e = ev(project, order_id, Kind::Created, time_ms);
    e.created = Some(CreatedData {
        execute_uuid: execute_uuid.into(),
        order_name: name.into(),
        creator: creator.into(),
        region_ids: region_ids.into(),
        job_type: "SCRIPT".into(),
    });
    e
}

/// Makes sure the stream exists (as the daemon would), so publishing never races its creation.
pub async fn ensure_stream(js: &jetstream::Context) {
    let s = Settings::defaults();
    ticket_ledger::broker::ensure_stream(js, &s.nats)
        .await
        .unwrap();
}

/// Publishes events in order with `Nats-Msg-Id`; returns the last stream sequence.
pub async fn publish(js: &jetstream::Context, events: &[Event]) -> u64 {
    let raw: Vec<(String, Vec<u8>, Option<String>)> = events
        .iter()
        .map(|e| (e.subject(PREFIX), e.to_bytes(), Some(e.id.clone())))
        .collect();
    publish_raw(js, raw).await
}

/// Publishes raw messages in order (optionally with a `Nats-Msg-Id`); returns the last sequence.
///
/// The first message is published alone and retried while JetStream answers "no stream": on a
/// loaded machine a stream just created can take a moment to take messages, and nothing is
/// stored by a refused publish, so the retry cannot duplicate it. The rest are pipelined.
pub async fn publish_raw(
    js: &jetstream::Context,
    messages: Vec<(String, Vec<u8>, Option<String>)>,
) -> u64 {
    ensure_stream(js).await;
    let publish = |subject: String, payload: Vec<u8>, id: Option<String>| {
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        js.publish_with_headers(subject, headers, payload.into())
    };
    let mut messages = messages.into_iter();
    let mut last = 0;
    if let Some((subject, payload, id)) = messages.next() {
        let mut tries = 0;
        last = loop {
            let ack = publish(subject.clone(), payload.clone(), id.clone())
                .await
                .unwrap()
                .await;
            match ack {
                Ok(a) => break a.sequence,
                Err(e) if tries < 100 && e.kind() == PublishErrorKind::StreamNotFound => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("publishing: {e}"),
            }
        };
    }
    let mut acks = Vec::new();
    for (subject, payload, id) in messages {
        acks.push(publish(subject, payload, id).await.unwrap());
        if acks.len() >= 500 {
            for a in acks.drain(..) {
                last = last.max(a.await.unwrap().sequence);
            }
        }
    }
    for a in acks {
        last = last.max(a.await.unwrap().sequence);
    }
    last
}
