//! Who may call: the API keys of the public API and the admin port's token. Both are
//! [`Secret`]s.

use crate::Secret;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AccessSettings {
    /// Bearer token for the admin port's metrics and debug endpoints (`ORDO_ADMIN_TOKEN`);
    /// `None` leaves them open (dev only).
    pub admin_token: Option<Secret>,
    /// API keys accepted on the public API (`ORDO_API_KEYS`, comma-separated; in the file an
    /// array); empty means the API is open (dev only).
    pub api_keys: Vec<Secret>,
}
