//! Opening a connection to the upstream: connect (TCP or unix socket), TLS for a `rediss://` URL,
//! then `HELLO` with the protocol, the URL's credentials (or a client's own, [`Login`]) and a
//! client name, then `SELECT` the URL's database.
//!
//! The setup sends only what a busy or loading server still answers: Redis and Valkey flag HELLO
//! `allow-busy` and `loading`, and SELECT `loading` (a SELECT of a database other than 0 during a
//! script past its time limit gets the server's `-BUSY`, which is what the client whose connection
//! it is gets too). A server that answers nothing for a while (`DEBUG SLEEP`, a script before its
//! time limit) is waited for, once connected, for as long as respite's health says it is up
//! ([`open_patient`]), as a client connected to it directly would wait.
//!
//! The pools, the health probe and the near cache's tracking connections all open their
//! connections here, so every connection respite makes speaks to the upstream the same way, and a
//! refusal ([`Refusal`]) is told from an outage where the upstream's reply is read. `request`
//! is the one-command exchange a fresh connection is probed (`PING`) or set up (`CLIENT TRACKING
//! ON`) with. Not the hot path: replies are read whole with [`crate::protocol::value`]. This
//! module never keeps a connection: callers own what it opens.
use super::error::{Deadline, Kind, Lost, ProtocolError, Refusal, TlsFailure, UpstreamError};
use super::health::Health;
use super::own;
use crate::config::{UpstreamAddr, UpstreamConfig};
use crate::protocol::value::{self, Value};
use crate::protocol::{Protocol, ReplyScanner, encode};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// What the upstream said about itself in its HELLO reply; respite's own HELLO echoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub server: String,
    pub version: String,
}

/// An open, handshaken connection.
pub(crate) struct Opened {
    pub read: BoxRead,
    pub write: BoxWrite,
    pub info: ServerInfo,
    /// The connection's id on the upstream (HELLO's `id`), where it says.
    pub id: Option<u64>,
    /// The address the upstream sees it from and the upstream, for TCP (see [`own`]).
    pub key: Option<own::Key>,
}

/// A client's own credentials for a connection of its own (AUTH or HELLO's AUTH through
/// respite): the connection is set up with them instead of the URL's, so a client the upstream
/// knows is never refused for respite's credentials (a password changed through respite).
#[derive(Clone)]
pub struct Login {
    pub user: Option<Bytes>,
    pub password: Bytes,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The upstream's address as errors carry it.
pub(crate) fn addr(config: &UpstreamConfig) -> Arc<str> {
    config.url.addr.to_string().into()
}

/// Connect to the upstream and handshake as client `name`, speaking `proto`, all within
/// `upstream.connect_timeout_ms`.
pub(crate) async fn open(
    config: &UpstreamConfig,
    proto: Protocol,
    name: &str,
) -> Result<Opened, UpstreamError> {
    open_as(config, proto, name, None, None).await
}

/// [`open`], but once connected, the handshake's answer is waited for past
/// `upstream.connect_timeout_ms` while `health` says the upstream is up (a server busy with a
/// slow command answers nobody until it is done), up to `health.busy_grace_ms`; with `login`,
/// as that client instead of with the URL's credentials.
pub(crate) async fn open_patient(
    config: &UpstreamConfig,
    proto: Protocol,
    name: &str,
    health: &Health,
    login: Option<&Login>,
) -> Result<Opened, UpstreamError> {
    open_as(config, proto, name, Some(health), login).await
}

async fn open_as(
    config: &UpstreamConfig,
    proto: Protocol,
    name: &str,
    health: Option<&Health>,
    login: Option<&Login>,
) -> Result<Opened, UpstreamError> {
    let timeout = config.connect_timeout;
    let err = |kind| UpstreamError::new(addr(config), kind);
    let start = tokio::time::Instant::now();
    let (mut read, mut write, own_key) =
        match tokio::time::timeout(timeout, connect(config, name)).await {
            Ok(r) => r.map_err(err)?,
            Err(_) => return Err(err(Kind::TimedOut(Deadline::Connect(timeout)))),
        };
    let hello = async {
        let (out, expect) = setup(config, proto, name, login);
        write
            .write_all(&out)
            .await
            .map_err(|e| Kind::Lost(Lost::Handshake(e.into())))?;
        let replies = read_replies(&mut read, expect).await?;
        let info = check_setup(&replies, config.url.db)?;
        Ok::<_, Kind>((info, connection_id(&replies[0])))
    };
    let (info, id) = patiently(hello, start + timeout, health, config)
        .await
        .map_err(err)?;
    Ok(Opened {
        read,
        write,
        info,
        id,
        key: own_key,
    })
}

/// Run `work` (an exchange on a connection already made) to `deadline`; past it, go on waiting
/// while `health` says the upstream is up, up to `health.busy_grace_ms` after `deadline`: the
/// server is there (it accepted the connection) and busy, and the probe, which tells busy from
/// dead, has not called it down.
pub(crate) async fn patiently<T>(
    work: impl std::future::Future<Output = Result<T, Kind>>,
    deadline: tokio::time::Instant,
    health: Option<&Health>,
    config: &UpstreamConfig,
) -> Result<T, Kind> {
    let mut work = std::pin::pin!(work);
    let timed_out = || Err(Kind::TimedOut(Deadline::Connect(config.connect_timeout)));
    if let Ok(r) = tokio::time::timeout_at(deadline, &mut work).await {
        return r;
    }
    let Some(health) = health else {
        return timed_out();
    };
    let grace = deadline + config.health.busy_grace;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        if health.state().is_local() || tokio::time::Instant::now() >= grace {
            return timed_out();
        }
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => {}
        }
    }
}

