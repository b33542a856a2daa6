//! Configuration of the `chorus` binary: its command line, and every setting
//! from four sources, in this order of precedence:
//!
//! 1. a command-line flag (`--room-idle-ttl-secs 600`),
//! 2. an environment variable (`CHORUS_ROOM_IDLE_TTL_SECS=600`),
//! 3. a TOML file named by `--config` or `CHORUS_CONFIG`
//!    (`room_idle_ttl_secs = 600`: the flag's name in snake case; lists are
//!    arrays, switches booleans),
//! 4. the built-in default.
//!
//! Every setting is one clap argument of [`Settings`], so the flag, the
//! variable, the file key, the help text and the default are written once.
//! Clap reads flags and variables and says which one gave each value
//! ([`clap::ArgMatches::value_source`]); the file's values are then checked
//! with the same rules ([`Range`] for integers, the argument's own
//! value parser for the rest) and given to clap for the settings that no
//! flag or variable set. A refused value is reported the same way from any
//! source: the setting, where the value came from, the value and what is
//! allowed. Secrets (API keys, the JWT and TURN secrets) are never printed.
//!
//! [`parse_from`] turns a command line into an [`Invocation`]; `render`
//! writes the defaults file, the README table and the `--check` report.

mod file;
mod range;
mod render;
mod settings;

pub use range::Range;
pub use settings::{RANGES, Settings, range_of};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Args, Command, CommandFactory, FromArgMatches};
use file::ConfigFile;
use std::any::TypeId;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// The id of the `--config FILE` argument.
const CONFIG_FILE: &str = "config_file";

/// Chorus: a realtime room-sync server (WebTransport and WebSocket). With no
/// subcommand it runs the server (`chorus serve`).
#[derive(Debug, clap::Parser)]
#[command(name = "chorus", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CliCommand {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Make the development certificate (or renew it when near its end) and
    /// print its SHA-256, as clients pin it.
    GenCert(GenCertArgs),
    /// Print every setting's default or the README table, or check a
    /// configuration.
    Config(ConfigArgs),
}

/// Settings, and the file that may hold some of them.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML file with settings (keys: the flags' names in snake case); flags
    /// and environment variables override it.
    // The id differs from the `config` subcommand's name: clap keeps both in
    // one namespace, and the same name makes `chorus --config` unusable.
    #[arg(id = CONFIG_FILE, long = "config", env = "CHORUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

/// `chorus gen-cert`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenCertArgs {
    /// Directory for the development certificate.
    #[arg(long, env = "CHORUS_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    /// TOML file with settings (only cert_dir is used here).
    #[arg(id = CONFIG_FILE, long = "config", env = "CHORUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `chorus config`: one of the three actions.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["print_defaults", "markdown", "check"]))]
pub struct ConfigArgs {
    /// Print a configuration file with every setting at its default, and its
    /// help as a comment.
    #[arg(long)]
    pub print_defaults: bool,
    /// Print the README's configuration table (Markdown).
    #[arg(long)]
    pub markdown: bool,
    /// Check the configuration (flags, environment, --config file) and print
    /// every setting with its value and where it came from, secrets redacted.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// What a command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the server with these settings.
    Serve(Resolved),
    /// Make or renew the development certificate in this directory.
    GenCert { cert_dir: PathBuf },
    /// Print [`defaults_toml`].
    PrintDefaults,
    /// Print [`markdown_table`].
    Markdown,
    /// Check these settings and print [`Resolved::report`].
    Check(Resolved),
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag (its long form, with the dashes).
    Flag(String),
    /// An environment variable (its name).
    Env(String),
    /// The configuration file.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl Source {
    fn flag_of(arg: &Arg) -> Source {
        Source::Flag(format!("--{}", arg.get_long().unwrap_or_default()))
    }

