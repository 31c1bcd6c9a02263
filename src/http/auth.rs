//! Principals, their IAM-style policies, and the credentials that speak for them.
//!
//! Two kinds of credential, each bound to a principal:
//! - API tokens (`X-Auth-Token`): only the SHA-256 of each token is kept. A presented token is
//!   hashed and compared with every configured hash in constant time.
//! - Access keys (`Authorization: SDK-HMAC-SHA256 ...`, what the official Huawei Cloud SDKs send):
//!   the secret is kept as given, since HMAC needs it, loaded from an environment variable or a
//!   file; signatures are verified by [`crate::http::sign`] and compared in constant time.
//!
//! A principal's policy: allowed actions, allowed projects, and the condition `coc:JobType`.
//! Nothing here logs a token or a secret; `Debug` of a secret prints nothing of it.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::AuthSettings;
use crate::core::domain::ProjectId;
use crate::http::sign::{self, RequestParts, SignError};

/// Action of the list endpoint (the COC IAM action).
pub const ACTION_LIST: &str = "coc:job:list";
/// Action of the detail endpoint (the COC IAM action).
pub const ACTION_GET: &str = "coc:job:get";
/// Ledger administration: dead letters, redrive, replay, the records export used by `verify`.
pub const ACTION_ADMIN: &str = "coc:ledger:admin";
/// `PUT /v1/job/script/orders/{execute_uuid}/operation`.
pub const ACTION_OPERATE: &str = "coc:job:operate";

/// Who a credential speaks for, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The principal's name (safe to log).
    pub name: String,
    /// Projects it may read.
    pub projects: Vec<ProjectId>,
    /// Actions it may perform.
    pub actions: Vec<String>,
    /// Condition `coc:JobType`: the job types it may see; `None` means all.
    pub job_types: Option<Vec<String>>,
}

/// An auth configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// `sha256` is not 64 hex digits.
    #[error(
        "a token of principal {0:?}: sha256 must be 64 hex digits (ticket-ledger hash-token < token-file prints it)"
    )]
    BadHash(String),
    /// A granted project id is invalid.
    #[error("principal {name:?}: project {project:?}: {source}")]
    BadProject {
        /// Principal name.
        name: String,
        /// The project id.
        project: String,
        /// Why.
        source: crate::core::domain::DomainError,
    },
    /// A credential names a principal that is not configured.
    #[error(
        "{what} names the principal {name:?}, which auth.principals does not define: add that principal, or set auth.{array} as well (each auth array replaces the default one whole; `{array} = []` for none)"
    )]
    UnknownPrincipal {
        /// The credential (`a token`, `access key AK..`).
        what: String,
        /// The principal it names.
        name: String,
        /// `tokens` or `access_keys`.
        array: &'static str,
    },
    /// The built-in development credentials on a listener other hosts can reach.
    #[error(
        "the built-in development credentials ({0}) are configured and http.listen {1} is not a loopback address, so anyone who can reach it could use them. Configure your own in auth.tokens (`ticket-ledger hash-token < token-file` prints a token's sha256) and auth.access_keys, or set auth.allow_dev_credentials = true to allow them anyway"
    )]
    DevCredentials(String, std::net::SocketAddr),
    /// Two access keys have the same id.
    #[error("access key {0:?} is configured twice")]
    DuplicateAccessKey(String),
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither `X-Auth-Token` nor a signature.
    #[error("missing credentials")]
    MissingToken,
    /// A token no configured hash matches.
    #[error("unknown token")]
    UnknownToken,
    /// A signed request that does not verify.
    #[error(transparent)]
    Signature(#[from] SignError),
    /// The principal has several projects and the request names none.
    #[error("x-project-id is required")]
    ProjectRequired,
    /// `x-project-id` is not a valid project id.
    #[error("invalid x-project-id")]
    InvalidProject,
    /// The principal is not granted the named project.
    #[error("project not granted")]
    ProjectNotGranted,
    /// The principal is not granted the action.
    #[error("action {0} not granted")]
    ActionDenied(&'static str),
}

/// The token of the default configuration, for local runs only.
const DEV_TOKEN: &str = "dev-token";
/// The access key of the default configuration.
const DEV_ACCESS_KEY: &str = "LEDGERDEVACCESSKEY";

/// Hex SHA-256 of a token, as configured.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A secret key; its `Debug` shows nothing of it.
#[derive(Clone)]
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The configured principals and credentials.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    principals: Vec<Arc<Principal>>,
    tokens: Vec<([u8; 32], usize)>,
    keys: HashMap<String, (Secret, usize)>,
}

