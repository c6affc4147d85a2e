//! MONITOR through respite: the client's own upstream connection in monitor mode (counted against
//! `upstream.max_pinned`), its lines relayed into the client's outbox (written between whole
//! replies, as Pub/Sub pushes are) until the client leaves, RESETs or QUITs. A tenant needs
//! `monitor` (or @admin) among its allowed commands. While it monitors, the client's commands
//! are answered as Redis answers a monitor's: those that touch the keyspace are refused
//! ([`refused_while_monitoring`]), a second MONITOR gets no reply, the rest run as usual.
//!
//! The upstream's lines describe what every client of the upstream runs. This module shows none
//! of respite's own traffic: no line from a connection that carries only respite's (the probe,
//! the near cache's, Pub/Sub's: see [`crate::upstream::own`]), and on the connections that carry
//! clients' commands none of the batch markers, handshakes, resets and release PINGs respite adds
//! ([`respite_own`]). A prefixed tenant sees a line only if it came through respite (not from a
//! direct client or a script's `lua`), in the configured database, and every key of it — found
//! by the command table's key positions, never by looking at values — is in its namespace; those
//! keys lose the prefix. A keyless command (PUBLISH, SCRIPT, FLUSHALL, MULTI) is never shown to a
//! prefixed tenant: this module must never show one a line that names a key outside its
//! namespace, or any command of another's.
use crate::command::{self, CommandSpec, Flags};
use crate::metrics::{self, ErrorKind};
use crate::protocol::{ReplyScanner, encode};
use crate::pubsub::Outbox;
use crate::server::session::{Pending, Reader};
use crate::upstream::own::{self, Role};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Redis's refusal of a command that touches the keyspace from a monitoring client (Redis
/// flags monitors as replicas).
pub(in crate::server::session) const KEYSPACE: &str =
    "ERR Replica can't interact with the keyspace";

/// How long RESET or QUIT waits for the upstream to answer the PING that ends a monitor (every
/// line it wrote before is relayed by then); past it, the lines still on their way are dropped.
const END_WAIT: Duration = Duration::from_secs(2);

/// The PING that ends a monitor: its reply (a bulk string, where every monitor line is a
/// simple string) follows every line written before it. Its own line is from a connection of
/// respite's own, which no monitor shows.
const END_PING: &[u8] = b"*2\r\n$4\r\nPING\r\n$11\r\nrespite-end\r\n";

/// A client's monitoring: its relays (one per upstream monitor) and how to end them.
pub(in crate::server::session) struct Monitoring {
    /// Asks each relay to end after the lines written before the ask (RESET, QUIT).
    finish: CancellationToken,
    relays: Vec<JoinHandle<()>>,
}

/// Whether a monitoring client's command is refused, as Redis refuses it: anything that reads
/// or writes keys, and the commands Redis 7.0 flags `may_replicate` without either (its
/// `COMMAND` does not list that flag; found by sending every command on a real monitor).
pub(in crate::server::session) fn refused_while_monitoring(spec: &CommandSpec) -> bool {
    spec.flags.contains(Flags::WRITE)
        || spec.flags.contains(Flags::READONLY)
        || matches!(
            spec.name,
            "eval" | "evalsha" | "fcall" | "publish" | "spublish"
        )
}

