//! Networking of guests: netlink operations on links, addresses and routes.
pub mod netlink;
