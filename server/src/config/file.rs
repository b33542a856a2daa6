//! The configuration file: a TOML table whose keys are setting names. Every
//! key is checked before any value is used: an unknown key, a value of the
//! wrong TOML type and a value its setting refuses are errors that name the
//! key. Checked values become command-line arguments for clap, so the file
//! and the flags end in the same typed [`super::Settings`].

use super::range::invalid_value;
use super::{ConfigError, Kind, Source, is_secret, setting_name, settings_of};
use clap::{Arg, Command};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A checked configuration file.
#[derive(Debug)]
pub(super) struct ConfigFile {
    pub path: PathBuf,
    entries: Vec<Entry>,
}

/// One setting from the file, as the arguments that give it to clap (none
/// for a switch set to `false`).
#[derive(Debug)]
pub(super) struct Entry {
    pub name: String,
    pub args: Vec<OsString>,
}

impl ConfigFile {
    /// Reads and checks `path` against the settings of `settings`.
    pub fn load(path: &Path, settings: &Command) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::parse(path, &text, settings)
    }

    /// Checks the TOML `text` (read from `path`) against the settings of
    /// `settings`.
    pub fn parse(path: &Path, text: &str, settings: &Command) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::Invalid(format!("config file {}: {e}", path.display()))
        })?;
        let source = Source::File(path.to_owned());
        let mut entries = Vec::new();
        for (key, value) in &table {
            let arg = settings_of(settings)
                .find(|arg| setting_name(arg) == *key)
                .ok_or_else(|| unknown_key(key, settings, path))?;
            entries.push(Entry {
                name: key.clone(),
                args: to_args(arg, key, value, &source)?,
            });
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            entries,
        })
    }

    /// The file's value for the setting `name`, if it has one.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.name == name)
    }
}

/// The arguments that give `value` to the setting `arg`, once checked.
fn to_args(
    arg: &Arg,
    key: &str,
    value: &toml::Value,
    source: &Source,
) -> Result<Vec<OsString>, ConfigError> {
    let long = arg.get_long().unwrap_or_default();
    let kind = Kind::of(arg);
    let wrong_type = |found: &toml::Value| {
        ConfigError::Invalid(format!(
            "invalid type for {key} (from {source}): expected {}, found {}",
            kind.toml_type(),
            with_article(found.type_str())
        ))
    };
    let given = |text: &str| OsString::from(format!("--{long}={text}"));
    match kind {
        Kind::Switch => match value.as_bool() {
            Some(true) => Ok(vec![OsString::from(format!("--{long}"))]),
            Some(false) => Ok(Vec::new()),
            None => Err(wrong_type(value)),
        },
        Kind::Integer(range) => {
            let number = value
                .as_integer()
                .ok_or_else(|| wrong_type(value))?
                .to_string();
            range.parse(&number).map_err(|reason| {
                ConfigError::Invalid(invalid_value(key, source, &number, &reason))
            })?;
            Ok(vec![given(&number)])
        }
        Kind::Text => {
            let text = value.as_str().ok_or_else(|| wrong_type(value))?;
            check_value(arg, key, text, source)?;
            Ok(vec![given(text)])
        }
        Kind::List => {
            let items = value.as_array().ok_or_else(|| wrong_type(value))?;
            if items.is_empty() && !arg.get_default_values().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "{key} (from {source}) cannot be empty; leave it out for the default"
                )));
            }
            items
                .iter()
                .map(|item| {
                    let text = item.as_str().ok_or_else(|| wrong_type(item))?;
                    if text.contains(',') {
                        let shown = if is_secret(arg) { "<redacted>" } else { text };
                        return Err(ConfigError::Invalid(invalid_value(
                            key,
                            source,
                            shown,
                            "an item cannot contain a comma",
                        )));
                    }
                    check_value(arg, key, text, source)?;
                    Ok(given(text))
                })
                .collect()
        }
    }
}

/// Runs `text` through the setting's own clap value parser, alone, so a
/// value the flag would refuse is refused from the file too.
fn check_value(arg: &Arg, key: &str, text: &str, source: &Source) -> Result<(), ConfigError> {
    let probe = Command::new("chorus")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            arg.clone()
                .env(None)
                .default_value(None)
                .value_delimiter(None)
                .required(false),
        );
    let flag = format!("--{}={text}", arg.get_long().unwrap_or_default());
    match probe.try_get_matches_from([flag]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let reason = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.kind().to_string());
            let shown = if is_secret(arg) { "<redacted>" } else { text };
            Err(ConfigError::Invalid(invalid_value(
                key, source, shown, &reason,
            )))
        }
    }
}

fn unknown_key(key: &str, settings: &Command, path: &Path) -> ConfigError {
    let closest = settings_of(settings)
        .map(setting_name)
        .map(|name| (edit_distance(key, &name), name))
        .min();
    let hint = match closest {
        Some((distance, name)) if distance <= 3 => format!("did you mean '{name}'?"),
        _ => "`chorus config --print-defaults` lists every setting".to_owned(),
    };
    ConfigError::Invalid(format!(
        "unknown setting '{key}' in config file {} ({hint})",
        path.display()
    ))
}

fn with_article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

/// Levenshtein distance, for suggesting a setting for a misspelt key.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("room_idle_ttl_sec", "room_idle_ttl_secs"), 1);
        assert_eq!(edit_distance("max_romos", "max_rooms"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
