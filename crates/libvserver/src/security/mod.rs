//! Security of guests: capability bounding sets, the seccomp filter, session keyrings and
//! user namespaces.
pub mod caps;
pub mod exe;
pub mod keyring;
pub mod seccomp;
pub mod userns;
