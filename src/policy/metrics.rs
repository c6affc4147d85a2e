//! Per-tenant counters, labelled `tenant`, recorded through the `metrics` facade.
//!
//! Names live here so `/metrics` stays a stable interface; the lead may move them into
//! `crate::metrics`. Labels are tenant names, which configuration keeps short and plain, so the
//! series count is bounded by the number of tenants (times refusal reasons).
use metrics::{Counter, counter};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{PolicyError, Tenant};

pub const TENANT_COMMANDS_TOTAL: &str = "respite_tenant_commands_total";
pub const TENANT_ERRORS_TOTAL: &str = "respite_tenant_errors_total";
pub const TENANT_REFUSALS_TOTAL: &str = "respite_tenant_refusals_total";
pub const TENANT_AUTH_FAILURES_TOTAL: &str = "respite_tenant_auth_failures_total";

/// A tenant's counters that change on every command, resolved once (on first use, after the
/// recorder is installed) so the hot path pays one atomic add, not a label allocation and a
/// registry lookup.
#[derive(Debug, Default)]
pub struct TenantCounters {
    commands: OnceLock<Counter>,
    errors: OnceLock<Counter>,
    /// The same count as `commands`, readable: the tenant's INFO `total_commands_processed`.
    seen: AtomicU64,
}

/// A command a tenant sent (counted whether it was forwarded, answered or refused).
pub fn command(tenant: &Tenant) {
    tenant.counters.seen.fetch_add(1, Ordering::Relaxed);
    command_counter(tenant).increment(1);
}

/// Commands the tenant sent this process (see [`command`]).
pub fn commands_seen(tenant: &Tenant) -> u64 {
    tenant.counters.seen.load(Ordering::Relaxed)
}

/// An error reply respite sent the tenant.
pub fn error(tenant: &Tenant) {
    error_counter(tenant).increment(1);
}

/// A command refused by policy, by [`PolicyError::reason`].
pub fn refusal(tenant: &str, err: &PolicyError) {
    counter!(TENANT_REFUSALS_TOTAL, "tenant" => tenant.to_string(), "reason" => err.reason())
        .increment(1);
}

/// A failed AUTH. Unknown usernames are not labelled with what was sent (that would let clients
/// create series); they count under `tenant="unknown"`.
pub fn auth_failure(tenant: Option<&str>) {
    counter!(TENANT_AUTH_FAILURES_TOTAL, "tenant" => tenant.unwrap_or("unknown").to_string())
        .increment(1);
}

/// Each configured tenant's counters at 0 (and the `unknown` AUTH failures), so they are
/// exported from start, not from their first event; called at start and after a reload, once the
/// recorder is installed. Refusals are per reason and appear with the first.
pub fn register(tenants: &super::Tenants) {
    for t in tenants.iter() {
        command_counter(t).increment(0);
        error_counter(t).increment(0);
        counter!(TENANT_AUTH_FAILURES_TOTAL, "tenant" => t.name.clone()).increment(0);
    }
    counter!(TENANT_AUTH_FAILURES_TOTAL, "tenant" => "unknown").increment(0);
}

fn command_counter(tenant: &Tenant) -> &Counter {
    tenant
        .counters
        .commands
        .get_or_init(|| counter!(TENANT_COMMANDS_TOTAL, "tenant" => tenant.name.clone()))
}

fn error_counter(tenant: &Tenant) -> &Counter {
    tenant
        .counters
        .errors
        .get_or_init(|| counter!(TENANT_ERRORS_TOTAL, "tenant" => tenant.name.clone()))
}

/// HELP and TYPE for the tenant families, so `/metrics` passes `promtool check metrics` once a
/// `[[tenant]]` is configured (called when the recorder is installed).
pub fn describe() {
    use metrics::describe_counter;
    describe_counter!(
        TENANT_COMMANDS_TOTAL,
        "Commands a tenant sent (forwarded, answered by respite or refused), by tenant"
    );
    describe_counter!(
        TENANT_ERRORS_TOTAL,
        "Error replies respite itself sent a tenant's clients, by tenant"
    );
    describe_counter!(
        TENANT_REFUSALS_TOTAL,
        "Commands refused by a tenant's policy, by tenant and reason"
    );
    describe_counter!(
        TENANT_AUTH_FAILURES_TOTAL,
        "Failed AUTH attempts, by tenant (unknown when the user name matched no tenant)"
    );
}
