//! The environment overlay: every `ORDO_*` variable of the operating contract, read into a TOML
//! table shaped like the file, so that one deserialization fills each section whichever layer
//! a value came from.
//!
//! A variable's file key is its name without `ORDO_`, in lower case (`ORDO_HTTP_ADDR` →
//! `http_addr`), as the README documents. [`VARIABLES`] is the one list of variables: adding a
//! setting is a field in its section plus a line here. Only the text syntax differs between the
//! layers (comma-separated API keys, `yes`/`on` for a switch), and [`Kind`] says which one a
//! variable uses.

use crate::ConfigError;
use toml::{Table, Value};

/// How a variable's text becomes the TOML value the file would hold for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Taken as it is; its section parses it (an address, a comma-separated list, a secret).
    Text,
    /// A whole number, as a TOML integer.
    Whole,
    /// `true`/`false`, `1`/`0`, `on`/`off`, `yes`/`no`, as a TOML boolean.
    Switch,
    /// A comma-separated list, as a TOML array of strings (the file writes an array). Set but
    /// empty, it is an empty list (no API keys), not "unset".
    List,
}

pub(crate) struct Variable {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

const fn var(name: &'static str, kind: Kind) -> Variable {
    Variable { name, kind }
}

use Kind::{List, Switch, Text, Whole};

/// Every variable, grouped by the section that reads it.
pub(crate) const VARIABLES: &[Variable] = &[
    // process
    var("ORDO_PROFILE", Text),
    var("ORDO_LOG_FORMAT", Text),
    // server
    var("ORDO_HTTP_ADDR", Text),
    var("ORDO_GRPC_ADDR", Text),
    var("ORDO_ADMIN_ADDR", Text),
    var("ORDO_MAX_BODY_BYTES", Whole),
    var("ORDO_REQUEST_TIMEOUT_MS", Whole),
    var("ORDO_SHUTDOWN_DRAIN_SECS", Whole),
    var("ORDO_CORS_ALLOWED_ORIGINS", Text),
    // access
    var("ORDO_ADMIN_TOKEN", Text),
    var("ORDO_API_KEYS", List),
    // limits
    var("ORDO_MAX_IN_FLIGHT", Whole),
    var("ORDO_MAX_CONNECTIONS", Whole),
    var("ORDO_MAX_CONNECTIONS_PER_CLIENT", Whole),
    var("ORDO_HEADER_READ_TIMEOUT_MS", Whole),
    var("ORDO_SHED_ADAPTIVE", Switch),
    var("ORDO_SHED_CPU_THRESHOLD", Whole),
    // storage
    var("ORDO_DATABASE_URL", Text),
    var("ORDO_DATABASE_MAX_CONNECTIONS", Whole),
    var("ORDO_REDIS_URL", Text),
    var("ORDO_REDIS_NAMESPACE", Text),
    // events
    var("ORDO_BROKER_URL", Text),
    var("ORDO_BROKER_NAMESPACE", Text),
    var("ORDO_OUTBOX_RETRY_BASE_MS", Whole),
    // topology
    var("ORDO_ROLES", Text),
    var("ORDO_DISCOVERY", Text),
    var("ORDO_DISCOVERY_NAMESPACE", Text),
    var("ORDO_PEERS_ORDERS", Text),
    var("ORDO_PEERS_INVENTORY", Text),
    var("ORDO_PEERS_PAYMENTS", Text),
    var("ORDO_GRPC_ADVERTISE_ADDR", Text),
    // orders
    var("ORDO_POS_OFFLINE_WINDOW_HOURS", Whole),
    var("ORDO_SAGA_STUCK_AFTER_SECS", Whole),
    // payments
    var("ORDO_PAYMENT_WEBHOOK_SECRET", Text),
    var("ORDO_SANDBOX_SECRET", Text),
    var("ORDO_SANDBOX_PAYMENT_DELAY_MS", Whole),
    var("ORDO_PAYMENT_TIMEOUT_SECS", Whole),
    // fulfillment
    var("ORDO_RISK_MAX_AMOUNT", Text),
    var("ORDO_RISK_VELOCITY", Text),
    var("ORDO_RISK_BLOCKED_COUNTRIES", Text),
    var("ORDO_RISK_BLOCKED_EMAILS", Text),
    var("ORDO_CARRIER_WEBHOOK_URL", Text),
    var("ORDO_CARRIER_WEBHOOK_SECRET", Text),
    var("ORDO_CARRIER_TIMEOUT_MS", Whole),
    var("ORDO_CARRIER_RETRY_BASE_MS", Whole),
    var("ORDO_CARRIER_MAX_ATTEMPTS", Whole),
    var("ORDO_CARRIER_BREAKER_THRESHOLD", Whole),
    var("ORDO_CARRIER_BREAKER_COOLDOWN_MS", Whole),
    var("ORDO_PICKUP_LEAD_SECS", Whole),
    // live (also re-read from the file on SIGHUP)
    var("ORDO_RATE_LIMIT_PER_SECOND", Whole),
    var("ORDO_RATE_LIMIT_BURST", Whole),
];

impl Variable {
    /// The key of this variable in the file.
    pub(crate) fn key(&self) -> String {
        self.name["ORDO_".len()..].to_ascii_lowercase()
    }