impl Reader<'_> {
    pub(in crate::server::session) async fn monitor(&mut self, spec: &'static CommandSpec) {
        let Some(upstream) = self.shared.upstream.clone() else {
            metrics::error(ErrorKind::Refused);
            return self
                .reply_error("ERR MONITOR is not supported by respite without an upstream")
                .await;
        };
        if let Some(tenant) = &self.client.tenant
            && !tenant.permits(spec)
        {
            let e = tenant.no_perm(spec);
            crate::policy::metrics::refusal(&tenant.name, &e);
            return self.reply_error(&e.to_string()).await;
        }
        let Some(outbox) = self.pubsub.outbox.clone() else {
            // Every session with an upstream has one (the Pub/Sub hub's).
            metrics::error(ErrorKind::Refused);
            return self
                .reply_error("ERR MONITOR is not supported by respite here")
                .await;
        };
        // Everything sent before runs before monitoring starts.
        self.send_group().await;
        self.barrier().await;
        // A cluster's commands run on its primaries: one monitor on each, their lines merged
        // in the order they arrive (each node's in its own order).
        let pools = match upstream.cluster() {
            Some(c) => match c.topology().await {
                Some(t) => t
                    .primaries()
                    .iter()
                    .map(|a| c.node(a).pinned().clone())
                    .collect(),
                None => {
                    metrics::error(ErrorKind::Upstream);
                    return self
                        .reply_error("CLUSTERDOWN respite has not read the cluster's topology yet")
                        .await;
                }
            },
            None => vec![upstream.pinned().clone()],
        };
        let mut conns = Vec::with_capacity(pools.len());
        for pool in pools {
            match pool.monitor().await {
                Ok(c) => conns.push(c),
                Err(e) => {
                    metrics::error(ErrorKind::Refused);
                    return self.reply_error(&e.to_string()).await;
                }
            }
        }
        let view = View {
            prefix: self
                .client
                .tenant
                .as_ref()
                .filter(|t| t.has_prefix())
                .map(|t| t.prefix.clone()),
            // A tenant with a database of its own (`tenant.db`) keeps its keys there.
            db: self
                .client
                .tenant
                .as_ref()
                .and_then(|t| t.db)
                .unwrap_or(self.configured_db()),
            upstream: None,
        };
        // The lines go through the client's outbox, between whole replies, so the client's
        // later commands are answered while it monitors (as Redis answers them). They start
        // after +OK is written: the relays begin once the barrier behind it is passed.
        let mut ok = BytesMut::new();
        encode::simple(&mut ok, "OK");
        self.push(Pending::Ready(ok.freeze())).await;
        self.barrier().await;
        // Cancelled when the client leaves: the relays end at once.
        let gone = self.out.pin.gone_token().child_token();
        let finish = CancellationToken::new();
        // The stream ends (the client is told nothing more) when any monitor ends: a merged
        // view missing a node's lines would look whole and not be.
        let ended = CancellationToken::new();
        let relays = conns
            .into_iter()
            .map(|conn| {
                // Each monitor's lines are told apart by its own upstream's connections.
                let view = View {
                    upstream: Some(conn.upstream.clone()),
                    ..view.clone()
                };
                tokio::spawn(relay(
                    conn,
                    view,
                    outbox.clone(),
                    Ends {
                        gone: gone.clone(),
                        finish: finish.clone(),
                        ended: ended.clone(),
                    },
                ))
            })
            .collect();
        self.monitoring = Some(Monitoring { finish, relays });
        // A monitor waits for lines, not for itself: limits.idle_timeout_ms would close it (Redis's
        // `timeout` spares monitors too).
        self.client.timeouts_exempt = true;
    }

    /// RESET or QUIT of a monitoring client: monitoring ends (its upstream connections close)
    /// once every line the upstream wrote before it is in the outbox, so the command's reply
    /// follows the last of them, as Redis's does.
    pub(in crate::server::session) async fn end_monitor(&mut self) {
        let Some(m) = self.monitoring.take() else {
            return;
        };
        m.finish.cancel();
        for relay in m.relays {
            let _ = relay.await;
        }
        self.client.timeouts_exempt = false;
    }
}

/// What ends a relay.
struct Ends {
    /// The client left: at once.
    gone: CancellationToken,
    /// RESET or QUIT: after the lines written before it.
    finish: CancellationToken,
    /// Another relay of the same client ended (which this one then signals too).
    ended: CancellationToken,
}

