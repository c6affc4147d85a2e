//! Pub/Sub within the process: what respite answers itself when there is no upstream to ask
//! (standalone mode) or it is down (local-only mode). PUBLISH and SPUBLISH go straight to the
//! local subscribers; PUBSUB CHANNELS/NUMSUB/NUMPAT and their shard forms are read from the
//! registry. Replies are Redis 7.0's, counted as Redis counts them.
//!
//! Names here are upstream names: a tenant's command was already rewritten by its policy (the
//! same [`crate::policy`] path as in proxy mode), and its reply is rewritten back by the caller.
//! It never talks to the upstream and never decides whether respite is local: the caller
//! ([`crate::local_only::Local`]) does.
use super::{Hub, Kind, Name, deliver};
use crate::command::CommandSpec;
use crate::policy::glob;
use crate::protocol::{Protocol, encode};
use bytes::{Bytes, BytesMut};

/// The local reply to a Pub/Sub command, or `None` if `spec` is not one (the engine answers it).
pub(crate) fn answer(
    hub: &Hub,
    spec: &CommandSpec,
    args: &[Bytes],
    proto: Protocol,
) -> Option<Bytes> {
    let _ = proto; // Redis 7.0 answers these with the same frames in both protocols.
    let mut out = BytesMut::new();
    match spec.name {
        "publish" | "spublish" if args.len() == 3 => {
            let kind = if spec.name == "publish" {
                Kind::Channel
            } else {
                Kind::Shard
            };
            let n = hub.publish(kind, &args[1], &args[2]);
            encode::integer(&mut out, n as i64);
        }
        "pubsub|channels" | "pubsub|shardchannels" => {
            if args.len() > 3 {
                return Some(syntax_error(args));
            }
            let kind = if spec.name == "pubsub|channels" {
                Kind::Channel
            } else {
                Kind::Shard
            };
            let names = hub.channels(kind, args.get(2).map(|p| &p[..]));
            encode::array_header(&mut out, names.len());
            for n in &names {
                encode::bulk(&mut out, n);
            }
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => {
            let kind = if spec.name == "pubsub|numsub" {
                Kind::Channel
            } else {
                Kind::Shard
            };
            // A flat array in both protocols, as Redis 7.0 sends it.
            encode::array_header(&mut out, (args.len() - 2) * 2);
            for a in &args[2..] {
                encode::bulk(&mut out, a);
                let (n, _) = hub.in_process(&(kind, a.clone()));
                encode::integer(&mut out, n as i64);
            }
        }
        "pubsub|numpat" => encode::integer(&mut out, hub.numpat() as i64),
        _ => return None,
    }
    Some(out.freeze())
}

/// Redis's `addReplySubcommandSyntaxError`.
fn syntax_error(args: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    let msg = format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        String::from_utf8_lossy(&args[1]),
        String::from_utf8_lossy(&args[0]).to_uppercase()
    );
    encode::error(&mut out, &msg);
    out.freeze()
}

impl Hub {
    /// Deliver a message published within respite: to the subscribers of the channel, then (for
    /// PUBLISH) to those of every matching pattern. The receivers, as Redis counts them: one per
    /// channel subscriber plus one per (subscriber, matching pattern).
    pub fn publish(&self, kind: Kind, channel: &Bytes, payload: &[u8]) -> usize {
        let reg = self.lock();
        let mut n = deliver(&reg, &(kind, channel.clone()), channel, payload);
        if kind == Kind::Channel {
            for p in &reg.patterns {
                if glob::matches(p, channel) {
                    let name: Name = (Kind::Pattern, p.clone());
                    n += deliver(&reg, &name, channel, payload);
                }
            }
        }
        n
    }

    /// Channels (or shard channels) with at least one local subscriber, matching `pattern`.
    fn channels(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let reg = self.lock();
        reg.entries
            .iter()
            .filter(|((k, n), e)| {
                *k == kind && !e.subs.is_empty() && pattern.is_none_or(|p| glob::matches(p, n))
            })
            .map(|((_, n), _)| n.clone())
            .collect()
    }

    /// Patterns with at least one local subscriber (Redis 7 counts patterns, not subscriptions).
    fn numpat(&self) -> usize {
        let reg = self.lock();
        reg.entries
            .iter()
            .filter(|((k, _), e)| *k == Kind::Pattern && !e.subs.is_empty())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Outbox, Sub};
    use super::*;
    use std::sync::Arc;

    #[test]
    fn publish_counts_channel_and_pattern_receivers() {
        let hub = Hub::standalone(1 << 20);
        let outbox = Arc::new(Outbox::new(1 << 20));
        let sub = |o: &Arc<Outbox>| Sub {
            outbox: o.clone(),
            proto: Protocol::Resp2,
            prefix: Bytes::new(),
            view: super::super::View::Own,
        };
        for name in [
            (Kind::Channel, Bytes::from_static(b"news")),
            (Kind::Pattern, Bytes::from_static(b"n*")),
            (Kind::Pattern, Bytes::from_static(b"x*")),
        ] {
            let _ = hub.hold(&name);
            let key = (1, name.1.clone());
            hub.attach(
                &[(name, super::super::View::Own)],
                &key,
                sub(&outbox),
                Bytes::new(),
            );
        }
        assert_eq!(
            hub.publish(Kind::Channel, &Bytes::from_static(b"news"), b"hi"),
            2
        );
        assert_eq!(
            hub.publish(Kind::Shard, &Bytes::from_static(b"news"), b"hi"),
            0
        );
        let mut out = BytesMut::new();
        outbox.drain_into(&mut out);
        assert_eq!(
            &out[..],
            b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        assert_eq!(hub.numpat(), 2);
        assert_eq!(
            hub.channels(Kind::Channel, Some(b"n?ws")),
            vec![Bytes::from_static(b"news")]
        );
        assert!(hub.channels(Kind::Channel, Some(b"x*")).is_empty());
        // No link: nothing is left for one to reconcile.
        assert!(hub.lock().dirty.is_empty());
    }
}
