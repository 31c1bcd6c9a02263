//! NATS secured as in production: a server that requires TLS (certificates made by the test)
//! and one that requires NKey authentication. The daemon connects with `nats.tls_ca_file` or
//! `nats.nkey_seed_file`, reads the stream (through the client library, which speaks them) and
//! lists what was published.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use tempfile::TempDir;
use ticket_ledger::nats::find_binary;
use ticket_ledger::nats::server::{Launch, reported_port};

use crate::helpers::*;

/// A nats-server started with `args` beyond JetStream; killed on drop.
struct Server {
    _child: KillOnDrop,
    port: u16,
    _dir: TempDir,
}

fn start(dir: TempDir, args: Vec<std::ffi::OsString>) -> Server {
    let launch = Launch {
        binary: find_binary(Path::new("nats-server")).unwrap(),
        host: "127.0.0.1".into(),
        port: None,
        dir: dir.path().join("js"),
        log: None,
        args,
    };
    let child = launch.command().unwrap().spawn().unwrap();
    let port = reported_port(&launch.dir, Duration::from_secs(15)).unwrap();
    Server {
        _child: KillOnDrop(child),
        port,
        _dir: dir,
    }
}

/// Publishes a ticket through `client` and checks that a daemon on `url`, its NATS settings
/// changed by `secure`, lists it.
async fn publish_and_list(
    client: async_nats::Client,
    url: &str,
    secure: impl FnOnce(&mut ticket_ledger::config::NatsSettings),
) {
    // The generous ack timeout of the other tests' contexts: the suite shares two cores.
    let js = &jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .build(client);
    let store = tempfile::tempdir().unwrap();
    let mut settings = settings(url, store.path());
    secure(&mut settings.nats);
    let app = TestApp::spawn_with(settings).await;
    let last = publish(
        js,
        &[created("proj-a", 7, 1_000, "secured", "alice", "u7", "r")],
    )
    .await;
    app.wait_applied(last).await;
    let page = app.list("?limit=10").await;
    assert_eq!(page["data"]["data"][0]["order_name"], "secured", "{page}");
    let (status, body) = app.get("/readyz", &[]).await;
    assert_eq!(status, 200, "connected and caught up: {body}");
    app.stop().await;
}

#[tokio::test]
async fn a_server_that_requires_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server-key.pem"),
    );
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let server = start(
        dir,
        vec![
            "--tls".into(),
            "--tlscert".into(),
            cert_file.into(),
            "--tlskey".into(),
            key_file.into(),
        ],
    );
    let url = format!("nats://127.0.0.1:{}", server.port);
    assert!(
        async_nats::connect(url.as_str()).await.is_err(),
        "the server refuses a client without TLS"
    );
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca_file.clone())
        .require_tls(true)
        .connect(url.as_str())
        .await
        .unwrap();
    publish_and_list(client, &url, |n| n.tls_ca_file = Some(ca_file)).await;
}

#[tokio::test]
async fn a_server_that_requires_an_nkey() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let conf = dir.path().join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, format!("{}\n", user.seed().unwrap())).unwrap();
    let server = start(dir, vec!["-c".into(), conf.into()]);
    let url = format!("nats://127.0.0.1:{}", server.port);
    assert!(
        async_nats::connect(url.as_str()).await.is_err(),
        "the server refuses a client without the NKey"
    );
    let client = async_nats::ConnectOptions::with_nkey(user.seed().unwrap())
        .connect(url.as_str())
        .await
        .unwrap();
    publish_and_list(client, &url, |n| n.nkey_seed_file = Some(seed_file)).await;
}

/// `nats.url` as a list of servers whose first is down: the client library and the reader's
/// own connection both go on to the next, and ingest proceeds.
#[tokio::test]
async fn a_server_list_whose_first_server_is_down() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    let list = format!("{dead},{}", nats.url());
    publish_and_list(client, &list, |n| {
        assert!(
            n.own_reader && !n.secured(),
            "the own reader is the one tried"
        );
    })
    .await;
}
