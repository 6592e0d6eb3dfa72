//! Guest storage: build methods, disk images, file-system primitives, unification, snapshots,
//! export and import, move and delete.
pub mod archive;
pub mod build;
pub mod disk;
pub mod fs;
pub mod manage;
pub mod overlay;
pub mod progress;
pub mod quota;
pub mod services;
pub mod shift;
pub mod snapshot;
pub mod unify;
