//! The `chorus` binary's configuration as a user meets it: the same setting
//! from a flag, an environment variable and a `--config` file (flag wins, then
//! the variable, then the file, then the default), values refused from each
//! source with the setting, the value and the allowed range, unknown keys
//! refused, `config --print-defaults` read back as a config file, secrets
//! never printed, `gen-cert`, and the README table equal to
//! `chorus config --markdown`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary with none of the test runner's own `CHORUS_*` variables.
fn chorus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chorus"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CHORUS_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs to its end. A server that starts where it should have refused is
/// killed after 30 s and fails the test.
fn run(cmd: &mut Command) -> Run {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chorus runs");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chorus") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chorus did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// A fresh directory for one test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chorus-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// `setting = value  # source` lines of a `config --check` report, by setting.
fn report(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (assignment, source) = line.split_once("  # ")?;
            let (name, value) = assignment.split_once(" = ")?;
            Some((
                name.trim().to_owned(),
                value.trim().to_owned(),
                source.trim().to_owned(),
            ))
        })
        .collect()
}

fn setting<'a>(report: &'a [(String, String, String)], name: &str) -> (&'a str, &'a str) {
    let (_, value, source) = report
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing from the report"));
    (value, source)
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = temp_dir("precedence");
    let file = write(
        &dir,
        "chorus.toml",
        "max_rooms = 11\n\
         max_members = 12\n\
         max_state_keys = 13\n\
         allowed_origins = [\"https://a.example\", \"https://b.example\"]\n",
    );
    let out = run(chorus()
        .args(["config", "--check", "--max-rooms", "31"])
        .env("CHORUS_CONFIG", &file)
        .env("CHORUS_MAX_ROOMS", "21")
        .env("CHORUS_MAX_MEMBERS", "22"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let report = report(&out.stdout);
    let in_file = format!("config file {}", file.display());
    assert_eq!(setting(&report, "max_rooms"), ("31", "--max-rooms"));
    assert_eq!(
        setting(&report, "max_members"),
        ("22", "CHORUS_MAX_MEMBERS")
    );
    assert_eq!(setting(&report, "max_state_keys"), ("13", in_file.as_str()));
    assert_eq!(
        setting(&report, "allowed_origins"),
        (
            r#"["https://a.example", "https://b.example"]"#,
            in_file.as_str()
        )
    );
    assert_eq!(setting(&report, "max_name_len"), ("64", "default"));

    // The same file named by the flag rather than the variable.
    let out = run(chorus().args(["config", "--check", "--config"]).arg(&file));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        setting(&self::report(&out.stdout), "max_rooms"),
        ("11", in_file.as_str())
    );
}

#[test]
fn a_value_out_of_range_is_refused_at_start_from_every_source() {
    let dir = temp_dir("range");
    let file = write(&dir, "chorus.toml", "room_idle_ttl_secs = 59\n");
    let in_file = format!("config file {}", file.display());
    let serve = || {
        let mut cmd = chorus();
        cmd.args(["--listen", "127.0.0.1:0", "--no-demo", "--cert-dir"])
            .arg(dir.join("certs"));
        cmd
    };
    let sources: [(&str, Command); 3] = [
        ("--room-idle-ttl-secs", {
            let mut cmd = serve();
            cmd.args(["--room-idle-ttl-secs", "59"]);
            cmd
        }),
        ("CHORUS_ROOM_IDLE_TTL_SECS", {
            let mut cmd = serve();
            cmd.env("CHORUS_ROOM_IDLE_TTL_SECS", "59");
            cmd
        }),
        (&in_file, {
            let mut cmd = serve();
            cmd.arg("--config").arg(&file);
            cmd
        }),
    ];
    for (source, mut cmd) in sources {
        let out = run(&mut cmd);
        assert_eq!(out.code, Some(2), "{source}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "invalid value '59' for room_idle_ttl_secs (from {source}): \
                 allowed range: 60 to 31536000"
            )),
            "{source}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("listening"), "{source}: it started");
    }

    // Above the maximum, and the same from `config --check`.
    let out = run(chorus().args(["config", "--check", "--max-tick-payload-bytes", "1201"]));
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains(
            "invalid value '1201' for max_tick_payload_bytes (from --max-tick-payload-bytes): \
             allowed range: 1 to 1200"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn a_value_a_setting_refuses_names_where_it_came_from() {
    let dir = temp_dir("sources");
    let file = write(&dir, "chorus.toml", "tcp_tls = \"maybe\"\n");
    let in_file = format!("config file {}", file.display());
    let cases = [
        (
            chorus()
                .args(["config", "--check", "--tcp-tls", "maybe"])
                .output(),
            "--tcp-tls".to_owned(),
        ),
        (
            chorus()
                .args(["config", "--check"])
                .env("CHORUS_TCP_TLS", "maybe")
                .output(),
            "CHORUS_TCP_TLS".to_owned(),
        ),
        (
            chorus()
                .args(["config", "--check", "--config"])
                .arg(&file)
                .output(),
            in_file,
        ),
    ];
    for (output, source) in cases {
        let output = output.expect("chorus runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{source}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "invalid value 'maybe' for tcp_tls (from {source}): \
                 \"maybe\" is not one of auto, on, off"
            )),
            "{source}: {stderr}"
        );
    }
}

