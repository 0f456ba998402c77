//! Configuration of ordo, resolved once at start-up in three layers, later ones winning:
//! the defaults, an optional TOML file, then the environment variables of the operating
//! contract (`ORDO_*`). The `staging` and `prod` profiles keep the same defaults but refuse to
//! start without the secrets that close the open ones.
//!
//! Invariant: a [`Config`] that exists is complete and consistent; nothing else in ordo reads
//! configuration from the environment (the standard `OTEL_*` variables excepted, which the
//! telemetry crate reads as the OpenTelemetry specification says).
//!
//! # Layout
//! - One section per component, each a serde struct whose `Default` is the one place its
//!   defaults are written and whose field types check its values: [`ServerSettings`],
//!   [`AccessSettings`], [`LimitSettings`], [`StorageSettings`], [`EventSettings`],
//!   [`Topology`], [`OrderSettings`], [`PaymentSettings`], [`FulfillmentSettings`],
//!   [`LiveSettings`]. The components take their section as it is.
//! - `env`: the table of `ORDO_*` variables, read into the file's shape.
//! - `layers`: the file, the environment over it, and a section read from both.
//! - `secret`: [`Secret`] and [`SecretUrl`], which never print what they hold.

mod access;
mod env;
mod error;
mod events;
mod fulfillment;
mod layers;
mod limits;
mod live;
mod orders;
mod payments;
mod process;
mod roles;
mod secret;
mod server;
mod storage;
mod syntax;

pub use access::AccessSettings;
pub use error::ConfigError;
pub use events::EventSettings;
pub use fulfillment::FulfillmentSettings;
pub use limits::LimitSettings;
pub use live::{LiveSettings, RateLimit};
pub use orders::OrderSettings;
pub use payments::PaymentSettings;
pub use process::{LogFormat, Profile};
pub use roles::{Role, Topology};
pub use secret::{ExposeSecret, REDACTED, Secret, SecretUrl, redact_url};
pub use server::ServerSettings;
pub use storage::StorageSettings;

use layers::{field_names, keys_of, lay, section};
use live::LiveKeys;
use process::ProcessSettings;
use std::path::{Path, PathBuf};
use toml::Table;

/// `Debug` prints no secret (tokens, keys, passwords) and no personal data: a logged
/// configuration is safe.
#[derive(Debug, Clone)]
pub struct Config {
    pub profile: Profile,
    pub log_format: LogFormat,
    pub server: ServerSettings,
    pub access: AccessSettings,
    pub limits: LimitSettings,
    pub storage: StorageSettings,
    pub events: EventSettings,
    pub topology: Topology,
    pub orders: OrderSettings,
    pub payments: PaymentSettings,
    pub fulfillment: FulfillmentSettings,
    pub live: LiveSettings,
    /// The file the configuration came from; SIGHUP re-reads its [`LiveSettings`].
    pub file: Option<PathBuf>,
    /// The environment's values of the live keys: a reload takes the file's value, and this
    /// one where the file names none.
    live_from_env: Table,
}

/// Every key a file may hold: the keys of every section.
fn file_keys() -> Vec<&'static str> {
    [
        field_names::<ProcessSettings>(),
        field_names::<ServerSettings>(),
        field_names::<AccessSettings>(),
        field_names::<LimitSettings>(),
        field_names::<StorageSettings>(),
        field_names::<EventSettings>(),
        field_names::<Topology>(),
        field_names::<OrderSettings>(),
        field_names::<PaymentSettings>(),
        field_names::<FulfillmentSettings>(),
        field_names::<LiveKeys>(),
    ]
    .concat()
}

impl Config {
    /// Resolves the configuration from `file` (if any) and `env` (a lookup, so tests need not
    /// touch the process environment).
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let from_file = match file {
            Some(path) => layers::read_file(path, &file_keys())?,
            None => Table::new(),
        };
        let from_env = env::overlay(env)?;
        let layered = lay(&from_env, &from_file);
        let ProcessSettings {
            profile,
            log_format,
        } = section(&layered)?;
        let config = Config {
            profile,
            log_format,
            live: section::<LiveKeys>(&layered)?.try_into()?,
            server: section(&layered)?,
            access: section(&layered)?,
            limits: section(&layered)?,
            storage: section(&layered)?,
            events: section(&layered)?,
            topology: section(&layered)?,
            orders: section(&layered)?,
            payments: section(&layered)?,
            fulfillment: section(&layered)?,
            file: file.map(Path::to_path_buf),
            live_from_env: keys_of::<LiveKeys>(&from_env),
        };
        config.check_profile()?;
        Ok(config)
    }

    /// Re-reads the live settings from the configuration file (SIGHUP). Without a file there
    /// is nothing to reload.
    pub fn reload_live(&self) -> Result<Option<LiveSettings>, ConfigError> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let from_file = layers::read_file(path, &file_keys())?;
        let keys: LiveKeys = section(&lay(&from_file, &self.live_from_env))?;
        keys.try_into().map(Some)
    }

    /// Staging and production refuse to start with the open defaults meant for a laptop.
    fn check_profile(&self) -> Result<(), ConfigError> {
        let profile = self.profile.as_str();
        if self.profile == Profile::Dev {
            return Ok(());
        }
        if self.access.admin_token.is_none() {
            return Err(ConfigError::Missing {
                profile,
                name: "ORDO_ADMIN_TOKEN",
            });
        }
        if self.profile == Profile::Prod && self.access.api_keys.is_empty() {
            return Err(ConfigError::Missing {
                profile,
                name: "ORDO_API_KEYS",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
