//! The in-process caches of reads (`GET /v1/orders/{id}`, `GET /v1/products/{sku}`):
//! cache-aside in front of the database, bounded in size, every entry living at most [`TTL`]
//! (with jitter), unknown keys cached as absent for as long.
//!
//! Consistency, within the process: a write invalidates what it changed after its commit (the
//! orders a [`crate::WriteTx`] or a placement batch touched; the product an upsert wrote), so
//! once a write has answered, no
//! read of this process returns the state before it. The known race of cache-aside — a slow
//! miss that read the old row writes it back after the writer's invalidation — is closed by
//! generations: an invalidation bumps the generation of its key's slot first, and a load only
//! stores its result if the generation it started under is still current (checked again after
//! the store, which is undone if an invalidation slipped in between). Other instances see a
//! write within [`TTL`] (1 s, the contract's bound for in-process caches).
//!
//! Concurrent misses of one key wait for one load — but only a load that started under the
//! current generation: a read that arrives after an invalidation never waits for a load that
//! may have read the state before it.
//!
//! Database down: an entry past its TTL is kept for [`STALE_GRACE`] more, and answers when
//! its reload fails with `unavailable` (the contract's "cached reads keep answering"); never
//! when its key was invalidated since (the invalidation removed it).
//!
//! With `ORDO_REDIS_URL` set, [`ReadCache`] puts the in-process cache in front of Redis
//! ([`shared`]): a local miss asks Redis, a Redis miss asks the database.

pub mod shared;

use ordo_domain::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The longest an entry lives; also how long another instance may serve a read from before a
/// write it did not see.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries kept at most.
pub const MAX_ENTRIES: u64 = 100_000;
/// How long an entry past its TTL is kept to answer while the database is unavailable.
pub const STALE_GRACE: Duration = Duration::from_secs(60);
/// Slots of invalidation generations (keys share a slot by hash: a false share only costs a
/// load its chance to be stored).
const GENERATION_SLOTS: usize = 4096;

/// What a read found: the value, or that there is none.
#[derive(Debug)]
enum Entry<T> {
    Present(Arc<T>),
    Absent,
}

/// An entry and until when it is fresh (after that, only a fallback while the database is
/// unavailable).
struct Stored<T> {
    entry: Entry<T>,
    fresh_until: Instant,
}

impl<T> Clone for Stored<T> {
    fn clone(&self) -> Self {
        Stored {
            entry: self.entry.clone(),
            fresh_until: self.fresh_until,
        }
    }
}

impl<T> Entry<T> {
    fn answer(self) -> Option<Arc<T>> {
        match self {
            Entry::Present(value) => Some(value),
            Entry::Absent => None,
        }
    }
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        match self {
            Entry::Present(value) => Entry::Present(Arc::clone(value)),
            Entry::Absent => Entry::Absent,
        }
    }
}

/// How a lookup went, for `cache_requests_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// A hit on a cached absence.
    Absent,
    Miss,
}

impl Lookup {
    pub fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Absent => "absent",
            Lookup::Miss => "miss",
        }
    }
}

type Loaded<T> = Option<std::result::Result<Option<Arc<T>>, Error>>;

/// A load in progress, which misses of its key at its generation wait for.
struct Flight<T> {
    generation: u64,
    result: watch::Receiver<Loaded<T>>,
}

/// Whether a miss loads, or waits for the load in flight.
enum Role<T> {
    Lead(watch::Sender<Loaded<T>>),
    Join(watch::Receiver<Loaded<T>>),
}

