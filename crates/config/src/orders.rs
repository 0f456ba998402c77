//! Orders past their creation: how old a POS terminal's sale may be, and how long an order may
//! sit in a stage of the fulfillment saga before the watchdog re-drives it.

use crate::syntax;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OrderSettings {
    /// How old (hours) a POS terminal's sale may be when its batch arrives
    /// (`ORDO_POS_OFFLINE_WINDOW_HOURS`, at least 1).
    #[serde(deserialize_with = "syntax::at_least_one")]
    pub pos_offline_window_hours: u64,
    /// How long an order may sit in a stage of the saga before the watchdog re-drives it
    /// (`ORDO_SAGA_STUCK_AFTER_SECS`, at least 1).
    #[serde(
        rename = "saga_stuck_after_secs",
        deserialize_with = "syntax::secs_at_least_one"
    )]
    pub saga_stuck_after: Duration,
}

impl Default for OrderSettings {
    fn default() -> Self {
        OrderSettings {
            pos_offline_window_hours: ordo_domain::pos::DEFAULT_OFFLINE_WINDOW_HOURS,
            saga_stuck_after: Duration::from_secs(300),
        }
    }
}