/// Relay one upstream monitor's lines, as `view` shows them, into the client's outbox until the
/// client goes, is too slow (the outbox overflows, which closes the session), or a monitor
/// ends; on `finish`, up to the reply of a PING sent then.
async fn relay(conn: crate::upstream::Monitor, view: View, outbox: Arc<Outbox>, ends: Ends) {
    // Moved whole: the block must hold the write half too, whose drop would shut the
    // connection down.
    let mut conn = conn;
    let mut buf = BytesMut::new();
    let relay = async {
        // Set once the end PING is sent: its reply ends the relay.
        let mut ending: Option<tokio::time::Instant> = None;
        loop {
            let mut scanner = ReplyScanner::new();
            loop {
                let found = match scanner.scan(&buf) {
                    Ok(Some(found)) => found,
                    Ok(None) => break,
                    // Not RESP: nothing after it can be framed, so the stream ends rather than
                    // wait for lines it would never find.
                    Err(e) => {
                        tracing::warn!("monitor: unreadable line from the upstream: {e}");
                        return;
                    }
                };
                let line = buf.split_to(found.len).freeze();
                scanner = ReplyScanner::new();
                if line.first() != Some(&b'+') {
                    // Only the end PING's reply (or a refusal of it) is not a line.
                    return;
                }
                if let Some(line) = view.show(line)
                    && !outbox.push(line)
                {
                    tracing::debug!("monitor: client too slow");
                    return;
                }
            }
            let read = conn.read.read_buf(&mut buf);
            let got = match ending {
                Some(until) => match tokio::time::timeout_at(until, read).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => tokio::select! {
                    r = read => r,
                    () = ends.finish.cancelled() => {
                        if conn.write.write_all(END_PING).await.is_err() {
                            return;
                        }
                        ending = Some(tokio::time::Instant::now() + END_WAIT);
                        continue;
                    }
                },
            };
            match got {
                Ok(0) | Err(_) => {
                    tracing::debug!("monitor: upstream closed");
                    return;
                }
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = ends.gone.cancelled() => tracing::debug!("monitor: client gone"),
        _ = ends.ended.cancelled() => {}
        _ = relay => {}
    }
    // A relay done finishing leaves the others to finish their own lines.
    if !ends.finish.is_cancelled() {
        ends.ended.cancel();
    }
}

/// Who watches: a prefixed tenant (its prefix), or anyone else; the configured database; and
/// which upstream's lines these are.
#[derive(Clone)]
struct View {
    prefix: Option<Bytes>,
    db: u32,
    upstream: Option<std::sync::Arc<str>>,
}

/// Where a line's command came from, by the address the upstream names.
#[derive(Debug, PartialEq, Eq)]
enum Origin {
    /// One of respite's own connections, and what it carries. Over a unix socket every client
    /// shows as `unix:<path>`: there, lines are taken as respite's (documented).
    Respite(Role),
    /// A client connected straight to the upstream, or a script (`lua`).
    Outside,
}

impl View {
    /// The line as this watcher sees it, or `None`.
    fn show(&self, line: Bytes) -> Option<Bytes> {
        let Some(parsed) = parse(&line) else {
            // Not a command line (never seen from Redis or Valkey): only for the unconfined.
            return self.prefix.is_none().then_some(line);
        };
        let origin = if parsed.addr.starts_with(b"unix:") {
            Origin::Respite(Role::Carrier)
        } else {
            match own::role(
                &String::from_utf8_lossy(parsed.addr),
                self.upstream.as_deref(),
            ) {
                Some(role) => Origin::Respite(role),
                None => Origin::Outside,
            }
        };
        let args: Vec<Bytes> = parsed
            .args
            .iter()
            .map(|a| Bytes::from(a.value.clone()))
            .collect();
        match origin {
            Origin::Respite(Role::Own) => return None,
            Origin::Respite(Role::Carrier) if respite_own(&args) => return None,
            Origin::Outside if self.prefix.is_some() => return None,
            _ => {}
        }
        let Some(prefix) = &self.prefix else {
            return Some(line);
        };
        if parsed.db != self.db.to_string().as_bytes() {
            return None;
        }
        let spec = command::resolve(&args).ok()?;
        let keys = command::keys(spec, &args).ok()?;
        if keys.is_empty() || !keys.positions().all(|i| args[i].starts_with(prefix)) {
            return None;
        }
        let mut out = line[..parsed.args_at].to_vec();
        for (i, arg) in parsed.args.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            if keys.positions().any(|k| k == i) {
                out.push(b'"');
                escape(&mut out, &arg.value[prefix.len()..]);
                out.push(b'"');
            } else {
                out.extend_from_slice(&line[arg.raw.clone()]);
            }
        }
        out.extend_from_slice(b"\r\n");
        Some(Bytes::from(out))
    }
}

/// What respite itself sends on a connection that carries clients' commands: the batch marker
/// (`PING` and 32 hex digits), the PING that ends a pinned lease (`PING respite-release`), a
/// pinned connection's `RESET` and `CLIENT INFO` check, and its own HELLO (named `respite…`). A client's RESET never
/// reaches the upstream (respite answers it); its PINGs do and are shown.
pub(super) fn respite_own(args: &[Bytes]) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    if name.eq_ignore_ascii_case(b"ping") {
        return args.len() == 2
            && (&args[1][..] == b"respite-release"
                || (args[1].len() == 32 && args[1].iter().all(|b| b.is_ascii_hexdigit())));
    }
    if name.eq_ignore_ascii_case(b"reset") {
        return true;
    }
    // The reset's check of a pinned connection before reuse: a client's CLIENT INFO is answered
    // by respite, never sent.
    if name.eq_ignore_ascii_case(b"client") {
        return args.len() == 2 && args[1].eq_ignore_ascii_case(b"info");
    }
    name.eq_ignore_ascii_case(b"hello")
        && args
            .windows(2)
            .any(|w| w[0].eq_ignore_ascii_case(b"setname") && w[1].starts_with(b"respite"))
}

