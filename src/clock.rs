//! Wall-clock time as Redis counts it: milliseconds since the Unix epoch (absolute-time TTL caps,
//! the engine's expiry).

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
