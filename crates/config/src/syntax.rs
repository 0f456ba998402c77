//! The value syntaxes several sections share, as `deserialize_with` functions: durations in the
//! unit their key names, comma-separated lists, bounded numbers. Each check is written once,
//! here, and its message is what follows "`ORDO_X` is not valid:".

use crate::env::comma_separated;
use serde::de::{Deserialize, Deserializer, Error};
use std::net::SocketAddr;
use std::time::Duration;

/// A `*_ms` key.
pub(crate) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A `*_secs` key.
pub(crate) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A `*_secs` key for which zero would mean "at once, all the time".
pub(crate) fn secs_at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(Error::custom("must be at least 1 second")),
        secs => Ok(Duration::from_secs(secs)),
    }
}

/// A count for which zero makes no sense.
pub(crate) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

/// A number kept within `MIN..=MAX` (beyond either end it means the end).
pub(crate) fn clamped<'de, D: Deserializer<'de>, const MIN: u32, const MAX: u32>(
    d: D,
) -> Result<u32, D::Error> {
    let n = u64::deserialize(d)?.clamp(u64::from(MIN), u64::from(MAX));
    Ok(u32::try_from(n).unwrap_or(MAX))
}

/// A size or count; beyond what this machine can count it means "as many as possible".
pub(crate) fn saturating<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Ok(usize::try_from(u64::deserialize(d)?).unwrap_or(usize::MAX))
}

/// A bound where `0` means "sized at start-up" (`None`).
pub(crate) fn zero_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    saturating(d).map(|n| (n > 0).then_some(n))
}

pub(crate) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse()
        .map_err(|e| Error::custom(format!("{raw:?} is not a socket address: {e}")))
}

/// `a, b,c` (the file writes these lists as one string too).
pub(crate) fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = String::deserialize(d)?;
    Ok(comma_separated(&raw).map(str::to_owned).collect())
}

/// A name used as a prefix (of Redis keys, broker names, etcd keys); empty means the default.
pub(crate) fn namespace<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = String::deserialize(d)?;
    Ok(if raw.is_empty() {
        DEFAULT_NAMESPACE.to_owned()
    } else {
        raw
    })
}

/// The prefix that keeps ordo's keys and names apart from others' (`ORDO_*_NAMESPACE`).
pub(crate) const DEFAULT_NAMESPACE: &str = "ordo";
