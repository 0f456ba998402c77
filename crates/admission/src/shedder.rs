//! Adaptive load shedding, after go-zero's `adaptiveShedder` (itself after Kratos' BBR): a
//! request is dropped only when the process is busy on CPU **and** more requests are in
//! progress than it has shown it can finish — the best pass rate of the last second times the
//! best response time. CPU alone is not enough (a busy process that keeps up should keep
//! serving), nor is concurrency alone (slow dependencies are not overload of this process).
//!
//! After a drop, the check stays armed for a cool-off second even when the CPU reading falls
//! back, so the shedder does not flap on the smoothed CPU signal.
//!
//! The decision is arithmetic on the time, the CPU reading and the in-flight count the caller
//! passes: no clock and no sampling here, so tests drive it step by step.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets of the rolling window, and each bucket's width: one second of history.
const BUCKETS: u64 = 10;
const BUCKET_MS: u64 = 100;
/// How long after a drop the CPU condition is taken as still met.
const COOL_OFF_MS: u64 = 1_000;
/// Weight of history in the smoothed in-flight count (updated as each request finishes).
const FLYING_BETA: f64 = 0.9;
/// Without history, the response time assumed (go-zero's default): one second.
const DEFAULT_MIN_RT_MS: f64 = 1_000.0;
/// CPU usage at full quota, per mille.
const CPU_MAX: f64 = 1_000.0;
/// However hot the CPU, at least this share of the estimated capacity is let in.
const MIN_OVERLOAD_FACTOR: f64 = 0.1;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which 100 ms of time this bucket holds (`now_ms / BUCKET_MS`); stale ones are ignored.
    epoch: u64,
    passes: u64,
    rt_sum_ms: f64,
}

#[derive(Debug)]
struct Window {
    buckets: [Bucket; BUCKETS as usize],
    avg_flying: f64,
}

/// See the module documentation. Cheap when the CPU is cool: two atomic loads, no lock.
#[derive(Debug)]
pub struct AdaptiveShedder {
    cpu_threshold_permille: u32,
    /// 1 + the time of the last drop in ms; 0: none yet.
    dropped_at: AtomicU64,
    window: Mutex<Window>,
}

impl AdaptiveShedder {
    pub fn new(cpu_threshold_permille: u32) -> AdaptiveShedder {
        AdaptiveShedder {
            cpu_threshold_permille: cpu_threshold_permille.clamp(1, 1_000),
            dropped_at: AtomicU64::new(0),
            window: Mutex::new(Window {
                buckets: [Bucket::default(); BUCKETS as usize],
                avg_flying: 0.0,
            }),
        }
    }

    /// Whether a new request should be dropped, with `in_flight` others in progress.
    pub fn should_drop(&self, now_ms: u64, cpu_permille: u32, in_flight: usize) -> bool {
        let overloaded = cpu_permille >= self.cpu_threshold_permille;
        if !overloaded && !self.still_hot(now_ms) {
            return false;
        }
        let (capacity, avg_flying) = match self.window.lock() {
            Ok(window) => (window.capacity(now_ms), window.avg_flying),
            Err(_) => return false,
        };
        let capacity = (capacity * self.overload_factor(cpu_permille)).max(1.0);
        let drop = avg_flying > capacity && in_flight as f64 > capacity;
        if drop {
            self.dropped_at.store(now_ms + 1, Ordering::Relaxed);
        }
        drop
    }

    /// Records a request that finished well after `rt_ms`; `in_flight` is the count of those
    /// still in progress without it.
    pub fn on_pass(&self, now_ms: u64, rt_ms: f64, in_flight: usize) {
        let Ok(mut window) = self.window.lock() else {
            return;
        };
        let epoch = now_ms / BUCKET_MS;
        let bucket = &mut window.buckets[(epoch % BUCKETS) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.passes += 1;
        bucket.rt_sum_ms += rt_ms.max(0.0);
        window.smooth_flying(in_flight);
    }

    /// Records a request that failed (a server fault) or was abandoned: it says nothing about
    /// capacity, only the smoothed in-flight count moves.
    pub fn on_fail(&self, in_flight: usize) {
        if let Ok(mut window) = self.window.lock() {
            window.smooth_flying(in_flight);
        }
    }

    fn still_hot(&self, now_ms: u64) -> bool {
        match self.dropped_at.load(Ordering::Relaxed) {
            0 => false,
            at => now_ms.saturating_sub(at - 1) < COOL_OFF_MS,
        }
    }

    /// The hotter the CPU past the threshold, the less of the estimated capacity is let in.
    fn overload_factor(&self, cpu_permille: u32) -> f64 {
        let threshold = f64::from(self.cpu_threshold_permille);
        if threshold >= CPU_MAX {
            return 1.0;
        }
        ((CPU_MAX - f64::from(cpu_permille)) / (CPU_MAX - threshold))
            .clamp(MIN_OVERLOAD_FACTOR, 1.0)
    }
}

impl Window {
    /// The finished buckets of the last second, the one still filling left out (its count is
    /// partial and would understate the pass rate).
    fn finished(&self, now_ms: u64) -> impl Iterator<Item = &Bucket> {
        let current = now_ms / BUCKET_MS;
        self.buckets
            .iter()
            .filter(move |b| b.epoch < current && b.epoch + BUCKETS > current && b.passes > 0)
    }

