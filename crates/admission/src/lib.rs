//! Admission at ordo's edges: whether a request may start at all. Asked by the edge
//! (`ordo-edge`) for REST and gRPC alike, which translates a caller and a [`Rejection`]; no
//! axum or tonic type lives here.
//!
//! Layout:
//! - `bucket`: the token bucket's arithmetic, on a clock passed in.
//! - [`limiter`]: per-caller rate limits, in Redis (one Lua script per request) or locally.
//! - [`shedder`]: adaptive load shedding on CPU and measured capacity (go-zero / BBR).
//! - [`cpu`]: the CPU signal: this process against its cgroup quota, sampled in the background.
//!
//! A request is checked in order of cost: the hard cap of requests in progress
//! (`ORDO_MAX_IN_FLIGHT`), the adaptive shedder, then the rate limit (which may ask Redis).
//! Shedding answers `unavailable` (503 / UNAVAILABLE), a limit `rate_limited` (429 /
//! RESOURCE_EXHAUSTED); both carry a retry delay and are counted
//! (`shed_requests_total{reason}`, `rate_limited_requests_total`).
//!
//! Invariant: every admitted request holds a [`Ticket`] until its answer is known; the ticket
//! is what counts it in progress, so a request cancelled anywhere (even while Redis is asked)
//! still leaves the count.

mod bucket;
pub mod cpu;
pub mod limiter;
pub mod shedder;

use limiter::{RateLimiter, Verdict};
use ordo_domain::{Error, ErrorKind};
use sha2::{Digest, Sha256};
use shedder::AdaptiveShedder;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use redis::aio::ConnectionManager;

/// A token bucket per caller: `per_second` tokens added each second, at most `burst` kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// What admission enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// `None`: no limit (until a reload sets one).
    pub rate_limit: Option<RateLimit>,
    /// Requests in progress beyond which a new one is shed at once.
    pub max_in_flight: usize,
    /// The CPU threshold of adaptive shedding, per mille of the quota; `None`: off.
    pub adaptive_cpu_threshold_permille: Option<u32>,
}

/// Who a request comes from, as far as limits go.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// The API key the request was admitted with.
    ApiKey(&'a [u8]),
    /// The client's address (API keys off).
    Address(IpAddr),
    /// Neither is known (a test without a socket): one shared bucket.
    Unknown,
}

/// A caller's bucket name: a hash, so neither keys nor addresses reach Redis, logs or labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallerId([u8; 16]);

impl CallerId {
    pub fn of(caller: Caller<'_>) -> CallerId {
        let mut hasher = Sha256::new();
        match caller {
            Caller::ApiKey(key) => {
                hasher.update(b"key\0");
                hasher.update(key);
            }
            Caller::Address(address) => {
                hasher.update(b"address\0");
                hasher.update(address.to_string().as_bytes());
            }
            Caller::Unknown => hasher.update(b"unknown\0"),
        }
        let digest = hasher.finalize();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        CallerId(id)
    }

    pub fn redis_key(&self) -> String {
        format!("{}{}", limiter::KEY_PREFIX, hex::encode(self.0))
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The caller spent its rate limit.
    RateLimited,
    /// `ORDO_MAX_IN_FLIGHT` requests were in progress.
    MaxInFlight,
    /// The CPU was over its threshold and more requests in progress than the measured capacity.
    Overload,
}

impl Reason {
    /// The `reason` label of `shed_requests_total` (`None`: not a shed).
    pub const fn shed_label(self) -> Option<&'static str> {
        match self {
            Reason::RateLimited => None,
            Reason::MaxInFlight => Some("max_in_flight"),
            Reason::Overload => Some("overload"),
        }
    }
}

/// A request turned away, with when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub retry_after: Duration,
}

impl Rejection {
    /// The error of the one error model: the kind decides status and code everywhere.
    pub fn error(&self) -> Error {
        match self.reason {
            Reason::RateLimited => Error::new(
                ErrorKind::RateLimited,
                format!(
                    "the rate limit is spent; retry after {} s",
                    self.retry_after_secs()
                ),
            ),
            Reason::MaxInFlight | Reason::Overload => Error::new(
                ErrorKind::Unavailable,
                "the service is overloaded; retry later",
            ),
        }
    }