/// Connect (and TLS); a TCP connection is listed as respite's own under client `name`'s role
/// before its first byte goes out, so MONITOR knows every line of it (see [`own`]), and its
/// registry key is returned.
async fn connect(
    config: &UpstreamConfig,
    name: &str,
) -> Result<(BoxRead, BoxWrite, Option<own::Key>), Kind> {
    let mut entry = None;
    let (read, write): (BoxRead, BoxWrite) = match &config.url.addr {
        UpstreamAddr::Tcp(a) => {
            let connect = |e: std::io::Error| Kind::Connect(e.into());
            let s = tokio::net::TcpStream::connect(a.as_str())
                .await
                .map_err(connect)?;
            s.set_nodelay(true).map_err(connect)?;
            entry = s.local_addr().ok().map(|local| {
                let key = own::Key {
                    local: local.to_string(),
                    upstream: addr(config),
                };
                own::Registration::new(key, own::role_of_name(name))
            });
            match &config.tls {
                // TLS is a property of the connection opened here, so the pools, the probe and
                // the tracking connections all get it.
                Some(tls) => {
                    let (client, name) = crate::tls::client_config(tls)
                        .map_err(|e| Kind::Tls(TlsFailure::Setup(Arc::new(e))))?;
                    let stream = tokio_rustls::TlsConnector::from(client)
                        .connect(name, s)
                        .await
                        .map_err(|e| Kind::Tls(TlsFailure::handshake(e)))?;
                    // Verified by now: what the upstream presented is what it will expire with.
                    if let Some(chain) = stream.get_ref().1.peer_certificates() {
                        crate::tls::record_upstream_expiry(a, chain);
                    }
                    let (r, w) = tokio::io::split(stream);
                    (Box::new(r), Box::new(w))
                }
                None => {
                    let (r, w) = s.into_split();
                    (Box::new(r), Box::new(w))
                }
            }
        }
        UpstreamAddr::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| Kind::Connect(e.into()))?;
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
    };
    let key = entry.as_ref().map(|e| e.key().clone());
    let read: BoxRead = match entry {
        Some(entry) => Box::new(own::Registered {
            inner: read,
            _entry: entry,
        }),
        None => read,
    };
    Ok((read, write, key))
}