#[test]
fn unknown_keys_and_wrong_types_in_the_file_are_refused() {
    let dir = temp_dir("keys");
    let cases = [
        (
            "room_idle_ttl_sec = 600\n",
            "unknown setting 'room_idle_ttl_sec' in config file FILE \
             (did you mean 'room_idle_ttl_secs'?)",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:0\"]\n",
            "unknown setting 'server' in config file FILE",
        ),
        (
            "max_rooms = \"10\"\n",
            "invalid type for max_rooms (from config file FILE): \
             expected an integer, found a string",
        ),
        (
            "listen = \"127.0.0.1:0\"\n",
            "invalid type for listen (from config file FILE): \
             expected an array of strings, found a string",
        ),
        (
            "listen = [\"localhost\"]\n",
            "invalid value 'localhost' for listen (from config file FILE): \
             invalid socket address syntax",
        ),
        (
            "max_rooms = 1\nmax_rooms = 2\n",
            "config file FILE: TOML parse error",
        ),
    ];
    for (i, (text, expected)) in cases.into_iter().enumerate() {
        let file = write(&dir, &format!("bad-{i}.toml"), text);
        let out = run(chorus()
            .args(["--no-demo", "--cert-dir"])
            .arg(dir.join("certs"))
            .arg("--config")
            .arg(&file));
        let expected = expected.replace("FILE", &file.display().to_string());
        assert_eq!(out.code, Some(2), "{text}: {}", out.stderr);
        assert!(out.stderr.contains(&expected), "{text}: {}", out.stderr);
        assert!(!out.stdout.contains("listening"), "{text}: it started");
    }
}

#[test]
fn the_printed_defaults_read_back_as_a_config_file_that_changes_nothing() {
    let dir = temp_dir("defaults");
    let defaults = run(chorus().args(["config", "--print-defaults"]));
    assert_eq!(defaults.code, Some(0), "{}", defaults.stderr);
    let file = write(&dir, "defaults.toml", &defaults.stdout);

    let plain = run(chorus().args(["config", "--check"]));
    let from_file = run(chorus().args(["config", "--check", "--config"]).arg(&file));
    assert_eq!(from_file.code, Some(0), "{}", from_file.stderr);
    let plain = report(&plain.stdout);
    let from_file = report(&from_file.stdout);
    assert!(plain.len() > 50, "only {} settings", plain.len());
    assert_eq!(plain.len(), from_file.len());
    let in_file = format!("config file {}", file.display());
    for ((name, value, source), (name2, value2, source2)) in plain.iter().zip(&from_file) {
        assert_eq!((name, value), (name2, value2));
        assert_eq!(source, "default", "{name}");
        assert_eq!(source2, &in_file, "{name} is not in the defaults file");
    }
}

