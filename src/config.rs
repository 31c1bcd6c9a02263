//! Settings: `config/default.toml` (compiled in) < `--config FILE` < environment variables.
//!
//! Environment variables are `TICKET_LEDGER_<SECTION>__<KEY>`, e.g.
//! `TICKET_LEDGER_NATS__URL=nats://10.0.0.5:4222`. Every setting is documented in README.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// The compiled-in default configuration.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// All settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP API.
    pub http: HttpSettings,
    /// sled store.
    pub store: StoreSettings,
    /// NATS / JetStream.
    pub nats: NatsSettings,
    /// The ingest loop.
    pub ingest: IngestSettings,
    /// Logging.
    pub log: LogSettings,
    /// Tokens and their grants.
    pub auth: AuthSettings,
}

/// HTTP API settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest lag at which `/readyz` says ready.
    pub ready_max_lag: u64,
    /// Oldest the stream's last sequence, as the daemon last learnt it, may be for `/readyz` to
    /// say ready, ms: a lag computed from a stale figure is no evidence of being in step.
    #[serde(default = "default_ready_max_stale_ms")]
    pub ready_max_stale_ms: u64,
    /// Whether `GET /metrics` answers without credentials; unset: only on a loopback listener
    /// (elsewhere it wants a caller granted `coc:ledger:admin`).
    #[serde(default)]
    pub metrics_open: Option<bool>,
}

fn default_ready_max_stale_ms() -> u64 {
    5_000
}

fn one() -> usize {
    1
}

/// How events are decoded, by these settings: the subject prefix and the size limit. What
/// ingest, the rebuild, `rebuild-store` and `verify` all decode with.
pub fn decode_rules(
    nats: &NatsSettings,
    ingest: &IngestSettings,
) -> crate::core::batch::DecodeRules {
    crate::core::batch::DecodeRules {
        subject_prefix: nats.subject_prefix.clone(),
        max_event_bytes: ingest.max_event_bytes,
        projects: (!ingest.projects.is_empty()).then(|| {
            std::sync::Arc::new(
                ingest
                    .projects
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
            )
        }),
    }
}

/// Store settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// sled directory.
    pub path: PathBuf,
    /// Write what was folded to sled once this many stream messages have been folded since the
    /// last write...
    pub flush_events: u64,
    /// ... or once the oldest unwritten fold is this old, ms.
    pub flush_interval_ms: u64,
    /// sled's page cache, MiB.
    pub cache_mb: u64,
    /// How long a start waits for the store's lock, ms (another process still exiting).
    #[serde(default = "default_lock_wait_ms")]
    pub lock_wait_ms: u64,
    /// Free space kept on the store's filesystem, MiB: below it, writes wait.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
}

fn default_lock_wait_ms() -> u64 {
    5_000
}

fn default_min_free_mb() -> u64 {
    256
}

/// When to run a `nats-server` child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Embedded {
    /// Only when nothing answers at `url`.
    Auto,
    /// Never: keep retrying `url`.
    Never,
    /// Always.
    Always,
}

/// NATS settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL.
    pub url: String,
    /// When to start a child `nats-server`.
    pub embedded: Embedded,
    /// The `nats-server` binary (a path, or a name looked up on PATH).
    pub server_binary: PathBuf,
    /// JetStream directory of the child server.
    pub embedded_dir: PathBuf,
    /// Stream name.
    pub stream: String,
    /// Stream subjects (used when the daemon creates the stream).
    pub subjects: Vec<String>,
    /// Subject prefix before `<project_id>.<kind>`.
    pub subject_prefix: String,
    /// Timeout of one connection attempt, ms.
    pub connect_timeout_ms: u64,
    /// Whether ingest and rebuild receive the stream on a connection of their own
    /// ([`crate::nats::wire`]) rather than through the client library (which they still use for a
    /// server that asks for TLS).
    pub own_reader: bool,
    /// Replicas of the stream the daemon creates when it is missing (1; 3 on a three-node
    /// JetStream cluster). An existing stream is never changed; a difference is logged.
    #[serde(default = "one")]
    pub stream_replicas: usize,
    /// The cluster the created stream is placed in (JetStream placement), if any.
    #[serde(default)]
    pub stream_placement_cluster: Option<String>,
    /// Server tags the created stream's replicas are placed on, if any.
    #[serde(default)]
    pub stream_placement_tags: Vec<String>,
    /// PEM file of the CA (or CAs) that signed the servers' certificates: connect with TLS.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for servers that verify clients.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`) to authenticate with.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (a user JWT and its NKey seed) to authenticate with.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
}

