//! Per-caller rate limits: a token bucket per caller, in Redis when there is one (every
//! instance spends from one budget), else — or while Redis fails — in this process.
//!
//! Redis is asked once per request, by one Lua script that refills and takes atomically on
//! Redis's own clock (instances' clocks never meet). Each call has [`REDIS_TIMEOUT`]; a failure
//! or time-out answers from the local bucket, as go-zero's `TokenLimiter` does, and Redis is
//! left alone for [`REDIS_PAUSE`] before it is tried again, so a dead Redis costs one time-out
//! per second, not one per request. While Redis is down each instance grants the whole budget
//! by itself: a lenient limit for the outage rather than no service.

use crate::bucket::{Take, TokenBucket};
use crate::{CallerId, RateLimit};
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a request waits for Redis before its local bucket answers.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// How long Redis is skipped after it failed.
pub const REDIS_PAUSE: Duration = Duration::from_secs(1);
/// Callers whose local bucket is kept; the least recently seen go first.
const LOCAL_BUCKETS: u64 = 100_000;
/// A local bucket unused this long is dropped: by then it has refilled for any sane setting,
/// so forgetting it changes no answer (a rate under one per 10 minutes excepted).
const LOCAL_IDLE: Duration = Duration::from_secs(600);

/// The bucket in a Redis hash (`tokens`, `ts` in ms), refilled by the time since `ts` on
/// Redis's clock, expiring once it would be full again (plus a second). Returns
/// `{allowed, retry_after_ms}`. Keep the arithmetic alike to `bucket::TokenBucket::take`.
pub const SCRIPT: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.max(1, math.ceil((1 - tokens) * 1000 / rate))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
";

/// The prefix of every bucket's key; the rest is the caller's hash, never the key itself.
pub const KEY_PREFIX: &str = "ordo:ratelimit:";

/// Whether a caller may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after: Duration },
}

/// See the module documentation.
pub struct RateLimiter {
    /// `per_second << 32 | burst`; 0: no limit. One word, so a reload swaps both at once.
    limit: AtomicU64,
    local: moka::sync::Cache<CallerId, Arc<Mutex<TokenBucket>>>,
    redis: Option<SharedBucket>,
    origin: Instant,
}

