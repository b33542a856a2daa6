//! Text made from the settings' definitions: the defaults file
//! (`chorus config --print-defaults`), the README table
//! (`chorus config --markdown`) and the `chorus config --check` report.
//! All three read the clap arguments, so they cannot disagree with the flags.

use super::{Kind, Source, is_secret, setting_name, settings_of};
use clap::{Arg, Command};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const REDACTED: &str = "<redacted>";

/// A configuration file with every setting at its default.
pub(super) fn defaults_toml(cmd: &Command) -> String {
    let mut out = String::from(
        "# Chorus configuration: every setting at its default, made by\n\
         # `chorus config --print-defaults`. Use it with `chorus --config FILE`\n\
         # (or CHORUS_CONFIG=FILE). Keys are the flags' names in snake case.\n\
         # A command-line flag or a CHORUS_* environment variable overrides\n\
         # this file, which overrides the built-in defaults. Unknown keys and\n\
         # values out of range are refused at start.\n",
    );
    for arg in settings_of(cmd) {
        let name = setting_name(arg);
        out.push('\n');
        for line in wrap(&help(arg), 76) {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "# {}, {}", flag(arg), env(arg));
        match defaults(arg) {
            Some(values) => {
                let _ = writeln!(out, "{name} = {}", toml_value(Kind::of(arg), &values));
            }
            None => {
                let example = match Kind::of(arg) {
                    Kind::List => "[\"…\"]",
                    _ => "\"…\"",
                };
                let _ = writeln!(out, "# {name} = {example}  (not set by default)");
            }
        }
    }
    out
}

/// The Markdown table of every setting, for the README.
pub(super) fn markdown_table(cmd: &Command) -> String {
    let mut out = String::from(
        "| setting | flag | environment | TOML key | default | meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    let config = cmd
        .get_arguments()
        .find(|arg| arg.get_id() == super::CONFIG_FILE);
    for arg in config.into_iter().chain(settings_of(cmd)) {
        let name = setting_name(arg);
        let key = if arg.get_id() == super::CONFIG_FILE {
            "—".to_owned()
        } else {
            format!("`{name}` ({})", toml_type_word(Kind::of(arg)))
        };
        let default = match defaults(arg) {
            Some(values) if !values.is_empty() => values
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "none".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | `{}` | `{}` | {key} | {default} | {} |",
            name.replace('_', " "),
            flag(arg),
            env(arg),
            help(arg).replace('|', "\\|"),
        );
    }
    out
}

/// Every setting with its effective value and where it came from, as a
/// configuration file (values of secrets redacted).
pub(super) fn report(
    cmd: &Command,
    values: &BTreeMap<String, Vec<String>>,
    sources: &BTreeMap<String, Source>,
) -> String {
    let mut lines = Vec::new();
    for arg in settings_of(cmd) {
        let name = setting_name(arg);
        let line = match (values.get(&name), sources.get(&name)) {
            (Some(raw), Some(source)) => {
                let shown: Vec<String> = if is_secret(arg) {
                    raw.iter().map(|_| REDACTED.to_owned()).collect()
                } else {
                    raw.clone()
                };
                let value = toml_value(Kind::of(arg), &shown);
                (format!("{name} = {value}"), format!("# {source}"))
            }
            _ => (format!("# {name}"), "(not set)".to_owned()),
        };
        lines.push(line);
    }
    let width = lines
        .iter()
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(0)
        .min(56);
    let mut out = String::from(
        "# The effective configuration (`chorus config --check`): every setting,\n\
         # its value and where it came from. Secrets are redacted.\n",
    );
    for (line, note) in lines {
        let _ = writeln!(out, "{line:width$}  {note}");
    }
    out
}

/// The help text, with the allowed range where there is one.
fn help(arg: &Arg) -> String {
    let text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.ends_with('.') {
        text
    } else {
        format!("{text}.")
    }
}

fn flag(arg: &Arg) -> String {
    format!("--{}", arg.get_long().unwrap_or_default())
}

fn env(arg: &Arg) -> String {
    arg.get_env()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The built-in default as values (a list's items one by one); `None` for
/// a setting that is unset by default (an empty list is unset too).
fn defaults(arg: &Arg) -> Option<Vec<String>> {
    let kind = Kind::of(arg);
    let raw: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    match (kind, raw.is_empty()) {
        (Kind::Switch, true) => Some(vec!["false".to_owned()]),
        (Kind::List, false) => {
            let delimiter = arg.get_value_delimiter().unwrap_or(',');
            Some(
                raw.iter()
                    .flat_map(|v| v.split(delimiter))
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        }
        (_, true) => None,
        (_, false) => Some(raw),
    }
}

fn toml_value(kind: Kind, values: &[String]) -> String {
    let first = values.first().map(String::as_str).unwrap_or_default();
    match kind {
        Kind::Switch | Kind::Integer(_) => first.to_owned(),
        Kind::Text => quote(first),
        Kind::List => {
            let items: Vec<String> = values.iter().map(|v| quote(v)).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

fn toml_type_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Switch => "boolean",
        Kind::Integer(_) => "integer",
        Kind::List => "array",
        Kind::Text => "string",
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_for_toml() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote("line\nbreak\u{1}"), r#""line\nbreak\u0001""#);
    }

    #[test]
    fn comments_wrap_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("", 5), Vec::<String>::new());
    }
}
