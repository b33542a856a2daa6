//! CPU time and memory from `/proc` (Linux): per thread of this process grouped
//! by thread-name prefix, or for another process by pid.
//!
//! CPU times are `utime + stime` (fields 14 and 15 of `stat`) in clock ticks.
//! The tick rate comes from the `AT_CLKTCK` entry of `/proc/self/auxv` (what
//! `sysconf(_SC_CLK_TCK)` returns, read without `unsafe`), falling back to 100.

use std::fs;
use std::path::Path;

/// `AT_CLKTCK` in the ELF auxiliary vector.
const AT_CLKTCK: u64 = 17;

/// Clock ticks per second for `/proc` CPU times.
pub fn clock_ticks_per_second() -> u64 {
    fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| auxv_value(&auxv, AT_CLKTCK))
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// Looks a key up in a native-endian 64-bit auxiliary vector.
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let k = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let v = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (k == key).then_some(v)
    })
}

/// `utime + stime` in clock ticks from the text of a `stat` file.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')':
    // fields are counted after the last ')'. The first after it is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of a whole process (all its threads, exited ones included).
pub fn process_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&stat)
}

/// CPU ticks summed over this process's live threads, per name prefix
/// (a thread counts for the first prefix its name starts with).
pub fn thread_cpu_ticks_by_prefix(prefixes: &[&str]) -> Vec<u64> {
    let mut sums = vec![0u64; prefixes.len()];
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return sums;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Some(idx) =
            thread_name(&dir).and_then(|name| prefixes.iter().position(|p| name.starts_with(p)))
        else {
            continue;
        };
        if let Some(ticks) = fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| parse_stat_cpu_ticks(&s))
        {
            sums[idx] += ticks;
        }
    }
    sums
}

fn thread_name(task_dir: &Path) -> Option<String> {
    fs::read_to_string(task_dir.join("comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// `VmHWM` and `VmRSS` of a process, in MiB.
pub fn memory_mib(pid: &str) -> (Option<f64>, Option<f64>) {
    match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => (
            status_kib(&status, "VmHWM:").map(kib_to_mib),
            status_kib(&status, "VmRSS:").map(kib_to_mib),
        ),
        Err(_) => (None, None),
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    crate::report::round3(kib as f64 / 1024.0)
}

/// A `kB` value from the text of a `status` file.
pub fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS by writing `5` to
/// `/proc/PID/clear_refs` (Linux 4.0+; for another process, needs the right to
/// ptrace it). Returns whether it worked.
pub fn reset_peak_rss(pid: &str) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Busy clock ticks of the whole machine (all cores, all processes) from the
/// `cpu` line of `/proc/stat`: everything but idle and iowait.
pub fn machine_busy_ticks() -> Option<u64> {
    parse_proc_stat_busy(&fs::read_to_string("/proc/stat").ok()?)
}

/// See [`machine_busy_ticks`].
pub fn parse_proc_stat_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest
    // time is already inside user, so only the first 8 are summed.
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some(total.saturating_sub(idle))
}

/// Online CPUs of the machine (`cpuN` lines of `/proc/stat`), regardless of
/// this process's affinity mask.
pub fn machine_cores() -> Option<usize> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let n = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    (n > 0).then_some(n)
}

/// Kernel UDP counters of this network namespace (`/proc/net/snmp`), all
/// sockets on the machine: loopback traffic of other programs counts too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub in_datagrams: u64,
    pub out_datagrams: u64,
    /// Datagrams dropped because a socket's receive buffer was full.
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

/// See [`UdpCounters`].
pub fn udp_counters() -> Option<UdpCounters> {
    parse_snmp_udp(&fs::read_to_string("/proc/net/snmp").ok()?)
}

/// Parses the two `Udp:` lines (names, then values) of `/proc/net/snmp`.
pub fn parse_snmp_udp(snmp: &str) -> Option<UdpCounters> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_ascii_whitespace().skip(1).collect();
    let values: Vec<&str> = lines.next()?.split_ascii_whitespace().skip(1).collect();
    let get = |key: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == key)?;
        values.get(i)?.parse().ok()
    };
    Some(UdpCounters {
        in_datagrams: get("InDatagrams")?,
        out_datagrams: get("OutDatagrams")?,
        rcvbuf_errors: get("RcvbufErrors")?,
        sndbuf_errors: get("SndbufErrors")?,
    })
}

