//! The near cache's rules as sessions read them: one [`RuleSet`] per tenant (and one for clients
//! without a tenant), built from `near_cache.rule` and swapped whole by a reload, with hit
//! counters kept by tenant label across reloads. Never touches the store: what a rule change
//! does to cached entries is decided in `NearCache::replace_rules`.
use super::{ReadKind, Rule};
use crate::policy::{Tenants, glob};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The rules that apply to one tenant (or to clients without one), with its hit counters.
pub struct RuleSet {
    pub(super) rules: Vec<Rule>,
    counts: Arc<HitCounts>,
}

/// One tenant's hits and misses (counted here, published to the metrics recorder once a second
/// by the sweeper). Kept by tenant label across reloads, so the counters only grow.
#[derive(Default)]
pub(super) struct HitCounts {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
}

/// Each tenant's rule set (and the one for clients without a tenant), sharing hit counters by
/// tenant label with the sets they replace.
pub(super) fn build_rules(
    rules: &[Rule],
    tenants: Option<&Tenants>,
    counts: &Mutex<HashMap<String, Arc<HitCounts>>>,
) -> Rules {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    let mut set_for = |tenant: Option<&str>| {
        let label = tenant.unwrap_or("");
        Arc::new(RuleSet {
            rules: rules
                .iter()
                .filter(|r| r.tenant.is_none() || r.tenant.as_deref() == tenant)
                .cloned()
                .collect(),
            counts: counts.entry(label.to_string()).or_default().clone(),
        })
    };
    let by_tenant = tenants
        .into_iter()
        .flat_map(|t| t.iter())
        .map(|t| (t.name.clone(), set_for(Some(&t.name))))
        .collect();
    Rules {
        list: rules.to_vec(),
        by_tenant,
        untenanted: set_for(None),
    }
}

/// Every rule set, swapped whole by a reload: a read sees the old rules or the new, never a mix.
pub(super) struct Rules {
    /// As configured, to tell whether a reload changed them.
    pub(super) list: Vec<Rule>,
    /// By tenant name; `untenanted` for clients without a tenant.
    pub(super) by_tenant: HashMap<String, Arc<RuleSet>>,
    pub(super) untenanted: Arc<RuleSet>,
}

impl RuleSet {
    pub(super) fn covers(&self, kind: ReadKind, key: &[u8]) -> bool {
        self.rules.iter().any(|r| {
            r.reads & kind.bit() != 0 && (&r.pattern[..] == b"*" || glob::matches(&r.pattern, key))
        })
    }

    pub(super) fn hit(&self) {
        self.counts.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn miss(&self) {
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
    }
}
