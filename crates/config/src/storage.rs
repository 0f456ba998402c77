//! Where state lives: the database and the Redis read cache.

use crate::{SecretUrl, syntax};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StorageSettings {
    /// `sqlite://PATH` or `postgres://...` (`ORDO_DATABASE_URL`).
    pub database_url: SecretUrl,
    /// Pool size (`ORDO_DATABASE_MAX_CONNECTIONS`, kept within 1..=1024).
    #[serde(deserialize_with = "syntax::clamped::<_, 1, 1024>")]
    pub database_max_connections: u32,
    /// Redis for the shared read cache and rate limits (`ORDO_REDIS_URL`); unset: in process.
    pub redis_url: Option<SecretUrl>,
    /// The prefix of the cache's keys in Redis, so that several deployments (or test runs) can
    /// share one Redis (`ORDO_REDIS_NAMESPACE`).
    #[serde(deserialize_with = "syntax::namespace")]
    pub redis_namespace: String,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            database_url: SecretUrl::new("sqlite://data/ordo.db"),
            database_max_connections: 16,
            redis_url: None,
            redis_namespace: syntax::DEFAULT_NAMESPACE.to_owned(),
        }
    }
}
