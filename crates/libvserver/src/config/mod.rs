//! Guest configuration: `/etc/vservers/NAME.toml`, its schema, defaults and validation.
//!
//! Every error names the file, the line and the key (`web1.toml:4: key 'interface[0].address': ...`),
//! so an administrator can fix the file without guessing.

pub mod legacy;
mod schema;

pub use schema::*;

use std::path::{Path, PathBuf};

/// An error in a guest's configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// File that was read.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// File that was parsed.
        path: PathBuf,
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// What the TOML parser found.
        message: String,
    },
    /// The file has an unknown key, a wrong type or a bad value.
    #[error("{path}:{line}: key '{key}': {message}")]
    Invalid {
        /// File that was parsed.
        path: PathBuf,
        /// 1-based line of the offending key or value (0 when unknown).
        line: usize,
        /// Dotted path of the key, e.g. `interface[0].address`.
        key: String,
        /// What is wrong and what is accepted.
        message: String,
    },
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySeg {
    /// `name` in a table.
    Key(&'static str),
    /// `[i]` in an array.
    Index(usize),
    /// A key chosen by the user (a map key such as an rlimit name).
    Name(String),
}

/// Render a key path as `a.b[0].c`.
pub fn key_path_string(path: &[KeySeg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            KeySeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            KeySeg::Index(i) => s.push_str(&format!("[{i}]")),
            KeySeg::Name(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
        }
    }
    s
}

/// 1-based line number of byte offset `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Line of the value at `path` in `text`, 0 when it cannot be located.
fn line_of_key(text: &str, path: &[KeySeg]) -> usize {
    let Ok(root) = toml::de::DeTable::parse(text) else {
        return 0;
    };
    let Some((KeySeg::Key(first), rest)) = path.split_first() else {
        return 0;
    };
    let Some(mut cur) = root.get_ref().get(*first) else {
        return 0;
    };
    for seg in rest {
        let next = match seg {
            KeySeg::Key(k) => cur.get_ref().get(*k),
            KeySeg::Index(i) => cur.get_ref().get(*i),
            KeySeg::Name(k) => cur.get_ref().get(k.as_str()),
        };
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    line_of(text, cur.span().start)
}

/// A validation failure before the file name and line are attached.
#[derive(Debug)]
pub struct FieldError {
    /// Where the bad value is.
    pub path: Vec<KeySeg>,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(path: Vec<KeySeg>, message: impl Into<String>) -> Self {
        FieldError {
            path,
            message: message.into(),
        }
    }
}

/// Parse and validate the TOML text of a guest configuration. `path` is only used in errors.
///
/// Errors: [`ConfigError::Invalid`] for syntax errors, unknown keys, wrong types and bad values.
pub fn parse_guest_config(path: &Path, text: &str) -> Result<GuestConfig, ConfigError> {
    let invalid = |line, key: String, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        key,
        message,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
        message: e.message().trim().to_string(),
    })?;
    let cfg: GuestConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        let message = inner.message().trim().to_string();
        if key == "." {
            // A fault of the whole table, e.g. a missing required key.
            return ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                message,
            };
        }
        invalid(line, key, message)
    })?;
    cfg.validate().map_err(|fe| {
        invalid(
            line_of_key(text, &fe.path),
            key_path_string(&fe.path),
            fe.message,
        )
    })?;
    Ok(cfg)
}

/// Read, parse and validate `path`.
///
/// Errors: [`ConfigError::Read`] when the file cannot be read, else as [`parse_guest_config`].
pub fn load_guest_config(path: &Path) -> Result<GuestConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_guest_config(path, &text)
}

#[cfg(test)]
mod tests;
