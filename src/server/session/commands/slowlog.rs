//! SLOWLOG GET through respite: the upstream's entries without respite's own commands. With
//! `slowlog-log-slower-than 0` the upstream logs everything, and respite's batch markers, health
//! probes and lease resets would push the clients' own commands out of the first places (Redis's
//! slowlog.tcl reads entry 0 right after its command). An entry is respite's by the rule MONITOR
//! applies (see [`super::monitor`]): any command from a connection that carries only respite's
//! own traffic, and on the connections that carry clients' commands the markers, release PINGs,
//! resets and handshakes respite adds. SLOWLOG LEN and RESET are the upstream's as they are.
use super::monitor::respite_own;
use crate::protocol::Request;
use crate::protocol::encode;
use crate::protocol::value::{self, Value};
use crate::server::session::Reader;
use crate::upstream::own::{self, Role};
use bytes::{Bytes, BytesMut};

/// Redis's default count for SLOWLOG GET without one.
const DEFAULT_COUNT: i64 = 10;

impl Reader<'_> {
    /// SLOWLOG GET [count]: asks the upstream for more, so that `count` of the clients' own
    /// remain once respite's are left out. A count the upstream would refuse goes as sent.
    pub(in crate::server::session) async fn slowlog_get(&mut self, req: &Request) {
        let count = match req.args.get(2) {
            None => Some(DEFAULT_COUNT),
            Some(a) => std::str::from_utf8(a)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= -1),
        };
        let Some(count) = count.filter(|_| req.args.len() <= 3) else {
            let command = crate::server::session::forward::request_bytes(req);
            return self.forward_rewritten(command, |b| b).await;
        };
        // -1 is every entry; otherwise room for respite's between the clients' (one marker per
        // batch at most, plus probes: 4 a second).
        let ask = if count < 0 {
            -1
        } else {
            count.saturating_mul(4).saturating_add(256)
        };
        let mut command = BytesMut::new();
        encode::command(
            &mut command,
            &[
                &req.args[0][..],
                &req.args[1][..],
                ask.to_string().as_bytes(),
            ],
        );
        // Entries are told respite's by their upstream's connections; a cluster's reply may
        // come from any node.
        let upstream = self
            .shared
            .upstream
            .as_ref()
            .filter(|u| u.cluster().is_none())
            .map(|u| crate::upstream::handshake::addr(u.config()));
        self.forward_rewritten(command.freeze(), move |bytes| {
            without_respites(&bytes, count, upstream.as_deref()).unwrap_or(bytes)
        })
        .await
    }
}

/// The SLOWLOG GET reply `reply` without respite's own entries, at most `count` of them (all
/// for -1); `None` if it is not an array of entries (an error goes through as it came).
fn without_respites(reply: &[u8], count: i64, upstream: Option<&str>) -> Option<Bytes> {
    let parsed = value::parse(reply).ok()?;
    let Value::Agg(kind @ (b'*' | b'~'), entries) = &parsed else {
        return None;
    };
    let mut kept: Vec<&Value> = entries
        .iter()
        .filter(|e| !is_respites(e, upstream))
        .collect();
    if count >= 0 {
        kept.truncate(count as usize);
    }
    let mut out = BytesMut::new();
    out.extend_from_slice(&[*kind]);
    out.extend_from_slice(kept.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for e in kept {
        value::encode(e, &mut out);
    }
    Some(out.freeze())
}

/// An entry: `[id, time, micros, [args…], "ip:port", "name"]`.
fn is_respites(entry: &Value, upstream: Option<&str>) -> bool {
    let Some(fields) = entry.items() else {
        return false;
    };
    let Some(addr) = fields.get(4).and_then(|a| a.bulk()) else {
        return false;
    };
    let args: Vec<Bytes> = fields
        .get(3)
        .and_then(|a| a.items())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.bulk().map(Bytes::copy_from_slice))
        .collect();
    match own::role(&String::from_utf8_lossy(addr), upstream) {
        Some(Role::Own) => true,
        Some(Role::Carrier) => respite_own(&args),
        None if addr.starts_with(b"unix:") || addr.starts_with(b"/") => respite_own(&args),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u32, args: &[&str], addr: &str) -> String {
        let mut s = format!("*6\r\n:{id}\r\n:1700000000\r\n:5\r\n*{}\r\n", args.len());
        for a in args {
            s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.push_str(&format!("${}\r\n{addr}\r\n$0\r\n\r\n", addr.len()));
        s
    }

    #[test]
    fn leaves_out_markers_and_keeps_the_clients_own() {
        let marker = "PING 0123456789abcdef0123456789abcdef";
        let m: Vec<&str> = marker.split(' ').collect();
        let reply = format!(
            "*4\r\n{}{}{}{}",
            entry(4, &m, "unix:/tmp/x"),
            entry(3, &["spop", "set", "10"], "unix:/tmp/x"),
            entry(2, &m, "unix:/tmp/x"),
            entry(1, &["slowlog", "reset"], "unix:/tmp/x"),
        );
        let out = without_respites(reply.as_bytes(), 10, None).unwrap();
        let want = format!(
            "*2\r\n{}{}",
            entry(3, &["spop", "set", "10"], "unix:/tmp/x"),
            entry(1, &["slowlog", "reset"], "unix:/tmp/x")
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
        let one = without_respites(reply.as_bytes(), 1, None).unwrap();
        assert!(one.starts_with(b"*1\r\n"));
        // A direct client's PING with the same argument is its own.
        let direct = format!("*1\r\n{}", entry(9, &m, "10.0.0.9:5000"));
        assert_eq!(
            &without_respites(direct.as_bytes(), -1, None).unwrap()[..],
            direct.as_bytes()
        );
        assert!(without_respites(b"-ERR no\r\n", 10, None).is_none());
    }
}
