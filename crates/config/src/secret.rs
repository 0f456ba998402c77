//! Secrets of the configuration: API keys, the admin token, signing secrets, and URLs that may
//! carry a password.
//!
//! One rule for all of them: formatting never shows the secret, and every secret prints the
//! same text, [`REDACTED`]. A [`Secret`] prints as `***`; a [`SecretUrl`] prints without its
//! password (`postgres://ordo:***@db/ordo`), because the rest of a URL says which server is
//! meant, which an operator needs in a log line or an error. The value itself is reached only
//! through [`ExposeSecret::expose_secret`], so every place that lets one out shows in a search.
//! The memory is wiped when a secret is dropped (`secrecy`).

use secrecy::SecretString;
use serde::Deserialize;
use std::fmt;

pub use secrecy::ExposeSecret;

/// What a secret, or the password of a URL, prints as.
pub const REDACTED: &str = "***";

/// A secret string; `Debug` prints [`REDACTED`].
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }
}

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A URL that may carry a password (`postgres://user:pass@host/db`). `Debug` and `Display`
/// print it without the password, so it can name its server in messages.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(Secret::new(url))
    }
}

impl ExposeSecret<str> for SecretUrl {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(self.expose_secret()), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.expose_secret()))
    }
}

/// `url` without its password, for messages, logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:{REDACTED}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://ordo:s3cret@db:5432/ordo"),
            "postgres://ordo:***@db:5432/ordo"
        );
        assert_eq!(redact_url("sqlite://data/ordo.db"), "sqlite://data/ordo.db");
        let url = SecretUrl::new("amqp://guest:s3cret@mq:5672/%2f");
        assert_eq!(url.to_string(), "amqp://guest:***@mq:5672/%2f");
        assert_eq!(format!("{url:?}"), "\"amqp://guest:***@mq:5672/%2f\"");
        assert_eq!(url.expose_secret(), "amqp://guest:s3cret@mq:5672/%2f");
    }

    #[test]
    fn a_secret_prints_the_one_redaction_text() {
        let secret = Secret::new("s3cret");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.expose_secret(), "s3cret");
    }
}
