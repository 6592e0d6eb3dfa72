//! Placeholder, replaced by the netlink helper.
