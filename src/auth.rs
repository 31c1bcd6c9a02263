//! Tokens, grants and tenancy.
//!
//! Only the SHA-256 of each token is kept (in config and in memory). A presented token is hashed
//! and compared with every configured hash in constant time, so neither the comparison nor the
//! position of a match leaks through timing. Tokens are never logged: only the token's `name`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AuthSettings;
use crate::domain::ProjectId;

/// Action of the list endpoint (the COC IAM action).
pub const ACTION_LIST: &str = "coc:job:list";
/// Action of the detail endpoint (the COC IAM action).
pub const ACTION_GET: &str = "coc:job:get";
/// Ledger administration: dead letters, redrive, replay, the records export used by `verify`.
pub const ACTION_ADMIN: &str = "coc:ledger:admin";

/// Who a valid token speaks for, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's configured name (safe to log).
    pub name: String,
    /// Projects it may read.
    pub projects: Vec<ProjectId>,
    /// Actions it may perform.
    pub actions: Vec<String>,
}

/// A token configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// `sha256` is not 64 hex digits.
    #[error(
        "token {0:?}: sha256 must be 64 hex digits (ticket-ledger hash-token <TOKEN> prints it)"
    )]
    BadHash(String),
    /// A granted project id is invalid.
    #[error("token {name:?}: project {project:?}: {source}")]
    BadProject {
        /// Token name.
        name: String,
        /// The project id.
        project: String,
        /// Why.
        source: crate::domain::DomainError,
    },
}

/// Why a request is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `X-Auth-Token`.
    #[error("missing X-Auth-Token")]
    MissingToken,
    /// A token no configured hash matches.
    #[error("unknown token")]
    UnknownToken,
    /// The token grants several projects and the request names none.
    #[error("x-project-id is required")]
    ProjectRequired,
    /// `x-project-id` is not a valid project id.
    #[error("invalid x-project-id")]
    InvalidProject,
    /// The token does not grant the named project.
    #[error("project not granted")]
    ProjectNotGranted,
    /// The token does not grant the action.
    #[error("action {0} not granted")]
    ActionDenied(&'static str),
}

/// Hex SHA-256 of a token, as configured.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Vec<([u8; 32], Principal)>,
}

impl Authenticator {
    /// Builds the authenticator from settings, refusing unusable entries at start-up.
    pub fn from_settings(s: &AuthSettings) -> Result<Self, AuthConfigError> {
        let mut tokens = Vec::new();
        for t in &s.tokens {
            let hash: [u8; 32] = hex::decode(t.sha256.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| AuthConfigError::BadHash(t.name.clone()))?;
            let projects = t
                .projects
                .iter()
                .map(|p| {
                    ProjectId::parse(p).map_err(|source| AuthConfigError::BadProject {
                        name: t.name.clone(),
                        project: p.clone(),
                        source,
                    })
                })
                .collect::<Result<_, _>>()?;
            tokens.push((
                hash,
                Principal {
                    name: t.name.clone(),
                    projects,
                    actions: t.actions.clone(),
                },
            ));
        }
        Ok(Self { tokens })
    }

    /// Finds the principal of a presented token, comparing against every entry in constant time.
    pub fn authenticate(&self, token: Option<&[u8]>) -> Result<&Principal, AuthError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        let presented = Sha256::digest(token);
        let mut found = None;
        for (hash, principal) in &self.tokens {
            if bool::from(hash.ct_eq(presented.as_slice())) {
                found = Some(principal);
            }
        }
        found.ok_or(AuthError::UnknownToken)
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

    /// Decides which project a request reads and whether it may perform `action` there.
    ///
    /// `x-project-id` picks the project and must be granted; without it, a token of exactly one
    /// project uses that one. The project check comes before the action check so that a token
    /// learns nothing about projects it was not granted.
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
    use crate::config::TokenSettings;

    fn auth() -> Authenticator {
        Authenticator::from_settings(&AuthSettings {
            tokens: vec![
                TokenSettings {
                    name: "one".into(),
                    sha256: hash_token("t-one"),
                    projects: vec!["a".into()],
                    actions: vec![ACTION_LIST.into()],
                },
                TokenSettings {
                    name: "two".into(),
                    sha256: hash_token("t-two"),
                    projects: vec!["a".into(), "b".into()],
                    actions: vec![],
                },
            ],
        })
        .unwrap()
    }

    #[test]
    fn tokens_are_matched_by_hash() {
        let a = auth();
        assert_eq!(a.authenticate(Some(b"t-one")).unwrap().name, "one");
        assert_eq!(a.authenticate(Some(b"t-two")).unwrap().name, "two");
        assert_eq!(
            a.authenticate(Some(b"t-three")).unwrap_err(),
            AuthError::UnknownToken
        );
        assert_eq!(a.authenticate(None).unwrap_err(), AuthError::MissingToken);
        assert_eq!(
            a.authenticate(Some(b"")).unwrap_err(),
            AuthError::MissingToken
        );
    }

    #[test]
    fn project_selection_and_grants() {
        let a = auth();
        let one = a.authenticate(Some(b"t-one")).unwrap();
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
        let two = a.authenticate(Some(b"t-two")).unwrap();
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
    fn a_bad_hash_is_refused_at_start_up() {
        let err = Authenticator::from_settings(&AuthSettings {
            tokens: vec![TokenSettings {
                name: "x".into(),
                sha256: "dev-token".into(),
                projects: vec![],
                actions: vec![],
            }],
        })
        .unwrap_err();
        assert!(matches!(err, AuthConfigError::BadHash(_)));
    }
}
