//! Security of guests: capabilities and seccomp.
pub mod seccomp;
