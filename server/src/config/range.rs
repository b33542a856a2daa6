//! Allowed ranges of integer settings, and the clap value parser that
//! enforces one on a flag or an environment variable with the same message
//! the configuration file gets: the setting, where the value came from, the
//! value and the allowed range.

use super::Source;
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use std::ffi::OsStr;
use std::fmt;
use std::marker::PhantomData;

/// Inclusive bounds of an integer setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    /// `min` to `max`, both included.
    pub const fn new(min: u64, max: u64) -> Self {
        Range { min, max }
    }

    /// `min` or more (up to what the setting's type holds).
    pub const fn at_least(min: u64) -> Self {
        Range { min, max: u64::MAX }
    }

    /// The same range, no higher than `type_max`.
    pub fn clamp_to(self, type_max: u64) -> Self {
        Range {
            min: self.min,
            max: self.max.min(type_max),
        }
    }

    /// Whether `value` is allowed.
    pub fn contains(&self, value: u64) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// Parses `text` as a whole number within the range; the error says why
    /// not and what is allowed.
    pub fn parse(&self, text: &str) -> Result<u64, String> {
        match text.trim().parse::<i128>() {
            Ok(value) if value > i128::from(self.max) => {
                Err(format!("allowed range: {} to {}", self.min, self.max))
            }
            Ok(value) => match u64::try_from(value) {
                Ok(value) if self.contains(value) => Ok(value),
                _ => Err(self.allowed()),
            },
            Err(_) => Err(format!("not a whole number; {}", self.allowed())),
        }
    }

    /// "allowed range: 60 to 31536000", as every message says it.
    pub fn allowed(&self) -> String {
        format!("allowed range: {self}")
    }
}

/// Says "60 or more" when the only bound above is the setting's type.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.max == u64::MAX || self.max == u64::from(u32::MAX) {
            write!(f, "{} or more", self.min)
        } else {
            write!(f, "{} to {}", self.min, self.max)
        }
    }
}

/// The one wording of a refused value, whatever its source.
pub(crate) fn invalid_value(setting: &str, source: &Source, value: &str, reason: &str) -> String {
    format!("invalid value '{value}' for {setting} (from {source}): {reason}")
}

/// A clap value parser for an integer setting of type `T` (`u32` or `u64`)
/// within a [`Range`].
#[derive(Debug)]
pub(crate) struct Bounded<T> {
    range: Range,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Bounded<T> {
    fn clone(&self) -> Self {
        Bounded {
            range: self.range,
            _type: PhantomData,
        }
    }
}

impl<T> Bounded<T> {
    /// `range` must already be clamped to what `T` holds.
    pub(crate) fn new(range: Range) -> Self {
        Bounded {
            range,
            _type: PhantomData,
        }
    }
}

impl<T> TypedValueParser for Bounded<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        self.parse_ref_(cmd, arg, value, ValueSource::CommandLine)
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        let refuse = |reason: String| {
            let setting = arg.map(super::setting_name).unwrap_or_default();
            let source = match (source, arg) {
                (ValueSource::EnvVariable, Some(arg)) => Source::env_of(arg),
                (ValueSource::DefaultValue, _) => Source::Default,
                (_, Some(arg)) => Source::flag_of(arg),
                (_, None) => Source::Default,
            };
            clap::Error::raw(
                ErrorKind::ValueValidation,
                invalid_value(&setting, &source, &text, &reason) + "\n",
            )
            .with_cmd(cmd)
        };
        let number = self.range.parse(&text).map_err(refuse)?;
        T::try_from(number).map_err(|_| refuse(self.range.allowed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_people_say_them() {
        assert_eq!(Range::new(60, 3600).to_string(), "60 to 3600");
        assert_eq!(Range::at_least(5).to_string(), "5 or more");
        assert_eq!(
            Range::at_least(1).clamp_to(u64::from(u32::MAX)).to_string(),
            "1 or more"
        );
    }

    #[test]
    fn parsing_says_what_is_allowed() {
        let range = Range::new(60, 3600);
        assert_eq!(range.parse("60"), Ok(60));
        assert_eq!(range.parse("3600"), Ok(3600));
        assert_eq!(range.parse("59"), Err("allowed range: 60 to 3600".into()));
        assert_eq!(range.parse("-1"), Err("allowed range: 60 to 3600".into()));
        assert_eq!(
            range.parse("1e3"),
            Err("not a whole number; allowed range: 60 to 3600".into())
        );
        let u32_range = Range::at_least(1).clamp_to(u64::from(u32::MAX));
        assert_eq!(u32_range.parse("0"), Err("allowed range: 1 or more".into()));
        assert_eq!(
            u32_range.parse("4294967296"),
            Err("allowed range: 1 to 4294967295".into())
        );
    }
}