    fn env_of(arg: &Arg) -> Source {
        Source::Env(
            arg.get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => f.write_str(flag),
            Source::Env(name) => f.write_str(name),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// Why a command line or a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// From clap: a bad flag or value, or a request for help or the version
    /// ([`clap::Error::exit`] prints it as clap does).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// A value, a file or a combination of settings that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// Settings with the source of each.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub settings: Settings,
    /// Setting name → its value as given (raw strings), where it has one.
    values: BTreeMap<String, Vec<String>>,
    /// Setting name → where its value came from.
    sources: BTreeMap<String, Source>,
}

impl Resolved {
    /// Where the setting `name` (snake case) got its value; `None` for an
    /// unknown name or a setting with neither value nor default.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }

    /// The `chorus config --check` report: every setting with its value and
    /// source, as a TOML file (secrets redacted).
    pub fn report(&self) -> String {
        render::report(&settings_command(), &self.values, &self.sources)
    }
}

/// The whole command line, with the integer ranges applied to every
/// integer setting of every subcommand.
pub fn command() -> Command {
    with_ranges(Cli::command()).mut_subcommands(with_ranges)
}

/// The `serve` subcommand: every setting, and `--config`.
fn settings_command() -> Command {
    with_ranges(ServeArgs::augment_args(Command::new("chorus")))
}

fn with_ranges(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let Some(range) = range_of(arg.get_id().as_str()) else {
            return arg;
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let (arg, range) = if arg.get_value_parser().type_id() == TypeId::of::<u32>() {
            let range = range.clamp_to(u64::from(u32::MAX));
            (arg.value_parser(range::Bounded::<u32>::new(range)), range)
        } else {
            (arg.value_parser(range::Bounded::<u64>::new(range)), range)
        };
        arg.help(format!("{help} (allowed: {range})"))
    })
}

/// Clap's refusal of a flag's or a variable's value, in the words every
/// source shares: clap names the flag even when the value came from the
/// environment. Other errors (and help) are left to clap.
fn reword(error: clap::Error, cmd: &Command, argv: &[OsString]) -> ConfigError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::ValueValidation {
        return error.into();
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error.into();
    };
    // "--listen <LISTEN>"
    let long = arg
        .trim_start_matches("--")
        .split(' ')
        .next()
        .unwrap_or_default();
    let Some(arg) = std::iter::once(cmd)
        .chain(cmd.get_subcommands())
        .flat_map(settings_of)
        .find(|a| a.get_long() == Some(long))
    else {
        return error.into();
    };
    let flag = format!("--{long}");
    let given = argv.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    let source = if given {
        Source::flag_of(arg)
    } else {
        Source::env_of(arg)
    };
    let reason = std::error::Error::source(&error)
        .map(ToString::to_string)
        .unwrap_or_else(|| "not allowed".to_owned());
    let shown = if is_secret(arg) { "<redacted>" } else { value };
    ConfigError::Invalid(range::invalid_value(
        &setting_name(arg),
        &source,
        shown,
        &reason,
    ))
}

/// What kind of value a setting takes, which decides its TOML type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A flag without a value (`--no-demo`); a boolean in the file.
    Switch,
    /// A whole number within a range.
    Integer(Range),
    /// Several values (comma-separated on the command line); an array.
    List,
    /// One string.
    Text,
}

impl Kind {
    pub(crate) fn of(arg: &Arg) -> Kind {
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            Kind::Switch
        } else if arg.get_value_delimiter().is_some() {
            Kind::List
        } else if let Some(range) = range_of(arg.get_id().as_str()) {
            if arg.get_value_parser().type_id() == TypeId::of::<u32>() {
                Kind::Integer(range.clamp_to(u64::from(u32::MAX)))
            } else {
                Kind::Integer(range)
            }
        } else {
            Kind::Text
        }
    }

    /// The TOML type, as messages and docs name it.
    pub(crate) fn toml_type(self) -> &'static str {
        match self {
            Kind::Switch => "a boolean",
            Kind::Integer(_) => "an integer",
            Kind::List => "an array of strings",
            Kind::Text => "a string",
        }
    }
}

/// A setting's name: its flag without the dashes, in snake case. It is the
/// file's key, and what messages call it.
pub(crate) fn setting_name(arg: &Arg) -> String {
    arg.get_long()
        .unwrap_or(arg.get_id().as_str())
        .replace('-', "_")
}

