//! Guest storage: build methods.
pub mod build;
