//! Why a configuration was refused. Every message about a value names the `ORDO_*` variable
//! it is set with (or, for a key only the file has, that key), whichever layer the value came
//! from: the operating contract documents the variables, so that is the name an operator knows.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("the {profile} profile requires {name}")]
    Missing {
        profile: &'static str,
        name: &'static str,
    },
}