fn read_secret(env: Option<&str>, file: Option<&std::path::Path>) -> Option<Vec<u8>> {
    if let Some(v) = env.and_then(|e| std::env::var(e).ok()) {
        return Some(v.into_bytes()).filter(|s| !s.is_empty());
    }
    let text = std::fs::read_to_string(file?).ok()?;
    Some(text.trim_end().as_bytes().to_vec()).filter(|s| !s.is_empty())
}

impl Authenticator {
    /// Builds the authenticator from settings, refusing unusable entries at start-up. An access
    /// key whose secret is not set (no such variable or file) is disabled with a warning.
    pub fn from_settings(s: &AuthSettings) -> Result<Self, AuthConfigError> {
        let mut principals = Vec::new();
        let mut index = HashMap::new();
        for p in &s.principals {
            let projects = p
                .projects
                .iter()
                .map(|id| {
                    ProjectId::parse(id).map_err(|source| AuthConfigError::BadProject {
                        name: p.name.clone(),
                        project: id.clone(),
                        source,
                    })
                })
                .collect::<Result<_, _>>()?;
            index.insert(p.name.clone(), principals.len());
            principals.push(Arc::new(Principal {
                name: p.name.clone(),
                projects,
                actions: p.actions.clone(),
                job_types: p.job_types.clone(),
            }));
        }
        let find = |name: &str, what: String, array| {
            index
                .get(name)
                .copied()
                .ok_or_else(|| AuthConfigError::UnknownPrincipal {
                    what,
                    name: name.to_owned(),
                    array,
                })
        };
        let mut tokens = Vec::new();
        for t in &s.tokens {
            let hash: [u8; 32] = hex::decode(t.sha256.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| AuthConfigError::BadHash(t.principal.clone()))?;
            tokens.push((hash, find(&t.principal, "a token".into(), "tokens")?));
        }
        let mut keys = HashMap::new();
        for k in &s.access_keys {
            let who = find(
                &k.principal,
                format!("access key {}", k.access_key),
                "access_keys",
            )?;
            let Some(secret) =
                read_secret(k.secret_key_env.as_deref(), k.secret_key_file.as_deref())
            else {
                tracing::warn!(
                    access_key = %k.access_key,
                    principal = %k.principal,
                    "access key disabled: its secret_key_env / secret_key_file is not set"
                );
                continue;
            };
            if keys
                .insert(k.access_key.clone(), (Secret(secret), who))
                .is_some()
            {
                return Err(AuthConfigError::DuplicateAccessKey(k.access_key.clone()));
            }
        }
        Ok(Self {
            principals,
            tokens,
            keys,
        })
    }

    /// Refuses the built-in development credentials (the token `dev-token`, the access key
    /// `LEDGERDEVACCESSKEY` when its secret is set) on a listener that is not loopback, unless
    /// `allow` (`auth.allow_dev_credentials`) says so.
    pub fn refuse_dev_credentials(
        &self,
        listen: std::net::SocketAddr,
        allow: bool,
    ) -> Result<(), AuthConfigError> {
        if allow || listen.ip().is_loopback() {
            return Ok(());
        }
        let dev_token = Sha256::digest(DEV_TOKEN.as_bytes());
        let mut found = Vec::new();
        if self.tokens.iter().any(|(h, _)| h[..] == dev_token[..]) {
            found.push(format!("the token {DEV_TOKEN:?}"));
        }
        if self.keys.contains_key(DEV_ACCESS_KEY) {
            found.push(format!("the access key {DEV_ACCESS_KEY}"));
        }
        if found.is_empty() {
            return Ok(());
        }
        Err(AuthConfigError::DevCredentials(found.join(" and "), listen))
    }

    /// Finds the principal of a request: by its signature when `Authorization` says
    /// `SDK-HMAC-SHA256`, else by its `X-Auth-Token`.
    pub fn authenticate(
        &self,
        req: &RequestParts<'_>,
        now: OffsetDateTime,
    ) -> Result<&Principal, AuthError> {
        let signed = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(sign::is_signed);
        if signed {
            let key = sign::verify(
                req,
                |ak| self.keys.get(ak).map(|(s, _)| s.0.as_slice()),
                now,
            )?;
            let (_, who) = &self.keys[&key];
            return Ok(&self.principals[*who]);
        }
        self.authenticate_token(req.headers.get("x-auth-token").map(|v| v.as_bytes()))
    }

    /// Finds the principal of a presented token, comparing against every entry in constant time.
    pub fn authenticate_token(&self, token: Option<&[u8]>) -> Result<&Principal, AuthError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        let presented = Sha256::digest(token);
        let mut found = None;
        for (hash, who) in &self.tokens {
            if bool::from(hash.ct_eq(presented.as_slice())) {
                found = Some(*who);
            }
        }
        found
            .map(|w| &*self.principals[w])
            .ok_or(AuthError::UnknownToken)
    }
}