/// respite's own setup of a connection: `HELLO` (protocol, the URL's credentials or `login`, a
/// client name) and `SELECT` of the URL's database when it is not 0; and how many replies they
/// get.
fn setup(
    config: &UpstreamConfig,
    proto: Protocol,
    name: &str,
    login: Option<&Login>,
) -> (BytesMut, usize) {
    let url = &config.url;
    let mut hello: Vec<Vec<u8>> = vec![b"HELLO".to_vec(), proto.version().to_string().into_bytes()];
    if let Some(login) = login {
        hello.push(b"AUTH".to_vec());
        hello.push(login.user.as_deref().unwrap_or(b"default").to_vec());
        hello.push(login.password.to_vec());
    } else if let (user, Some(pass)) = &*config.credentials.get() {
        // The URL's, or what a reload put in their place.
        hello.push(b"AUTH".to_vec());
        hello.push(user.as_deref().unwrap_or("default").as_bytes().to_vec());
        hello.push(pass.as_bytes().to_vec());
    }
    hello.extend([b"SETNAME".to_vec(), name.as_bytes().to_vec()]);
    let mut out = BytesMut::new();
    encode::command(&mut out, &hello);
    let mut expect = 1;
    if url.db != 0 {
        encode::command(
            &mut out,
            &[b"SELECT".to_vec(), url.db.to_string().into_bytes()],
        );
        expect += 1;
    }
    if config.readonly {
        // A cluster replica serves reads only to a connection that said READONLY; its reply
        // is not checked: refused, the replica answers MOVED and the read goes to the primary.
        encode::command(&mut out, &[&b"READONLY"[..]]);
        expect += 1;
    }
    (out, expect)
}

/// Check the replies to [`setup`]: HELLO's (what the server says about itself), then SELECT's.
fn check_setup(replies: &[Bytes], db: u32) -> Result<ServerInfo, Kind> {
    let info = server_info(&replies[0])?;
    // SELECT's, when sent (READONLY's, after it, is not checked: see `setup`).
    for reply in replies[1..].iter().take((db != 0) as usize) {
        if let Some(err) = error_text(reply)? {
            return Err(Kind::Refused(Refusal::Select { db, reply: err }));
        }
    }
    Ok(info)
}

/// Make a used connection as fresh as a new one: `RESET` (which ends a transaction, WATCH, a
/// database switch, a client's name and its authentication, as the server defines it), then
/// respite's own [`setup`] again, then `CLIENT INFO` to see that nothing RESET leaves behind is
/// left ([`leftover`]: Redis 7.0's RESET keeps `CLIENT NO-EVICT ON`, for one). Verified: RESET
/// must answer `+RESET`, the setup must succeed and CLIENT INFO must show a connection as new
/// (a server without CLIENT INFO has none of the states it would show), or the connection is not
/// to be reused. The connection must have nothing in flight.
pub(crate) async fn reset(
    read: &mut BoxRead,
    write: &mut BoxWrite,
    config: &UpstreamConfig,
    proto: Protocol,
    name: &str,
) -> Result<(), UpstreamError> {
    let err = |kind| UpstreamError::new(addr(config), kind);
    let run = async {
        let (setup, expect) = setup(config, proto, name, None);
        let mut out = BytesMut::from(&b"*1\r\n$5\r\nRESET\r\n"[..]);
        out.extend_from_slice(&setup);
        out.extend_from_slice(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n");
        write
            .write_all(&out)
            .await
            .map_err(|e| Kind::Lost(Lost::Write(e.into())))?;
        let replies = read_replies(read, 2 + expect).await?;
        if &replies[0][..] != b"+RESET\r\n" {
            return Err(Kind::Protocol(ProtocolError::BadHandshake));
        }
        check_setup(&replies[1..=expect], config.url.db)?;
        let info = &replies[1 + expect];
        if let Some(field) = leftover(info, config.url.db, name, config.readonly) {
            return Err(Kind::Protocol(ProtocolError::Unexpected {
                command: "CLIENT INFO",
                reply: format!("state left after RESET: {field}").into(),
            }));
        }
        Ok(())
    };
    match tokio::time::timeout(config.connect_timeout, run).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(err(Kind::TimedOut(Deadline::Connect(
            config.connect_timeout,
        )))),
    }
}

