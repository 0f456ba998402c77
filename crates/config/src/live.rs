//! The settings a running process takes again from its file on SIGHUP: the log filter, the
//! trace sampling ratio and the rate limits.
//!
//! At start-up `RUST_LOG` and `OTEL_TRACES_SAMPLER_ARG` win over the first two, and the rate
//! limits' variables over the file, as for every key. On a reload the file wins, and a rate
//! limit key it leaves out keeps its variable's value (see [`crate::Config::reload_live`]).

use crate::ConfigError;
use serde::de::{Deserialize, Deserializer, Error};

/// A token bucket per caller: `per_second` tokens added each second, at most `burst` kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveSettings {
    /// Log filter directives (`RUST_LOG` syntax; file only).
    pub log_filter: Option<String>,
    /// Head-sampling ratio for new traces, 0..=1 (file only).
    pub trace_sampling_ratio: Option<f64>,
    /// Requests per caller (API key, or client address without keys); `None`: no limit
    /// (`ORDO_RATE_LIMIT_PER_SECOND`, `ORDO_RATE_LIMIT_BURST`; the burst defaults to the rate).
    pub rate_limit: Option<RateLimit>,
}

/// The keys behind [`LiveSettings`], as the layers hold them: the rate limit is two keys, one of
/// which needs the other.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct LiveKeys {
    log_filter: Option<String>,
    #[serde(deserialize_with = "ratio")]
    trace_sampling_ratio: Option<f64>,
    rate_limit_per_second: Option<u64>,
    rate_limit_burst: Option<u64>,
}

impl TryFrom<LiveKeys> for LiveSettings {
    type Error = ConfigError;

    /// Both rates unset is no limit; a burst without a rate is a mistake, not a silent "no
    /// limit".
    fn try_from(keys: LiveKeys) -> Result<Self, ConfigError> {
        let positive = |name: &'static str, n: u64| {
            u32::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("{n} is not a whole number from 1 to {}", u32::MAX),
                })
        };
        let burst = keys
            .rate_limit_burst
            .map(|n| positive("ORDO_RATE_LIMIT_BURST", n))
            .transpose()?;
        let rate_limit = match keys.rate_limit_per_second {
            None if burst.is_some() => {
                return Err(ConfigError::Invalid {
                    name: "ORDO_RATE_LIMIT_BURST",
                    reason: "is set without ORDO_RATE_LIMIT_PER_SECOND".to_owned(),
                });
            }
            None => None,
            Some(n) => {
                let per_second = positive("ORDO_RATE_LIMIT_PER_SECOND", n)?;
                Some(RateLimit {
                    per_second,
                    burst: burst.unwrap_or(per_second),
                })
            }
        };
        Ok(LiveSettings {
            log_filter: keys.log_filter,
            trace_sampling_ratio: keys.trace_sampling_ratio,
            rate_limit,
        })
    }
}

fn ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let ratio = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(Some(ratio))
    } else {
        Err(Error::custom(format!("{ratio} is not in [0, 1]")))
    }
}
