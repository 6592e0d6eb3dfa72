//! Placeholder, replaced by the seccomp helper.