    /// Requests the process can hold in progress: most passes in a bucket, per second, times
    /// the lowest average response time of a bucket, in seconds (Little's law).
    fn capacity(&self, now_ms: u64) -> f64 {
        let max_pass = self
            .finished(now_ms)
            .map(|b| b.passes)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let min_rt_ms = self
            .finished(now_ms)
            .map(|b| b.rt_sum_ms / b.passes as f64)
            .fold(DEFAULT_MIN_RT_MS, f64::min)
            .max(1.0);
        max_pass * (1_000 / BUCKET_MS) as f64 * min_rt_ms / 1_000.0
    }

    fn smooth_flying(&mut self, in_flight: usize) {
        self.avg_flying = self.avg_flying * FLYING_BETA + in_flight as f64 * (1.0 - FLYING_BETA);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One second of history ending at `until_ms`: `per_bucket` requests of `rt_ms` each in
    /// every 100 ms, each finishing with `in_flight` others in progress.
    fn history(
        shedder: &AdaptiveShedder,
        until_ms: u64,
        per_bucket: u64,
        rt_ms: f64,
        in_flight: usize,
    ) {
        for bucket in 0..BUCKETS {
            let at = until_ms - (BUCKETS - bucket) * BUCKET_MS;
            for _ in 0..per_bucket {
                shedder.on_pass(at, rt_ms, in_flight);
            }
        }
    }

    #[test]
    fn a_cool_cpu_never_drops_however_many_requests_wait() {
        let shedder = AdaptiveShedder::new(900);
        history(&shedder, 10_000, 10, 10.0, 5_000);
        assert!(!shedder.should_drop(10_000, 899, 100_000));
        assert!(!shedder.should_drop(10_000, 0, usize::MAX));
    }

    #[test]
    fn a_hot_cpu_drops_only_beyond_the_measured_capacity() {
        let shedder = AdaptiveShedder::new(900);
        // 50 requests per 100 ms at 20 ms each: 500/s × 0.02 s = 10 in progress at most.
        history(&shedder, 10_000, 50, 20.0, 30);
        assert!(!shedder.should_drop(10_000, 900, 10), "at capacity");
        assert!(shedder.should_drop(10_000, 900, 11), "beyond capacity");
    }

    #[test]
    fn a_short_spike_of_concurrency_is_not_overload() {
        let shedder = AdaptiveShedder::new(900);
        // Same capacity (10), but requests so far finished with 2 others in progress: the
        // smoothed count is low, so one burst of 50 passes.
        history(&shedder, 10_000, 50, 20.0, 2);
        assert!(!shedder.should_drop(10_000, 950, 50));
    }

    #[test]
    fn the_hotter_the_cpu_the_less_of_the_capacity_is_let_in() {
        let shedder = AdaptiveShedder::new(900);
        history(&shedder, 10_000, 50, 20.0, 30);
        // At 950 per mille the factor is (1000 - 950) / (1000 - 900) = 0.5: capacity 5.
        assert!(!shedder.should_drop(10_000, 950, 5));
        assert!(shedder.should_drop(10_000, 950, 6));
        // At full use the floor of 10% holds: capacity 1.
        assert!(!shedder.should_drop(10_000, 1_000, 1));
        assert!(shedder.should_drop(10_000, 1_000, 2));
    }

    #[test]
    fn after_a_drop_the_shedder_stays_armed_for_the_cool_off_only() {
        let shedder = AdaptiveShedder::new(900);
        history(&shedder, 10_000, 50, 20.0, 30);
        assert!(shedder.should_drop(10_000, 950, 50));
        // The CPU reading fell back, but within a second of the drop: still shedding.
        history(&shedder, 10_500, 50, 20.0, 30);
        assert!(shedder.should_drop(10_500, 100, 50));
        // Past the cool-off (counted from the last drop), a cool CPU lets everything in.
        history(&shedder, 11_600, 50, 20.0, 30);
        assert!(!shedder.should_drop(11_600, 100, 50));
    }

    #[test]
    fn without_history_a_hot_process_still_admits_a_few() {
        let shedder = AdaptiveShedder::new(900);
        for _ in 0..100 {
            shedder.on_fail(50);
        }
        // No passes yet: 1 pass per bucket × 1 s response time = 10 in progress.
        assert!(!shedder.should_drop(0, 1_000, 1));
        assert!(!shedder.should_drop(0, 900, 10));
        assert!(shedder.should_drop(0, 900, 11));
    }

    #[test]
    fn history_older_than_a_second_no_longer_counts() {
        let shedder = AdaptiveShedder::new(900);
        // 500/s × 0.1 s: room for 50 in progress.
        history(&shedder, 10_000, 50, 100.0, 100);
        assert!(!shedder.should_drop(10_000, 900, 40));
        // 2.5 s later that history has aged out: the default (10) applies again.
        assert!(shedder.should_drop(12_500, 900, 40));
    }
}
