//! The cache every instance shares when `ORDO_REDIS_URL` is set: Redis, cache-aside, behind
//! the in-process cache of [`super::ReadCache`].
//!
//! Layout in Redis (prefix `<namespace>:cache`, the namespace `ordo` unless
//! `ORDO_REDIS_NAMESPACE` says otherwise):
//! - `epoch`: a counter; every entry carries the epoch it was written under and counts only
//!   while that is still the epoch. Bumping it empties the cache of every instance at once.
//! - `{kind}:{key}`: the entry, `<epoch>\n<JSON of Option<T>>` (`null`: cached absence).
//! - `{kind}:{key}:v`: the key's version, a random token a writer sets after each commit.
//!
//! The race of cache-aside (a slow miss writing back what it read before a concurrent write's
//! invalidation) is closed by the version: a miss reads the epoch and the version with the
//! entry, in one `MGET`, and writes back through a script that stores only if both are still
//! what it read. A writer sets a new version *then* deletes the entry, after its commit; so a
//! miss whose database read may predate that commit also read the version before it, and its
//! write-back is refused.
//!
//! Redis down: every call has a short deadline (at most [`CALL_TIMEOUT`], less when the
//! request has less left); a failure sends reads to the database and skips Redis for
//! [`COOL_OFF`], so an outage costs one timeout per second, not one per request. A write whose
//! invalidation could not reach Redis, or a dropped connection (Redis may have restarted from
//! an old snapshot), leaves entries that may be stale: this instance then reads nothing from
//! Redis until it has bumped the epoch, which it tries once per cool-off. What it cannot
//! prevent: another instance that still reaches Redis may serve such an entry until the bump
//! (at most [`PRESENT_TTL`]).

use ordo_domain::Result;
use ordo_telemetry::client_span::{ClientSpan, KeyValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest a Redis call may take before the read goes to the database.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long Redis is left alone after a failed call.
pub const COOL_OFF: Duration = Duration::from_secs(1);
/// How long a present entry lives (less up to a fifth, jitter).
pub const PRESENT_TTL: Duration = Duration::from_secs(30);
/// How long an absence is cached (penetration: a flood of unknown ids reaches the database
/// once per key and period).
pub const ABSENT_TTL: Duration = Duration::from_secs(2);
/// How long a version outlives its write: longer than any database read of a miss can take
/// (statements time out after 2 s), so an expired version cannot let a stale write-back in.
const VERSION_TTL: Duration = Duration::from_secs(60);

/// Stores an entry only if the epoch and the key's version are those its miss read.
/// KEYS: epoch, version, entry. ARGV: epoch read, version read, value, TTL in ms.
const STORE_IF_CURRENT: &str = r"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
return 1
";

/// How a lookup in Redis went, for `cache_requests_total{cache="redis"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedLookup {
    Hit,
    Absent,
    Miss,
    /// Redis failed or was skipped (down, cooling off, epoch not yet renewed): the database
    /// answered.
    Error,
}

impl SharedLookup {
    pub fn label(self) -> &'static str {
        match self {
            SharedLookup::Hit => "hit",
            SharedLookup::Absent => "absent",
            SharedLookup::Miss => "miss",
            SharedLookup::Error => "error",
        }
    }
}

/// The Redis tier.
pub struct SharedCache {
    connection: redis::aio::ConnectionManager,
    store_if_current: redis::Script,
    /// `<namespace>:cache`.
    prefix: String,
    epoch_key: String,
    /// When the process started: the origin of `skip_until_ms`.
    started: Instant,
    /// Redis is not called before this (ms since `started`).
    skip_until_ms: AtomicU64,
    /// Failures that may have left a stale entry behind (an invalidation that did not land, a
    /// dropped connection) ...
    doubts: AtomicU64,
    /// ... and how many of them the last epoch bump covered.
    doubts_cleared: AtomicU64,
    renewing: AtomicBool,
    tokens: std::hash::RandomState,
    token_counter: AtomicU64,
}

/// Why a call to Redis gave no answer.
#[derive(Debug)]
enum Failure {
    TimedOut,
    /// The connection broke or could not be made: Redis may have restarted.
    Connection(redis::RedisError),
    Other(redis::RedisError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TimedOut => write!(f, "no answer within {CALL_TIMEOUT:?}"),
            Failure::Connection(error) | Failure::Other(error) => write!(f, "{error}"),
        }
    }
}

impl SharedCache {
    /// A cache on the Redis at `url`, with a connection of its own (tests, tools). Nothing is
    /// connected yet; only a malformed URL is an error.
    pub fn new(url: &str, namespace: &str) -> Result<SharedCache> {
        let invalid = |error: redis::RedisError| {
            ordo_domain::Error::new(
                ordo_domain::ErrorKind::InvalidArgument,
                format!("ORDO_REDIS_URL: {error}"),
            )
        };
        let client = redis::Client::open(url).map_err(invalid)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            // Reconnection is driven by the calls themselves (one per cool-off).
            .set_number_of_retries(1)
            .set_max_delay(COOL_OFF);
        let connection =
            redis::aio::ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?;
        Ok(SharedCache::with_connection(connection, namespace))
    }

