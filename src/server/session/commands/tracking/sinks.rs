//! Where a tracked client's invalidations go: the pinned connection's pushes (in band, rewritten
//! for the client's namespace), the receiving connection of a REDIRECT and the target client it
//! names, and the flush when either connection fails. Frames are built here, as Redis sends them;
//! nothing here waits on a client (queues are bounded: [`super::invalidations`], and the
//! target's Pub/Sub outbox).
use super::invalidations::{FLUSH_ALL, Invalidations};
use crate::metrics;
use crate::protocol::resp3::{self, Push};
use crate::protocol::{Protocol, ReplyScanner, encode};
use crate::upstream::{Monitor, PushSink};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

/// An invalidation's keys as a client of `prefix` sees them: `None` if none of them is its.
pub(super) fn unprefixed(keys: Vec<Bytes>, prefix: &[u8]) -> Option<Vec<Bytes>> {
    if prefix.is_empty() {
        return Some(keys);
    }
    let mine: Vec<Bytes> = keys
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .map(|k| k.slice(prefix.len()..))
        .collect();
    (!mine.is_empty()).then_some(mine)
}

/// `invalidate` for these keys (`None`: everything), as a RESP3 push or, for a RESP2 client
/// subscribed to `__redis__:invalidate`, as a message on it.
pub(super) fn frame(proto: Protocol, keys: Option<&[Bytes]>) -> Bytes {
    let mut out = BytesMut::new();
    match proto {
        Protocol::Resp3 => out.extend_from_slice(b">2\r\n$10\r\ninvalidate\r\n"),
        Protocol::Resp2 => {
            out.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n")
        }
    }
    match keys {
        Some(keys) => {
            encode::array_header(&mut out, keys.len());
            for k in keys {
                encode::bulk(&mut out, k);
            }
        }
        None => encode::null(&mut out, proto),
    }
    out.freeze()
}

/// The pinned connection's side: its pushes (in band) and its failure.
pub(super) struct ConnSink {
    /// The client's own queue; `None` with REDIRECT (the upstream sends nothing in band then).
    pub inband: Option<Arc<Invalidations>>,
    pub target: Option<Arc<Target>>,
    pub prefix: Bytes,
    pub lost: Arc<AtomicBool>,
}

impl PushSink for ConnSink {
    fn delivered(&self) {
        if let Some(i) = &self.inband {
            i.delivered();
        }
    }

    fn push(&self, frame_bytes: Bytes, mid_job: bool) {
        let Some(i) = &self.inband else { return };
        let keys = match resp3::push(&frame_bytes) {
            Push::Keys(keys) => keys,
            Push::All => {
                metrics::tracking_invalidations(1);
                return i.push(Bytes::from_static(FLUSH_ALL), mid_job);
            }
            Push::Other => return,
        };
        if self.prefix.is_empty() {
            metrics::tracking_invalidations(1);
            return i.push(frame_bytes, mid_job);
        }
        if let Some(keys) = unprefixed(keys, &self.prefix) {
            metrics::tracking_invalidations(1);
            i.push(frame(Protocol::Resp3, Some(&keys)), mid_job);
        }
    }

    fn lost(&self) {
        if self.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        metrics::tracking_lost();
        if let Some(i) = &self.inband {
            i.push(Bytes::from_static(FLUSH_ALL), false);
        }
        if let Some(t) = &self.target {
            t.deliver(None);
        }
    }
}

/// Where a REDIRECT client's invalidations go.
pub(super) struct Target {
    pub shared: Arc<crate::server::Shared>,
    pub id: u64,
    /// The source's prefixed tenant: the target must be of the same one.
    pub tenant: Option<String>,
    pub prefix: Bytes,
    /// The source, told of a broken redirect when it speaks RESP3.
    pub source: Option<Arc<Invalidations>>,
    pub broken: Arc<AtomicBool>,
}

impl Target {
    pub(super) fn deliver(&self, keys: Option<&[Bytes]>) {
        let entry = self
            .shared
            .clients
            .find(self.id)
            .filter(|e| e.prefixed_tenant() == self.tenant);
        let Some(entry) = entry else {
            self.broken.store(true, Ordering::Release);
            if let Some(source) = &self.source {
                let mut out = BytesMut::from(&b">2\r\n$21\r\ntracking-redir-broken\r\n"[..]);
                encode::integer(&mut out, self.id as i64);
                source.push(out.freeze(), false);
            }
            return;
        };
        let sent = if entry.resp() >= 3 {
            entry
                .outbox
                .as_ref()
                .map(|o| o.push(frame(Protocol::Resp3, keys)))
        } else {
            self.shared
                .pubsub
                .as_ref()
                .and_then(|h| h.tracking_subscriber(self.id))
                .map(|(o, _)| o.push(frame(Protocol::Resp2, keys)))
        };
        if sent.is_some() {
            metrics::tracking_invalidations(1);
        }
    }
}

/// Read the receiving connection until it fails or tracking ends, handing each invalidation to
/// the target; a failure is a loss of tracking (the target is told to flush).
pub(super) async fn receive(mut conn: Monitor, sink: Arc<ConnSink>, stop: CancellationToken) {
    let target = sink.target.clone().expect("a redirect sink");
    let mut buf = BytesMut::new();
    let mut scanner = ReplyScanner::new();
    loop {
        let read = tokio::select! {
            r = conn.read.read_buf(&mut buf) => r,
            _ = stop.cancelled() => return,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return sink.lost();
        }
        loop {
            let found = match scanner.scan(&buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return sink.lost(),
            };
            let frame = buf.split_to(found.len).freeze();
            match resp3::push(&frame) {
                Push::Keys(keys) => {
                    if let Some(keys) = unprefixed(keys, &target.prefix) {
                        target.deliver(Some(&keys));
                    }
                }
                Push::All => target.deliver(None),
                Push::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_name_a_tenants_keys_unprefixed() {
        let keys = vec![Bytes::from("t1:a"), Bytes::from("t2:a")];
        assert_eq!(unprefixed(keys, b"t1:"), Some(vec![Bytes::from("a")]));
        assert_eq!(unprefixed(vec![Bytes::from("t2:a")], b"t1:"), None);
    }

    #[test]
    fn frames_as_redis_sends_them() {
        let k = [Bytes::from("a")];
        assert_eq!(
            &frame(Protocol::Resp3, Some(&k))[..],
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n"
        );
        assert_eq!(&frame(Protocol::Resp3, None)[..], FLUSH_ALL);
        assert_eq!(
            &frame(Protocol::Resp2, None)[..],
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
        );
    }
}
