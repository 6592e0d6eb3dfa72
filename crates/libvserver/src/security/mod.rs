//! Security of guests: capability bounding sets, the seccomp filter and user namespaces.
pub mod caps;
pub mod exe;
pub mod seccomp;
pub mod userns;
