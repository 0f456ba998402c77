//! The CPU signal of adaptive shedding: this process's CPU time against the CPU it may use —
//! its cgroup's quota (`cpu.max` in cgroup v2, `cpu.cfs_quota_us` / `cpu.cfs_period_us` in v1),
//! else the cores it may run on — sampled every 250 ms and smoothed, in per mille.
//!
//! A container limited to one core on a 16-core host is saturated at one core's worth of CPU
//! time; measuring against the host's cores would never see it overloaded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the CPU time is read.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Weight of history in the smoothed reading: about a second to follow a change, so one busy
/// sample does not shed and a sustained load is seen within the cool-off.
const BETA: f64 = 0.8;

/// The smoothed CPU usage, per mille of the quota (may exceed 1000 briefly).
#[derive(Debug, Default)]
pub struct CpuGauge(AtomicU32);

impl CpuGauge {
    pub fn permille(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, permille: u32) {
        self.0.store(permille, Ordering::Relaxed);
    }
}

/// Samples until the gauge is dropped (its last owner, the admission, went away).
pub fn spawn_sampler(gauge: Weak<CpuGauge>) -> Option<tokio::task::JoinHandle<()>> {
    let cores = quota_cores();
    let mut previous = (Instant::now(), process_cpu_seconds()?);
    tracing::debug!(
        cores,
        "adaptive shedding measures CPU against this many cores"
    );
    Some(tokio::spawn(async move {
        let mut smoothed = 0.0;
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(gauge) = gauge.upgrade() else {
                return;
            };
            let Some(cpu) = process_cpu_seconds() else {
                continue;
            };
            let now = Instant::now();
            let wall = now.duration_since(previous.0).as_secs_f64();
            let current = usage_permille(cpu - previous.1, wall, cores);
            previous = (now, cpu);
            smoothed = smoothed * BETA + current * (1.0 - BETA);
            gauge.set(smoothed.round().clamp(0.0, f64::from(u32::MAX)) as u32);
        }
    }))
}

/// CPU time used over `wall` seconds, per mille of `cores`.
pub fn usage_permille(cpu_seconds: f64, wall_seconds: f64, cores: f64) -> f64 {
    if wall_seconds <= 0.0 || cores <= 0.0 {
        return 0.0;
    }
    (cpu_seconds.max(0.0) / (wall_seconds * cores) * 1_000.0).max(0.0)
}

/// The cores this process may use: its cgroup quota if there is one, at most the cores it may
/// run on.
pub fn quota_cores() -> f64 {
    let available = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let quota = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|cgroups| cgroup_quota(&cgroups, |path| std::fs::read_to_string(path).ok()));
    quota.map_or(available, |q| q.min(available))
}

/// The quota of the cgroups in `/proc/self/cgroup`'s `cgroups`, reading files with `read`.
fn cgroup_quota(cgroups: &str, read: impl Fn(&str) -> Option<String>) -> Option<f64> {
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            // v2: the process's own cgroup, else the root as a container sees it.
            for dir in [format!("/sys/fs/cgroup{path}"), "/sys/fs/cgroup".to_owned()] {
                if let Some(quota) = read(&format!("{dir}/cpu.max")).and_then(|t| parse_cpu_max(&t))
                {
                    return Some(quota);
                }
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            for dir in [
                format!("/sys/fs/cgroup/{controllers}{path}"),
                format!("/sys/fs/cgroup/cpu{path}"),
                format!("/sys/fs/cgroup/{controllers}"),
                "/sys/fs/cgroup/cpu".to_owned(),
            ] {
                let quota = read(&format!("{dir}/cpu.cfs_quota_us"));
                let period = read(&format!("{dir}/cpu.cfs_period_us"));
                if let (Some(quota), Some(period)) = (quota, period)
                    && let Some(cores) = parse_cfs(&quota, &period)
                {
                    return Some(cores);
                }
            }
        }
    }
    None
}

/// cgroup v2 `cpu.max`: `"<quota> <period>"` in µs, or `"max <period>"` for none.
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota: f64 = fields.next()?.parse().ok()?;
    let period: f64 = fields.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// cgroup v1: a quota of -1 is none.
fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// User and system CPU time of the whole process so far, in seconds.
#[cfg(unix)]
fn process_cpu_seconds() -> Option<f64> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// Without getrusage there is no CPU signal: adaptive shedding never sees overload.
#[cfg(not(unix))]
fn process_cpu_seconds() -> Option<f64> {
    None
}

/// A gauge shared by its owner and the sampler, which stops when the owner drops it.
pub fn shared_gauge() -> Arc<CpuGauge> {
    Arc::new(CpuGauge::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |path| map.get(path).cloned()
    }

    #[test]
    fn cgroup_v2_quotas_are_read_from_the_process_cgroup() {
        let read = files(&[("/sys/fs/cgroup/app.slice/ordo/cpu.max", "150000 100000\n")]);
        assert_eq!(cgroup_quota("0::/app.slice/ordo\n", read), Some(1.5));
        let read = files(&[("/sys/fs/cgroup/cpu.max", "max 100000\n")]);
        assert_eq!(cgroup_quota("0::/\n", read), None);
        let read = files(&[("/sys/fs/cgroup/cpu.max", "50000 100000\n")]);
        assert_eq!(cgroup_quota("0::/\n", read), Some(0.5));
    }

    #[test]
    fn cgroup_v1_quotas_are_read_from_the_cpu_controller() {
        let read = files(&[
            (
                "/sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_quota_us",
                "200000\n",
            ),
            (
                "/sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_period_us",
                "100000\n",
            ),
        ]);
        let cgroups = "4:memory:/docker/x\n3:cpu,cpuacct:/docker/x\n0::/\n";
        assert_eq!(cgroup_quota(cgroups, read), Some(2.0));
        let read = files(&[
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
        ]);
        assert_eq!(cgroup_quota("1:cpu:/\n0::/\n", read), None);
    }

    #[test]
    fn unreadable_or_malformed_cgroup_files_mean_no_quota() {
        assert_eq!(cgroup_quota("0::/\n", files(&[])), None);
        assert_eq!(cgroup_quota("garbage", files(&[])), None);
        assert_eq!(parse_cpu_max("lots 100000"), None);
        assert_eq!(parse_cpu_max("100000 0"), None);
        assert_eq!(parse_cfs("x", "100000"), None);
    }

    #[test]
    fn usage_is_measured_against_the_quota() {
        // Half a second of CPU in a quarter second on a 2-core quota: 100%.
        assert_eq!(usage_permille(0.5, 0.25, 2.0), 1_000.0);
        assert_eq!(usage_permille(0.1, 0.25, 2.0), 200.0);
        assert_eq!(usage_permille(0.1, 0.0, 2.0), 0.0);
        assert_eq!(usage_permille(-1.0, 0.25, 2.0), 0.0);
    }

    #[test]
    fn this_process_has_a_cpu_time_and_some_cores() {
        assert!(quota_cores() > 0.0);
        #[cfg(unix)]
        assert!(process_cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}