/// Whether the value must never be printed (API keys, secrets): the
/// settings whose environment values clap hides.
pub(crate) fn is_secret(arg: &Arg) -> bool {
    arg.is_hide_env_values_set()
}

/// The settings of a command: every argument but `--config`, help and version.
pub(crate) fn settings_of(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|arg| {
        let id = arg.get_id().as_str();
        !matches!(id, CONFIG_FILE | "help" | "version") && arg.get_long().is_some()
    })
}

/// The configuration file with every setting at its default, each with its
/// help as a comment (`chorus config --print-defaults`).
pub fn defaults_toml() -> String {
    render::defaults_toml(&settings_command())
}

/// The README's configuration table (`chorus config --markdown`).
pub fn markdown_table() -> String {
    render::markdown_table(&settings_command())
}

/// Parses a command line (`argv[0]` first), reads the configuration file it
/// names, and resolves every setting.
pub fn parse_from<I, T>(argv: I) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let cmd = command();
    let first = cmd
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| reword(e, &cmd, &argv))?;
    let (name, sub) = match first.subcommand() {
        Some((name, sub)) => (Some(name), sub),
        None => (None, &first),
    };
    let resolves = match name {
        Some("config") => sub.get_flag("check"),
        _ => true,
    };
    if !resolves {
        return Ok(if sub.get_flag("print_defaults") {
            Invocation::PrintDefaults
        } else {
            Invocation::Markdown
        });
    }
    let sub_cmd = match name {
        Some(name) => cmd.find_subcommand(name).unwrap_or(&cmd),
        None => &cmd,
    };
    let file = match sub.get_one::<PathBuf>(CONFIG_FILE) {
        Some(path) => Some(ConfigFile::load(path, &settings_command())?),
        None => None,
    };

    // The file's values for the settings no flag or variable set, given to
    // clap after the command line's own arguments.
    let mut extra = Vec::new();
    let mut sources = BTreeMap::new();
    for arg in settings_of(sub_cmd) {
        let id = arg.get_id().as_str();
        let source = match sub.value_source(id) {
            Some(ValueSource::CommandLine) => Source::flag_of(arg),
            Some(ValueSource::EnvVariable) => Source::env_of(arg),
            _ => match file
                .as_ref()
                .and_then(|f| Some((f, f.entry(&setting_name(arg))?)))
            {
                Some((file, entry)) => {
                    extra.extend(entry.args.iter().cloned());
                    Source::File(file.path.clone())
                }
                None if sub.value_source(id).is_some() => Source::Default,
                None => continue,
            },
        };
        sources.insert(setting_name(arg), source);
    }
    let matches = if extra.is_empty() {
        first
    } else {
        cmd.clone()
            .try_get_matches_from(argv.iter().cloned().chain(extra))?
    };
    let cli = Cli::from_arg_matches(&matches)?;
    let sub = match matches.subcommand() {
        Some((_, sub)) => sub,
        None => &matches,
    };
    let values = settings_of(sub_cmd)
        .filter_map(|arg| {
            let raw = sub.get_raw(arg.get_id().as_str())?;
            let raw = raw.map(|v| v.to_string_lossy().into_owned()).collect();
            Some((setting_name(arg), raw))
        })
        .collect();
    let resolved = |serve: ServeArgs| Resolved {
        settings: serve.settings,
        values,
        sources,
    };
    Ok(match cli.command {
        None => Invocation::Serve(resolved(cli.serve)),
        Some(CliCommand::Serve(serve)) => Invocation::Serve(resolved(serve)),
        Some(CliCommand::Config(config)) => Invocation::Check(resolved(config.serve)),
        Some(CliCommand::GenCert(gen_cert)) => Invocation::GenCert {
            cert_dir: gen_cert.cert_dir,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ConfigError> {
        parse_from(std::iter::once("chorus").chain(args.iter().copied()))
    }

    fn serve(args: &[&str]) -> Resolved {
        match parse(args) {
            Ok(Invocation::Serve(resolved)) => resolved,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chorus-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config file");
        path
    }

    #[test]
    fn every_integer_setting_has_a_range_and_every_range_a_setting() {
        let cmd = settings_command();
        for arg in settings_of(&cmd) {
            let id = arg.get_id().as_str();
            let type_id = arg.get_value_parser().type_id();
            let integer = type_id == TypeId::of::<u32>() || type_id == TypeId::of::<u64>();
            assert_eq!(
                integer,
                range_of(id).is_some(),
                "{id}: integer settings, and only they, need a range in RANGES"
            );
        }
        for (name, range) in RANGES {
            assert!(
                settings_of(&cmd).any(|arg| arg.get_id() == *name),
                "RANGES names {name}, which is no setting"
            );
            assert!(range.min <= range.max, "{name}: empty range");
        }
    }

    #[test]
    fn every_default_is_within_its_range() {
        let cmd = settings_command();
        for arg in settings_of(&cmd) {
            if let Kind::Integer(range) = Kind::of(arg) {
                for default in arg.get_default_values() {
                    let text = default.to_string_lossy();
                    assert!(
                        range.parse(&text).is_ok(),
                        "{:?}: default {text}",
                        arg.get_id()
                    );
                }
            }
        }
    }

    #[test]
    fn names_are_the_flags_in_snake_case_and_variables_are_prefixed() {
        for arg in settings_of(&settings_command()) {
            let name = setting_name(arg);
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(
                arg.get_long().map(|l| l.replace('-', "_")),
                Some(name.clone())
            );
            let env = env.unwrap_or_else(|| panic!("{name} has no environment variable"));
            assert!(env.starts_with("CHORUS_"), "{name}: {env}");
            assert!(
                !arg.get_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default()
                    .is_empty()
            );
        }
    }

    #[test]
    fn the_defaults_make_a_server_config() {
        let resolved = serve(&[]);
        let config = resolved
            .settings
            .server_config()
            .expect("defaults are valid");
        assert_eq!(config.rooms.room.idle_ttl_us, 7200 * 1_000_000);
        assert_eq!(resolved.source("max_rooms"), Some(&Source::Default));
        assert_eq!(resolved.source("cert"), None);
    }

    #[test]
    fn serve_is_the_default_subcommand() {
        let plain = serve(&["--max-rooms", "7"]);
        let named = serve(&["serve", "--max-rooms", "7"]);
        assert_eq!(plain.settings.max_rooms, 7);
        assert_eq!(named.settings.max_rooms, 7);
        assert_eq!(
            plain.source("max_rooms"),
            Some(&Source::Flag("--max-rooms".into()))
        );
    }

    #[test]
    fn a_flag_out_of_range_names_setting_value_and_range() {
        let Err(ConfigError::Clap(e)) = parse(&["--room-idle-ttl-secs", "59"]) else {
            panic!("59 s accepted");
        };
        assert_eq!(
            e.to_string().trim(),
            "error: invalid value '59' for room_idle_ttl_secs (from --room-idle-ttl-secs): \
             allowed range: 60 to 31536000"
        );
    }

    #[test]
    fn a_refused_flag_reads_like_a_refused_file_value() {
        match parse(&["--listen", "127.0.0.1:1,nowhere"]) {
            Err(ConfigError::Invalid(message)) => assert_eq!(
                message,
                "invalid value 'nowhere' for listen (from --listen): invalid socket address syntax"
            ),
            other => panic!("{other:?}"),
        }
        match parse(&["--jwt-leeway-secs=601"]) {
            Err(ConfigError::Clap(e)) => assert!(
                e.to_string().contains(
                    "for jwt_leeway_secs (from --jwt-leeway-secs): allowed range: 0 to 600"
                ),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_file_fills_what_flags_leave_and_loses_to_them() {
        let path = temp_file(
            "layers.toml",
            "max_rooms = 11\nmax_members = 12\nlisten = [\"127.0.0.1:7000\"]\nno_demo = true\n",
        );
        let path_arg = path.to_string_lossy().into_owned();
        let resolved = serve(&["--config", &path_arg, "--max-members", "13"]);
        assert_eq!(resolved.settings.max_rooms, 11);
        assert_eq!(resolved.settings.max_members, 13);
        assert_eq!(
            resolved.settings.listen,
            vec!["127.0.0.1:7000".parse().expect("addr")]
        );
        assert!(resolved.settings.no_demo);
        assert_eq!(
            resolved.source("max_rooms"),
            Some(&Source::File(path.clone()))
        );
        assert_eq!(
            resolved.source("max_members"),
            Some(&Source::Flag("--max-members".into()))
        );
        assert_eq!(resolved.source("rate_ticks"), Some(&Source::Default));
    }

    #[test]
    fn file_values_are_checked_like_flags() {
        let cases = [
            (
                "room_idle_ttl_secs = 59\n",
                "invalid value '59' for room_idle_ttl_secs (from config file PATH): \
                 allowed range: 60 to 31536000",
            ),
            (
                "max_tick_payload_bytes = -1\n",
                "invalid value '-1' for max_tick_payload_bytes (from config file PATH): \
                 allowed range: 1 to 1200",
            ),
            (
                "max_rooms = \"many\"\n",
                "invalid type for max_rooms (from config file PATH): \
                 expected an integer, found a string",
            ),
            (
                "listen = [\"127.0.0.1:1\", 2]\n",
                "invalid type for listen (from config file PATH): \
                 expected an array of strings, found an integer",
            ),
            (
                "tcp_tls = \"maybe\"\n",
                "invalid value 'maybe' for tcp_tls (from config file PATH): \
                 \"maybe\" is not one of auto, on, off",
            ),
            (
                "no_demo = \"yes\"\n",
                "invalid type for no_demo (from config file PATH): \
                 expected a boolean, found a string",
            ),
            (
                "pack_media_types = []\n",
                "pack_media_types (from config file PATH) cannot be empty; \
                 leave it out for the default",
            ),
            (
                "max_romos = 3\n",
                "unknown setting 'max_romos' in config file PATH (did you mean 'max_rooms'?)",
            ),
            (
                "config = \"other.toml\"\n",
                "unknown setting 'config' in config file PATH \
                 (`chorus config --print-defaults` lists every setting)",
            ),
        ];
        for (i, (text, expected)) in cases.iter().enumerate() {
            let path = temp_file(&format!("bad-{i}.toml"), text);
            let path_arg = path.to_string_lossy().into_owned();
            match parse(&["--config", &path_arg]) {
                Err(ConfigError::Invalid(message)) => {
                    assert_eq!(message, expected.replace("PATH", &path_arg), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_secret_in_a_refused_list_is_not_shown() {
        let path = temp_file("secret.toml", "api_key = [\"abc,def\"]\n");
        let path_arg = path.to_string_lossy().into_owned();
        let Err(ConfigError::Invalid(message)) = parse(&["--config", &path_arg]) else {
            panic!("a comma in an API key accepted");
        };
        assert!(!message.contains("abc"), "{message}");
        assert!(message.contains("<redacted>"), "{message}");
    }

    #[test]
    fn combinations_are_checked() {
        let resolved = serve(&[
            "--max-frame-bytes",
            "2048",
            "--max-state-value-bytes",
            "4096",
        ]);
        let Err(ConfigError::Invalid(message)) = resolved.settings.server_config() else {
            panic!("a state value larger than a frame accepted");
        };
        assert_eq!(
            message,
            "max_state_value_bytes (4096) cannot exceed max_frame_bytes (2048)"
        );
        let resolved = serve(&["--cert", "chain.pem"]);
        assert!(resolved.settings.server_config().is_err());
    }

    #[test]
    fn config_needs_one_action_and_gen_cert_takes_a_directory() {
        assert!(matches!(parse(&["config"]), Err(ConfigError::Clap(_))));
        assert!(matches!(
            parse(&["config", "--markdown"]),
            Ok(Invocation::Markdown)
        ));
        match parse(&["gen-cert", "--cert-dir", "/tmp/x"]) {
            Ok(Invocation::GenCert { cert_dir }) => assert_eq!(cert_dir, PathBuf::from("/tmp/x")),
            other => panic!("{other:?}"),
        }
    }
}