/// The first field of a `CLIENT INFO` reply that shows state a new connection of respite's,
/// named `name` in database `db`, would not have: flags other than `N` (`e` for NO-EVICT, `T`
/// for NO-TOUCH, `x`/`d` for a transaction, `t`/`B` for tracking, `P` for Pub/Sub, `r` for
/// READONLY, …), another database, subscriptions, watched keys, another name. An
/// error reply (a server without CLIENT INFO) shows nothing.
fn leftover(info: &[u8], db: u32, name: &str, readonly: bool) -> Option<String> {
    let Ok(v) = value::parse(info) else {
        return Some("an unreadable reply".into());
    };
    let text = match &v {
        Value::Blob(b'$' | b'=', b) => b.bytes(),
        _ if v.error().is_some() => return None,
        _ => return Some("an unexpected reply".into()),
    };
    // A RESP3 verbatim string starts with its format (`txt:`).
    let text = String::from_utf8_lossy(text.strip_prefix(b"txt:").unwrap_or(text));
    let db = db.to_string();
    // Not `multi`: Valkey shows 0 after a transaction ended, where Redis shows -1; the flag
    // `x` shows an open one on both.
    let want: [(&str, &str); 7] = [
        ("flags", "N"),
        ("db", &db),
        ("sub", "0"),
        ("psub", "0"),
        ("ssub", "0"),
        ("watch", "0"),
        ("name", name),
    ];
    let fields = text.split_whitespace().filter_map(|f| f.split_once('='));
    for (k, v) in fields {
        // Flags that are no client's state: `U`, connected over a unix socket (Redis, Valkey);
        // `a`, a pipelined batch being dispatched (Dragonfly, which shows no `flags=` at all
        // otherwise).
        // `r`, READONLY, is respite's own setup's where `upstream.read_from_replicas` is on.
        if k == "flags"
            && v.chars()
                .all(|f| matches!(f, 'N' | 'U' | 'a') || (readonly && f == 'r'))
        {
            continue;
        }
        if let Some((_, expected)) = want.iter().find(|(w, _)| *w == k)
            && v != *expected
        {
            return Some(format!("{k}={v}"));
        }
    }
    None
}

/// Write one encoded request of [`request`] or [`request_line`].
async fn send_bytes(write: &mut BoxWrite, bytes: &[u8]) -> Result<(), Kind> {
    write
        .write_all(bytes)
        .await
        .map_err(|e| Kind::Lost(Lost::Write(e.into())))
}

/// The reply of [`request`] or [`request_line`], or the upstream's refusal if it is an error.
fn refused_or(reply: Bytes, command: &'static str) -> Result<Bytes, Kind> {
    match error_text(&reply)? {
        Some(text) => Err(Kind::Refused(Refusal::Command {
            command,
            reply: text,
        })),
        None => Ok(reply),
    }
}

/// Send `bytes` (one encoded `command`) on an open connection and read its reply: the raw reply,
/// or the upstream's refusal if it is an error.
pub(crate) async fn request(
    read: &mut BoxRead,
    write: &mut BoxWrite,
    addr: &Arc<str>,
    command: &'static str,
    bytes: &[u8],
) -> Result<Bytes, UpstreamError> {
    let err = |kind| UpstreamError::new(addr.clone(), kind);
    send_bytes(write, bytes).await.map_err(err)?;
    let mut replies = read_replies(read, 1).await.map_err(err)?;
    let reply = replies.pop().expect("one reply");
    refused_or(reply, command).map_err(err)
}

