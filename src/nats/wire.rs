//! A NATS connection of the reader's own: just enough of the client protocol (`INFO`,
//! `CONNECT`, `SUB`, `MSG`/`HMSG`, `PING`/`PONG`, an empty `PUB`) to receive one push
//! consumer's deliveries and answer its flow control.
//!
//! Why not the client library's subscription: for every message the library's connection task
//! parses the headers into a map of owned strings, builds a message of owned subjects and hands it
//! over a channel to the subscriber's task. On this 2-core machine that was about a fifth of the
//! daemon's CPU through an ingest, and the daemon shares the cores with nats-server, so it came
//! straight off the ingest rate. Here one task reads the socket into one buffer and slices each
//! delivery out of it (no copy), parsing only the header lines the reader asks for.
//!
//! What it does not speak: TLS, NKeys and credentials files. [`Subscription::connect`] refuses a
//! server that asks for TLS, and the reader then subscribes through the client library instead
//! (see [`crate::nats`]). User and password or a token in the URL are sent as the library would.
//!
//! [`parse`] is the protocol's functional core (bytes in, one operation out, no I/O), tested on
//! its own below; [`Subscription`] owns the socket.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::url::{self, ServerUrl};

/// Why the connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or closed.
    #[error("NATS connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something this reader does not understand.
    #[error("NATS protocol: {0}")]
    Protocol(String),
    /// The server answered `-ERR`.
    #[error("NATS server error: {0}")]
    Server(String),
    /// The server needs something this reader does not speak (TLS); use the client library.
    #[error("not supported by the reader's own connection: {0}")]
    Unsupported(String),
    /// The handshake took longer than the connect timeout.
    #[error("NATS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// Nothing arrived for as long as the caller was willing to wait.
    #[error("nothing received for {0:?}")]
    Silent(Duration),
}

/// One message received on the subscription, sliced out of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Subject it was published to.
    pub subject: Bytes,
    /// Reply subject, if any (a JetStream delivery's `$JS.ACK...`, flow control's request).
    pub reply: Option<Bytes>,
    /// The header block (`NATS/1.0 ...` through the blank line), if the message has headers.
    pub headers: Option<Bytes>,
    /// Payload.
    pub payload: Bytes,
}

impl Message {
    /// The status code of the header's first line (`NATS/1.0 100 Idle Heartbeat` is 100), if any.
    pub fn status(&self) -> Option<u16> {
        let block = self.headers.as_deref()?;
        let line = block.split(|&b| b == b'\r').next()?;
        let code = line.strip_prefix(b"NATS/1.0 ")?.get(..3)?;
        std::str::from_utf8(code).ok()?.parse().ok()
    }

    /// Every header of the block as `(name, value)`, value trimmed, in order (lines that are not
    /// UTF-8 or have no colon are skipped).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        let block = self.headers.as_deref().unwrap_or_default();
        block.split(|&b| b == b'\n').skip(1).filter_map(|line| {
            let line = std::str::from_utf8(line.strip_suffix(b"\r").unwrap_or(line)).ok()?;
            let (name, value) = line.split_once(':')?;
            Some((name, value.trim()))
        })
    }

    /// The first value of header `name` (names compared ignoring ASCII case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        let block = self.headers.as_deref()?;
        block.split(|&b| b == b'\n').skip(1).find_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                return None;
            }
            std::str::from_utf8(&line[colon + 1..]).ok().map(str::trim)
        })
    }
}

/// One protocol operation from the server, as ranges into the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `MSG` or `HMSG`.
    Msg {
        /// The subject.
        subject: Range<usize>,
        /// The reply subject.
        reply: Option<Range<usize>>,
        /// The header block (`HMSG` only).
        headers: Option<Range<usize>>,
        /// The payload.
        payload: Range<usize>,
    },
    /// `PING`: the server checks that the client is alive; answer `PONG`.
    Ping,
    /// `PONG`: the answer to the client's `PING`, which is how a handshake is confirmed.
    Pong,
    /// `+OK` (only in verbose mode, which this reader does not ask for).
    Ok,
    /// `INFO {...}`: the server's description of itself.
    Info(Range<usize>),
    /// `-ERR '...'`.
    Err(String),
}