impl NatsSettings {
    /// Whether the connection needs more than the plain protocol: TLS, an NKey or a `.creds`
    /// file (the reader's own connection speaks none of them; the client library does).
    pub fn secured(&self) -> bool {
        self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.nkey_seed_file.is_some()
            || self.creds_file.is_some()
            || self
                .url
                .split(',')
                .any(|u| u.trim().to_ascii_lowercase().starts_with("tls://"))
    }
}

/// Ingest settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Most messages folded (and made visible) in one step.
    pub batch_size: usize,
    /// Largest accepted payload, bytes.
    pub max_event_bytes: usize,
    /// When the daemon (re)connects this many events or more behind the stream, it folds the
    /// backlog without keeping the list view in step and rebuilds the view from the records once
    /// caught up (see [`crate::store::Projection::suspend_view`]). 0: always keep it.
    pub catch_up_events: u64,
    /// The projects this instance folds and serves (empty: all). Projects share nothing, so a
    /// region's tenants can be spread over instances that each read the stream and keep their
    /// own; a request for a project held elsewhere gets a 421 naming it (see docs/deploy.md).
    #[serde(default)]
    pub projects: Vec<crate::core::domain::ProjectId>,
}

/// Log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// tracing filter.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Auth settings: principals with IAM-style policies, and the credentials bound to them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Who may do what.
    #[serde(default)]
    pub principals: Vec<PrincipalSettings>,
    /// API tokens (`X-Auth-Token`), stored as their SHA-256.
    #[serde(default)]
    pub tokens: Vec<TokenSettings>,
    /// Access keys for `SDK-HMAC-SHA256` signed requests (the official SDKs).
    #[serde(default)]
    pub access_keys: Vec<AccessKeySettings>,
    /// Allow the default configuration's credentials (`dev-token`, `LEDGERDEVACCESSKEY`) on a
    /// listener that is not loopback. Off: the daemon refuses to start so exposed.
    #[serde(default)]
    pub allow_dev_credentials: bool,
}

/// A principal and its policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSettings {
    /// Name (what logs show).
    pub name: String,
    /// Projects it may read.
    pub projects: Vec<String>,
    /// Actions it may perform: `coc:job:list`, `coc:job:get`, `coc:ledger:admin`.
    pub actions: Vec<String>,
    /// Condition `coc:JobType`: the job types it may see; absent means all.
    #[serde(default)]
    pub job_types: Option<Vec<String>>,
}

/// One API token, stored as its SHA-256, bound to a principal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// The principal's name.
    pub principal: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}

/// One access key, bound to a principal. The secret is needed as given (HMAC), so it is read
/// from an environment variable or a file, never from the config file itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeySettings {
    /// The principal's name.
    pub principal: String,
    /// The access key id (`Access=` of the signature).
    pub access_key: String,
    /// Environment variable holding the secret key.
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// File holding the secret key (trailing whitespace is ignored).
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
}

impl Settings {
    /// Loads the layered settings. A key no setting has (a typo, in the file or in a
    /// `TICKET_LEDGER_<SECTION>__<KEY>` variable) is an error that names it, not silently ignored.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(f) = file {
            fig = fig.merge(Toml::file_exact(f));
        }
        // Only `<SECTION>__<KEY>` variables are settings; others of the prefix name other things
        // (TICKET_LEDGER_CONFIG, TICKET_LEDGER_TOKEN, the default access key's secret).
        let env = Env::prefixed("TICKET_LEDGER_")
            .filter(|k| k.as_str().contains("__"))
            .split("__");
        fig.merge(env).extract().map_err(Box::new)
    }

    /// The compiled-in defaults alone (no file, no environment): the base of test settings.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let s = Settings::defaults();
        assert_eq!(s.nats.stream, "COC_JOB_EVENTS");
        assert_eq!(s.ingest.batch_size, 30_000);
        assert_eq!(s.auth.tokens.len(), 1);
        assert_eq!(s.auth.principals.len(), 1);
        assert_eq!(s.auth.access_keys.len(), 1);
    }

    #[test]
    fn a_file_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[http]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
        let s = Settings::load(Some(&f)).unwrap();
        assert_eq!(s.http.listen.port(), 9999);
        assert_eq!(
            s.nats.stream, "COC_JOB_EVENTS",
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn a_misspelt_key_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        for (toml, key) in [
            ("[http]\nlisten_addr = \"127.0.0.1:9999\"\n", "listen_addr"),
            ("[htp]\nlisten = \"127.0.0.1:9999\"\n", "htp"),
            (
                "[[auth.tokens]]\nprincipal = \"local-dev\"\nsha = \"00\"\n",
                "sha",
            ),
        ] {
            let f = dir.path().join("c.toml");
            std::fs::write(&f, toml).unwrap();
            let err = Settings::load(Some(&f)).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(Settings::load(Some(Path::new("/nonexistent/x.toml"))).is_err());
    }
}
