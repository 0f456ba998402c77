//! How much load the APIs take before they refuse more: requests in flight, adaptive shedding,
//! connections, and how long a connection may take to send its headers.

use crate::syntax;
use serde::Deserialize;
use serde::de::{Deserializer, Error};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    /// Requests in progress beyond which a new one is refused at once with `503`
    /// (`ORDO_MAX_IN_FLIGHT`; 0 or unset: 1,024 per available core).
    #[serde(deserialize_with = "max_in_flight")]
    pub max_in_flight: usize,
    /// Open API connections at most (`ORDO_MAX_CONNECTIONS`); `None`: sized from the
    /// open-files limit at start-up.
    #[serde(deserialize_with = "syntax::zero_is_none")]
    pub max_connections: Option<usize>,
    /// Open API connections of one client address at most
    /// (`ORDO_MAX_CONNECTIONS_PER_CLIENT`); `None`: a quarter of the total.
    #[serde(deserialize_with = "syntax::zero_is_none")]
    pub max_connections_per_client: Option<usize>,
    /// How long a request's headers may take to arrive, and a kept-alive connection may idle
    /// (`ORDO_HEADER_READ_TIMEOUT_MS`; 0 means the default).
    #[serde(
        rename = "header_read_timeout_ms",
        deserialize_with = "header_read_timeout"
    )]
    pub header_read_timeout: Duration,
    /// Adaptive load shedding on CPU and latency (`ORDO_SHED_ADAPTIVE`).
    pub shed_adaptive: bool,
    /// The CPU usage, per mille of this process's CPU quota, above which adaptive shedding may
    /// drop requests (`ORDO_SHED_CPU_THRESHOLD`, 1 to 1000).
    #[serde(rename = "shed_cpu_threshold", deserialize_with = "per_mille")]
    pub shed_cpu_threshold_permille: u32,
}

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_in_flight: in_flight_for_this_machine(),
            max_connections: None,
            max_connections_per_client: None,
            header_read_timeout: HEADER_READ_TIMEOUT,
            shed_adaptive: true,
            shed_cpu_threshold_permille: 900,
        }
    }
}

/// Enough for any healthy load (a request in progress costs little memory), yet a bound a
/// flood reaches long before the process runs out of memory.
fn in_flight_for_this_machine() -> usize {
    1024 * std::thread::available_parallelism().map_or(1, usize::from)
}

fn max_in_flight<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    syntax::saturating(d).map(|n| {
        if n == 0 {
            in_flight_for_this_machine()
        } else {
            n
        }
    })
}

fn header_read_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    syntax::millis(d).map(|t| if t.is_zero() { HEADER_READ_TIMEOUT } else { t })
}

fn per_mille<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u64::deserialize(d)? {
        n @ 1..=1000 => Ok(n as u32),
        n => Err(Error::custom(format!("{n} is not per mille in 1..=1000"))),
    }
}