/// Longest control line accepted: a subject, a reply subject and four numbers fit easily.
const MAX_CONTROL_LINE: usize = 64 * 1024;

/// Parses the operation at the start of `buf`: `Ok(None)` if it is not complete yet, else the
/// operation and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Op, usize)>, WireError> {
    let Some(eol) = memchr::memmem::find(buf, b"\r\n") else {
        if buf.len() > MAX_CONTROL_LINE {
            return Err(WireError::Protocol("control line too long".into()));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let (verb, args) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], i + 1),
        None => (line, line.len()),
    };
    let op = if verb.eq_ignore_ascii_case(b"MSG") || verb.eq_ignore_ascii_case(b"HMSG") {
        let with_headers = verb.len() == 4;
        return parse_msg(buf, args, eol, with_headers);
    } else if verb.eq_ignore_ascii_case(b"PING") {
        Op::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") {
        Op::Pong
    } else if verb.eq_ignore_ascii_case(b"+OK") {
        Op::Ok
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        Op::Info(args..eol)
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        let text = String::from_utf8_lossy(&line[args..]);
        Op::Err(text.trim().trim_matches('\'').to_owned())
    } else {
        let shown = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
        return Err(WireError::Protocol(format!("unknown operation {shown:?}")));
    };
    Ok(Some((op, after)))
}

/// `MSG <subject> <sid> [reply] <size>` or `HMSG <subject> <sid> [reply] <header size>
/// <total size>`, then the body and `\r\n`.
fn parse_msg(
    buf: &[u8],
    args_at: usize,
    eol: usize,
    with_headers: bool,
) -> Result<Option<(Op, usize)>, WireError> {
    let bad = || {
        let shown = String::from_utf8_lossy(&buf[..eol.min(200)]).into_owned();
        WireError::Protocol(format!("malformed message line {shown:?}"))
    };
    let mut tokens: [Range<usize>; 5] = Default::default();
    let mut n = 0;
    let mut i = args_at;
    while i < eol {
        if buf[i] == b' ' || buf[i] == b'\t' {
            i += 1;
            continue;
        }
        let start = i;
        while i < eol && buf[i] != b' ' && buf[i] != b'\t' {
            i += 1;
        }
        *tokens.get_mut(n).ok_or_else(bad)? = start..i;
        n += 1;
    }
    let number = |r: &Range<usize>| -> Result<usize, WireError> {
        std::str::from_utf8(&buf[r.clone()])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let sizes = if with_headers { 2 } else { 1 };
    let reply = match n.checked_sub(sizes) {
        Some(2) => None,
        Some(3) => Some(tokens[2].clone()),
        _ => return Err(bad()),
    };
    let (header_len, total) = if with_headers {
        (number(&tokens[n - 2])?, number(&tokens[n - 1])?)
    } else {
        (0, number(&tokens[n - 1])?)
    };
    if header_len > total {
        return Err(bad());
    }
    let body = eol + 2;
    // A size no buffer can hold is a broken peer, not a message still to come.
    let Some(end) = body
        .checked_add(total)
        .filter(|e| e.checked_add(2).is_some())
    else {
        return Err(bad());
    };
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(WireError::Protocol(
            "message body not followed by CRLF".into(),
        ));
    }
    let op = Op::Msg {
        subject: tokens[0].clone(),
        reply,
        headers: with_headers.then(|| body..body + header_len),
        payload: body + header_len..end,
    };
    Ok(Some((op, end + 2)))
}

/// The subscription's id on its connection (the connection carries only this one).
const SID: &str = "1";

/// How the read buffer grows: when less than a quarter of this is free, this much more is
/// reserved, so that one read can take what a busy socket holds.
const READ_CHUNK: usize = 1 << 20;

/// One subscription on a connection of its own.
pub struct Subscription {
    socket: TcpStream,
    buf: BytesMut,
}

