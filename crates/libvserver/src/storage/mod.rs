//! Guest storage: build methods.
pub mod build;
pub mod disk;