    /// A cache on `connection`, shared with the process's other users of Redis. An
    /// unreachable Redis does not matter here: the first calls fail, the database answers,
    /// and Redis is tried again after each cool-off.
    pub fn with_connection(
        connection: redis::aio::ConnectionManager,
        namespace: &str,
    ) -> SharedCache {
        SharedCache {
            connection,
            store_if_current: redis::Script::new(STORE_IF_CURRENT),
            prefix: format!("{namespace}:cache"),
            epoch_key: format!("{namespace}:cache:epoch"),
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            // A new process does not know what happened to Redis while no instance ran (a
            // write by an instance that then died before reaching it): it starts with a bump.
            doubts: AtomicU64::new(1),
            doubts_cleared: AtomicU64::new(0),
            renewing: AtomicBool::new(false),
            tokens: std::hash::RandomState::new(),
            token_counter: AtomicU64::new(0),
        }
    }

    /// Whether Redis answers now (start-up names an unreachable Redis in a warning).
    pub async fn ping(&self) -> std::result::Result<(), String> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(
            CALL_TIMEOUT * 5,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", CALL_TIMEOUT * 5)),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs one call within its deadline, in a CLIENT span of the caller's trace (`summary`:
    /// the command and the kind of key, static text); a failure starts a cool-off, and a
    /// broken connection raises a doubt.
    async fn call<T>(
        &self,
        summary: &'static str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> std::result::Result<T, ()> {
        let limit = ordo_telemetry::deadline::remaining()
            .map_or(CALL_TIMEOUT, |left| left.min(CALL_TIMEOUT));
        let operation = summary.split(' ').next().unwrap_or(summary);
        let mut span = ClientSpan::start(
            summary,
            vec![
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.query.summary", summary),
            ],
        );
        let failure = match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error))
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                    || error.is_timeout() =>
            {
                Failure::Connection(error)
            }
            Ok(Err(error)) => Failure::Other(error),
            Err(_) => Failure::TimedOut,
        };
        span.set_error(match failure {
            Failure::Connection(_) => "connection",
            Failure::TimedOut => "timeout",
            Failure::Other(_) => "redis_error",
        });
        if matches!(failure, Failure::Connection(_)) {
            self.doubts.fetch_add(1, Ordering::AcqRel);
        }
        let until = self.elapsed_ms() + COOL_OFF.as_millis() as u64;
        let before = self.skip_until_ms.fetch_max(until, Ordering::AcqRel);
        if before <= self.elapsed_ms() {
            // Once per cool-off, not once per request.
            tracing::warn!(error = %failure, "redis cache unavailable: reads go to the database for {COOL_OFF:?}");
        }
        Err(())
    }

    /// Whether Redis may be read now: not cooling off, and no doubt left uncleared (clears
    /// them first by bumping the epoch, one caller at a time).
    async fn readable(&self) -> bool {
        if self.elapsed_ms() < self.skip_until_ms.load(Ordering::Acquire) {
            return false;
        }
        let doubts = self.doubts.load(Ordering::Acquire);
        if doubts == self.doubts_cleared.load(Ordering::Acquire) {
            return true;
        }
        if self.renewing.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut connection = self.connection.clone();
        let bumped = self
            .call(
                "INCR epoch",
                redis::cmd("INCR")
                    .arg(&self.epoch_key)
                    .query_async::<i64>(&mut connection),
            )
            .await;
        self.renewing.store(false, Ordering::Release);
        match bumped {
            Ok(epoch) => {
                self.doubts_cleared.fetch_max(doubts, Ordering::AcqRel);
                tracing::info!(
                    epoch,
                    "redis cache in use: a new epoch retires every entry written before"
                );
                // Doubts raised while the bump was in flight are cleared by the next one.
                self.doubts.load(Ordering::Acquire) == doubts
            }
            Err(()) => false,
        }
    }

    /// The value of `key` of `kind`: from Redis when present under the current epoch, else
    /// from `load`, written back unless the key was invalidated (or the epoch bumped) since
    /// the lookup.
    pub async fn get_or_load<T, F, Fut>(
        &self,
        kind: &'static str,
        key: &str,
        load: F,
    ) -> (Result<Option<T>>, SharedLookup)
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        if !self.readable().await {
            return (load().await, SharedLookup::Error);
        }
        let entry_key = format!("{}:{kind}:{key}", self.prefix);
        let version_key = format!("{entry_key}:v");
        let mut connection = self.connection.clone();
        let looked = self
            .call(
                match kind {
                    "order" => "MGET order",
                    "product" => "MGET product",
                    _ => "MGET",
                },
                redis::cmd("MGET")
                    .arg(&self.epoch_key)
                    .arg(&version_key)
                    .arg(&entry_key)
                    .query_async::<(Option<String>, Option<String>, Option<Vec<u8>>)>(
                        &mut connection,
                    ),
            )
            .await;
        let Ok((epoch, version, entry)) = looked else {
            return (load().await, SharedLookup::Error);
        };
        let epoch = epoch.unwrap_or_default();
        if let Some(found) = entry.and_then(|bytes| decode::<T>(&bytes, &epoch)) {
            let lookup = match found {
                Some(_) => SharedLookup::Hit,
                None => SharedLookup::Absent,
            };
            return (Ok(found), lookup);
        }
        let found = match load().await {
            Ok(found) => found,
            Err(error) => return (Err(error), SharedLookup::Miss),
        };
        if let Some(value) = encode(&epoch, found.as_ref()) {
            let ttl = match found {
                Some(_) => jittered(PRESENT_TTL, key),
                None => ABSENT_TTL,
            };
            let _ = self
                .call(
                    "EVALSHA store_if_current",
                    self.store_if_current
                        .key(&self.epoch_key)
                        .key(&version_key)
                        .key(&entry_key)
                        .arg(&epoch)
                        .arg(version.unwrap_or_default())
                        .arg(value)
                        .arg(ttl.as_millis() as u64)
                        .invoke_async::<i64>(&mut connection),
                )
                .await;
        }
        (Ok(found), SharedLookup::Miss)
    }

    /// Forgets `keys` of `kind` in Redis, after the commit that changed them: a new version
    /// for each (so misses in flight do not write back what they read), then the entries. A
    /// failure raises a doubt: this instance reads Redis again only after an epoch bump.
    pub async fn invalidate(&self, kind: &'static str, keys: &[&str]) {
        if keys.is_empty() {
            return;
        }
        if self.elapsed_ms() < self.skip_until_ms.load(Ordering::Acquire) {
            // Redis is cooling off: the entries stay, and may be stale.
            self.doubts.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let mut pipe = redis::pipe();
        for key in keys {
            let entry_key = format!("{}:{kind}:{key}", self.prefix);
            pipe.cmd("SET")
                .arg(format!("{entry_key}:v"))
                .arg(self.token())
                .arg("PX")
                .arg(VERSION_TTL.as_millis() as u64)
                .ignore();
            pipe.cmd("DEL").arg(entry_key).ignore();
        }
        let mut connection = self.connection.clone();
        if self
            .call(
                "PIPELINE invalidate",
                pipe.query_async::<()>(&mut connection),
            )
            .await
            .is_err()
        {
            self.doubts.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A version nobody else writes: random per process, distinct per call.
    fn token(&self) -> String {
        use std::hash::BuildHasher;
        let count = self.token_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{count:x}", self.tokens.hash_one(count))
    }
}

fn encode<T: Serialize>(epoch: &str, found: Option<&T>) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(epoch.as_bytes());
    bytes.push(b'\n');
    serde_json::to_writer(&mut bytes, &found).ok()?;
    Some(bytes)
}

/// The cached answer, if the entry was written under `epoch` and reads back (an entry of
/// another epoch or shape is a miss, overwritten by the miss's write-back).
fn decode<T: DeserializeOwned>(bytes: &[u8], epoch: &str) -> Option<Option<T>> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    if &bytes[..newline] != epoch.as_bytes() {
        return None;
    }
    serde_json::from_slice(&bytes[newline + 1..]).ok()
}

