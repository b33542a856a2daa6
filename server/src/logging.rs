//! Log output: human-readable lines (default) or one JSON object per line,
//! filtered with the tracing `EnvFilter` syntax.
//!
//! Sessions, rooms and members are tracing spans and fields, so every line a
//! session logs carries them; audit events use the target `chorus::audit`
//! and a stable `event` field. This module only sets the subscriber up: it
//! decides nothing about what is logged, and never formats a secret (secrets
//! are redacted where they are held, see `access::Secret`).

use std::str::FromStr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-11-22T01:02:03Z  INFO chorus::audit: event="member_kicked" ...`
    #[default]
    Human,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (human or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        })
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("a log subscriber is already installed")]
    AlreadySet,
}

/// Installs the process-wide subscriber, writing to standard output (where
/// service managers collect it).
pub fn init(filter: &str, format: LogFormat) -> Result<(), LoggingError> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| LoggingError::Filter {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("human".parse::<LogFormat>(), Ok(LogFormat::Human));
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn a_bad_filter_is_named() {
        let err = init("chorus=loud", LogFormat::Human).expect_err("bad filter");
        assert!(err.to_string().contains("chorus=loud"), "{err}");
    }
}
