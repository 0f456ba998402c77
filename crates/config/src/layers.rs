//! The layers and how a section is filled from them. The file and the environment are each a
//! flat TOML table keyed as the file is; the environment's table is laid over the file's, and
//! every section deserializes from the result, taking its own keys (its `Default` fills the
//! rest). Validation lives in the sections' field types, so a value is checked the same way
//! whichever layer set it.
//!
//! A section is not told which keys belong to others, so unknown keys are refused here, when the
//! file is read, against the keys of every section.

use crate::{ConfigError, env};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use std::path::Path;
use toml::Table;

/// The file at `path` as a table; a key outside `known` is refused, as a misspelt key must not
/// silently leave its default in force.
pub(crate) fn read_file(path: &Path, known: &[&str]) -> Result<Table, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let parse_error = |source| ConfigError::Parse {
        path: shown.clone(),
        source: Box::new(source),
    };
    let table: Table = toml::from_str(&text).map_err(parse_error)?;
    if let Some(key) = table.keys().find(|key| !known.contains(&key.as_str())) {
        return Err(parse_error(de::Error::custom(format!(
            "unknown key `{key}`: keys are the ORDO_* variables without `ORDO_`, in lower case, \
             and {}",
            file_only_keys(known).join(", ")
        ))));
    }
    Ok(table)
}

/// The keys that have no variable (the live log filter and sampling ratio).
pub(crate) fn file_only_keys<'k>(known: &[&'k str]) -> Vec<&'k str> {
    known
        .iter()
        .copied()
        .filter(|key| env::variable_of(key).is_none())
        .collect()
}

/// `over`'s values where it has them, `under`'s elsewhere.
pub(crate) fn lay(over: &Table, under: &Table) -> Table {
    let mut merged = under.clone();
    merged.extend(over.iter().map(|(key, value)| (key.clone(), value.clone())));
    merged
}

/// The entries of `table` that section `S` reads.
pub(crate) fn keys_of<S: DeserializeOwned>(table: &Table) -> Table {
    let fields = field_names::<S>();
    table
        .iter()
        .filter(|(key, _)| fields.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Section `S` from `table`. A value that does not parse is refused with the name of its
/// variable (or its key, for a key only the file has) and the section's reason.
pub(crate) fn section<S: DeserializeOwned>(table: &Table) -> Result<S, ConfigError> {
    serde_path_to_error::deserialize(table.clone()).map_err(|error| {
        let key = error.path().iter().next().map(ToString::to_string);
        let name = key
            .as_deref()
            .and_then(|key| {
                env::variable_of(key)
                    .or_else(|| field_names::<S>().iter().copied().find(|f| *f == key))
            })
            .unwrap_or("the configuration");
        ConfigError::Invalid {
            name,
            reason: error.inner().message().trim_end().to_owned(),
        }
    })
}

/// The keys a struct deserializes (what `#[derive(Deserialize)]` hands the deserializer): asked
/// of the struct itself, so no list of keys is kept beside the sections.
pub(crate) fn field_names<S: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = S::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that only records the field names of the struct asked of it.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default)]
    struct Sample {
        #[serde(rename = "http_addr")]
        _address: String,
        log_filter: Option<u32>,
    }

    #[test]
    fn a_struct_tells_its_keys() {
        assert_eq!(field_names::<Sample>(), ["http_addr", "log_filter"]);
    }

    #[test]
    fn the_upper_layer_wins_and_errors_name_the_variable_or_the_key() {
        let file: Table = toml::from_str("http_addr = \"file\"\nlog_filter = 1").unwrap();
        let env: Table = toml::from_str("http_addr = \"env\"").unwrap();
        let merged = lay(&env, &file);
        assert_eq!(merged["http_addr"].as_str(), Some("env"));
        assert_eq!(merged["log_filter"].as_integer(), Some(1));

        let bad: Table = toml::from_str("http_addr = 5").unwrap();
        let err = section::<Sample>(&bad).unwrap_err();
        assert!(
            err.to_string().starts_with("ORDO_HTTP_ADDR is not valid: "),
            "{err}"
        );
        let bad: Table = toml::from_str("log_filter = \"x\"").unwrap();
        let err = section::<Sample>(&bad).unwrap_err();
        assert!(
            err.to_string().starts_with("log_filter is not valid: "),
            "{err}"
        );
    }
}
