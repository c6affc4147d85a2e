//! Connection commands respite answers itself, inside a transaction: CLIENT SETNAME, GETNAME,
//! ID, INFO, SETINFO and NO-EVICT are queued as Redis queues them (`+QUEUED`) and answered in
//! their place in EXEC's array, in order with the rest, their effects applied only if EXEC ran.
//!
//! Each one holds its place in the upstream's transaction with a `PING` (so the upstream's
//! array has one element per queued command, whoever answers it); at EXEC the session waits
//! for the upstream's reply, and if it is an array, replaces those elements with its own
//! answers, computed then, in order (a GETNAME after a SETNAME in the same transaction sees the
//! new name). A null (a broken WATCH) or an error (EXECABORT) is passed on as it came, and
//! nothing is applied.
//!
//! A prefixed tenant's commands whose replies name keys (BLPOP, XREAD, …) are not answered here:
//! the upstream runs them in the transaction, and their elements of the array are rewritten out
//! of the namespace in the same pass.
//!
//! This file never sends anything but the transaction it is given.
use crate::command::CommandSpec;
use crate::protocol::{ReplyScanner, encode, value};
use crate::server::session::writer::reply_bytes;
use crate::server::session::{Keep, Pending, Reader, error_bytes};
use bytes::{Bytes, BytesMut};

/// Whether `name` is answered by respite in EXEC's array (see the module).
pub(in crate::server::session) fn answered_here(name: &str) -> bool {
    matches!(
        name,
        "client|setname"
            | "client|getname"
            | "client|id"
            | "client|info"
            | "client|setinfo"
            | "client|no-evict"
    )
}

/// Also answered here for a prefixed tenant: its INFO and CONFIG GET, which are respite's
/// (`builtin::tenant_answer_in_exec`), never the upstream's.
pub(in crate::server::session) fn answered_here_for(name: &str, prefixed: bool) -> bool {
    answered_here(name) || (prefixed && matches!(name, "info" | "config|get"))
}

/// What holds such a command's place in the upstream's transaction.
pub(in crate::server::session) const PLACEHOLDER: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// A command answered here, and where its answer goes in EXEC's array; or (`rewrite`) a
/// prefixed tenant's command the upstream runs whose element names keys, rewritten out of the
/// tenant's namespace as its reply outside MULTI would be.
pub(crate) struct Spliced {
    pub at: usize,
    pub spec: &'static CommandSpec,
    pub args: Vec<Bytes>,
    pub rewrite: Option<crate::policy::ReplyRewrite>,
}

impl Reader<'_> {
    /// Send a transaction's job (`count` commands, EXEC's reply picked by `keep`) and queue
    /// EXEC's reply with respite's own answers spliced in.
    pub(in crate::server::session) async fn exec_spliced(
        &mut self,
        job: Bytes,
        count: usize,
        slow: bool,
        keep: Keep,
        spliced: Vec<Spliced>,
    ) {
        let rx = self.out.send(&self.client, job, count, None, slow).await;
        let answered = self.out.park(rx).await;
        if self.out.pin.held().is_some() {
            self.took_reply();
        }
        let reply = match answered {
            Some(Ok(r)) => reply_bytes(Ok(r), count, &keep),
            _ => error_bytes("ERR upstream connection closed before replying"),
        };
        let reply = self.splice(reply, &spliced);
        self.push(Pending::Ready(reply)).await;
        self.publish();
    }

    /// EXEC's array with the elements at `spliced`'s places replaced by respite's answers.
    fn splice(&mut self, reply: Bytes, spliced: &[Spliced]) -> Bytes {
        let Some((n, mut at)) = value::array_header(&reply) else {
            return reply;
        };
        let mut out = BytesMut::from(&reply[..at]);
        let mut scanner = ReplyScanner::new();
        let mut next = spliced.iter().peekable();
        for i in 0..n {
            let len = match scanner.scan(&reply[at..]) {
                Ok(Some(s)) => s.len,
                _ => return reply,
            };
            match next.peek() {
                Some(l) if l.at == i => {
                    let l = next.next().expect("peeked");
                    match l.rewrite {
                        Some(rewrite) => {
                            let prefix = self
                                .client
                                .tenant
                                .as_ref()
                                .map(|t| t.prefix.clone())
                                .unwrap_or_default();
                            let element = reply.slice(at..at + len);
                            let proto = self.client.proto;
                            out.extend_from_slice(
                                &crate::policy::rewrite_reply(rewrite, &prefix, &element, proto)
                                    .unwrap_or_else(|e| error_bytes(&format!("ERR {e}"))),
                            );
                        }
                        None => out.extend_from_slice(&self.answer_in_exec(l.spec, &l.args)),
                    }
                }
                _ => out.extend_from_slice(&reply[at..at + len]),
            }
            at += len;
        }
        out.extend_from_slice(&reply[at..]);
        out.freeze()
    }

    /// One command's answer at EXEC, its effect applied (Redis's replies and errors).
    pub(in crate::server::session) fn answer_in_exec(
        &mut self,
        spec: &'static CommandSpec,
        args: &[Bytes],
    ) -> Bytes {
        let prefixed = self.client.tenant.as_ref().is_some_and(|t| t.has_prefix());
        if prefixed && matches!(spec.name, "info" | "config|get") {
            return super::builtin::tenant_answer_in_exec(self, spec.name, args).freeze();
        }
        let mut out = BytesMut::new();
        if !self.answer_client(spec.name, args, &mut out) {
            // NO-EVICT: as outside a transaction, noted (see `clients`).
            match args.get(2) {
                Some(a)
                    if args.len() == 3
                        && (a.eq_ignore_ascii_case(b"on") || a.eq_ignore_ascii_case(b"off")) =>
                {
                    encode::simple(&mut out, "OK")
                }
                _ => encode::error(&mut out, "ERR syntax error"),
            }
        }
        out.freeze()
    }
}