#[test]
fn secrets_are_never_printed() {
    let dir = temp_dir("secrets");
    let file = write(&dir, "chorus.toml", "jwt_secret = \"file-secret-1\"\n");
    let out = run(chorus()
        .args([
            "config",
            "--check",
            "--api-key",
            "flag-secret-3,flag-secret-4",
        ])
        .args(["--turn-urls", "turn:turn.example:3478"])
        .arg("--config")
        .arg(&file)
        .env("CHORUS_TURN_SECRET", "env-secret-2"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for secret in [
        "file-secret-1",
        "env-secret-2",
        "flag-secret-3",
        "flag-secret-4",
    ] {
        assert!(!out.stdout.contains(secret), "{secret} printed");
        assert!(!out.stderr.contains(secret), "{secret} printed");
    }
    let report = report(&out.stdout);
    let in_file = format!("config file {}", file.display());
    assert_eq!(
        setting(&report, "jwt_secret"),
        ("\"<redacted>\"", in_file.as_str())
    );
    assert_eq!(
        setting(&report, "turn_secret"),
        ("\"<redacted>\"", "CHORUS_TURN_SECRET")
    );
    assert_eq!(
        setting(&report, "api_key"),
        ("[\"<redacted>\", \"<redacted>\"]", "--api-key")
    );
}

#[test]
fn a_server_started_from_a_config_file_uses_it() {
    let dir = temp_dir("serve");
    let file = write(
        &dir,
        "chorus.toml",
        &format!(
            "listen = [\"127.0.0.1:0\"]\nno_demo = true\nlog = \"warn\"\ncert_dir = {:?}\n\
             data_dir = {:?}\n",
            dir.join("certs").display().to_string(),
            dir.join("data").display().to_string()
        ),
    );
    let mut child = chorus()
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chorus starts");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let _child = Kill(child);
    let mut banner = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        // The banner ends with where the development certificate is.
        let done = line.trim_start().starts_with("(development certificate in");
        banner.push(line);
        if done {
            break;
        }
    }
    let banner = banner.join("\n");
    assert!(
        banner.contains("WebTransport  https://127.0.0.1:"),
        "{banner}"
    );
    // Only the file's address: the default also listens on [::1].
    assert!(!banner.contains("[::1]"), "{banner}");
    // Rooms are kept where the file says.
    let store = dir.join("data").join("chorus.redb");
    assert!(
        banner.contains(&format!("kept in {}", store.display())),
        "{banner}"
    );
    assert!(store.exists());
    assert!(!banner.contains("Demo page"), "{banner}");
    assert!(
        banner.contains(&format!(
            "development certificate in {}",
            dir.join("certs").display()
        )),
        "{banner}"
    );
}

#[test]
fn gen_cert_makes_the_certificate_and_prints_its_hash() {
    let dir = temp_dir("gen-cert").join("certs");
    let first = run(chorus().arg("gen-cert").arg("--cert-dir").arg(&dir));
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let hash = first.stdout.trim();
    assert_eq!(hash.len(), 64, "{hash}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    let written = std::fs::read_to_string(dir.join("dev-cert.sha256")).expect("hash file");
    assert_eq!(written.trim(), hash);
    // Still valid for long: the same certificate again.
    let again = run(chorus().arg("gen-cert").arg("--cert-dir").arg(&dir));
    assert_eq!(again.stdout.trim(), hash);
}

#[test]
fn the_readme_table_is_what_config_markdown_prints() {
    const BEGIN: &str = "<!-- begin: generated by `chorus config --markdown` -->\n";
    const END: &str = "<!-- end: generated by `chorus config --markdown` -->";
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let start = readme.find(BEGIN).expect("the begin marker in README.md") + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .expect("the end marker in README.md")
        + start;
    let out = run(chorus().args(["config", "--markdown"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        readme[start..end] == out.stdout,
        "README.md's configuration table differs from `chorus config --markdown`: \
         run `cargo run -p chorus-server -- config --markdown` and paste its output \
         between the markers"
    );
}
