//! Settings layered from, in decreasing precedence, command-line flags, `HERALD_*` environment
//! variables, a TOML config file and defaults, over the serde form of any settings type, so a
//! command gets every field of its config settable from all four places without listing them.
//! `herald serve` uses it for the broker's config; other commands can for theirs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// Prefix of the environment variables that set settings (`HERALD_DATA_DIR`, ...).
const ENV_PREFIX: &str = "HERALD_";
/// Separates nested keys in environment variable names: `HERALD_A__B` sets `b` inside table `a`.
const ENV_NESTING: &str = "__";
/// Largest config file read; a settings file has no reason to be bigger.
const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Where a setting came from, for error messages that point at the right place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Why the settings could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is larger than {CONFIG_FILE_BYTES_MAX} bytes")]
    TooLarge { path: PathBuf },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown setting `{key}` in {origin}")]
    UnknownKey { key: String, origin: Origin },
    #[error("bad value for `{key}` in {origin}: {message}")]
    BadValue {
        key: String,
        origin: Origin,
        message: String,
    },
    #[error("invalid settings: {0}")]
    Invalid(String),
    #[error("the default settings cannot be listed: {0}")]
    Defaults(String),
}

/// Assembles settings of type `T` from, in increasing precedence: `defaults`, the TOML text of a
/// config file, `HERALD_*` environment variables, and command-line flags.
///
/// The keys `T` knows are found from `T` itself (its defaults serialized to TOML, and what
/// survives a round trip through `T`), so a new field in the broker's config becomes settable from
/// all three places without touching this function. A key in the file that `T` does not know is
/// an error (a typo must not silently keep the default); an environment variable that is not a
/// known key is ignored, because `HERALD_*` variables also configure the client commands.
pub fn layer<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<(&Path, &str)>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
    flags: Vec<(&'static str, &str, Value)>,
) -> Result<T, ConfigError> {
    let known =
        Table::try_from(defaults).map_err(|error| ConfigError::Defaults(error.to_string()))?;
    let mut merged = known.clone();
    // Every value set, with where it came from, in the order applied.
    let mut applied: Vec<(Vec<String>, Value, Origin)> = Vec::new();

    if let Some((path, text)) = file {
        let table: Table = text
            .parse()
            .map_err(|error: toml::de::Error| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: error.message().to_string(),
            })?;
        let origin = Origin::File(path.to_path_buf());
        leaves(&table, &mut Vec::new(), &mut |key, value| {
            applied.push((key, value, origin.clone()));
        });
        merge(&mut merged, table);
    }

    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    // Sorted so that the outcome does not depend on the environment's order.
    env.sort();
    for (name, text) in env {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split(ENV_NESTING)
            .map(str::to_ascii_lowercase)
            .collect();
        let value = match lookup(&known, &path) {
            Some(default) => {
                parse_like(default, &text).map_err(|message| ConfigError::BadValue {
                    key: path.join("."),
                    origin: Origin::Env(name.clone()),
                    message,
                })?
            }
            // Optional settings are absent from the defaults; they are strings when `T` keeps
            // them, and the variable belongs to someone else when it does not.
            None if accepts::<T>(&known, &path, &Value::String(text.clone())) => {
                Value::String(text)
            }
            None => continue,
        };
        set(&mut merged, &path, value.clone());
        applied.push((path, value, Origin::Env(name)));
    }

    for (flag, key, value) in flags {
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        set(&mut merged, &path, value.clone());
        applied.push((path, value, Origin::Flag(flag)));
    }

    let settings = match T::deserialize(Value::Table(merged)) {
        Ok(settings) => settings,
        Err(error) => {
            // Point at the value that does not fit, highest precedence first, when one alone
            // makes the defaults fail.
            for (path, value, origin) in applied.iter().rev() {
                if let Err(message) = deserialize_with::<T>(&known, path, value) {
                    if lookup(&known, path).is_none() && !accepts::<T>(&known, path, value) {
                        return Err(ConfigError::UnknownKey {
                            key: path.join("."),
                            origin: origin.clone(),
                        });
                    }
                    return Err(ConfigError::BadValue {
                        key: path.join("."),
                        origin: origin.clone(),
                        message,
                    });
                }
            }
            return Err(ConfigError::Invalid(error.to_string()));
        }
    };

    // A key `T` ignored is gone after a round trip: it was a typo or a setting that does not exist.
    let round_trip =
        Table::try_from(&settings).map_err(|error| ConfigError::Defaults(error.to_string()))?;
    for (path, _, origin) in &applied {
        if lookup(&round_trip, path).is_none() {
            return Err(ConfigError::UnknownKey {
                key: path.join("."),
                origin: origin.clone(),
            });
        }
    }
    Ok(settings)
}

