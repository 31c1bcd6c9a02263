//! The one reading of `nats.url`: a server, or a comma-separated list of servers, each
//! `[scheme://][user:pass@|token@]host[:port]`, with IPv6 hosts in brackets (`[::1]:4222`).
//! Parsed by the `url` crate; what NATS adds (the default port, a lone user as a token, the list)
//! is here.

use std::fmt;

/// The port a URL without one points at.
pub const DEFAULT_PORT: u16 = 4222;

/// Why `nats.url` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("nats.url {url:?}: {reason}")]
pub struct UrlError {
    url: String,
    reason: String,
}

/// One server of `nats.url`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `nats`, `tls`, `ws` or `wss`, lower-cased.
    pub scheme: String,
    /// The host, without the brackets of an IPv6 address.
    pub host: String,
    /// The port, [`DEFAULT_PORT`] unless given.
    pub port: u16,
    /// The credentials the URL carries, percent-decoded.
    pub credentials: Credentials,
    /// The whole URL, as parsed.
    url: url::Url,
}

/// Credentials carried in a URL's user-info part.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// None.
    #[default]
    None,
    /// `user:pass@`.
    UserPass(String, String),
    /// `token@`.
    Token(String),
}

// The URL's secrets never reach a log through `{:?}`.
impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.credentials {
            Credentials::None => "",
            Credentials::UserPass(..) => "<user:pass>@",
            Credentials::Token(_) => "<token>@",
        };
        write!(f, "{}://{auth}{}", self.scheme, self.addr())
    }
}

impl ServerUrl {
    /// Parses one server.
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let raw = raw.trim();
        let fail = |reason: String| UrlError {
            url: redacted(raw),
            reason,
        };
        if raw.is_empty() {
            return Err(fail("no server".into()));
        }
        let full = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("nats://{raw}")
        };
        let url = url::Url::parse(&full).map_err(|e| fail(e.to_string()))?;
        let scheme = url.scheme().to_ascii_lowercase();
        if !matches!(scheme.as_str(), "nats" | "tls" | "ws" | "wss") {
            return Err(fail(format!("the {scheme}:// scheme is not a NATS URL")));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(fail("no host".into())),
        };
        if host.is_empty() {
            return Err(fail("no host".into()));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => Credentials::None,
            (user, Some(pass)) => Credentials::UserPass(decode(user), decode(pass)),
            (token, None) => Credentials::Token(decode(token)),
        };
        Ok(ServerUrl {
            scheme,
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            credentials,
            url,
        })
    }

    /// `host:port`, with brackets around an IPv6 host: what a socket connects to.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL for the client library.
    pub fn client_addr(&self) -> Result<async_nats::ServerAddr, UrlError> {
        async_nats::ServerAddr::from_url(self.url.clone()).map_err(|e| UrlError {
            url: format!("{self:?}"),
            reason: e.to_string(),
        })
    }

    /// Whether the connection must be plain TCP speaking the NATS protocol (`nats://`).
    pub fn is_plain(&self) -> bool {
        self.scheme == "nats"
    }
}

/// Every server of `nats.url`, in order.
pub fn servers(url: &str) -> Result<Vec<ServerUrl>, UrlError> {
    url.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(ServerUrl::parse)
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err(UrlError {
                    url: url.to_owned(),
                    reason: "no server".into(),
                })
            } else {
                Ok(v)
            }
        })
}

/// A URL with its user-info part replaced, for error messages.
fn redacted(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}<redacted>{}", &raw[..s + 3], &raw[at..]),
        (None, Some(at)) => format!("<redacted>{}", &raw[at..]),
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> ServerUrl {
        ServerUrl::parse(s).unwrap()
    }

    #[test]
    fn hosts_ports_and_schemes() {
        assert_eq!(one("nats://127.0.0.1:4222").addr(), "127.0.0.1:4222");
        assert_eq!(one("localhost").addr(), "localhost:4222");
        assert_eq!(one("h:5000").port, 5000);
        let v6 = one("nats://[::1]:4333");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4333));
        assert_eq!(v6.addr(), "[::1]:4333");
        assert_eq!(one("[fe80::1]").addr(), "[fe80::1]:4222");
        assert!(one("tls://h:4222").scheme == "tls" && !one("tls://h").is_plain());
        assert!(one("NATS://h").is_plain());
        assert!(ServerUrl::parse("nats://h:x").is_err());
        assert!(ServerUrl::parse("nats://h:70000").is_err());
        assert!(ServerUrl::parse("http://h:4222").is_err());
        assert!(ServerUrl::parse("").is_err());
    }

    #[test]
    fn credentials_are_percent_decoded_and_a_lone_user_is_a_token() {
        // (Credentials have no Debug, so that no secret is ever formatted.)
        assert!(
            one("nats://al%40ice:p%3Ass@h:5000").credentials
                == Credentials::UserPass("al@ice".into(), "p:ss".into())
        );
        assert!(one("nats://s3cr3t@h:5000/").credentials == Credentials::Token("s3cr3t".into()));
        assert!(one("nats://h").credentials == Credentials::None);
        let debug = format!("{:?}", one("nats://u:secret@h"));
        assert!(!debug.contains("secret"), "{debug}");
        let err = ServerUrl::parse("nats://u:secret@h:x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn a_list_of_servers_in_order() {
        let list = servers("nats://a:4222, nats://[::1]:4223 ,b").unwrap();
        let addrs: Vec<String> = list.iter().map(ServerUrl::addr).collect();
        assert_eq!(addrs, ["a:4222", "[::1]:4223", "b:4222"]);
        assert!(servers(" , ").is_err());
        assert!(servers("a,nats://b:x").is_err());
    }
}