impl Principal {
    /// Whether the principal may perform an action that is not about one project.
    pub fn require(&self, action: &'static str) -> Result<(), AuthError> {
        if self.actions.iter().any(|a| a == action) {
            Ok(())
        } else {
            Err(AuthError::ActionDenied(action))
        }
    }

    /// Whether the `coc:JobType` condition lets the principal see a job type.
    pub fn sees_job_type(&self, job_type: &str) -> bool {
        self.job_types
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|t| t == job_type))
    }

    /// Decides which project a request reads and whether it may perform `action` there.
    ///
    /// `x-project-id` picks the project and must be granted; without it, a principal of exactly
    /// one project uses that one. The project check comes before the action check so that a
    /// caller learns nothing about projects it was not granted.
    pub fn authorize(
        &self,
        requested: Option<&[u8]>,
        action: &'static str,
    ) -> Result<ProjectId, AuthError> {
        let project = match requested {
            Some(raw) => {
                let raw = std::str::from_utf8(raw).map_err(|_| AuthError::InvalidProject)?;
                let p = ProjectId::parse(raw).map_err(|_| AuthError::InvalidProject)?;
                if !self.projects.contains(&p) {
                    return Err(AuthError::ProjectNotGranted);
                }
                p
            }
            None => match self.projects.as_slice() {
                [only] => only.clone(),
                [] => return Err(AuthError::ProjectNotGranted),
                _ => return Err(AuthError::ProjectRequired),
            },
        };
        self.require(action)?;
        Ok(project)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default configuration's credentials are refused on a listener other hosts can reach,
    /// unless allowed; the error says how to make a token. Own credentials are never refused.
    #[test]
    fn dev_credentials_are_refused_off_loopback() {
        let defaults = crate::config::Settings::defaults();
        let a = Authenticator::from_settings(&defaults.auth).unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let err = a
            .refuse_dev_credentials(any, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev-token") && err.contains("hash-token"),
            "{err}"
        );
        assert!(err.contains("allow_dev_credentials"), "{err}");
        assert!(
            a.refuse_dev_credentials("127.0.0.1:8080".parse().unwrap(), false)
                .is_ok()
        );
        assert!(
            a.refuse_dev_credentials("[::1]:8080".parse().unwrap(), false)
                .is_ok()
        );
        assert!(a.refuse_dev_credentials(any, true).is_ok());
        let mut own = defaults.auth.clone();
        own.tokens[0].sha256 = hash_token("a-real-token");
        let a = Authenticator::from_settings(&own).unwrap();
        assert!(a.refuse_dev_credentials(any, false).is_ok());
    }

    /// Replacing one auth array without the others says what to add.
    #[test]
    fn an_array_replaced_alone_says_what_to_add() {
        let mut s = crate::config::Settings::defaults().auth;
        s.principals[0].name = "ops".into();
        s.tokens.clear();
        let err = Authenticator::from_settings(&s).err().unwrap().to_string();
        assert!(
            err.contains("LEDGERDEVACCESSKEY") && err.contains("local-dev"),
            "{err}"
        );
        assert!(err.contains("access_keys = []"), "{err}");
    }
    use crate::config::{AccessKeySettings, PrincipalSettings, TokenSettings};
    use axum::http::HeaderMap;

    fn principal(name: &str, projects: &[&str], actions: &[&str]) -> PrincipalSettings {
        PrincipalSettings {
            name: name.into(),
            projects: projects.iter().map(|s| s.to_string()).collect(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            job_types: None,
        }
    }

    fn token(principal: &str, token: &str) -> TokenSettings {
        TokenSettings {
            principal: principal.into(),
            sha256: hash_token(token),
        }
    }

    fn auth() -> Authenticator {
        Authenticator::from_settings(&AuthSettings {
            principals: vec![
                principal("one", &["a"], &[ACTION_LIST]),
                principal("two", &["a", "b"], &[]),
            ],
            tokens: vec![token("one", "t-one"), token("two", "t-two")],
            access_keys: vec![],
            allow_dev_credentials: false,
        })
        .unwrap()
    }

    #[test]
    fn tokens_are_matched_by_hash() {
        let a = auth();
        assert_eq!(a.authenticate_token(Some(b"t-one")).unwrap().name, "one");
        assert_eq!(a.authenticate_token(Some(b"t-two")).unwrap().name, "two");
        assert_eq!(
            a.authenticate_token(Some(b"t-three")).unwrap_err(),
            AuthError::UnknownToken
        );
        assert_eq!(
            a.authenticate_token(None).unwrap_err(),
            AuthError::MissingToken
        );
        assert_eq!(
            a.authenticate_token(Some(b"")).unwrap_err(),
            AuthError::MissingToken
        );
    }

    #[test]
    fn project_selection_and_grants() {
        let a = auth();
        let one = a.authenticate_token(Some(b"t-one")).unwrap();
        assert_eq!(one.authorize(None, ACTION_LIST).unwrap().as_str(), "a");
        assert_eq!(
            one.authorize(Some(b"a"), ACTION_LIST).unwrap().as_str(),
            "a"
        );
        assert_eq!(
            one.authorize(Some(b"b"), ACTION_LIST),
            Err(AuthError::ProjectNotGranted)
        );
        assert_eq!(
            one.authorize(Some(b"a.b"), ACTION_LIST),
            Err(AuthError::InvalidProject)
        );
        let two = a.authenticate_token(Some(b"t-two")).unwrap();
        assert_eq!(
            two.authorize(None, ACTION_LIST),
            Err(AuthError::ProjectRequired)
        );
        assert_eq!(
            two.authorize(Some(b"b"), ACTION_LIST),
            Err(AuthError::ActionDenied(ACTION_LIST))
        );
    }

    #[test]
    fn bad_configurations_are_refused_at_start_up() {
        let err = Authenticator::from_settings(&AuthSettings {
            principals: vec![principal("x", &[], &[])],
            tokens: vec![TokenSettings {
                principal: "x".into(),
                sha256: "dev-token".into(),
            }],
            access_keys: vec![],
            allow_dev_credentials: false,
        })
        .unwrap_err();
        assert!(matches!(err, AuthConfigError::BadHash(_)));
        let err = Authenticator::from_settings(&AuthSettings {
            principals: vec![],
            tokens: vec![token("ghost", "t")],
            access_keys: vec![],
            allow_dev_credentials: false,
        })
        .unwrap_err();
        assert!(matches!(err, AuthConfigError::UnknownPrincipal { .. }));
    }

    #[test]
    fn access_keys_read_their_secret_from_a_file_and_verify_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sk");
        std::fs::write(&file, "SK_SECRET_TEST\n").unwrap();
        let a = Authenticator::from_settings(&AuthSettings {
            principals: vec![principal("sdk", &["demo"], &[ACTION_LIST])],
            tokens: vec![],
            access_keys: vec![
                AccessKeySettings {
                    principal: "sdk".into(),
                    access_key: "AK_TEST".into(),
                    secret_key_env: None,
                    secret_key_file: Some(file),
                },
                AccessKeySettings {
                    principal: "sdk".into(),
                    access_key: "AK_UNSET".into(),
                    secret_key_env: Some("TICKET_LEDGER_TEST_NO_SUCH_VARIABLE".into()),
                    secret_key_file: None,
                },
            ],
            allow_dev_credentials: false,
        })
        .unwrap();
        assert!(
            !format!("{a:?}").contains("SK_SECRET_TEST"),
            "Debug leaks the secret"
        );
        // The SDK's vector (see sign.rs), at 3 minutes past its date.
        let mut h = HeaderMap::new();
        h.insert("x-sdk-date", "20261126T101500Z".parse().unwrap());
        h.insert("x-project-id", "demo".parse().unwrap());
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        h.insert("authorization", "SDK-HMAC-SHA256 Access=AK_TEST, SignedHeaders=host;x-project-id;x-sdk-date, Signature=125147a5aaac17967cf0f4da6ae052d43e080479fcb250e732dd7fb9648e13ed".parse().unwrap());
        let req = RequestParts {
            method: "GET",
            path: "/v1/job/script/orders",
            query: None,
            headers: &h,
            body: b"",
        };
        let now = time::macros::datetime!(2026-11-26 10:18:00 UTC);
        assert_eq!(a.authenticate(&req, now).unwrap().name, "sdk");
        let unset = h
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .replace("AK_TEST", "AK_UNSET");
        let mut h2 = h.clone();
        h2.insert("authorization", unset.parse().unwrap());
        let req = RequestParts {
            headers: &h2,
            ..req
        };
        assert_eq!(
            a.authenticate(&req, now).unwrap_err(),
            AuthError::Signature(SignError::UnknownAccessKey),
            "a key without its secret is disabled"
        );
    }

    #[test]
    fn the_job_type_condition() {
        let mut p = auth().authenticate_token(Some(b"t-one")).unwrap().clone();
        assert!(p.sees_job_type("SCRIPT") && p.sees_job_type("OTHER"));
        p.job_types = Some(vec!["SCRIPT".into()]);
        assert!(p.sees_job_type("SCRIPT") && !p.sees_job_type("OTHER"));
    }
}
