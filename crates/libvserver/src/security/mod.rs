//! Security of guests: capability bounding sets, the seccomp filter, session keyrings.
pub mod caps;
pub mod keyring;
pub mod seccomp;
