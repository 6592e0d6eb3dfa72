//! The OCI runtime front end: `config.json` of a bundle read into the engine's one process
//! description, and the container lifecycle (`create`, `start`, `state`, `kill`, `delete`,
//! `exec` ...) as containerd's runc shim and podman drive it (the runc command-line contract;
//! see the runtime-spec's runtime.md and config.md).

pub mod check;
pub mod container;
pub mod devices;
pub mod hooks;
pub mod seccomp;
pub mod spec;
pub mod state;
