//! MONITOR through respite: the client's own upstream connection in monitor mode (counted against
//! `upstream.max_pinned`), its lines relayed to the client by the writer until the client
//! leaves. For a tenant with a key prefix, only lines that name a key in its namespace are shown,
//! with the prefix taken off; a tenant needs `monitor` (or @admin) among its allowed commands.
//!
//! The upstream's lines describe what every client of the upstream runs (through respite they all
//! come from respite's own address): this module must never show a prefixed tenant a line that
//! names none of its keys.
use crate::command::CommandSpec;
use crate::metrics::{self, ErrorKind};
use crate::protocol::ReplyScanner;
use crate::server::session::{Pending, Reader};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Lines relayed but not yet written: past this the monitoring client is too slow and is cut off
/// (as Redis cuts a monitor past its output buffer limit).
const BACKLOG: usize = 4096;

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
        // Everything sent before runs before monitoring starts.
        self.send_group().await;
        self.barrier().await;
        let conn = match upstream.pinned().monitor().await {
            Ok(c) => c,
            Err(e) => {
                metrics::error(ErrorKind::Refused);
                return self.reply_error(&e.to_string()).await;
            }
        };
        let prefix = self
            .client
            .tenant
            .as_ref()
            .filter(|t| t.has_prefix())
            .map(|t| t.prefix.clone());
        let gone = self.out.pin.gone_token();
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(async move {
            // Moved whole: the block must hold the write half too, whose drop would shut the
            // connection down.
            let mut conn = conn;
            let mut buf = BytesMut::new();
            let relay = async {
                loop {
                    let mut scanner = ReplyScanner::new();
                    while let Ok(Some(found)) = scanner.scan(&buf) {
                        let line = buf.split_to(found.len).freeze();
                        scanner = ReplyScanner::new();
                        let shown = match &prefix {
                            None => Some(line),
                            Some(p) => for_tenant(&line, p),
                        };
                        if let Some(line) = shown
                            && tx.try_send(line).is_err()
                        {
                            tracing::debug!("monitor: client too slow");
                            return;
                        }
                    }
                    match conn.read.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => {
                            tracing::debug!("monitor: upstream closed");
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            };
            tokio::select! {
                _ = gone.cancelled() => tracing::debug!("monitor: client gone"),
                _ = relay => {}
            }
        });
        let mut ok = BytesMut::new();
        crate::protocol::encode::simple(&mut ok, "OK");
        self.push(Pending::Ready(ok.freeze())).await;
        self.push(Pending::Stream(rx)).await;
    }
}

/// A monitor line as a prefixed tenant sees it: `None` unless one of its arguments (after the
/// command name) is a key in the namespace; those arguments lose the prefix.
/// The line reads `+<time> [<db> <addr>] "CMD" "arg" …`, each argument quoted with `\"` and
/// `\\` escaped.
fn for_tenant(line: &[u8], prefix: &[u8]) -> Option<Bytes> {
    let start = line.windows(2).position(|w| w == b"] ")? + 2;
    let mut out = line[..start].to_vec();
    let mut i = start;
    let mut arg = 0;
    let mut mine = false;
    while i < line.len() {
        if line[i] == b'"' {
            out.push(b'"');
            i += 1;
            if arg > 0 && line[i..].starts_with(prefix) {
                mine = true;
                i += prefix.len();
            }
            arg += 1;
            // Copy the rest of the quoted argument, escapes included.
            while i < line.len() && line[i] != b'"' {
                if line[i] == b'\\' && i + 1 < line.len() {
                    out.push(line[i]);
                    i += 1;
                }
                out.push(line[i]);
                i += 1;
            }
            if i < line.len() {
                out.push(b'"');
                i += 1;
            }
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    mine.then(|| Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_lines() {
        let line = b"+1700000000.1 [0 127.0.0.1:5] \"SET\" \"app:k\" \"v \\\"q\\\"\"\r\n";
        assert_eq!(
            &for_tenant(line, b"app:").unwrap()[..],
            &b"+1700000000.1 [0 127.0.0.1:5] \"SET\" \"k\" \"v \\\"q\\\"\"\r\n"[..]
        );
        assert!(for_tenant(b"+1.0 [0 a:1] \"SET\" \"b:k\" \"app:v\"\r\n", b"app:").is_some());
        assert!(for_tenant(b"+1.0 [0 a:1] \"SET\" \"b:k\" \"v\"\r\n", b"app:").is_none());
        assert!(for_tenant(b"+1.0 [0 a:1] \"PING\"\r\n", b"app:").is_none());
    }
}
