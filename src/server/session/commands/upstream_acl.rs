//! The upstream's own ACL for a client authenticated as one of the upstream's users (AUTH when
//! respite has no tenants, see [`super::stateful`]), on what respite serves without that user's
//! connection running it: MONITOR (a connection of respite's own) and the CLIENT subcommands
//! respite answers itself. (Pub/Sub checks its own, with `ACL DRYRUN`: see `crate::pubsub::acl`.)
//!
//! The check is the upstream's: on the client's own pinned connection (authenticated as its
//! user), `MULTI`, then the command and `DISCARD`. Redis and Valkey check a command's ACL,
//! channels included, when they queue it, so the command is answered `+QUEUED` or refused with
//! the server's own `-NOPERM` text, and never runs. MULTI goes alone first: were it refused, a
//! command pipelined behind it would run. A user who may not run MULTI is checked with
//! `ACL DRYRUN` on a connection of respite's own instead, read as Pub/Sub reads it.
//!
//! This file never grants anything: it only refuses what the upstream would refuse. The cost is
//! two round trips per such command, for such clients only.
use crate::command::CommandSpec;
use crate::protocol::{ReplyScanner, Request};
use crate::server::session::{Reader, error_bytes};
use bytes::{Bytes, BytesMut};

/// Commands respite serves for the client without forwarding them on its pinned connection.
/// (CLIENT TRACKING and its kin, NO-EVICT and NO-TOUCH are forwarded there while the client
/// holds one, so the upstream checks them itself; SUBSCRIBE and its family are checked where
/// they join respite's shared subscriptions, `Reader::upstream_user_may`.)
pub(in crate::server::session) fn checked(spec: &CommandSpec) -> bool {
    match spec.name {
        "monitor" => true,
        "client|tracking"
        | "client|caching"
        | "client|getredir"
        | "client|trackinginfo"
        | "client|no-evict"
        | "client|no-touch" => false,
        name => name.starts_with("client|"),
    }
}

impl Reader<'_> {
    /// The upstream's refusal of `req` for the client's upstream user, if it refuses it.
    pub(in crate::server::session) async fn upstream_refusal(
        &mut self,
        req: &Request,
    ) -> Option<Bytes> {
        let multi = self
            .exchange(Bytes::from_static(b"*1\r\n$5\r\nMULTI\r\n"), 1)
            .await;
        if multi.first() != Some(&b'+') {
            return self.dry_run(req).await;
        }
        let mut job = BytesMut::new();
        crate::server::session::forward::append_request(&mut job, req);
        job.extend_from_slice(b"*1\r\n$7\r\nDISCARD\r\n");
        let replies = self.exchange(job.freeze(), 2).await;
        let first = match ReplyScanner::new().scan(&replies) {
            Ok(Some(found)) => replies.slice(..found.len),
            _ => replies,
        };
        (first.first() == Some(&b'-')).then_some(first)
    }

    /// `ACL DRYRUN <user> <command…>` on a connection of respite's own, read as Pub/Sub reads
    /// it ([`crate::pubsub::verdict`]: the server's NOPERM text for a command it refuses). Where
    /// the upstream cannot say (respite's user may not run DRYRUN, or the server lacks it), the
    /// command is refused: the check fails closed.
    async fn dry_run(&mut self, req: &Request) -> Option<Bytes> {
        let upstream = self.shared.upstream.clone()?;
        let user = self.client.user.clone();
        let cmd = crate::pubsub::dryrun(&user, &req.args);
        let rx = upstream.out_of_band(self.client.proto, cmd, None);
        let reply = match self.out.park(rx).await {
            Some(Ok(Ok(bytes))) => bytes,
            _ => error_bytes("ERR upstream connection closed before replying"),
        };
        match crate::pubsub::verdict(&user, &reply) {
            Ok(()) => None,
            Err(crate::pubsub::Refusal::NoPerm(msg)) => Some(error_bytes(&msg)),
            Err(crate::pubsub::Refusal::Unchecked { why, .. }) => Some(error_bytes(&format!(
                "ERR respite could not check user '{user}''s permissions with the upstream (MULTI refused; ACL DRYRUN: {why})"
            ))),
        }
    }

    /// One job on the client's connection, its replies awaited here (an error when the
    /// connection fails first).
    async fn exchange(&mut self, job: Bytes, count: usize) -> Bytes {
        let rx = self.upstream_send(job, count, None).await;
        let answered = self.out.park(rx).await;
        self.took_reply();
        match answered {
            Some(Ok(Ok(bytes))) => bytes,
            _ => error_bytes("ERR upstream connection closed before replying"),
        }
    }
}
