//! Which router a cluster request is on ([`Ctx`]): shared by the router ([`super::route`]) and
//! the slot-cursor SCAN it hands SCAN to ([`super::scan`]), so neither imports the other.
use super::Cluster;
use crate::protocol::Protocol;
use crate::upstream::lanes::Lane;
use std::sync::Arc;

/// Which router this is: its cluster, its clients' protocol, lane and connection index.
pub(super) struct Ctx {
    pub(super) cluster: Arc<Cluster>,
    pub(super) proto: Protocol,
    pub(super) lane: Lane,
    pub(super) index: usize,
}
