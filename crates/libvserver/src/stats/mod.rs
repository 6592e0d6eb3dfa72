//! Host-side views of guests for vserver-stat, vps and vkill.
pub mod format;
