//! Test harness: a real `nats-server` per test on a free port with its own JetStream dir, and the
//! real daemon (in-process via `App`, or as the compiled binary) with its own sled dir. Everything
//! is cleaned up on drop.

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use tempfile::TempDir;
use ticket_ledger::app::App;
use ticket_ledger::config::{
    AccessKeySettings, AuthSettings, Embedded, PrincipalSettings, Settings, TokenSettings,
};
use ticket_ledger::core::domain::ProjectId;
use ticket_ledger::core::events::{CreatedData, Event, Kind};
use ticket_ledger::http::auth::hash_token;
use ticket_ledger::nats::find_binary;
use ticket_ledger::nats::server::{Launch, reported_port};
use ticket_ledger::store::{Ledger, Projection};
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

/// A child process, killed and reaped when dropped: a test that fails before it stops the
/// process must not leave it running on the test's files.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real nats-server with JetStream, on a port it picked itself, with its own store dir.
pub struct NatsServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = Self::launch(dir.path(), None);
        NatsServer {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts nats-server through the daemon's own launcher, and waits for the port it reports.
    fn launch(dir: &Path, port: Option<u16>) -> (Child, u16) {
        let binary = find_binary(Path::new("nats-server"))
            .expect("nats-server: `apt-get install nats-server` (.ci/run does it)");
        let (child, port) = launch_server(binary, dir, port, Vec::new());
        (child, port.expect("nats-server's port"))
    }

    /// Restarts the server on the same port and dir (after [`NatsServer::stop`]).
    pub fn start_again(&mut self) {
        let (child, _) = Self::launch(self.dir.path(), Some(self.port));
        self.child = Some(child);
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

/// Starts `binary` (a nats-server) with JetStream in `dir` on `port` (else one it picks), with
/// `args` more, logging to `dir/server.log`; returns it and the port it reported, if it did
/// within 15 s.
pub fn launch_server(
    binary: std::path::PathBuf,
    dir: &Path,
    port: Option<u16>,
    args: Vec<std::ffi::OsString>,
) -> (Child, anyhow::Result<u16>) {
    let launch = Launch {
        binary,
        host: "127.0.0.1".into(),
        port,
        dir: dir.to_owned(),
        log: Some(dir.join("server.log")),
        args,
    };
    launch.clear_ports_file();
    let child = launch
        .command()
        .unwrap()
        .spawn()
        .expect("starting nats-server");
    (child, reported_port(dir, Duration::from_secs(15)))
}

/// Settings for a daemon under test: its own store, a free HTTP port, the test broker.
pub fn settings(nats_url: &str, store: &Path) -> Settings {
    let mut s = Settings::defaults();
    s.http.listen = "127.0.0.1:0".parse().unwrap();
    s.store.path = store.to_owned();
    s.nats.url = nats_url.to_owned();
    s.nats.embedded = Embedded::Never;
    // Below NATS's own 1 MB payload limit, so that a test can publish an event the ledger
    // refuses as oversized (the default, 1 MiB, is NATS's limit itself).
    s.ingest.max_event_bytes = 64 * 1024;
    s.auth = AuthSettings {
        principals: vec![
            principal("a", &["proj-a"], &["coc:job:list", "coc:job:get"], None),
            principal("ab", &["proj-a", "proj-b"], &["coc:job:list"], None),
            principal("no-action", &["proj-a"], &[], None),
            principal(
                "admin",
                &["proj-a"],
                &[
                    "coc:job:list",
                    "coc:job:get",
                    "coc:job:operate",
                    "coc:ledger:admin",
                ],
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
            access_key("sdk", AK, &secret_file(store, "sk-a", SK)),
            access_key("sdk-b", AK_B, &secret_file(store, "sk-b", SK_B)),
            access_key("admin", AK_ADMIN, &secret_file(store, "sk-admin", SK_ADMIN)),
        ],
        allow_dev_credentials: false,
    };
    s
}

/// Writes a secret key into the test's own store directory (a temp dir; the ledger only looks at
/// its `gen-*` and `CURRENT` there), for `secret_key_file`: no test sets an environment
/// variable while others run.
fn secret_file(store: &Path, name: &str, secret: &str) -> std::path::PathBuf {
    let dir = store.join("test-secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// An access key of principal "sdk" (projects proj-a and proj-b, coc:job:list).
pub const AK: &str = "TESTAK0000000000000A";
/// Its secret key.
pub const SK: &str = "test-secret-key-of-sdk";
/// An access key of principal "sdk-b" (project proj-b only).
pub const AK_B: &str = "TESTAK0000000000000B";
/// Its secret key.
pub const SK_B: &str = "test-secret-key-of-sdk-b";
/// An access key of principal "admin" (proj-a, every action).
pub const AK_ADMIN: &str = "TESTAK00000000000ADM";
/// Its secret key.
pub const SK_ADMIN: &str = "test-secret-key-of-admin";

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

fn access_key(principal: &str, ak: &str, secret_file: &Path) -> AccessKeySettings {
    AccessKeySettings {
        principal: principal.into(),
        access_key: ak.into(),
        secret_key_env: None,
        secret_key_file: Some(secret_file.to_owned()),
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
        id: uuid::Uuid::new_v4().to_string().into(),
        source: "test-executor".into(),
        kind,
        time_ms,
        project: ProjectId::parse(project).unwrap(),
        order_id,
        created: None,
        detail: Default::default(),
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
        plan: None,
    });
    e
}

/// Makes sure the stream exists (as the daemon would), so publishing never races its creation.
pub async fn ensure_stream(js: &jetstream::Context) {
    let s = Settings::defaults();
    ticket_ledger::nats::ensure_stream(js, &s.nats)
        .await
        .unwrap();
}

/// Publishes events in order with `Nats-Msg-Id`; returns the last stream sequence.
pub async fn publish(js: &jetstream::Context, events: &[Event]) -> u64 {
    let raw: Vec<(String, Vec<u8>, Option<String>)> = events
        .iter()
        .map(|e| (e.subject(PREFIX), e.to_bytes(), Some(e.id.to_string())))
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

/// Spawns the daemon binary as `cmd` says, with `http.listen` on port 0, and returns it with the
/// port it bound, read from its JSON log line "listening" (the child reports its port; nobody
/// guesses a free one). Its log goes on being drained on a thread, so it never blocks on a full
/// pipe.
pub fn spawn_reporting_port(mut cmd: std::process::Command) -> (Child, u16) {
    use std::io::BufRead;
    let mut child = cmd
        .env("TICKET_LEDGER_LOG__FORMAT", "json")
        .env("TICKET_LEDGER_LOG__LEVEL", "warn,ticket_ledger::app=info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the daemon");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "listening"
                && let Some(port) = v["fields"]["addr"]
                    .as_str()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok())
            {
                let _ = tx.send(port);
            } else if v["level"] != "INFO" && v["fields"]["message"] != "events dead-lettered" {
                // Dead letters are what many tests send on purpose (and count through the
                // API); echoing each batch's warning would bury a failure's own message.
                eprintln!("daemon: {line}");
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon reported no port within 60 s");
    (child, port)
}

/// `ticket-ledger emit` against the test's broker, quiet: add the arguments and run it.
pub fn emit_command(nats_url: &str) -> std::process::Command {
    ledger_command(nats_url, "emit")
}

/// A `ticket-ledger` subcommand against the test's broker (never starting its own), quiet.
pub fn ledger_command(nats_url: &str, subcommand: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ticket-ledger"));
    cmd.arg(subcommand)
        .env("TICKET_LEDGER_NATS__URL", nats_url)
        .env("TICKET_LEDGER_NATS__EMBEDDED", "never")
        .env("TICKET_LEDGER_LOG__LEVEL", "error");
    cmd
}
