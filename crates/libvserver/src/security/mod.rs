//! Security of guests: capability bounding sets, the seccomp filter and user namespaces.
pub mod caps;
pub mod seccomp;
pub mod userns;
