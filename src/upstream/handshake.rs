//! Opening a connection to the upstream: connect (TCP or unix socket), TLS for a `rediss://` URL,
//! then `HELLO` with the protocol, the URL's credentials and a client name, then `SELECT` the
//! URL's database.
//!
//! The pools, the health probe and the near cache's tracking connections all open their
//! connections here, so every connection respite makes speaks to the upstream the same way, and a
//! refusal ([`Refusal`]) is told from an outage where the upstream's reply is read. `request`
//! is the one-command exchange a fresh connection is probed (`PING`) or set up (`CLIENT TRACKING
//! ON`) with. Not the hot path: replies are read whole with [`crate::protocol::value`]. This
//! module never keeps a connection: callers own what it opens.
use super::error::{Deadline, Kind, Lost, ProtocolError, Refusal, TlsFailure, UpstreamError};
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
    /// The address the upstream sees it from, for TCP (see [`own`]).
    pub addr: Option<String>,
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
    let timeout = config.connect_timeout;
    let err = |kind| UpstreamError::new(addr(config), kind);
    match tokio::time::timeout(timeout, open_now(config, proto, name)).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(err(Kind::TimedOut(Deadline::Connect(timeout)))),
    }
}

async fn open_now(config: &UpstreamConfig, proto: Protocol, name: &str) -> Result<Opened, Kind> {
    // Listed before the first byte goes out, so MONITOR knows every line of it (see `own`).
    let mut entry = None;
    let (read, mut write): (BoxRead, BoxWrite) = match &config.url.addr {
        UpstreamAddr::Tcp(a) => {
            let connect = |e: std::io::Error| Kind::Connect(e.into());
            let s = tokio::net::TcpStream::connect(a.as_str())
                .await
                .map_err(connect)?;
            s.set_nodelay(true).map_err(connect)?;
            entry = s
                .local_addr()
                .ok()
                .map(|a| own::Registration::new(a.to_string(), own::role_of_name(name)));
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
    let addr = entry.as_ref().map(|e| e.addr().to_string());
    let mut read: BoxRead = match entry {
        Some(entry) => Box::new(own::Registered {
            inner: read,
            _entry: entry,
        }),
        None => read,
    };
    let (out, expect) = setup(config, proto, name);
    write
        .write_all(&out)
        .await
        .map_err(|e| Kind::Lost(Lost::Handshake(e.into())))?;
    let replies = read_replies(&mut read, expect).await?;
    let info = check_setup(&replies, config.url.db)?;
    let id = connection_id(&replies[0]);
    Ok(Opened {
        read,
        write,
        info,
        id,
        addr,
    })
}

/// respite's own setup of a connection: `HELLO` (protocol, the URL's credentials, a client
/// name) and `SELECT` of the URL's database when it is not 0; and how many replies they get.
fn setup(config: &UpstreamConfig, proto: Protocol, name: &str) -> (BytesMut, usize) {
    let url = &config.url;
    let mut hello: Vec<Vec<u8>> = vec![b"HELLO".to_vec(), proto.version().to_string().into_bytes()];
    if let Some(pass) = &url.password {
        hello.push(b"AUTH".to_vec());
        hello.push(
            url.username
                .as_deref()
                .unwrap_or("default")
                .as_bytes()
                .to_vec(),
        );
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
    (out, expect)
}

/// Check the replies to [`setup`]: HELLO's (what the server says about itself), then SELECT's.
fn check_setup(replies: &[Bytes], db: u32) -> Result<ServerInfo, Kind> {
    let info = server_info(&replies[0])?;
    for reply in &replies[1..] {
        if let Some(err) = error_text(reply)? {
            return Err(Kind::Refused(Refusal::Select { db, reply: err }));
        }
    }
    Ok(info)
}

/// Make a used connection as fresh as a new one: `RESET` (which ends a transaction, WATCH, a
/// database switch, a client's name and its authentication, as the server defines it), then
/// respite's own [`setup`] again. Verified: RESET must answer `+RESET` and the setup must
/// succeed, or the connection is not to be reused. The connection must have nothing in flight.
pub(crate) async fn reset(
    read: &mut BoxRead,
    write: &mut BoxWrite,
    config: &UpstreamConfig,
    proto: Protocol,
    name: &str,
) -> Result<(), UpstreamError> {
    let err = |kind| UpstreamError::new(addr(config), kind);
    let run = async {
        let (setup, expect) = setup(config, proto, name);
        let mut out = BytesMut::from(&b"*1\r\n$5\r\nRESET\r\n"[..]);
        out.extend_from_slice(&setup);
        write
            .write_all(&out)
            .await
            .map_err(|e| Kind::Lost(Lost::Write(e.into())))?;
        let replies = read_replies(read, 1 + expect).await?;
        if &replies[0][..] != b"+RESET\r\n" {
            return Err(Kind::Protocol(ProtocolError::BadHandshake));
        }
        check_setup(&replies[1..], config.url.db).map(|_| ())
    };
    match tokio::time::timeout(config.connect_timeout, run).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(err(Kind::TimedOut(Deadline::Connect(
            config.connect_timeout,
        )))),
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
    write
        .write_all(bytes)
        .await
        .map_err(|e| err(Kind::Lost(Lost::Write(e.into()))))?;
    let mut replies = read_replies(read, 1).await.map_err(err)?;
    let reply = replies.pop().expect("one reply");
    match error_text(&reply).map_err(err)? {
        Some(text) => Err(err(Kind::Refused(Refusal::Command {
            command,
            reply: text,
        }))),
        None => Ok(reply),
    }
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
    write
        .write_all(bytes)
        .await
        .map_err(|e| err(Kind::Lost(Lost::Write(e.into()))))?;
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
    match error_text(&reply).map_err(err)? {
        Some(text) => Err(err(Kind::Refused(Refusal::Command {
            command,
            reply: text,
        }))),
        None => Ok(reply),
    }
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