/// Like [`request`], for a command answered by one line (`+OK` or an error) after which the
/// connection streams (MONITOR): the line is read byte by byte, so nothing that follows it is
/// read here and dropped (a buffered read took the first monitor lines with it).
pub(crate) async fn request_line(
    read: &mut BoxRead,
    write: &mut BoxWrite,
    addr: &Arc<str>,
    command: &'static str,
    bytes: &[u8],
) -> Result<Bytes, UpstreamError> {
    let err = |kind| UpstreamError::new(addr.clone(), kind);
    send_bytes(write, bytes).await.map_err(err)?;
    let mut line = BytesMut::new();
    while !line.ends_with(b"\r\n") {
        if line.len() > 64 * 1024 {
            return Err(err(Kind::Protocol(ProtocolError::BadHandshake)));
        }
        match read.read_u8().await {
            Ok(b) => line.extend_from_slice(&[b]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(err(Kind::Lost(Lost::ClosedInHandshake)));
            }
            Err(e) => return Err(err(Kind::Lost(Lost::Handshake(e.into())))),
        }
    }
    let reply = line.freeze();
    refused_or(reply, command).map_err(err)
}

/// Read `n` complete replies (raw), each cut by the reply scanner.
async fn read_replies(r: &mut BoxRead, n: usize) -> Result<Vec<Bytes>, Kind> {
    let mut buf = BytesMut::new();
    let mut scanner = ReplyScanner::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match scanner.scan(&buf) {
            Ok(Some(found)) => {
                out.push(buf.split_to(found.len).freeze());
                continue;
            }
            Ok(None) => {}
            Err(_) => return Err(Kind::Protocol(ProtocolError::BadHandshake)),
        }
        match r.read_buf(&mut buf).await {
            Ok(0) => return Err(Kind::Lost(Lost::ClosedInHandshake)),
            Ok(_) => {}
            Err(e) => return Err(Kind::Lost(Lost::Handshake(e.into()))),
        }
    }
    Ok(out)
}

fn parse(reply: &[u8]) -> Result<Value<'_>, Kind> {
    value::parse(reply).map_err(|_| Kind::Protocol(ProtocolError::BadHandshake))
}

/// The text of an error reply, `None` for any other reply.
fn error_text(reply: &[u8]) -> Result<Option<Arc<str>>, Kind> {
    Ok(parse(reply)?
        .error()
        .map(|t| String::from_utf8_lossy(t).into()))
}

/// Pick `server` and `version` out of a HELLO reply (a map in RESP3, a flat array in RESP2).
fn server_info(reply: &[u8]) -> Result<ServerInfo, Kind> {
    let v = parse(reply)?;
    if let Some(err) = v.error() {
        return Err(Kind::Refused(Refusal::Hello(
            String::from_utf8_lossy(err).into(),
        )));
    }
    let items = match &v {
        Value::Agg(b'%' | b'*', items) => items,
        _ => return Err(Kind::Protocol(ProtocolError::UnexpectedHello)),
    };
    let text = |v: &Value| v.bulk().map(|t| String::from_utf8_lossy(t).into_owned());
    let mut info = ServerInfo {
        server: "redis".into(),
        version: "7.0.0".into(),
    };
    for pair in items.chunks(2) {
        let [k, v] = pair else { continue };
        match text(k).as_deref() {
            Some("server") => info.server = text(v).unwrap_or(info.server),
            Some("version") => info.version = text(v).unwrap_or(info.version),
            _ => {}
        }
    }
    Ok(info)
}

