//! Integration tests: real upstream servers, the real proxy, unmodified clients.
//! Each scenario runs against both redis-server 7 and valkey-server 9 (see `both!`).
#[path = "../support/mod.rs"]
mod support;

mod basics;
mod client_commands;
mod clients;
mod config_errors;
mod deploy;
mod faults;
mod local_only;
mod near_cache;
mod observability;
mod operations;
mod pinned;
mod relay;
mod reload;
mod robustness;
mod slow_commands;
mod standalone;
mod tenant_hardening;
mod tenant_oracle;
mod tenants;
mod tls;
mod transactions;
mod upstream_commands;