    /// `Retry-After` in whole seconds, rounded up and at least 1 (0 would invite a retry storm).
    pub fn retry_after_secs(&self) -> u64 {
        let millis = self.retry_after.as_millis();
        u64::try_from(millis.div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Admission of one process, shared by its HTTP and gRPC edges. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Admission(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    limiter: RateLimiter,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    shedder: Option<AdaptiveShedder>,
    cpu: Arc<cpu::CpuGauge>,
    origin: Instant,
}

impl Default for Admission {
    /// Admits everything (no limit, no cap, no shedding): routers built without settings.
    fn default() -> Self {
        Admission::with_cpu(
            AdmissionSettings {
                rate_limit: None,
                max_in_flight: usize::MAX,
                adaptive_cpu_threshold_permille: None,
            },
            None,
            cpu::shared_gauge(),
        )
    }
}

impl Admission {
    /// Admission with `settings`; `redis` shares rate limits between instances. With adaptive
    /// shedding on, a task samples the CPU until the last clone is dropped (so this must run
    /// inside a Tokio runtime; outside one, shedding never sees the CPU as busy).
    pub fn new(settings: AdmissionSettings, redis: Option<ConnectionManager>) -> Admission {
        let gauge = cpu::shared_gauge();
        if settings.adaptive_cpu_threshold_permille.is_some()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            cpu::spawn_sampler(Arc::downgrade(&gauge));
        }
        Admission::with_cpu(settings, redis, gauge)
    }

    /// As [`Admission::new`], reading the CPU from `gauge` (tests set it by hand).
    pub fn with_cpu(
        settings: AdmissionSettings,
        redis: Option<ConnectionManager>,
        gauge: Arc<cpu::CpuGauge>,
    ) -> Admission {
        Admission(Arc::new(Inner {
            limiter: RateLimiter::new(settings.rate_limit, redis),
            max_in_flight: settings.max_in_flight.max(1),
            in_flight: AtomicUsize::new(0),
            shedder: settings
                .adaptive_cpu_threshold_permille
                .map(AdaptiveShedder::new),
            cpu: gauge,
            origin: Instant::now(),
        }))
    }

    /// Applies a reloaded rate limit to the next requests.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.0.limiter.set_limit(limit);
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.0.limiter.limit()
    }

    /// Requests admitted and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Relaxed)
    }

    /// Whether `caller` may start a request now. The ticket must be held until the answer
    /// is known, then [`Ticket::finish`]ed.
    pub async fn admit(&self, caller: Caller<'_>) -> Result<Ticket, Rejection> {
        let inner = &self.0;
        let others = inner.in_flight.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            admission: Some(Arc::clone(inner)),
            started: Instant::now(),
        };
        if others >= inner.max_in_flight {
            return Err(ticket.reject(Reason::MaxInFlight, Duration::from_secs(1)));
        }
        if let Some(shedder) = &inner.shedder
            && shedder.should_drop(inner.now_ms(), inner.cpu.permille(), others)
        {
            return Err(ticket.reject(Reason::Overload, Duration::from_secs(1)));
        }
        if let Some(limit) = inner.limiter.limit()
            && let Verdict::Limited { retry_after } =
                inner.limiter.check(CallerId::of(caller), limit).await
        {
            return Err(ticket.reject(Reason::RateLimited, retry_after));
        }
        Ok(ticket)
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// An admitted request in progress. Dropped without [`Ticket::finish`] (a cancelled request),
/// it leaves the count without teaching the shedder anything.
#[derive(Debug)]
pub struct Ticket {
    admission: Option<Arc<Inner>>,
    started: Instant,
}

impl Ticket {
    /// Ends the request: `served` is false for a server fault (5xx, or its gRPC codes), which
    /// says nothing about how many requests the process can finish.
    pub fn finish(mut self, served: bool) {
        self.leave(served);
    }

    /// Leaves the count (once) and teaches the shedder: the response time of a served
    /// request, only the in-flight count otherwise.
    fn leave(&mut self, served: bool) {
        if let Some(inner) = self.admission.take() {
            let left = inner
                .in_flight
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1);
            if let Some(shedder) = &inner.shedder {
                if served {
                    let rt_ms = self.started.elapsed().as_secs_f64() * 1_000.0;
                    shedder.on_pass(inner.now_ms(), rt_ms, left);
                } else {
                    shedder.on_fail(left);
                }
            }
        }
    }

    /// Turns the request away: it leaves the count and is counted as refused.
    fn reject(mut self, reason: Reason, retry_after: Duration) -> Rejection {
        if let Some(inner) = self.admission.take() {
            inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        match reason.shed_label() {
            Some(label) => ordo_telemetry::metrics::count_shed_request(label),
            None => ordo_telemetry::metrics::count_rate_limited_request(),
        }
        Rejection {
            reason,
            retry_after,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave(false);
    }
}