/// Deserializes `T` from its defaults with one value changed, reporting why that fails.
fn deserialize_with<T: Serialize + DeserializeOwned>(
    known: &Table,
    path: &[String],
    value: &Value,
) -> Result<T, String> {
    let mut probe = known.clone();
    set(&mut probe, path, value.clone());
    T::deserialize(Value::Table(probe)).map_err(|error| error.message().to_string())
}

/// Whether `T` keeps `value` at `path` through a round trip (the key is one of its fields).
fn accepts<T: Serialize + DeserializeOwned>(known: &Table, path: &[String], value: &Value) -> bool {
    deserialize_with::<T>(known, path, value)
        .ok()
        .and_then(|settings| Table::try_from(&settings).ok())
        .is_some_and(|round_trip| lookup(&round_trip, path).is_some())
}

/// Calls `each` with the dotted path and value of every non-table value in `table`.
fn leaves(table: &Table, prefix: &mut Vec<String>, each: &mut impl FnMut(Vec<String>, Value)) {
    for (key, value) in table {
        prefix.push(key.clone());
        match value {
            Value::Table(inner) => leaves(inner, prefix, each),
            value => each(prefix.clone(), value.clone()),
        }
        prefix.pop();
    }
}

/// Merges `overlay` into `base`, key by key inside nested tables.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(inner)), Value::Table(overlay_inner)) => merge(inner, overlay_inner),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn lookup<'t>(table: &'t Table, path: &[String]) -> Option<&'t Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::Table(inner) => lookup(inner, rest),
        _ => None,
    }
}

fn set(table: &mut Table, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(inner) = entry {
        set(inner, rest, value);
    }
}

