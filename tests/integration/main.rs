//! Integration tests: real upstream servers, the real proxy, unmodified clients.
//! Each scenario runs against both redis-server 7 and valkey-server 9 (see `both!`).
#[path = "../support/mod.rs"]
mod support;

mod basics;
mod blocked_disconnect;
mod busy_not_down;
mod client_commands;
mod client_unblock;
mod clients;
mod config_errors;
mod deploy;
mod faults;
mod flapping;
mod fuzz_checker;
mod hostile;
mod local_only;
mod merge_under_load;
mod misaligned;
mod monitor_view;
mod multi_connection_state;
mod near_cache;
mod node_clients;
mod observability;
mod operations;
mod outage_recovery;
mod pinned;
mod pubsub;
mod pubsub_fanout;
mod pubsub_local;
mod relay;
mod reload;
mod robustness;
mod select_order;
mod slow_commands;
mod slow_readers;
mod standalone;
mod tenant_hardening;
mod tenant_oracle;
mod tenants;
mod tls;
mod tracking;
mod transactions;
mod under_load;
mod upstream_acl;
mod upstream_commands;
mod upstream_users;
