//! Markdown reports (`--report-md FILE`): a run's parameters, the commit and
//! the machine it ran on, and its figures as a table with one column per run
//! (per transport with `--transport both`, per target with `compare`; a
//! saturation search writes its own, [`crate::saturation`]), ready to paste into
//! BENCHMARKS.md. The storm and idle tests write theirs with the same
//! pieces ([`table`], [`MachineInfo`], [`header`]).
//!
//! Everything here is a pure function of its arguments except
//! [`MachineInfo::probe`], which reads `/proc`.

use crate::report::{Report, RunMeta, merged_rows};
use std::fmt::Write as _;
use std::fs;

/// The machine a run happened on, as far as `/proc` tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// `MemTotal` of `/proc/meminfo`, KiB.
    pub mem_total_kib: Option<u64>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
}

impl MachineInfo {
    /// Reads this machine's.
    pub fn probe() -> MachineInfo {
        MachineInfo {
            cpu_model: fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| cpu_model(&c)),
            mem_total_kib: fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| crate::procfs::status_kib(&m, "MemTotal:")),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_owned()),
        }
    }

    /// One line: `2 cores (2 usable by the bench), <model>, 23.4 GiB, Linux 6.1`.
    pub fn describe(&self, cores: usize, usable_cores: usize) -> String {
        let mut s = format!("{cores} cores ({usable_cores} usable by the bench)");
        if let Some(model) = &self.cpu_model {
            let _ = write!(s, ", {model}");
        }
        if let Some(kib) = self.mem_total_kib {
            let _ = write!(s, ", {:.1} GiB memory", kib as f64 / (1024.0 * 1024.0));
        }
        if let Some(kernel) = &self.kernel {
            let _ = write!(s, ", Linux {kernel}");
        }
        s
    }
}

/// The first `model name` of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// A cell's text made safe for a Markdown table: `|` escaped, no line breaks.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// A Markdown table: a header row, the alignment row (every column
/// left-aligned: the values are text with units), then `rows`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| {} |",
        header
            .iter()
            .map(|h| cell(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|{}", ":---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(
            s,
            "| {} |",
            row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    s
}

/// The part every report starts with: a heading, the command that
/// reproduces the run, and a table of when, which commit, which machine.
pub fn header(title: &str, command: &str, meta: &RunMeta, machine: &MachineInfo) -> String {
    let mut s = format!("## {}\n\n", cell(title));
    let _ = writeln!(s, "```sh\n{command}\n```\n");
    let commit = format!(
        "{}{}",
        meta.git_commit.as_deref().unwrap_or("unknown"),
        match meta.git_dirty {
            Some(true) => " (uncommitted changes)",
            Some(false) => "",
            None => " (tree state unknown)",
        }
    );
    let rows = vec![
        vec!["started (UTC)".to_owned(), meta.timestamp.clone()],
        vec!["commit".to_owned(), commit],
        vec![
            "machine".to_owned(),
            machine.describe(meta.cores, meta.usable_cores),
        ],
    ];
    s.push_str(&table(&["run", ""], &rows));
    s
}

/// The Markdown report of the runs of one invocation (same scenario, one
/// run per transport): header, parameters, then the figures with one column
/// per run. Empty for no runs.
pub fn run_report(reports: &[Report], command: &str, machine: &MachineInfo) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let one_server = reports
        .iter()
        .all(|r| r.params.server == first.params.server);
    let title = first
        .scenario((!one_server).then_some("per run, see the parameters"))
        .trim_start_matches("chorus-bench: ")
        .to_owned();
    let mut s = header(
        &format!("chorus-bench: {title}"),
        command,
        &first.meta,
        machine,
    );
    let p = &first.params;
    let mut params = vec![
        (
            "scenario",
            match (&p.scenario, p.scenario_overrides.is_empty()) {
                (None, _) => "none (explicit shape)".to_owned(),
                (Some(name), true) => name.clone(),
                (Some(name), false) => format!(
                    "{name}, with {} overridden",
                    p.scenario_overrides.join(", ")
                ),
            },
        ),
        (
            "rooms x clients per room",
            format!("{} x {}", p.rooms, p.clients_per_room),
        ),
        (
            "ticks",
            format!("{} Hz per client, {} B payload", p.hz, p.payload_bytes),
        ),
        (
            "measured window",
            format!(
                "{} s after {} s of warm-up, {} ms drain",
                p.duration_s, p.warmup_s, p.drain_ms
            ),
        ),
        ("server", servers(reports)),
        ("seed", p.seed.to_string()),
    ];
    if p.state_rate > 0.0 || p.command_rate > 0.0 {
        params.push((
            "state updates / commands",
            format!("{} / {} per second per room", p.state_rate, p.command_rate),
        ));
    }
    s.push_str("\n### Parameters\n\n");
    s.push_str(&table(
        &["parameter", "value"],
        &params
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect::<Vec<_>>(),
    ));
    let runs: Vec<&str> = reports.iter().map(Report::run_name).collect();
    s.push_str(&figures(&runs, &merged_rows(reports)));
    s
}

/// Where the server of each run was; once when all runs had the same.
fn servers(reports: &[Report]) -> String {
    let describe = |r: &Report| match r.params.server.as_str() {
        "in-process" => "in process (same process as the clients)".to_owned(),
        "external" => format!("external, {}", r.params.url),
        other => format!("{other}, {}", r.params.url),
    };
    let all: Vec<String> = reports.iter().map(describe).collect();
    if all.windows(2).all(|w| w[0] == w[1]) {
        return all.into_iter().next().unwrap_or_default();
    }
    reports
        .iter()
        .zip(all)
        .map(|(r, d)| format!("{}: {d}", r.run_name()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A `### Figures` section: a table with a column per run (named `runs`)
/// of rows as [`merge_columns`](crate::report::merge_columns) gives them.
pub fn figures(runs: &[&str], rows: &[(String, Vec<String>)]) -> String {
    let mut header = vec!["figure"];
    header.extend_from_slice(runs);
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, values)| {
            std::iter::once(label.clone())
                .chain(values.iter().cloned())
                .collect()
        })
        .collect();
    format!("\n### Figures\n\n{}", table(&header, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_pipes_and_keep_one_cell_per_column() {
        let t = table(
            &["figure", "a|b"],
            &[vec!["loss".to_owned(), "1 | 2\nx".to_owned()]],
        );
        assert_eq!(t, "| figure | a\\|b |\n|:---|:---|\n| loss | 1 \\| 2 x |\n");
    }

    #[test]
    fn machine_lines_come_from_proc_texts() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU @ 2.0GHz\n\nprocessor\t: 1\nmodel name\t: Some CPU @ 2.0GHz\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("Some CPU @ 2.0GHz"));
        assert_eq!(cpu_model("flags: a b"), None);
        let m = MachineInfo {
            cpu_model: Some("Some CPU".into()),
            mem_total_kib: Some(24 * 1024 * 1024),
            kernel: Some("6.1.0".into()),
        };
        assert_eq!(
            m.describe(2, 1),
            "2 cores (1 usable by the bench), Some CPU, 24.0 GiB memory, Linux 6.1.0"
        );
        assert_eq!(
            MachineInfo::default().describe(2, 2),
            "2 cores (2 usable by the bench)"
        );
        // This machine has a /proc.
        assert!(MachineInfo::probe().mem_total_kib.is_some());
    }

    #[test]
    fn no_runs_no_report() {
        assert_eq!(run_report(&[], "x", &MachineInfo::default()), "");
    }
}
