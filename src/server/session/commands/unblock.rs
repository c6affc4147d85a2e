//! CLIENT UNBLOCK and CLIENT NO-TOUCH: the two CLIENT subcommands that reach a connection of a
//! client's own on the upstream.
//!
//! CLIENT UNBLOCK takes respite's client id; a client blocked in BLPOP (or any blocking
//! command) is blocked on its pinned connection, so the unblock goes to the upstream as `CLIENT
//! UNBLOCK <that connection's id>` (see [`crate::upstream::blockable`], which makes sure it can
//! land on no other client's lease), and the replies are the upstream's: `:1` or `:0`, and the
//! blocked client's timeout reply or `-UNBLOCKED client unblocked via CLIENT UNBLOCK`. It is
//! sent on the caller's own pinned connection if it has one (so an upstream user's ACLs
//! apply), else on a connection of its own, not behind anyone's command. A client of a tenant
//! with a key prefix reaches only its tenant's clients (`:0` for others, as for an id that is
//! not blocked).
//!
//! CLIENT NO-TOUCH ON goes to the upstream on a pinned connection the client then keeps (until
//! OFF or RESET): on a shared connection it would apply to every client multiplexed on it. An
//! upstream without it (Redis before 7.2) refuses it with its own error, and the connection
//! goes back.
use crate::command::CommandSpec;
use crate::protocol::{Request, encode};
use crate::server::session::{Keep, Pending, Reader, simple};
use crate::upstream::blockable;
use bytes::{Bytes, BytesMut};

impl Reader<'_> {
    /// `CLIENT UNBLOCK <id> [TIMEOUT|ERROR]` (arguments after the subcommand).
    pub(in crate::server::session) async fn client_unblock(
        &mut self,
        args: &[Bytes],
        prefixed: bool,
    ) {
        // Checked in Redis's order: the reason, then the id.
        let reason = match args {
            [_] => None,
            [_, r] if r.eq_ignore_ascii_case(b"timeout") || r.eq_ignore_ascii_case(b"error") => {
                Some(r.clone())
            }
            [_, _] => {
                return self
                    .reply_error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
                    .await;
            }
            _ => return self.reply_error("ERR syntax error").await,
        };
        let Some(id) = std::str::from_utf8(&args[0])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return self
                .reply_error("ERR value is not an integer or out of range")
                .await;
        };
        let target = self
            .visible(prefixed)
            .into_iter()
            .find(|e| id >= 0 && e.id == id as u64)
            .filter(|e| e.id != self.client.id)
            .and_then(|e| super::clients::lock(&e.blockable).clone());
        let entered = match (target, &self.shared.upstream) {
            (Some(b), Some(_)) => b.enter().await,
            _ => None,
        };
        let Some(entered) = entered else {
            // Not one of this client's clients, not blocked upstream, or its lease has ended.
            let mut out = BytesMut::new();
            encode::integer(&mut out, 0);
            return self.reply(out).await;
        };
        let command = blockable::command(&entered, reason.as_deref());
        let budget = self.out.budget().cloned();
        let rx = if self.out.pin.held().is_some() {
            self.send_group().await;
            self.upstream_send(command, 1, budget).await
        } else {
            let upstream = self.shared.upstream.as_ref().expect("checked above");
            upstream.out_of_band(self.client.proto, command, budget)
        };
        // The lease stays until the upstream has answered (see `upstream::blockable`).
        let (tx, answered) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let reply = rx.await;
            drop(entered);
            if let Ok(reply) = reply {
                let _ = tx.send(reply);
            }
        });
        self.push(Pending::Upstream {
            rx: answered,
            count: 1,
            keep: Keep::All,
        })
        .await
    }

    /// `CLIENT NO-TOUCH ON|OFF`: see the module.
    pub(in crate::server::session) async fn no_touch(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) {
        let on = req.args.len() == 3 && req.args[2].eq_ignore_ascii_case(b"on");
        if !on {
            // OFF (or anything the upstream will refuse) changes nothing on a shared
            // connection, which is never NO-TOUCH: the upstream answers it wherever it goes.
            let off = req.args.len() == 3 && req.args[2].eq_ignore_ascii_case(b"off");
            self.forward_any(spec, req).await;
            if off && self.out.pin.needs.no_touch {
                self.out.pin.needs.no_touch = false;
                self.unpin_if_done().await;
            }
            return;
        }
        if self.shared.upstream.is_none() {
            return self.reply(simple("OK")).await;
        }
        if !self.pin().await {
            return;
        }
        let mut cmd = BytesMut::new();
        crate::server::session::forward::append_request(&mut cmd, req);
        let rx = self.upstream_send(cmd.freeze(), 1, None).await;
        let answered = self.out.park(rx).await;
        self.took_reply();
        let reply = match answered {
            Some(Ok(Ok(bytes))) => bytes,
            _ => crate::server::session::error_bytes(
                "ERR upstream connection closed before replying",
            ),
        };
        if &reply[..] == b"+OK\r\n" {
            self.out.pin.needs.no_touch = true;
        }
        self.push(Pending::Ready(reply)).await;
        self.unpin_if_done().await
    }
}
