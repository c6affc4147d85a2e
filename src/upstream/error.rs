//! What goes wrong on the upstream side, typed where it happens.
//!
//! [`UpstreamError`] is why a connection to the upstream (a pool's, the health probe's or a near
//! cache tracking connection's) failed or could not be made, with the upstream's address. Its
//! [`Kind`] is decided where the failure is seen: a refusal is told from an outage where the
//! handshake's reply is read, a timeout where its deadline passes. [`NoReply`] is what one
//! command gets when such a failure leaves it without a reply. Text is made only by `Display`,
//! where a client (`-ERR …`) or a log line needs it; no code here or elsewhere reads it back.
use crate::metrics::{self, Side};
use crate::protocol::ScanError;
use std::sync::Arc;
use std::time::Duration;

/// An I/O error, shared: one failure is reported to every command it cut short.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct IoError(Arc<std::io::Error>);

impl From<std::io::Error> for IoError {
    fn from(e: std::io::Error) -> Self {
        IoError(Arc::new(e))
    }
}

/// A connection to the upstream failed, or could not be made. `Display` is the cause alone (the
/// address is a field, for logs and for [`NoReply::Unavailable`]'s text).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}")]
pub struct UpstreamError {
    pub addr: Arc<str>,
    pub kind: Kind,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Kind {
    /// The TCP or unix-socket connect failed: refused, unreachable, no such socket.
    #[error("connect: {0}")]
    Connect(IoError),
    /// TLS to the upstream failed: its material could not be loaded, or the handshake failed
    /// (a certificate that does not verify, a name that does not match).
    #[error("{0}")]
    Tls(TlsFailure),
    /// A deadline passed with no answer.
    #[error("{0}")]
    TimedOut(Deadline),
    /// The upstream answered a command of respite's own with an error: its own words.
    #[error("{0}")]
    Refused(Refusal),
    /// The connection broke: the upstream closed it, or a read or a write failed.
    #[error("{0}")]
    Lost(Lost),
    /// The upstream sent something other than the reply that was due.
    #[error("{0}")]
    Protocol(ProtocolError),
    /// respite closed the connection itself.
    #[error("{0}")]
    Closed(Closer),
}

/// How TLS to the upstream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsFailure {
    /// The configured CA, certificate or key could not be loaded (respite's configuration).
    #[error("TLS setup: {0}")]
    Setup(Arc<crate::tls::TlsError>),
    /// TLS itself refused the connection: rustls's reason names it (a certificate that does not
    /// verify, a name that does not match, an alert from the upstream refusing respite's).
    #[error("TLS handshake: {0}")]
    Refused(rustls::Error),
    /// The connection broke during the handshake.
    #[error("TLS handshake: {0}")]
    Handshake(IoError),
}

impl TlsFailure {
    /// A failed handshake: TLS's refusal when rustls gave one, else the broken connection.
    pub(crate) fn handshake(e: std::io::Error) -> TlsFailure {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(refused) => TlsFailure::Refused(refused.clone()),
            None => TlsFailure::Handshake(e.into()),
        }
    }
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Deadline {
    /// Connect and handshake, `upstream.connect_timeout_ms`.
    #[error("no connection within {0:?}")]
    Connect(Duration),
    /// The oldest command on a pool connection, `upstream.command_timeout_ms`.
    #[error("no reply within {0:?}")]
    Reply(Duration),
    /// A tracking connection's heartbeat, `near_cache.heartbeat_timeout_ms`.
    #[error("no reply within {0:?} (heartbeat)")]
    Heartbeat(Duration),
    /// The probe heard nothing for this long (`health.probe_timeout_ms` or more).
    #[error("no answer for {0:?}")]
    Probe(Duration),
    /// The one command a connection is set up with (`CLIENT TRACKING ON`).
    #[error("no reply to {0}")]
    Setup(&'static str),
}

/// The upstream's error reply to a command respite sent for itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("HELLO refused: {0}")]
    Hello(Arc<str>),
    #[error("SELECT {db}: {reply}")]
    Select { db: u32, reply: Arc<str> },
    /// A command a connection is set up or probed with (`CLIENT TRACKING ON`, `PING`).
    #[error("{command} refused: {reply}")]
    Command {
        command: &'static str,
        reply: Arc<str>,
    },
}

/// Error replies that say the upstream cannot serve right now, not that it refuses respite.
const TRANSIENT: [&str; 7] = [
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "OOM",
    "ERR max number of clients reached",
];

impl Refusal {
    /// The upstream's own error text.
    pub fn reply(&self) -> &str {
        match self {
            Refusal::Hello(r)
            | Refusal::Select { reply: r, .. }
            | Refusal::Command { reply: r, .. } => r,
        }
    }

