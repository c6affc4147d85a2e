//! Process metrics (`process_*`, the names every Prometheus client library uses), read from
//! `/proc/self` when `/metrics` is scraped and appended to the exposition text.
//!
//! metrics-exporter-prometheus has none on Linux, and the values are only needed at scrape time,
//! so they are read then rather than kept up to date. It reads only `/proc/self` (systemd's
//! `ProcSubset=pid` hides the rest) and never fails a scrape: a value it cannot read is left out.
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's USER_HZ, 100 on every architecture
/// Linux exports to user space as such (reading `sysconf(_SC_CLK_TCK)` would need libc and unsafe).
const USER_HZ: f64 = 100.0;

/// When this process started, in seconds since the epoch: taken when the admin port's recorder is
/// installed, milliseconds after exec (`/proc/stat`'s boot time is outside `/proc/self`).
pub fn mark_start() {
    start_time();
}

fn start_time() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    })
}

/// Append the process metrics to an exposition text.
pub fn render(out: &mut String) {
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    if let Some(cpu) = cpu_seconds() {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status_kib(&status, "VmRSS:") {
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib * 1024.0,
        );
    }
    if let Some(kib) = status_kib(&status, "VmSize:") {
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            kib * 1024.0,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            hard as f64,
        );
    }
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start_time(),
    );
}

/// utime + stime from `/proc/self/stat` (fields 14 and 15; the command name, field 2, may hold
/// spaces and parentheses, so fields are counted from the last `)`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn status_kib(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix(field))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let value: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing from:\n{out}"))
                .parse()
                .unwrap();
            assert!(value >= 0.0, "{name} {value}");
        }
        let rss = status_kib(
            &std::fs::read_to_string("/proc/self/status").unwrap(),
            "VmRSS:",
        );
        assert!(
            rss.unwrap() > 100.0,
            "a test process holds more than 100 KiB"
        );
    }
}