/// A cache of `T` by string key (an order id).
pub struct Cache<T> {
    entries: moka::sync::Cache<String, Stored<T>>,
    generations: Box<[AtomicU64]>,
    flights: Mutex<HashMap<String, Flight<T>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<T: Send + Sync + 'static> Cache<T> {
    pub fn new(max_entries: u64) -> Self {
        Cache {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(TTL + STALE_GRACE)
                .build(),
            generations: (0..GENERATION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            flights: Mutex::new(HashMap::new()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn slot(&self, key: &str) -> &AtomicU64 {
        &self.generations[(self.hasher.hash_one(key) as usize) % GENERATION_SLOTS]
    }

    /// The value of `key`: from the cache, or from `load` (one load per key and generation at a
    /// time), stored unless an invalidation of `key` came after the load began.
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> (Result<Option<Arc<T>>>, Lookup)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        // Read before the entry: a stale entry answers only if no invalidation came after.
        let generation = self.slot(key).load(Ordering::Acquire);
        let stored = self.entries.get(key);
        let stale = match stored {
            Some(stored) if stored.fresh_until > Instant::now() => {
                return match stored.entry {
                    Entry::Present(value) => (Ok(Some(value)), Lookup::Hit),
                    Entry::Absent => (Ok(None), Lookup::Absent),
                };
            }
            Some(stored) => Some(stored.entry),
            None => None,
        };
        let (loaded, lookup) = match self.board(key, generation) {
            Role::Lead(sender) => (self.lead(key, generation, sender, load).await, Lookup::Miss),
            Role::Join(mut result) => {
                let joined = match result.wait_for(Option::is_some).await {
                    Ok(loaded) => loaded.clone(),
                    Err(_) => None,
                };
                match joined {
                    Some(loaded) => (loaded, Lookup::Miss),
                    // The leader went away without an answer (its request was cancelled):
                    // load alone.
                    None => (load().await.map(|found| found.map(Arc::new)), Lookup::Miss),
                }
            }
        };
        match (loaded, stale) {
            // The database is down and the entry was not invalidated since it was read: the
            // last known state answers.
            (Err(error), Some(stale))
                if error.kind == ErrorKind::Unavailable
                    && self.slot(key).load(Ordering::Acquire) == generation =>
            {
                (Ok(stale.answer()), Lookup::Hit)
            }
            (loaded, _) => (loaded, lookup),
        }
    }

    /// Joins the flight of `key` at `generation`, or opens one that this call leads.
    fn board(&self, key: &str, generation: u64) -> Role<T> {
        let mut flights = crate::sql::lock_any(&self.flights);
        if let Some(flight) = flights.get(key)
            && flight.generation == generation
        {
            return Role::Join(flight.result.clone());
        }
        let (sender, receiver) = watch::channel(None);
        flights.insert(
            key.to_owned(),
            Flight {
                generation,
                result: receiver,
            },
        );
        Role::Lead(sender)
    }
    /// Runs the load of a flight this call leads, stores its result if still current, and
    /// hands it to the waiters.
    async fn lead<F, Fut>(
        &self,
        key: &str,
        generation: u64,
        sender: watch::Sender<Loaded<T>>,
        load: F,
    ) -> Result<Option<Arc<T>>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        // Ends the flight however the load ends (an error, or this future dropped).
        struct Landing<'c, T> {
            flights: &'c Mutex<HashMap<String, Flight<T>>>,
            key: &'c str,
            generation: u64,
        }
        impl<T> Drop for Landing<'_, T> {
            fn drop(&mut self) {
                let mut flights = crate::sql::lock_any(self.flights);
                if flights
                    .get(self.key)
                    .is_some_and(|f| f.generation == self.generation)
                {
                    flights.remove(self.key);
                }
            }
        }
        let _landing = Landing {
            flights: &self.flights,
            key,
            generation,
        };
        let loaded = load().await.map(|found| found.map(Arc::new));
        if let Ok(found) = &loaded {
            self.store(key, generation, found);
        }
        let _ = sender.send(Some(loaded.clone()));
        loaded
    }

    fn store(&self, key: &str, generation: u64, found: &Option<Arc<T>>) {
        let slot = self.slot(key);
        if slot.load(Ordering::Acquire) != generation {
            return;
        }
        let entry = match found {
            Some(value) => Entry::Present(Arc::clone(value)),
            None => Entry::Absent,
        };
        let stored = Stored {
            entry,
            fresh_until: Instant::now() + jittered_ttl(key),
        };
        self.entries.insert(key.to_owned(), stored);
        // An invalidation between the check and the insert removed nothing: undo the insert.
        if slot.load(Ordering::Acquire) != generation {
            self.entries.invalidate(key);
        }
    }