/// Kernel TCP segment counters of this network namespace (`/proc/net/snmp`),
/// all sockets on the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    pub in_segs: u64,
    pub out_segs: u64,
    pub retrans_segs: u64,
}

/// See [`TcpCounters`].
pub fn tcp_counters() -> Option<TcpCounters> {
    parse_snmp_tcp(&fs::read_to_string("/proc/net/snmp").ok()?)
}

/// Parses the two `Tcp:` lines (names, then values) of `/proc/net/snmp`.
pub fn parse_snmp_tcp(snmp: &str) -> Option<TcpCounters> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let names: Vec<&str> = lines.next()?.split_ascii_whitespace().skip(1).collect();
    let values: Vec<&str> = lines.next()?.split_ascii_whitespace().skip(1).collect();
    let get = |key: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == key)?;
        values.get(i)?.parse().ok()
    };
    Some(TcpCounters {
        in_segs: get("InSegs")?,
        out_segs: get("OutSegs")?,
        retrans_segs: get("RetransSegs")?,
    })
}

/// CPU % of one core for `ticks` clock ticks over `secs` seconds.
pub fn cpu_pct(ticks: u64, clk_tck: u64, secs: f64) -> f64 {
    if secs <= 0.0 || clk_tck == 0 {
        return 0.0;
    }
    crate::report::round3(100.0 * ticks as f64 / clk_tck as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_are_14_and_15() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let stat = "1234 (we ird) name)) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 20 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(333));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let stat = "cpu  10 1 5 100 7 2 3 4 9 9\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_proc_stat_busy(stat), Some(10 + 1 + 5 + 2 + 3 + 4));
        assert_eq!(parse_proc_stat_busy("intr 1 2\n"), None);
        assert!(machine_busy_ticks().is_some());
        assert!(machine_cores().is_some_and(|n| n >= 1));
    }

    #[test]
    fn snmp_udp_lines_are_matched_by_name() {
        let snmp = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 3 20 3 1\nUdpLite: InDatagrams\nUdpLite: 0\n";
        assert_eq!(
            parse_snmp_udp(snmp),
            Some(UdpCounters {
                in_datagrams: 10,
                out_datagrams: 20,
                rcvbuf_errors: 3,
                sndbuf_errors: 1,
            })
        );
        assert_eq!(parse_snmp_udp("Udp: InDatagrams\n"), None);
    }

    #[test]
    fn snmp_tcp_lines_are_matched_by_name() {
        // MaxConn is -1 on Linux: not a u64, and not needed.
        let snmp = "Tcp: RtoAlgorithm MaxConn ActiveOpens InSegs OutSegs RetransSegs InErrs\nTcp: 1 -1 5 100 90 3 0\nUdp: InDatagrams\nUdp: 1\n";
        assert_eq!(
            parse_snmp_tcp(snmp),
            Some(TcpCounters {
                in_segs: 100,
                out_segs: 90,
                retrans_segs: 3,
            })
        );
        assert_eq!(parse_snmp_tcp("Tcp: InSegs\n"), None);
        assert!(tcp_counters().is_some());
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn auxv_lookup_and_live_values() {
        let mut auxv = Vec::new();
        for (k, v) in [(6u64, 4096u64), (17, 250), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(auxv_value(&auxv, AT_CLKTCK), Some(250));
        assert_eq!(auxv_value(&auxv, 99), None);
        assert!(clock_ticks_per_second() > 0);
        assert!(process_cpu_ticks("self").is_some());
        assert!(memory_mib("self").0.is_some());
        assert!(reset_peak_rss("self"));
        let (peak, rss) = memory_mib("self");
        assert!(peak.is_some() && rss.is_some());
        assert_eq!(cpu_pct(100, 100, 2.0), 50.0);
        assert_eq!(cpu_pct(100, 100, 0.0), 0.0);
    }
}
