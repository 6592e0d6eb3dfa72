//! Security of guests: capability bounding sets and the seccomp filter.
pub mod caps;
pub mod exe;
pub mod seccomp;