    /// Stores the values of `keys` that `load` reads all at once (a key it does not return is
    /// stored as absent), each unless an invalidation of its key came after the load began.
    pub async fn refresh<F, Fut>(&self, keys: &[&str], load: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<HashMap<String, T>>>,
    {
        let generations: Vec<u64> = keys
            .iter()
            .map(|key| self.slot(key).load(Ordering::Acquire))
            .collect();
        let mut loaded = load().await?;
        for (key, generation) in keys.iter().zip(generations) {
            let found = loaded.remove(*key).map(Arc::new);
            self.store(key, generation, &found);
        }
        Ok(())
    }

    /// Forgets `key`: later reads load it again, and loads begun before now are not stored.
    pub fn invalidate(&self, key: &str) {
        self.slot(key).fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(key);
    }
}

/// Each entry is fresh for between 80% and 100% of [`TTL`], so entries stored together do
/// not all expire in the same instant.
fn jittered_ttl(key: &str) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    Instant::now().hash(&mut hasher);
    let fifth = TTL / 5;
    let jitter = fifth.mul_f64((hasher.finish() % 1000) as f64 / 1000.0);
    TTL - fifth + jitter
}

/// A read cache of one kind of record: the in-process [`Cache`], in front of the shared Redis
/// tier when there is one.
pub struct ReadCache<T> {
    local: Cache<T>,
    shared: Option<Arc<shared::SharedCache>>,
    /// The kind's name in Redis keys (`order`, `product`).
    kind: &'static str,
}