/// The `id` in a HELLO reply (the connection's own, as CLIENT ID would say).
fn connection_id(reply: &[u8]) -> Option<u64> {
    let Ok(Value::Agg(b'%' | b'*', items)) = parse(reply) else {
        return None;
    };
    items.chunks(2).find_map(|pair| match pair {
        [k, Value::Line(b':', n)] if k.bulk() == Some(b"id") => {
            std::str::from_utf8(n).ok()?.parse().ok()
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_reset_leaves_behind_is_seen() {
        let info = |fields: &str| format!("${}\r\n{fields}\r\n", fields.len()).into_bytes();
        let fresh = "id=7 addr=x fd=8 name=respite-pinned age=0 idle=0 flags=N db=0 sub=0 \
                     psub=0 ssub=0 multi=-1 watch=0 qbuf=0 user=default resp=2";
        assert_eq!(leftover(&info(fresh), 0, "respite-pinned", false), None);
        let no_evict = fresh.replace("flags=N", "flags=e");
        assert_eq!(
            leftover(&info(&no_evict), 0, "respite-pinned", false).as_deref(),
            Some("flags=e")
        );
        assert_eq!(
            leftover(&info(fresh), 3, "respite-pinned", false).as_deref(),
            Some("db=0")
        );
        assert_eq!(
            leftover(
                &info(&fresh.replace("watch=0", "watch=2")),
                0,
                "respite-pinned",
                false
            )
            .as_deref(),
            Some("watch=2")
        );
        // RESP3's verbatim string, and a server with no CLIENT INFO (nothing to see).
        let verbatim = format!("={}\r\ntxt:{fresh}\r\n", fresh.len() + 4);
        assert_eq!(
            leftover(verbatim.as_bytes(), 0, "respite-pinned", false),
            None
        );
        assert_eq!(
            leftover(b"-ERR unknown subcommand 'INFO'\r\n", 0, "x", false),
            None
        );
        assert!(leftover(b":1\r\n", 0, "x", false).is_some());
        let unix = fresh.replace("flags=N", "flags=U");
        assert_eq!(leftover(&info(&unix), 0, "respite-pinned", false), None);
        // Dragonfly's: no flags field unless one is set, `a` while a batch is dispatched.
        let dragonfly = "id=3 addr=x laddr=y fd=9 name=respite-pinned tid=0 irqmatch=0 age=0 \
                         idle=0 tot-cmds=3 db=0 flags=a lib-name= lib-ver= multi=0 psub=0 sub=0";
        assert_eq!(leftover(&info(dragonfly), 0, "respite-pinned", false), None);
        let blocked = dragonfly.replace("flags=a", "flags=ab");
        assert!(leftover(&info(&blocked), 0, "respite-pinned", false).is_some());
    }

    #[test]
    fn the_connections_id_from_hello() {
        let resp3 = b"%2\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:42\r\n";
        assert_eq!(connection_id(resp3), Some(42));
        let resp2 = b"*4\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:7\r\n";
        assert_eq!(connection_id(resp2), Some(7));
        assert_eq!(connection_id(b"*2\r\n$5\r\nproto\r\n:2\r\n"), None);
    }

    #[test]
    fn hello_replies_of_either_protocol() {
        let resp3 = b"%3\r\n$6\r\nserver\r\n$6\r\nvalkey\r\n$7\r\nversion\r\n$5\r\n8.1.0\r\n$5\r\nproto\r\n:3\r\n";
        let want = ServerInfo {
            server: "valkey".into(),
            version: "8.1.0".into(),
        };
        assert_eq!(server_info(resp3).unwrap(), want);
        let resp2 = b"*4\r\n$6\r\nserver\r\n$6\r\nvalkey\r\n$7\r\nversion\r\n$5\r\n8.1.0\r\n";
        assert_eq!(server_info(resp2).unwrap(), want);
        let refused = server_info(b"-WRONGPASS bad\r\n").unwrap_err();
        assert!(matches!(&refused, Kind::Refused(Refusal::Hello(r)) if &**r == "WRONGPASS bad"));
        assert!(matches!(
            server_info(b"+OK\r\n"),
            Err(Kind::Protocol(ProtocolError::UnexpectedHello))
        ));
        assert_eq!(
            error_text(b"!9\r\nNOAUTH no\r\n").unwrap().as_deref(),
            Some("NOAUTH no")
        );
    }
}
