//! The token bucket, as arithmetic on a clock the caller passes in: no I/O and no clock of its
//! own, so every decision is reproducible in a test. The Redis script (`limiter::SCRIPT`) does
//! the same arithmetic on Redis's clock; the two must stay alike.

/// A bucket's state: `tokens` left (fractional: refills are continuous) at `updated_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated_ms: u64,
}

/// What a take answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Allowed,
    /// No token: one will be there in this many milliseconds (at least 1).
    Denied {
        retry_after_ms: u64,
    },
}

impl TokenBucket {
    /// A full bucket: a caller seen for the first time may spend the whole burst at once.
    pub fn full(burst: u32, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            updated_ms: now_ms,
        }
    }

    /// Refills for the time since the last take (never beyond `burst`; a clock that went back
    /// refills nothing), then takes one token if there is one.
    pub fn take(&mut self, per_second: u32, burst: u32, now_ms: u64) -> Take {
        let per_second = f64::from(per_second.max(1));
        let burst = f64::from(burst.max(1));
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms) as f64;
        // A lowered burst (a reload) caps what was saved under the old one.
        self.tokens = (self.tokens + elapsed_ms * per_second / 1000.0).min(burst);
        self.updated_ms = self.updated_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Allowed
        } else {
            let missing = 1.0 - self.tokens;
            let retry_after_ms = (missing * 1000.0 / per_second).ceil() as u64;
            Take::Denied {
                retry_after_ms: retry_after_ms.max(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takes(bucket: &mut TokenBucket, rate: u32, burst: u32, now_ms: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| bucket.take(rate, burst, now_ms) == Take::Allowed)
            .count()
    }

    #[test]
    fn a_new_caller_spends_the_burst_then_is_denied_until_a_token_refills() {
        let mut bucket = TokenBucket::full(3, 0);
        assert_eq!(takes(&mut bucket, 2, 3, 0, 10), 3);
        // 2 per second: the next token comes 500 ms after the bucket ran dry.
        assert_eq!(
            bucket.take(2, 3, 0),
            Take::Denied {
                retry_after_ms: 500
            }
        );
        assert_eq!(
            bucket.take(2, 3, 300),
            Take::Denied {
                retry_after_ms: 200
            }
        );
        assert_eq!(bucket.take(2, 3, 500), Take::Allowed);
        assert!(matches!(bucket.take(2, 3, 500), Take::Denied { .. }));
    }

    #[test]
    fn refills_never_exceed_the_burst() {
        let mut bucket = TokenBucket::full(5, 0);
        assert_eq!(takes(&mut bucket, 5, 5, 0, 5), 5);
        // An hour idle refills 18,000 tokens' worth, capped at the burst of 5.
        assert_eq!(takes(&mut bucket, 5, 5, 3_600_000, 100), 5);
    }

    #[test]
    fn the_sustained_rate_is_the_configured_one() {
        let mut bucket = TokenBucket::full(1, 0);
        // 10 per second, asked every millisecond for 10 s: the burst, then a refill at each
        // 100 ms from 100 to 9,900.
        let allowed: usize = (0..10_000u64)
            .map(|ms| takes(&mut bucket, 10, 1, ms, 1))
            .sum();
        assert_eq!(allowed, 1 + 99);
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let mut bucket = TokenBucket::full(1, 10_000);
        assert_eq!(bucket.take(1, 1, 10_000), Take::Allowed);
        assert!(matches!(bucket.take(1, 1, 5_000), Take::Denied { .. }));
        assert!(matches!(bucket.take(1, 1, 10_500), Take::Denied { .. }));
        assert_eq!(bucket.take(1, 1, 11_000), Take::Allowed);
    }

    #[test]
    fn a_lowered_burst_caps_saved_tokens() {
        let mut bucket = TokenBucket::full(100, 0);
        assert_eq!(takes(&mut bucket, 1, 2, 0, 100), 2);
    }
}