/// `ttl` less up to a fifth, by key: entries written together do not expire together.
fn jittered(ttl: Duration, key: &str) -> Duration {
    use std::hash::BuildHasher;
    let hash = std::hash::RandomState::new().hash_one(key);
    let fifth = ttl / 5;
    ttl - fifth.mul_f64((hash % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_only_under_the_epoch_it_was_written_in() {
        let bytes = encode("7", Some(&"value")).unwrap();
        assert_eq!(
            decode::<String>(&bytes, "7"),
            Some(Some("value".to_owned()))
        );
        assert_eq!(decode::<String>(&bytes, "8"), None);
        assert_eq!(decode::<String>(&bytes, ""), None);
        let absent = encode::<String>("", None).unwrap();
        assert_eq!(decode::<String>(&absent, ""), Some(None));
        assert_eq!(decode::<String>(b"7\nnot json", "7"), None);
        assert_eq!(decode::<String>(b"no newline", "7"), None);
    }

    #[test]
    fn ttls_carry_jitter_within_a_fifth() {
        let ttls: std::collections::HashSet<_> = (0..50)
            .map(|i| jittered(PRESENT_TTL, &format!("ord_{i}")))
            .collect();
        assert!(ttls.len() > 10, "jitter spreads expiries");
        assert!(
            ttls.iter()
                .all(|ttl| *ttl <= PRESENT_TTL && *ttl >= PRESENT_TTL * 4 / 5)
        );
    }
}
