//! Process metrics (`process_*`, the names every Prometheus client library uses), read from
//! `/proc/self` when `/metrics` is scraped and appended to the exposition text.
//!
//! /proc is read by `procfs` (the crate `metrics-process` itself uses on Linux), not parsed here.
//! `metrics-process` is not used: it records `process_cpu_seconds_total` as a whole number of
//! seconds (`counter.absolute(v as u64)`; a sidecar using 5% of a core would show a rate of 0 or
//! 1 s/s in steps), or, with its `use-gauge-on-cpu-seconds-total` feature, as a gauge named
//! `_total`, which `promtool check metrics` refuses; and it takes the start time from
//! `/proc/stat`'s boot time, which systemd's `ProcSubset=pid` (deploy/respite.service) hides.
//! The names and meanings stay those of before, which users' dashboards rely on; only
//! `/proc/self` is read, and a value that cannot be read is left out, never failing a scrape.
use procfs::prelude::*;
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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
    let me = procfs::process::Process::myself().ok();
    if let Some(stat) = me.as_ref().and_then(|p| p.stat().ok()) {
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stat.rss_bytes().get() as f64,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.vsize as f64,
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            stat.num_threads as f64,
        );
    }
    if let Some(fds) = me.as_ref().and_then(|p| p.fd_count().ok()) {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds as f64,
        );
    }
    // The soft limit (respite raises it to the hard one at start, main.rs).
    if let Some(procfs::process::LimitValue::Value(max)) = me
        .as_ref()
        .and_then(|p| p.limits().ok())
        .map(|l| l.max_open_files.soft_limit)
    {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        start_time(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing from:\n{out}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_cpu_seconds_total") >= 0.0);
        for name in [
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(value(name) > 0.0, "{name}");
        }
        // Against /proc/self/status as the kernel words it (kB): within a few pages of VmRSS.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        let rss = value("process_resident_memory_bytes");
        assert!(
            rss > 100.0 * 1024.0,
            "a test process holds more than 100 KiB"
        );
        assert!(
            (rss - kib * 1024.0).abs() < 16.0 * 1024.0 * 1024.0,
            "{rss} vs VmRSS {kib} kB"
        );
    }
}