    /// The value of `raw` for the file's key; `None`: unset (empty text is unset, except for
    /// a list).
    fn value(&self, raw: String) -> Result<Option<Value>, ConfigError> {
        if raw.is_empty() && self.kind != List {
            return Ok(None);
        }
        let invalid = |reason: String| ConfigError::Invalid {
            name: self.name,
            reason,
        };
        let value = match self.kind {
            Text => Value::String(raw),
            Whole => {
                let n = raw
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| invalid(format!("{raw:?} is not a whole number: {e}")))?;
                // TOML integers are signed; no setting means anything near 2^63.
                Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
            }
            Switch => match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "on" | "yes" => Value::Boolean(true),
                "0" | "false" | "off" | "no" => Value::Boolean(false),
                _ => return Err(invalid(format!("{raw:?} is neither true nor false"))),
            },
            List => Value::Array(
                comma_separated(&raw)
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            ),
        };
        Ok(Some(value))
    }
}

/// The values `env` sets, keyed as in the file.
pub(crate) fn overlay(env: impl Fn(&str) -> Option<String>) -> Result<Table, ConfigError> {
    let mut table = Table::new();
    for variable in VARIABLES {
        if let Some(value) = env(variable.name)
            .map(|raw| variable.value(raw))
            .transpose()?
            .flatten()
        {
            table.insert(variable.key(), value);
        }
    }
    Ok(table)
}

/// The variable that sets file key `key`, if any.
pub(crate) fn variable_of(key: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .find(|variable| variable.key() == key)
        .map(|variable| variable.name)
}

/// The items of a comma-separated list, trimmed, empty ones left out.
pub(crate) fn comma_separated(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variable_is_named_once_and_keys_follow_the_documented_rule() {
        let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VARIABLES.len(), "a variable is listed twice");
        assert_eq!(variable_of("http_addr"), Some("ORDO_HTTP_ADDR"));
        assert_eq!(variable_of("log_filter"), None);
    }

    #[test]
    fn text_becomes_the_value_the_file_would_hold() {
        let lookup = |name: &str| {
            match name {
                "ORDO_MAX_IN_FLIGHT" => Some(" 12 "),
                "ORDO_SHED_ADAPTIVE" => Some("Off"),
                "ORDO_API_KEYS" => Some(" a, ,b "),
                "ORDO_HTTP_ADDR" => Some(""),
                "ORDO_ROLES" => Some("edge"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let table = overlay(lookup).unwrap();
        assert_eq!(table["max_in_flight"], Value::Integer(12));
        assert_eq!(table["shed_adaptive"], Value::Boolean(false));
        assert_eq!(
            table["api_keys"],
            Value::Array(vec!["a".into(), "b".into()])
        );
        assert_eq!(table["roles"], Value::String("edge".into()));
        assert!(!table.contains_key("http_addr"), "empty is unset");
        let empty_keys = overlay(|name| (name == "ORDO_API_KEYS").then(String::new)).unwrap();
        assert_eq!(empty_keys["api_keys"], Value::Array(vec![]));
    }
}