/// A monitor line: `+<time> [<db> <addr>] "arg" "arg" …`.
struct Line<'a> {
    db: &'a [u8],
    addr: &'a [u8],
    /// Where the first argument's quote starts.
    args_at: usize,
    args: Vec<Arg>,
}

struct Arg {
    /// The quoted text, quotes included, as the line has it.
    raw: std::ops::Range<usize>,
    value: Vec<u8>,
}

/// Read a line as Redis's MONITOR writes it (each argument quoted by `sdscatrepr`).
fn parse(line: &[u8]) -> Option<Line<'_>> {
    let open = line.iter().position(|&b| b == b'[')?;
    let close = open + line[open..].windows(2).position(|w| w == b"] ")?;
    let inside = &line[open + 1..close];
    let space = inside.iter().position(|&b| b == b' ')?;
    let (db, addr) = (&inside[..space], &inside[space + 1..]);
    let args_at = close + 2;
    let end = line.len() - line.ends_with(b"\r\n") as usize * 2;
    let mut args = Vec::new();
    let mut i = args_at;
    while i < end {
        if line[i] == b' ' {
            i += 1;
            continue;
        }
        if line[i] != b'"' {
            return None;
        }
        let start = i;
        i += 1;
        let mut value = Vec::new();
        loop {
            match *line.get(i)? {
                b'"' => break,
                b'\\' => {
                    let c = *line.get(i + 1)?;
                    i += 2;
                    value.push(match c {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'a' => 7,
                        b'b' => 8,
                        b'x' => {
                            let hex = std::str::from_utf8(line.get(i..i + 2)?).ok()?;
                            i += 2;
                            u8::from_str_radix(hex, 16).ok()?
                        }
                        other => other,
                    });
                }
                b => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        i += 1;
        args.push(Arg {
            raw: start..i,
            value,
        });
    }
    (!args.is_empty()).then_some(Line {
        db,
        addr,
        args_at,
        args,
    })
}

/// Quote bytes as Redis's `sdscatrepr` does.
fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\\' | b'"' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::own::{Key, Registration};

    const UPSTREAM: &str = "198.51.100.1:6379";

    fn key(local: &str) -> Key {
        Key {
            local: local.into(),
            upstream: UPSTREAM.into(),
        }
    }

    fn tenant(prefix: &str) -> View {
        View {
            prefix: Some(Bytes::copy_from_slice(prefix.as_bytes())),
            db: 0,
            upstream: Some(UPSTREAM.into()),
        }
    }

    fn show(view: &View, line: &str) -> Option<String> {
        view.show(Bytes::copy_from_slice(line.as_bytes()))
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn a_tenant_sees_its_keys_only_by_key_position() {
        let _respite = Registration::new(key("192.0.2.7:1"), Role::Carrier);
        let a = tenant("app:");
        let line = "+1.0 [0 192.0.2.7:1] \"SET\" \"app:k\" \"v \\\"q\\\" app:x\"\r\n";
        assert_eq!(
            show(&a, line).unwrap(),
            "+1.0 [0 192.0.2.7:1] \"SET\" \"k\" \"v \\\"q\\\" app:x\"\r\n"
        );
        // A value starting with the prefix is not a key: another tenant's line stays hidden.
        assert_eq!(
            show(&a, "+1.0 [0 192.0.2.7:1] \"SET\" \"b:k\" \"app:v\"\r\n"),
            None
        );
        assert_eq!(
            show(
                &a,
                "+1.0 [0 192.0.2.7:1] \"HSET\" \"b:h\" \"app:f\" \"app:v\"\r\n"
            ),
            None
        );
        // Every key must be the tenant's.
        assert_eq!(
            show(
                &a,
                "+1.0 [0 192.0.2.7:1] \"MSET\" \"app:a\" \"1\" \"b:b\" \"2\"\r\n"
            ),
            None
        );
        assert_eq!(
            show(
                &a,
                "+1.0 [0 192.0.2.7:1] \"MSET\" \"app:a\" \"app:1\" \"app:b\" \"2\"\r\n"
            )
            .unwrap(),
            "+1.0 [0 192.0.2.7:1] \"MSET\" \"a\" \"app:1\" \"b\" \"2\"\r\n"
        );
        // Keyless commands, whoever sent them.
        for keyless in [
            "\"PUBLISH\" \"app:ch\" \"m\"",
            "\"FLUSHALL\"",
            "\"SCRIPT\" \"FLUSH\"",
            "\"PING\"",
        ] {
            assert_eq!(
                show(&a, &format!("+1.0 [0 192.0.2.7:1] {keyless}\r\n")),
                None
            );
        }
        // Another database, a direct client, a script.
        assert_eq!(
            show(&a, "+1.0 [3 192.0.2.7:1] \"SET\" \"app:k\" \"v\"\r\n"),
            None
        );
        assert_eq!(
            show(&a, "+1.0 [0 192.0.2.8:9] \"SET\" \"app:k\" \"v\"\r\n"),
            None
        );
        assert_eq!(show(&a, "+1.0 [0 lua] \"SET\" \"app:k\" \"v\"\r\n"), None);
        // Escapes survive the prefix's removal.
        assert_eq!(
            show(&a, "+1.0 [0 192.0.2.7:1] \"GET\" \"app:\\x00\\n\"\r\n").unwrap(),
            "+1.0 [0 192.0.2.7:1] \"GET\" \"\\x00\\n\"\r\n"
        );
    }

    #[test]
    fn nobody_sees_respites_own_traffic() {
        let _carrier = Registration::new(key("192.0.2.9:1"), Role::Carrier);
        let _own = Registration::new(key("192.0.2.9:2"), Role::Own);
        // A connection of respite's own to another upstream, from the carrier's local address
        // (the kernel allows it): the carrier's lines are still shown.
        let _elsewhere = Registration::new(
            Key {
                local: "192.0.2.9:1".into(),
                upstream: "198.51.100.2:6379".into(),
            },
            Role::Own,
        );
        let all = View {
            prefix: None,
            db: 0,
            upstream: Some(UPSTREAM.into()),
        };
        let marker = "+1.0 [0 192.0.2.9:1] \"PING\" \"dc90937b0000000000000000000000a1\"\r\n";
        assert_eq!(show(&all, marker), None);
        assert_eq!(
            show(
                &all,
                "+1.0 [0 192.0.2.9:1] \"PING\" \"respite-release\"\r\n"
            ),
            None
        );
        let ping = "+1.0 [0 192.0.2.9:1] \"PING\"\r\n";
        assert_eq!(show(&all, ping).unwrap(), ping);
        assert_eq!(show(&all, "+1.0 [0 192.0.2.9:1] \"RESET\"\r\n"), None);
        assert_eq!(
            show(
                &all,
                "+1.0 [0 192.0.2.9:1] \"HELLO\" \"3\" \"SETNAME\" \"respite-pinned\"\r\n"
            ),
            None
        );
        assert_eq!(show(&all, "+1.0 [0 192.0.2.9:2] \"GET\" \"k\"\r\n"), None);
        // Clients' commands, and direct clients', are shown to the unconfined as they are.
        let set = "+1.0 [0 192.0.2.9:1] \"set\" \"k\" \"v\"\r\n";
        assert_eq!(show(&all, set).unwrap(), set);
        let direct = "+1.0 [0 192.0.2.10:5] \"PING\"\r\n";
        assert_eq!(show(&all, direct).unwrap(), direct);
    }
}
