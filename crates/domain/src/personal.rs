//! Declarative marking of personal data.
//!
//! A field typed [`Personal<T>`] holds a value that identifies a person (a name, an email, a
//! phone number, an address line). Formatting it — `Debug`, `Display`, and so every `tracing`
//! field, log line, span attribute or error message built from it — prints `[personal]`, never
//! the value. The value is reached only through [`Personal::expose`], which makes every place
//! that lets it out (storage, the response to its owner) visible in a search. Serialization is
//! transparent: the JSON of the API and of storage is the plain value.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What an erased personal value becomes.
pub const ERASED: &str = "[erased]";

#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Personal<T>(T);

impl<T> Personal<T> {
    pub fn new(value: T) -> Self {
        Personal(value)
    }

    /// The value itself: only for storing it and for answering its owner.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_exposed(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[personal]")
    }
}

impl<T> fmt::Display for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[personal]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let email = Personal::new("somchai@example.com".to_owned());
        assert_eq!(format!("{email}"), "[personal]");
        assert_eq!(format!("{email:?}"), "[personal]");
        assert_eq!(format!("{:?}", Some(&email)), "Some([personal])");
    }

    #[test]
    fn serialization_is_the_plain_value() {
        let name = Personal::new("สมชาย".to_owned());
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, "\"สมชาย\"");
        let back: Personal<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "สมชาย");
    }
}
