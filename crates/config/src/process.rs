//! The process as a whole: which profile's rules apply and how logs are written.

use serde::Deserialize;
use std::str::FromStr;

/// `dev` (the default) runs with open defaults meant for a laptop; `staging` and `prod` refuse
/// to start without the secrets that close them (see [`crate::Config::load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Profile {
    #[default]
    Dev,
    Staging,
    Prod,
}

impl Profile {
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        }
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        [Profile::Dev, Profile::Staging, Profile::Prod]
            .into_iter()
            .find(|profile| profile.as_str() == raw)
            .ok_or_else(|| format!("{raw:?} is not one of dev, staging, prod"))
    }
}

impl TryFrom<String> for Profile {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        raw.parse()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// JSON lines on stdout, for machines (the default).
    #[default]
    Json,
    Pretty,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        match raw.as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(format!("{raw:?} is neither \"json\" nor \"pretty\"")),
        }
    }
}

/// `profile` and `log_format` (`ORDO_PROFILE`, `ORDO_LOG_FORMAT`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ProcessSettings {
    pub(crate) profile: Profile,
    pub(crate) log_format: LogFormat,
}