    /// Whether this refuses respite's own settings (credentials, database, protocol) rather than
    /// saying the upstream is briefly unable to serve (loading, busy, full). Only the handshake's
    /// HELLO and SELECT carry settings.
    pub fn is_rejection(&self) -> bool {
        match self {
            Refusal::Hello(_) | Refusal::Select { .. } => {
                !TRANSIENT.iter().any(|t| self.reply().starts_with(t))
            }
            Refusal::Command { .. } => false,
        }
    }
}

/// How an established connection broke.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Lost {
    #[error("upstream closed the connection")]
    Closed,
    #[error("read failed: {0}")]
    Read(IoError),
    #[error("write failed: {0}")]
    Write(IoError),
    #[error("handshake: upstream closed the connection")]
    ClosedInHandshake,
    #[error("handshake: {0}")]
    Handshake(IoError),
}

/// The upstream broke the protocol: what was read cannot be paired with what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProtocolError {
    /// Bytes that are not RESP where a reply was due.
    #[error("{0}")]
    Garbled(ScanError),
    /// A reply arrived with no command waiting for it.
    #[error("reply with no request in flight")]
    Unsolicited,
    /// A batch's alignment marker was not echoed where it was due: some reply was added or lost,
    /// so no reply on the connection can be trusted to be its command's.
    #[error("replies out of step with their commands (alignment marker not echoed in place)")]
    Misaligned,
    /// A handshake reply that is not RESP.
    #[error("handshake: bad reply")]
    BadHandshake,
    /// HELLO answered with neither a map nor an array.
    #[error("HELLO: unexpected reply")]
    UnexpectedHello,
    /// A command answered with something other than what it always answers (`PING` → `+PONG`).
    #[error("{command} answered {reply}")]
    Unexpected {
        command: &'static str,
        reply: Arc<str>,
    },
}

/// Why respite closed a connection of its own accord.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Closer {
    /// The health probe declared the upstream down and local-only mode answers instead.
    #[error("upstream is down (health probes failed); local-only mode took over")]
    LocalOnly,
    #[error("respite is shutting down")]
    Shutdown,
    /// The in-flight bound's semaphore closed: cannot happen while the connection owns it.
    #[error("internal: permits closed")]
    PermitsClosed,
}

impl UpstreamError {
    pub fn new(addr: Arc<str>, kind: Kind) -> UpstreamError {
        UpstreamError { addr, kind }
    }

    /// The upstream refuses respite's configuration (see [`Refusal::is_rejection`]), or TLS
    /// does (respite's CA or certificate, or the upstream's: no retry cures either, and serving
    /// locally would hide it).
    pub fn is_rejection(&self) -> bool {
        match &self.kind {
            Kind::Refused(r) => r.is_rejection(),
            Kind::Tls(TlsFailure::Setup(_) | TlsFailure::Refused(_)) => true,
            _ => false,
        }
    }

    /// Which side failed: a refused configuration is respite's configuration, a connection
    /// respite closed (shutdown) is its own doing, everything else is the upstream's.
    pub fn side(&self) -> Side {
        match &self.kind {
            _ if self.is_rejection() => Side::Configuration,
            Kind::Closed(Closer::Shutdown | Closer::PermitsClosed) => Side::Internal,
            _ => Side::Upstream,
        }
    }
}

/// Why one upstream command has no reply. `Display` is the text after `-ERR `.
///
/// The connection's failure is shared, not copied: one failure answers every command it cut
/// short, and a [`Reply`](super::Reply) stays small on the path every command takes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoReply {
    /// Not sent: no connection to the upstream right now.
    #[error("upstream {} unavailable: {}", .0.addr, .0)]
    Unavailable(Arc<UpstreamError>),
    /// Not sent: taken off the queue, but its connection failed before writing it.
    #[error("upstream {} unavailable: {}; the command was not sent", .0.addr, .0)]
    NotSent(Arc<UpstreamError>),
    /// Run, but its reply would take the client past `limits.max_reply_bytes` of replies it has
    /// not read and requests waiting behind them, or the clients together past
    /// `limits.max_client_memory` with this client holding the most (`total`): dropped, and the
    /// client is closed. `limit` is the limit
    /// that was reached, so the text names the setting to change.
    #[error("{}", overflow_text(*.limit, *.total))]
    Overflow { limit: usize, total: bool },
    /// Sent, or possibly sent, when the connection failed: its fate is unknown and it is not retried.
    #[error(
        "upstream connection lost with the command in flight ({0}); it may or may not have run"
    )]
    Lost(Arc<UpstreamError>),
}

impl NoReply {
    /// The `kind` label this error counts under in `respite_errors_total`.
    pub fn kind(&self) -> metrics::ErrorKind {
        match self {
            NoReply::Lost(e) if matches!(e.kind, Kind::TimedOut(Deadline::Reply(_))) => {
                metrics::ErrorKind::Timeout
            }
            NoReply::Overflow { .. } => metrics::ErrorKind::Refused,
            _ => metrics::ErrorKind::Upstream,
        }
    }

