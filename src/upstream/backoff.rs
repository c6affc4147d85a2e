//! Reconnecting after a failure: exponential backoff with jitter, how often a failing connection
//! is logged, and failing fast while the next attempt waits.
//!
//! Shared by the pools' connections and the near cache's tracking connections, which reconnect
//! by the same rules (`upstream.backoff_base_ms`, `upstream.backoff_max_ms`). It only waits and
//! counts: what a connection does with its jobs and its health is its own business.
use crate::config::UpstreamConfig;
use rand::Rng;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// Exponential backoff with full jitter over the upper half: attempt n waits between d/2 and d,
/// d = min(max, base·2ⁿ⁻¹), so a fleet of proxies does not reconnect in lockstep.
pub fn backoff(base: Duration, max: Duration, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    half + Duration::from_nanos(rng.random_range(0..=half.as_nanos() as u64))
}

/// One connection's failures in a row, and the delays they earn.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

/// The wait after a failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub delay: Duration,
    /// Failures in a row, this one included.
    pub failures: u32,
}

impl Backoff {
    pub fn new(config: &UpstreamConfig) -> Backoff {
        Backoff {
            base: config.backoff_base,
            max: config.backoff_max,
            failures: 0,
        }
    }

    /// A connection is up. True if it had been failing (a "restored" line is due).
    pub fn succeeded(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }

    /// An attempt or a connection failed: how long until the next attempt.
    pub fn failed(&mut self) -> Retry {
        self.failures = self.failures.saturating_add(1);
        Retry {
            delay: backoff(self.base, self.max, self.failures, &mut rand::rng()),
            failures: self.failures,
        }
    }
}

/// How a [`fail_fast`] wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The delay passed: attempt again.
    Elapsed,
    /// `wake` completed first.
    Woken,
    /// Every sender is gone: nothing will ever be queued again.
    Closed,
}

/// Wait out `delay` before the next attempt, answering each job queued meanwhile with `fail`:
/// nothing waits behind a dead connection. Ends early when `wake` completes.
pub(crate) async fn fail_fast<J>(
    delay: Duration,
    rx: &mut mpsc::Receiver<J>,
    mut fail: impl FnMut(J),
    wake: impl Future<Output = ()>,
) -> Waited {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep, wake);
    loop {
        tokio::select! {
            _ = &mut sleep => return Waited::Elapsed,
            _ = &mut wake => return Waited::Woken,
            job = rx.recv() => match job {
                Some(job) => fail(job),
                None => return Waited::Closed,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut rng = rand::rng();
        let base = Duration::from_millis(50);
        let max = Duration::from_millis(2000);
        for attempt in 1..40 {
            let d = backoff(base, max, attempt, &mut rng);
            let ceiling = (base * 2u32.pow((attempt - 1).min(20))).min(max);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "attempt {attempt}: {d:?} vs {ceiling:?}"
            );
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(base, max, 10, &mut rng)).collect();
        assert!(spread.len() > 10, "jitter should spread retries");
    }

    #[test]
    fn failures_count_up_and_reset() {
        let mut b = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
            failures: 0,
        };
        let counted: Vec<u32> = (0..5).map(|_| b.failed().failures).collect();
        assert_eq!(counted, [1, 2, 3, 4, 5]);
        assert!(b.succeeded());
        assert!(!b.succeeded());
        assert_eq!(b.failed().failures, 1);
    }

    #[tokio::test]
    async fn fail_fast_answers_jobs_until_the_delay_or_a_wake_up() {
        let (tx, mut rx) = mpsc::channel(4);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        let mut failed = Vec::new();
        let waited = fail_fast(
            Duration::from_millis(10),
            &mut rx,
            |j| failed.push(j),
            std::future::pending(),
        )
        .await;
        assert_eq!((waited, &failed[..]), (Waited::Elapsed, &[1, 2][..]));
        let waited = fail_fast(Duration::from_secs(60), &mut rx, |_| {}, async {}).await;
        assert_eq!(waited, Waited::Woken);
        drop(tx);
        let waited = fail_fast(
            Duration::from_secs(60),
            &mut rx,
            |_| {},
            std::future::pending(),
        )
        .await;
        assert_eq!(waited, Waited::Closed);
    }
}
