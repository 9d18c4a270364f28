//! wagate's one retry policy, on `backon`: exponential backoff from a base delay, doubling, with
//! jitter, capped; a delay the other side asked for (HTTP `Retry-After`) replaces the computed one,
//! and a wait longer than the cap ends the retries at once. Model calls, a reply's store steps
//! while the store is busy and a reply's sends refused for now all retry with it (each with its own
//! numbers). Pure policy: no network code.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (0 is treated as 1).
    pub max_attempts: u32,
    /// The delay before the second attempt (before jitter); it doubles per further attempt.
    pub base_delay: Duration,
    /// No delay is longer, jitter included; a `Retry-After` longer than this stops the retries.
    pub max_delay: Duration,
}

/// The model client's default: 3 attempts, 0.5 s doubling, at most 20 s.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

/// A step that the store refused only for now (pool exhausted under load): 8 attempts, 250 ms
/// doubling to at most 1.5 s (about 8 s in all), jittered so that steps failing together do not
/// come back together.
pub const STORE_BUSY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    base_delay: Duration::from_millis(250),
    max_delay: Duration::from_millis(1500),
};

impl RetryPolicy {
    /// The same delays with `max_attempts` attempts in all.
    pub fn with_max_attempts(self, max_attempts: u32) -> Self {
        Self {
            max_attempts,
            ..self
        }
    }

    /// The backoff delays between attempts: `base_delay * 2^(n-1)` before attempt `n + 1`, plus a
    /// random jitter of up to the same again (backon's), never more than `max_delay`.
    pub fn backoff(&self) -> ExponentialBuilder {
        let retries = usize::try_from(self.max_attempts.max(1) - 1).unwrap_or(usize::MAX);
        ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(retries)
            .with_jitter()
    }

    /// The wait before the next attempt: the server's `retry_after` when it gave one (`None`, stop,
    /// when that is longer than `max_delay`), else the computed `backoff` (`None` once the attempts
    /// are used up), capped at `max_delay`.
    pub fn next_delay(
        &self,
        backoff: Option<Duration>,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let backoff = backoff?;
        match retry_after {
            Some(wait) if wait > self.max_delay => {
                tracing::debug!(
                    retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "asked to wait longer than the retry policy allows; not retrying"
                );
                None
            }
            Some(wait) => Some(wait),
            None => Some(backoff.min(self.max_delay)),
        }
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` rejects, or the attempts are
    /// used up (then the last error). Before each retry `notify` sees the error and the wait;
    /// `retry_after` gives the wait an error asked for, if any.
    pub async fn run<T, E, Fut>(
        &self,
        op: impl FnMut() -> Fut,
        retryable: impl Fn(&E) -> bool,
        retry_after: impl Fn(&E) -> Option<Duration>,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let policy = *self;
        op.retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(retryable)
            .adjust(move |e, backoff| policy.next_delay(backoff, retry_after(e)))
            .notify(notify)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn delays_double_with_jitter_and_are_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(3),
        };
        for _ in 0..50 {
            let delays: Vec<_> = policy
                .backoff()
                .build()
                .map(|d| policy.next_delay(Some(d), None).unwrap())
                .collect();
            assert_eq!(delays.len(), 9, "one delay before each retry");
            let ms = |d: Duration| d.as_millis();
            assert!((500..=1000).contains(&ms(delays[0])), "{delays:?}");
            assert!((1000..=2000).contains(&ms(delays[1])), "{delays:?}");
            assert!(delays.iter().all(|d| *d <= Duration::from_secs(3)));
            assert_eq!(delays[8], Duration::from_secs(3));
        }
        let d = RetryPolicy::default();
        assert_eq!(
            (d.max_attempts, d.base_delay, d.max_delay),
            (3, Duration::from_millis(500), Duration::from_secs(20))
        );
        assert_eq!(d.with_max_attempts(0).backoff().build().count(), 0);
    }

    #[test]
    fn retry_after_replaces_the_delay_and_a_long_one_stops() {
        let policy = RetryPolicy::default();
        let backoff = Some(Duration::from_millis(700));
        assert_eq!(
            policy.next_delay(backoff, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            policy.next_delay(backoff, Some(Duration::ZERO)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            policy.next_delay(backoff, Some(Duration::from_secs(21))),
            None
        );
        assert_eq!(policy.next_delay(None, Some(Duration::from_secs(1))), None);
        assert_eq!(policy.next_delay(backoff, None), backoff);
    }

    #[tokio::test]
    async fn runs_until_success_a_permanent_error_or_the_last_attempt() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        };
        let calls = AtomicU32::new(0);
        let calls = &calls;
        // Fails with `fail(n)` on call n until `ok_at`.
        let run = |ok_at: u32, fail: fn(u32) -> Result<(), u32>| async move {
            calls.store(0, Ordering::Relaxed);
            let mut notified = 0;
            let out = policy
                .run(
                    || async move {
                        let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                        if n >= ok_at {
                            Ok(n)
                        } else {
                            fail(n).map(|()| n)
                        }
                    },
                    |e: &u32| *e != 0,
                    |_| None,
                    |_, _| notified += 1,
                )
                .await;
            (out, calls.load(Ordering::Relaxed), notified)
        };
        assert_eq!(run(2, Err).await, (Ok(2), 2, 1));
        assert_eq!(run(9, Err).await, (Err(3), 3, 2));
        assert_eq!(run(9, |_| Err(0)).await, (Err(0), 1, 0));
    }
}