struct SharedBucket {
    connection: ConnectionManager,
    script: redis::Script,
    /// Milliseconds since `origin` before which Redis is not asked (after a failure).
    paused_until_ms: AtomicU64,
    /// Whether the last call failed: a change is logged once, not per request.
    down: AtomicBool,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit())
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(limit: Option<RateLimit>, redis: Option<ConnectionManager>) -> RateLimiter {
        let limiter = RateLimiter {
            limit: AtomicU64::new(0),
            local: moka::sync::Cache::builder()
                .max_capacity(LOCAL_BUCKETS)
                .time_to_idle(LOCAL_IDLE)
                .build(),
            redis: redis.map(|connection| SharedBucket {
                connection,
                script: redis::Script::new(SCRIPT),
                paused_until_ms: AtomicU64::new(0),
                down: AtomicBool::new(false),
            }),
            origin: Instant::now(),
        };
        limiter.set_limit(limit);
        limiter
    }

    pub fn set_limit(&self, limit: Option<RateLimit>) {
        let packed = limit.map_or(0, |l| {
            u64::from(l.per_second.max(1)) << 32 | u64::from(l.burst.max(1))
        });
        self.limit.store(packed, Ordering::Relaxed);
    }

    pub fn limit(&self) -> Option<RateLimit> {
        match self.limit.load(Ordering::Relaxed) {
            0 => None,
            packed => Some(RateLimit {
                per_second: (packed >> 32) as u32,
                burst: packed as u32,
            }),
        }
    }

    /// Takes a token of `caller`'s bucket under `limit`.
    pub async fn check(&self, caller: CallerId, limit: RateLimit) -> Verdict {
        if let Some(shared) = &self.redis
            && let Some(verdict) = self.check_shared(shared, caller, limit).await
        {
            return verdict;
        }
        self.check_local(caller, limit)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn check_local(&self, caller: CallerId, limit: RateLimit) -> Verdict {
        let now_ms = self.now_ms();
        let bucket = self.local.get_with(caller, || {
            Arc::new(Mutex::new(TokenBucket::full(limit.burst, now_ms)))
        });
        let Ok(mut bucket) = bucket.lock() else {
            // A poisoned bucket means a panic mid-update: let the caller in, not a 5xx.
            return Verdict::Allowed;
        };
        match bucket.take(limit.per_second, limit.burst, now_ms) {
            Take::Allowed => Verdict::Allowed,
            Take::Denied { retry_after_ms } => Verdict::Limited {
                retry_after: Duration::from_millis(retry_after_ms),
            },
        }
    }

    /// The shared bucket's answer, or `None` when Redis is paused, failed or was too slow.
    async fn check_shared(
        &self,
        shared: &SharedBucket,
        caller: CallerId,
        limit: RateLimit,
    ) -> Option<Verdict> {
        if self.now_ms() < shared.paused_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let mut connection = shared.connection.clone();
        let mut invocation = shared.script.prepare_invoke();
        invocation
            .key(caller.redis_key())
            .arg(limit.per_second)
            .arg(limit.burst);
        let answer = tokio::time::timeout(
            REDIS_TIMEOUT,
            invocation.invoke_async::<(i64, i64)>(&mut connection),
        )
        .await;
        let failure = match answer {
            Ok(Ok((allowed, retry_after_ms))) => {
                if shared.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                return Some(match allowed {
                    1 => Verdict::Allowed,
                    _ => Verdict::Limited {
                        retry_after: Duration::from_millis(retry_after_ms.max(1) as u64),
                    },
                });
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} ms", REDIS_TIMEOUT.as_millis()),
        };
        let resume = self.now_ms() + REDIS_PAUSE.as_millis() as u64;
        shared.paused_until_ms.store(resume, Ordering::Relaxed);
        if !shared.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %failure,
                "Redis failed: rate limits are counted by this instance alone until it answers"
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Caller;

    const REDIS_URL: &str = "redis://127.0.0.1:6379";

    /// A connection to the test Redis, or `None` (after a loud notice) outside CI when it is
    /// unreachable. In CI (`CI` set) an unreachable Redis fails the test: a broken set-up.
    async fn redis() -> Option<ConnectionManager> {
        let url = std::env::var("ORDO_TEST_REDIS_URL").unwrap_or_else(|_| REDIS_URL.to_owned());
        let connect = async {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            ConnectionManager::new(client)
                .await
                .map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(result) => result,
            Err(_) => Err("no connection within 3 s".to_owned()),
        };
        match result {
            Ok(connection) => Some(connection),
            Err(reason) if std::env::var_os("CI").is_some() => {
                panic!("Redis at {url} is unreachable in CI: {reason}")
            }
            Err(reason) => {
                eprintln!("\n*** SKIPPED: Redis unreachable at {url}: {reason} ***\n");
                None
            }
        }
    }

    /// A caller no other test (or earlier run) has used.
    fn fresh_caller() -> CallerId {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let key = format!("test-{nanos}-{}", std::process::id());
        CallerId::of(Caller::ApiKey(key.as_bytes()))
    }

    async fn allowed(limiter: &RateLimiter, caller: CallerId, limit: RateLimit, n: usize) -> usize {
        let mut allowed = 0;
        for _ in 0..n {
            if limiter.check(caller, limit).await == Verdict::Allowed {
                allowed += 1;
            }
        }
        allowed
    }

    const SLOW: RateLimit = RateLimit {
        per_second: 1,
        burst: 5,
    };

    #[tokio::test]
    async fn two_limiters_on_one_redis_share_one_budget() {
        let Some(connection) = redis().await else {
            return;
        };
        let one = RateLimiter::new(Some(SLOW), Some(connection.clone()));
        let two = RateLimiter::new(Some(SLOW), Some(connection));
        let caller = fresh_caller();
        let spent = allowed(&one, caller, SLOW, 3).await + allowed(&two, caller, SLOW, 10).await;
        assert_eq!(spent, 5, "one burst between both");
        // Each limiter alone would have granted its own burst of 5 locally.
        assert!(!one.redis.as_ref().unwrap().down.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn the_redis_script_says_when_the_next_token_comes_and_sets_an_expiry() {
        let Some(connection) = redis().await else {
            return;
        };
        let limit = RateLimit {
            per_second: 2,
            burst: 1,
        };
        let limiter = RateLimiter::new(Some(limit), Some(connection.clone()));
        let caller = fresh_caller();
        assert_eq!(limiter.check(caller, limit).await, Verdict::Allowed);
        let Verdict::Limited { retry_after } = limiter.check(caller, limit).await else {
            panic!("a second request within the same millisecond window was allowed");
        };
        assert!(
            retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500),
            "{retry_after:?}"
        );
        let mut connection = connection;
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(caller.redis_key())
            .query_async(&mut connection)
            .await
            .unwrap();
        // Full again after 500 ms, kept a second more.
        assert!((1..=1_500).contains(&ttl_ms), "PTTL {ttl_ms}");
        // The key holds a hash, never the caller's key.
        assert!(caller.redis_key().starts_with(KEY_PREFIX));
        assert!(!caller.redis_key().contains("test-"));
    }

    #[tokio::test]
    async fn the_redis_bucket_refills_at_the_configured_rate() {
        let Some(connection) = redis().await else {
            return;
        };
        let limit = RateLimit {
            per_second: 20,
            burst: 1,
        };
        let limiter = RateLimiter::new(Some(limit), Some(connection));
        let caller = fresh_caller();
        assert_eq!(allowed(&limiter, caller, limit, 5).await, 1);
        // 20 per second: a token every 50 ms, one kept at most.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(allowed(&limiter, caller, limit, 5).await, 1);
        tokio::time::sleep(Duration::from_millis(160)).await;
        assert_eq!(allowed(&limiter, caller, limit, 5).await, 1);
    }

    #[tokio::test]
    async fn a_dead_redis_falls_back_to_the_local_bucket_and_is_paused() {
        // Nothing listens on port 1: every connection attempt is refused at once.
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client, config).unwrap();
        let limiter = RateLimiter::new(Some(SLOW), Some(connection));
        let caller = fresh_caller();
        let started = Instant::now();
        assert_eq!(allowed(&limiter, caller, SLOW, 20).await, 5);
        // One failed attempt at most, then paused: no time-out per request.
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        let shared = limiter.redis.as_ref().unwrap();
        assert!(shared.down.load(Ordering::Relaxed));
        assert!(shared.paused_until_ms.load(Ordering::Relaxed) > limiter.now_ms());
    }

    #[test]
    fn local_buckets_are_per_caller() {
        let limiter = RateLimiter::new(Some(SLOW), None);
        let (a, b) = (
            CallerId::of(Caller::ApiKey(b"a")),
            CallerId::of(Caller::ApiKey(b"b")),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(allowed(&limiter, a, SLOW, 10).await, 5);
            assert_eq!(allowed(&limiter, b, SLOW, 10).await, 5);
            let Verdict::Limited { retry_after } = limiter.check(a, SLOW).await else {
                panic!("a spent bucket allowed a request");
            };
            assert!(retry_after <= Duration::from_secs(1));
        });
    }

    #[test]
    fn a_reload_replaces_rate_and_burst_together() {
        let limiter = RateLimiter::new(None, None);
        assert_eq!(limiter.limit(), None);
        limiter.set_limit(Some(SLOW));
        assert_eq!(limiter.limit(), Some(SLOW));
        limiter.set_limit(Some(RateLimit {
            per_second: u32::MAX,
            burst: u32::MAX,
        }));
        assert_eq!(limiter.limit().unwrap().burst, u32::MAX);
        limiter.set_limit(None);
        assert_eq!(limiter.limit(), None);
    }
}