/// Parses an environment variable's text as a value of the same TOML type as the default, so
/// `HERALD_DATA_DIR=123` stays a string and `HERALD_RETENTION_MS=abc` is an error.
fn parse_like(default: &Value, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match default {
        Value::String(_) => Ok(Value::String(text.to_string())),
        Value::Integer(_) => text
            .replace('_', "")
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("`{text}` is not an integer")),
        Value::Float(_) => text
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("`{text}` is not a number")),
        Value::Boolean(_) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{text}` is not true or false")),
        },
        Value::Datetime(_) | Value::Array(_) | Value::Table(_) => {
            // Structured values are written in TOML syntax: HERALD_X='[1, 2]' or '{ a = 1 }'.
            let table: Table = format!("value = {text}")
                .parse()
                .map_err(|error: toml::de::Error| error.message().to_string())?;
            table
                .get("value")
                .cloned()
                .ok_or_else(|| "empty value".to_string())
        }
    }
}

/// Reads a config file, refusing files above [`CONFIG_FILE_BYTES_MAX`].
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

/// One line per setting of `defaults`, for a command's help: `key = default`, then the
/// environment variable that sets it.
pub fn help_lines<T: Serialize>(defaults: &T) -> Vec<String> {
    let mut lines = Vec::new();
    if let Ok(defaults) = Table::try_from(defaults) {
        leaves(&defaults, &mut Vec::new(), &mut |path, value| {
            let shown = match &value {
                Value::String(text) => format!("\"{text}\""),
                other => other.to_string(),
            };
            let key = path.join(".");
            let env = format!(
                "{ENV_PREFIX}{}",
                path.join(ENV_NESTING).to_ascii_uppercase()
            );
            lines.push(format!("  {:<50} {env}", format!("{key} = {shown}")));
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        data_dir: String,
        retention_ms: u64,
        auto_create: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        advertised_host: Option<String>,
        limits: Limits,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        request_bytes_max: u64,
    }

    fn defaults() -> Settings {
        Settings {
            data_dir: "./herald-data".into(),
            retention_ms: 1000,
            auto_create: true,
            advertised_host: None,
            limits: Limits {
                request_bytes_max: 100,
            },
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn defaults_stand_when_nothing_is_set() {
        let got = layer(&defaults(), None, env(&[]), vec![]).unwrap();
        assert_eq!(got, defaults());
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = "data_dir = \"from-file\"\nretention_ms = 5\n[limits]\nrequest_bytes_max = 7\n";
        let path = Path::new("herald.toml");
        let got = layer(
            &defaults(),
            Some((path, file)),
            env(&[
                ("HERALD_DATA_DIR", "from-env"),
                ("HERALD_RETENTION_MS", "9"),
            ]),
            vec![("--data-dir", "data_dir", Value::String("from-flag".into()))],
        )
        .unwrap();
        assert_eq!(got.data_dir, "from-flag");
        assert_eq!(got.retention_ms, 9);
        assert_eq!(got.limits.request_bytes_max, 7);
        assert!(got.auto_create);
    }

    #[test]
    fn nested_env_keys_use_a_double_underscore() {
        let got = layer(
            &defaults(),
            None,
            env(&[
                ("HERALD_LIMITS__REQUEST_BYTES_MAX", "4_096"),
                ("HERALD_AUTO_CREATE", "off"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(got.limits.request_bytes_max, 4096);
        assert!(!got.auto_create);
    }

    #[test]
    fn unrelated_env_variables_are_ignored() {
        let got = layer(
            &defaults(),
            None,
            env(&[
                ("HERALD_BOOTSTRAP", "x:1"),
                ("PATH", "/bin"),
                ("HERALD_", ""),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(got, defaults());
    }

    #[test]
    fn unknown_file_key_names_the_key_and_the_file() {
        let error = layer(
            &defaults(),
            Some((Path::new("a.toml"), "[limits]\nrequest_byte_max = 1\n")),
            env(&[]),
            vec![],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown setting `limits.request_byte_max` in config file a.toml"
        );
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let error = layer(
            &defaults(),
            None,
            env(&[("HERALD_RETENTION_MS", "soon")]),
            vec![],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "bad value for `retention_ms` in environment variable HERALD_RETENTION_MS: `soon` is not an integer"
        );
    }

    #[test]
    fn wrong_type_in_file_names_the_key_and_the_file() {
        let error = layer(
            &defaults(),
            Some((Path::new("a.toml"), "retention_ms = \"long\"\n")),
            env(&[]),
            vec![],
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("bad value for `retention_ms` in config file a.toml: "),
            "{message}"
        );
    }

    #[test]
    fn optional_settings_absent_from_the_defaults_are_known() {
        let got = layer(
            &defaults(),
            Some((Path::new("a.toml"), "advertised_host = \"file\"\n")),
            env(&[]),
            vec![],
        )
        .unwrap();
        assert_eq!(got.advertised_host.as_deref(), Some("file"));
        let got = layer(
            &defaults(),
            None,
            env(&[("HERALD_ADVERTISED_HOST", "env")]),
            vec![],
        )
        .unwrap();
        assert_eq!(got.advertised_host.as_deref(), Some("env"));
    }

    #[test]
    fn syntax_error_is_reported() {
        let error = layer(
            &defaults(),
            Some((Path::new("a.toml"), "retention_ms = = 3")),
            env(&[]),
            vec![],
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::Syntax { .. }), "{error}");
    }
}
