//! The fulfillment pipeline: the risk rules a paid order must pass, and the carrier its
//! shipments are pushed to (with retries, a circuit breaker and the pickup lead time).

use crate::env::comma_separated;
use crate::{Secret, SecretUrl, syntax};
use ordo_domain::personal::Personal;
use ordo_domain::risk::Velocity;
use serde::de::{Deserialize, Deserializer, Error};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The blocked emails are personal data: they print as `[personal]`, the carrier's secret as
/// any secret does.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct FulfillmentSettings {
    /// Largest order total per currency, in minor units (`ORDO_RISK_MAX_AMOUNT`,
    /// `USD=100000,EUR=90000`); a currency not listed has no limit.
    #[serde(deserialize_with = "amounts")]
    pub risk_max_amount: BTreeMap<String, i64>,
    /// At most `count` payments per customer within `window_secs` (`ORDO_RISK_VELOCITY`,
    /// `count/seconds`).
    #[serde(deserialize_with = "velocity")]
    pub risk_velocity: Velocity,
    /// Refused shipping countries, upper case (`ORDO_RISK_BLOCKED_COUNTRIES`, comma-separated).
    #[serde(deserialize_with = "countries")]
    pub risk_blocked_countries: BTreeSet<String>,
    /// Refused contact emails (`ORDO_RISK_BLOCKED_EMAILS`, comma-separated).
    #[serde(deserialize_with = "emails")]
    pub risk_blocked_emails: Vec<Personal<String>>,
    /// The carrier's webhook (`ORDO_CARRIER_WEBHOOK_URL`); unset: the in-process sandbox
    /// carrier, which accepts everything.
    pub carrier_webhook_url: Option<SecretUrl>,
    /// The secret of the `Ordo-Signature` of pushes (`ORDO_CARRIER_WEBHOOK_SECRET`).
    pub carrier_webhook_secret: Option<Secret>,
    /// The timeout of one push (`ORDO_CARRIER_TIMEOUT_MS`, at least 1 ms).
    #[serde(rename = "carrier_timeout_ms", deserialize_with = "carrier_timeout")]
    pub carrier_timeout: Duration,
    /// The base delay of the exponential backoff between pushes of one shipment
    /// (`ORDO_CARRIER_RETRY_BASE_MS`).
    #[serde(rename = "carrier_retry_base_ms", deserialize_with = "syntax::millis")]
    pub carrier_retry_base: Duration,
    /// Pushes of one shipment before it is dead-lettered (`ORDO_CARRIER_MAX_ATTEMPTS`, 1 to 100).
    #[serde(deserialize_with = "syntax::clamped::<_, 1, 100>")]
    pub carrier_max_attempts: u32,
    /// Consecutive failures that open a carrier's circuit breaker
    /// (`ORDO_CARRIER_BREAKER_THRESHOLD`, 1 to 1,000).
    #[serde(
        rename = "carrier_breaker_threshold",
        deserialize_with = "syntax::clamped::<_, 1, 1000>"
    )]
    pub breaker_threshold: u32,
    /// How long an open breaker fails pushes fast (`ORDO_CARRIER_BREAKER_COOLDOWN_MS`).
    #[serde(
        rename = "carrier_breaker_cooldown_ms",
        deserialize_with = "syntax::millis"
    )]
    pub breaker_cooldown: Duration,
    /// The least time between scheduling and the pickup slot (`ORDO_PICKUP_LEAD_SECS`).
    #[serde(rename = "pickup_lead_secs", deserialize_with = "syntax::secs")]
    pub pickup_lead: Duration,
}

impl Default for FulfillmentSettings {
    fn default() -> Self {
        FulfillmentSettings {
            risk_max_amount: BTreeMap::new(),
            risk_velocity: Velocity {
                count: 1000,
                window_secs: 60,
            },
            risk_blocked_countries: BTreeSet::new(),
            risk_blocked_emails: Vec::new(),
            carrier_webhook_url: None,
            carrier_webhook_secret: None,
            carrier_timeout: Duration::from_secs(5),
            carrier_retry_base: Duration::from_millis(200),
            carrier_max_attempts: 5,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            pickup_lead: Duration::from_secs(2 * 3600),
        }
    }
}

/// `USD=100000,EUR=90000`: a currency code (any case) and an amount of at least 0.
fn amounts<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, i64>, D::Error> {
    let raw = String::deserialize(d)?;
    comma_separated(&raw)
        .map(|pair| {
            let parsed = pair.split_once('=').and_then(|(currency, amount)| {
                let currency = currency.trim().to_ascii_uppercase();
                let amount = amount.trim().parse::<i64>().ok().filter(|a| *a >= 0)?;
                (currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
                    .then_some((currency, amount))
            });
            parsed.ok_or_else(|| Error::custom(format!("{pair:?} is not CURRENCY=minor units")))
        })
        .collect()
}

/// `count/seconds`: a count of at least 0 within at least one second.
fn velocity<'de, D: Deserializer<'de>>(d: D) -> Result<Velocity, D::Error> {
    let raw = String::deserialize(d)?;
    raw.split_once('/')
        .and_then(|(count, secs)| {
            let count = count.trim().parse::<i64>().ok().filter(|c| *c >= 0)?;
            let window_secs = secs.trim().parse::<i64>().ok().filter(|s| *s > 0)?;
            Some(Velocity { count, window_secs })
        })
        .ok_or_else(|| Error::custom(format!("{raw:?} is not count/seconds")))
}

fn countries<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<String>, D::Error> {
    let countries = syntax::comma_list(d)?;
    Ok(countries.iter().map(|c| c.to_ascii_uppercase()).collect())
}

fn emails<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Personal<String>>, D::Error> {
    Ok(syntax::comma_list(d)?
        .into_iter()
        .map(Personal::new)
        .collect())
}

fn carrier_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    syntax::millis(d).map(|t| t.max(Duration::from_millis(1)))
}
