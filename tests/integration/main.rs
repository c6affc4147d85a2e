//! Integration tests: real upstream servers, the real proxy, unmodified clients.
//! Each scenario runs against both redis-server 7 and valkey-server 9 (see `both!`).
mod harness;

mod basics;
mod clients;
mod config_errors;
mod faults;
mod local_only;
mod near_cache;
mod operations;
mod relay;
mod robustness;
mod standalone;
mod tenants;
mod transactions;