    /// Which side failed: the client for an overflow (it did not read its replies), else the
    /// connection's failure's side.
    pub fn side(&self) -> Side {
        match self {
            NoReply::Overflow { .. } => Side::Client,
            NoReply::Unavailable(e) | NoReply::NotSent(e) | NoReply::Lost(e) => e.side(),
        }
    }
}

/// [`NoReply::Overflow`]'s text: which limit was reached, named as configured.
fn overflow_text(limit: usize, total: bool) -> String {
    match total {
        false => format!(
            "reply dropped: this client has more than {limit} bytes of replies unread and requests waiting behind them (limits.max_reply_bytes); closing the connection"
        ),
        true => format!(
            "reply dropped: the clients' unread replies and waiting requests reached {limit} bytes (limits.max_client_memory) and this client holds the most; closing the connection"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: Kind) -> UpstreamError {
        UpstreamError::new("127.0.0.1:6379".into(), kind)
    }

    #[test]
    fn refusals_of_the_configuration_are_told_from_outages() {
        let hello = |r: &str| Kind::Refused(Refusal::Hello(r.into()));
        for kind in [
            hello("WRONGPASS invalid username-password pair or user is disabled."),
            hello("NOAUTH HELLO must be called with the client already authenticated"),
            hello("NOPERM this user has no permissions to run the 'hello' command"),
            hello("ERR unknown command 'HELLO'"),
            Kind::Refused(Refusal::Select {
                db: 99,
                reply: "ERR DB index is out of range".into(),
            }),
        ] {
            let e = err(kind);
            assert!(e.is_rejection(), "{e}");
            assert_eq!(e.side(), Side::Configuration);
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for kind in [
            Kind::Connect(refused.into()),
            Kind::TimedOut(Deadline::Connect(Duration::from_secs(1))),
            hello("LOADING Redis is loading the dataset in memory"),
            hello("ERR max number of clients reached"),
            hello("BUSY Redis is busy running a script"),
            Kind::Refused(Refusal::Select {
                db: 1,
                reply: "LOADING Redis is loading the dataset in memory".into(),
            }),
            Kind::Refused(Refusal::Command {
                command: "PING",
                reply: "NOAUTH Authentication required.".into(),
            }),
            Kind::Lost(Lost::Closed),
        ] {
            let e = err(kind);
            assert!(!e.is_rejection(), "{e}");
            assert_eq!(e.side(), Side::Upstream);
        }
    }

    /// Clients and tests read these texts; they are the same as when they were strings.
    #[test]
    fn client_texts() {
        let timeout = err(Kind::TimedOut(Deadline::Reply(Duration::from_millis(500))));
        let lost = NoReply::Lost(Arc::new(timeout));
        assert_eq!(
            lost.to_string(),
            "upstream connection lost with the command in flight (no reply within 500ms); it may or may not have run"
        );
        assert_eq!(lost.kind(), metrics::ErrorKind::Timeout);
        let closed = NoReply::Lost(Arc::new(err(Kind::Lost(Lost::Closed))));
        assert_eq!(
            closed.to_string(),
            "upstream connection lost with the command in flight (upstream closed the connection); it may or may not have run"
        );
        assert_eq!(closed.kind(), metrics::ErrorKind::Upstream);
        let refused = err(Kind::Refused(Refusal::Hello("WRONGPASS x".into())));
        assert_eq!(
            NoReply::Unavailable(Arc::new(refused)).to_string(),
            "upstream 127.0.0.1:6379 unavailable: HELLO refused: WRONGPASS x"
        );
        assert_eq!(
            NoReply::NotSent(Arc::new(err(Kind::Closed(Closer::LocalOnly)))).to_string(),
            "upstream 127.0.0.1:6379 unavailable: upstream is down (health probes failed); local-only mode took over; the command was not sent"
        );
        let overflow = NoReply::Overflow {
            limit: 10,
            total: false,
        };
        assert!(overflow.to_string().contains("(limits.max_reply_bytes)"));
        let total = NoReply::Overflow {
            limit: 268435456,
            total: true,
        };
        assert_eq!(
            total.to_string(),
            "reply dropped: the clients' unread replies and waiting requests reached 268435456 bytes (limits.max_client_memory) and this client holds the most; closing the connection"
        );
        assert_eq!(overflow.kind(), metrics::ErrorKind::Refused);
        assert_eq!(overflow.side(), Side::Client);
        assert_eq!(
            NoReply::Lost(Arc::new(err(Kind::Closed(Closer::Shutdown)))).side(),
            Side::Internal
        );
    }

    /// Every command's reply passes through a oneshot channel as a `Reply`: its error side
    /// must not make it larger than the bytes it usually carries.
    #[test]
    fn a_reply_stays_small() {
        assert!(std::mem::size_of::<super::super::Reply>() <= 64);
    }
}