impl<T> ReadCache<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    pub fn new(kind: &'static str, shared: Option<Arc<shared::SharedCache>>) -> Self {
        ReadCache {
            local: Cache::new(MAX_ENTRIES),
            shared,
            kind,
        }
    }

    /// The value of `key`: in process, else from Redis (when shared), else from `load`.
    /// Counted in `cache_requests_total` per tier.
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> Result<Option<Arc<T>>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let (found, lookup) = self
            .local
            .get_or_load(key, || async {
                let Some(shared) = &self.shared else {
                    return load().await;
                };
                let (found, lookup) = shared.get_or_load(self.kind, key, load).await;
                ordo_telemetry::metrics::count_cache_request("redis", lookup.label());
                found
            })
            .await;
        ordo_telemetry::metrics::count_cache_request("local", lookup.label());
        found
    }

    /// [`Cache::refresh`] of the in-process tier: the entries this process reads first. Redis
    /// is left as the invalidation left it (its next miss fills it).
    pub async fn refresh<F, Fut>(&self, keys: &[&str], load: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<HashMap<String, T>>>,
    {
        self.local.refresh(keys, load).await
    }

    /// Forgets `keys` after the commit that changed them: in Redis first, then here (the
    /// other way round, a local miss between the two would copy Redis's stale entry here).
    pub async fn invalidate(&self, keys: &[&str]) {
        if let Some(shared) = &self.shared {
            shared.invalidate(self.kind, keys).await;
        }
        for key in keys {
            self.local.invalidate(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn a_hit_needs_no_load_and_an_absence_is_cached_too() {
        let cache: Cache<&'static str> = Cache::new(10);
        let (found, lookup) = cache.get_or_load("a", || async { Ok(Some("v1")) }).await;
        assert_eq!(
            (found.unwrap().as_deref(), lookup),
            (Some(&"v1"), Lookup::Miss)
        );
        let (found, lookup) = cache
            .get_or_load("a", || async { panic!("loaded again") })
            .await;
        assert_eq!(
            (found.unwrap().as_deref(), lookup),
            (Some(&"v1"), Lookup::Hit)
        );

        let (found, _) = cache.get_or_load("b", || async { Ok(None) }).await;
        assert!(found.unwrap().is_none());
        let (found, lookup) = cache
            .get_or_load("b", || async { panic!("loaded again") })
            .await;
        assert_eq!((found.unwrap().is_none(), lookup), (true, Lookup::Absent));
    }

    type SlowLoad = tokio::task::JoinHandle<(Result<Option<Arc<&'static str>>>, Lookup)>;

    /// A load of `key` that has read `value` from the database and reaches the cache only
    /// once `release` is sent: `started` says it has read.
    fn slow_load(
        cache: &Arc<Cache<&'static str>>,
        key: &'static str,
        value: &'static str,
    ) -> (SlowLoad, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (read, started) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let cache = Arc::clone(cache);
        let load = tokio::spawn(async move {
            cache
                .get_or_load(key, || async move {
                    let _ = read.send(());
                    let _ = released.await;
                    Ok(Some(value))
                })
                .await
        });
        (load, started, release)
    }

    /// The race of cache-aside, played in a fixed order: a miss reads the old value, a write
    /// commits and invalidates, then the miss would store what it read. It must not: the next
    /// read loads the new value.
    #[tokio::test]
    async fn a_load_older_than_an_invalidation_is_not_stored() {
        let cache: Arc<Cache<&'static str>> = Arc::new(Cache::new(10));
        let (slow, started, release) = slow_load(&cache, "order", "old");
        started.await.unwrap(); // the database answered with the state before the write
        cache.invalidate("order"); // the write committed
        release.send(()).unwrap(); // only now does the old answer reach the cache
        let (slow_found, _) = slow.await.unwrap();
        assert_eq!(
            slow_found.unwrap().as_deref(),
            Some(&"old"),
            "its own answer"
        );

        let (found, lookup) = cache
            .get_or_load("order", || async { Ok(Some("new")) })
            .await;
        assert_eq!(
            (found.unwrap().as_deref(), lookup),
            (Some(&"new"), Lookup::Miss),
            "the stale load must not have been stored"
        );
    }

    /// A read arriving after an invalidation does not wait for a load that began before it.
    #[tokio::test]
    async fn a_read_after_an_invalidation_does_not_join_an_older_load() {
        let cache: Arc<Cache<&'static str>> = Arc::new(Cache::new(10));
        let (slow, started, release) = slow_load(&cache, "order", "old");
        started.await.unwrap();
        cache.invalidate("order");
        let (found, _) = cache
            .get_or_load("order", || async { Ok(Some("new")) })
            .await;
        assert_eq!(found.unwrap().as_deref(), Some(&"new"));
        release.send(()).unwrap();
        slow.await.unwrap().0.unwrap();
        let (found, lookup) = cache
            .get_or_load("order", || async { panic!("cached") })
            .await;
        assert_eq!(
            (found.unwrap().as_deref(), lookup),
            (Some(&"new"), Lookup::Hit)
        );
    }

    /// Concurrent misses of one key make one load.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_make_one_load() {
        let cache: Arc<Cache<u32>> = Arc::new(Cache::new(10));
        let loads = Arc::new(AtomicU64::new(0));
        let (release, released) = watch::channel(false);
        let readers: Vec<_> = (0..16)
            .map(|_| {
                let (cache, loads, mut released) =
                    (Arc::clone(&cache), Arc::clone(&loads), released.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load("k", || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            let _ = released.wait_for(|r| *r).await;
                            Ok(Some(7))
                        })
                        .await
                        .0
                        .unwrap()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(true).unwrap();
        for reader in readers {
            assert_eq!(reader.await.unwrap().as_deref(), Some(&7));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    /// A refresh stores what it read for every key (an unread key as absent), except a key
    /// invalidated while it read: a write committed after the refresh's read must not be
    /// hidden by it.
    #[tokio::test]
    async fn a_refresh_stores_its_reads_except_those_invalidated_meanwhile() {
        let cache: Arc<Cache<&'static str>> = Arc::new(Cache::new(10));
        let refreshing = Arc::clone(&cache);
        refreshing
            .refresh(&["read", "moved", "unknown"], || async {
                // A write to "moved" commits while the refresh's answer is on its way.
                cache.invalidate("moved");
                Ok(HashMap::from([
                    ("read".to_owned(), "r1"),
                    ("moved".to_owned(), "m1"),
                ]))
            })
            .await
            .unwrap();

        let (found, lookup) = cache
            .get_or_load("read", || async { panic!("refreshed") })
            .await;
        assert_eq!(
            (found.unwrap().as_deref(), lookup),
            (Some(&"r1"), Lookup::Hit)
        );
        let (found, lookup) = cache
            .get_or_load("unknown", || async { panic!("refreshed as absent") })
            .await;
        assert_eq!((found.unwrap(), lookup), (None, Lookup::Absent));
        let (found, lookup) = cache
            .get_or_load("moved", || async { Ok(Some("m2")) })
            .await;
        assert_eq!(
            (found.unwrap().as_deref(), lookup),
            (Some(&"m2"), Lookup::Miss),
            "the refresh's older read must not have been stored"
        );
    }

    #[tokio::test]
    async fn entries_expire_within_the_ttl() {
        let cache: Cache<u32> = Cache::new(10);
        cache
            .get_or_load("k", || async { Ok(Some(1)) })
            .await
            .0
            .unwrap();
        tokio::time::sleep(TTL + Duration::from_millis(50)).await;
        let (found, lookup) = cache.get_or_load("k", || async { Ok(Some(2)) }).await;
        assert_eq!(
            (found.unwrap().as_deref(), lookup),
            (Some(&2), Lookup::Miss)
        );
    }
}
