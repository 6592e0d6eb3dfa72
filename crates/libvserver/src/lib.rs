//! libvserver: the engine of vserver, Linux-VServer's virtual servers rebuilt on a stock kernel.
//!
//! Binaries in `vserver-tools` only parse arguments and print; every kernel operation lives here,
//! one module per concern (see ARCHITECTURE.md).

pub mod cgroup;
pub mod config;
pub mod context;
pub mod guest;
pub mod monitor;
pub mod net;
pub mod oci;
pub mod paths;
pub mod rootfs;
pub mod security;
pub mod stats;
pub mod storage;
pub mod testhook;