impl Subscription {
    /// Connects to `server`, subscribes to `subject` and waits until the server confirms it,
    /// so that whatever is published to `subject` after this returns is received.
    pub async fn connect(
        server: &ServerUrl,
        subject: &str,
        timeout: Duration,
    ) -> Result<Self, WireError> {
        let (addr, credentials) = endpoint(server)?;
        let handshake = async {
            let socket = TcpStream::connect(&addr).await?;
            socket.set_nodelay(true)?;
            let mut sub = Subscription {
                socket,
                buf: BytesMut::with_capacity(READ_CHUNK),
            };
            let info = loop {
                if let Some(op) = sub.next_op().await? {
                    match op {
                        (Op::Info(r), frame) => break frame.slice(r),
                        (Op::Err(e), _) => return Err(WireError::Server(e)),
                        _ => {}
                    }
                }
            };
            let info: serde_json::Value = serde_json::from_slice(&info)
                .map_err(|e| WireError::Protocol(format!("INFO is not JSON: {e}")))?;
            if info["tls_required"].as_bool() == Some(true) {
                return Err(WireError::Unsupported("the server requires TLS".into()));
            }
            if info["headers"].as_bool() == Some(false) {
                return Err(WireError::Unsupported("the server has no headers".into()));
            }
            let mut connect = serde_json::json!({
                "verbose": false,
                "pedantic": false,
                "tls_required": false,
                "name": "ticket-ledger reader",
                "lang": "rust",
                "version": env!("CARGO_PKG_VERSION"),
                "protocol": 1,
                "headers": true,
                "no_responders": true,
            });
            for (k, v) in credentials {
                connect[k] = v.into();
            }
            let hello = format!("CONNECT {connect}\r\nSUB {subject} {SID}\r\nPING\r\n");
            sub.socket.write_all(hello.as_bytes()).await?;
            loop {
                match sub.next_op().await? {
                    Some((Op::Pong, _)) => return Ok(sub),
                    Some((Op::Err(e), _)) => return Err(WireError::Server(e)),
                    Some((Op::Ping, _)) => sub.socket.write_all(b"PONG\r\n").await?,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| WireError::Timeout(timeout))?
    }

    /// Appends to `out` the messages already received, at least one and at most `max`: waits
    /// for the first (for at most `idle` at a time), then takes what the buffer holds. Answers
    /// the server's `PING`s on the way. Messages are only ever taken from the buffer into
    /// `out`, so a caller that stops waiting loses none of what it was given.
    pub async fn next_messages(
        &mut self,
        max: usize,
        idle: Duration,
        out: &mut Vec<Message>,
    ) -> Result<(), WireError> {
        let start = out.len();
        loop {
            while out.len() - start < max.max(1) {
                let Some((op, frame)) = self.take_op()? else {
                    break;
                };
                match op {
                    Op::Msg {
                        subject,
                        reply,
                        headers,
                        payload,
                    } => out.push(Message {
                        subject: frame.slice(subject),
                        reply: reply.map(|r| frame.slice(r)),
                        headers: headers.map(|r| frame.slice(r)),
                        payload: frame.slice(payload),
                    }),
                    Op::Ping => self.socket.write_all(b"PONG\r\n").await?,
                    Op::Err(e) => return Err(WireError::Server(e)),
                    Op::Pong | Op::Ok | Op::Info(_) => {}
                }
            }
            if out.len() > start {
                return Ok(());
            }
            tokio::time::timeout(idle, self.fill())
                .await
                .map_err(|_| WireError::Silent(idle))??;
        }
    }

    /// Publishes an empty message to `subject` (the answer to a flow-control request).
    pub async fn publish_empty(&mut self, subject: &[u8]) -> Result<(), WireError> {
        let mut line = Vec::with_capacity(subject.len() + 12);
        line.extend_from_slice(b"PUB ");
        line.extend_from_slice(subject);
        line.extend_from_slice(b" 0\r\n\r\n");
        self.socket.write_all(&line).await?;
        Ok(())
    }

    /// Unsubscribes and closes the connection.
    pub async fn close(mut self) {
        let _ = self
            .socket
            .write_all(format!("UNSUB {SID}\r\n").as_bytes())
            .await;
        let _ = self.socket.shutdown().await;
    }

    /// The next complete operation in the buffer, with the bytes it was parsed from (its
    /// ranges index into them), or `None` if the buffer does not hold one yet.
    fn take_op(&mut self) -> Result<Option<(Op, Bytes)>, WireError> {
        Ok(match parse(&self.buf)? {
            Some((op, used)) => Some((op, self.buf.split_to(used).freeze())),
            None => None,
        })
    }

    /// The next operation, reading from the socket until one is complete.
    async fn next_op(&mut self) -> Result<Option<(Op, Bytes)>, WireError> {
        loop {
            if let Some(found) = self.take_op()? {
                return Ok(Some(found));
            }
            self.fill().await?;
        }
    }

    /// Reads what the socket has (at least one byte) into the buffer.
    async fn fill(&mut self) -> Result<(), WireError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        if self.socket.read_buf(&mut self.buf).await? == 0 {
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }
}

/// `CONNECT` fields and their values.
type Credentials = Vec<(&'static str, String)>;

/// Where `server` points and the credentials it carries, as `CONNECT` fields (`user` and
/// `pass`, or `auth_token`); a server this connection cannot speak to (TLS, websockets) is
/// [`WireError::Unsupported`].
fn endpoint(server: &ServerUrl) -> Result<(String, Credentials), WireError> {
    if !server.is_plain() {
        return Err(WireError::Unsupported(format!(
            "the {}:// scheme",
            server.scheme
        )));
    }
    let credentials = match &server.credentials {
        url::Credentials::None => vec![],
        url::Credentials::UserPass(user, pass) => {
            vec![("user", user.clone()), ("pass", pass.clone())]
        }
        url::Credentials::Token(token) => vec![("auth_token", token.clone())],
    };
    Ok((server.addr(), credentials))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    /// Whether `buf` starts with a complete operation.
    fn complete(buf: &[u8]) -> bool {
        matches!(parse(buf), Ok(Some(_)))
    }

    fn one(buf: &[u8]) -> (Op, usize) {
        parse(buf).unwrap().expect("a complete operation")
    }

    fn message(buf: &[u8]) -> Message {
        let (op, used) = one(buf);
        let frame = Bytes::copy_from_slice(&buf[..used]);
        let Op::Msg {
            subject,
            reply,
            headers,
            payload,
        } = op
        else {
            panic!("not a message: {op:?}");
        };
        Message {
            subject: frame.slice(subject),
            reply: reply.map(|r| frame.slice(r)),
            headers: headers.map(|r| frame.slice(r)),
            payload: frame.slice(payload),
        }
    }

    #[test]
    fn control_operations() {
        assert_eq!(one(b"PING\r\nxx"), (Op::Ping, 6));
        assert_eq!(one(b"pong\r\n"), (Op::Pong, 6));
        assert_eq!(one(b"+OK\r\n"), (Op::Ok, 5));
        assert_eq!(one(b"INFO {\"a\":1}\r\n"), (Op::Info(5..12), 14));
        assert_eq!(
            one(b"-ERR 'Authorization Violation'\r\n").0,
            Op::Err("Authorization Violation".into())
        );
        assert!(matches!(parse(b"BOGUS x\r\n"), Err(WireError::Protocol(_))));
        assert!(matches!(parse(b"PIN"), Ok(None)));
    }

    #[test]
    fn a_message_without_and_with_a_reply() {
        let m = message(b"MSG ev.p.created 1 5\r\nhello\r\n");
        assert_eq!(&m.subject[..], b"ev.p.created");
        assert_eq!(m.reply, None);
        assert_eq!(m.headers, None);
        assert_eq!(&m.payload[..], b"hello");
        let m = message(b"MSG a 1 $JS.ACK.s.c.1.2.3.4.0 0\r\n\r\n");
        assert_eq!(m.reply.as_deref(), Some(&b"$JS.ACK.s.c.1.2.3.4.0"[..]));
        assert!(m.payload.is_empty());
    }

    #[test]
    fn a_message_with_headers() {
        let headers = "NATS/1.0\r\nNats-Msg-Id: abc\r\nLedger-Redrive-Of:  42 \r\n\r\n";
        let body = format!("{headers}{{}}");
        let frame = format!(
            "HMSG ev.p.created 1 $JS.ACK.x {} {}\r\n{body}\r\n",
            headers.len(),
            body.len()
        );
        let m = message(frame.as_bytes());
        assert_eq!(&m.payload[..], b"{}");
        assert_eq!(m.status(), None);
        assert_eq!(m.header("nats-msg-id"), Some("abc"));
        assert_eq!(m.header("Ledger-Redrive-Of"), Some("42"));
        assert_eq!(m.header("Nats-Last-Consumer"), None);
    }

    #[test]
    fn status_messages() {
        let hb =
            "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 7\r\nNats-Last-Stream: 9\r\n\r\n";
        let frame = format!("HMSG _INBOX.x 1 {} {}\r\n{hb}\r\n", hb.len(), hb.len());
        let m = message(frame.as_bytes());
        assert_eq!(m.status(), Some(100));
        assert_eq!(m.header("Nats-Last-Consumer"), Some("7"));
        assert_eq!(m.reply, None);
        let fc = "NATS/1.0 100 FlowControl Request\r\n\r\n";
        let frame = format!(
            "HMSG _INBOX.x 1 $JS.FC.s.c.1 {} {}\r\n{fc}\r\n",
            fc.len(),
            fc.len()
        );
        let m = message(frame.as_bytes());
        assert_eq!(m.status(), Some(100));
        assert_eq!(m.reply.as_deref(), Some(&b"$JS.FC.s.c.1"[..]));
    }

    #[test]
    fn an_operation_cut_anywhere_is_incomplete_until_its_last_byte() {
        let hb = "NATS/1.0\r\nA: b\r\n\r\n";
        let frame = format!(
            "HMSG s 1 r {} {}\r\n{hb}payload\r\n",
            hb.len(),
            hb.len() + 7
        );
        let bytes = frame.as_bytes();
        for cut in 0..bytes.len() {
            assert!(
                !complete(&bytes[..cut]),
                "complete at {cut} of {}",
                bytes.len()
            );
        }
        assert_eq!(one(bytes).1, bytes.len());
        let mut two = bytes.to_vec();
        two.extend_from_slice(b"PING\r\n");
        let (_, used) = one(&two);
        assert_eq!(one(&two[used..]), (Op::Ping, 6));
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            &b"MSG s 1\r\n"[..],
            b"MSG s 1 x\r\n",
            b"MSG s 1 r extra 5 6\r\n",
            b"HMSG s 1 9 5\r\nxxxxx\r\n",
            b"MSG s 1 2\r\nabXY",
            // Found by the fuzz target `wire`: a size that overflows the buffer's arithmetic.
            b"MSG s 1 18446744073709551615\r\n\r\n",
            b"HMSG s 1 0 18446744073709551614\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(WireError::Protocol(_))),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'M'; MAX_CONTROL_LINE + 1];
        assert!(parse(&long).is_err());
    }

    #[test]
    fn endpoints_and_credentials_of_urls() {
        let at = |s: &str| endpoint(&ServerUrl::parse(s).unwrap());
        let none: Vec<(&str, String)> = vec![];
        assert_eq!(
            at("nats://127.0.0.1:4222").unwrap(),
            ("127.0.0.1:4222".into(), none)
        );
        assert_eq!(
            at("nats://al%40ice:p%3Ass@[::1]:5000").unwrap(),
            (
                "[::1]:5000".into(),
                vec![("user", "al@ice".into()), ("pass", "p:ss".into())]
            )
        );
        assert_eq!(
            at("nats://s3cr3t@h:5000/").unwrap(),
            ("h:5000".into(), vec![("auth_token", "s3cr3t".into())])
        );
        assert!(matches!(at("tls://h:4222"), Err(WireError::Unsupported(_))));
    }

    #[test]
    fn buffer_bytes_are_consumed_exactly() {
        let mut b = BytesMut::from(&b"MSG a 1 3\r\nabc\r\nPING\r\n"[..]);
        let (_, used) = one(&b);
        b.advance(used);
        assert_eq!(&b[..], b"PING\r\n");
    }
}
