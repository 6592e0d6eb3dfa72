//! How long storage work (builds, copies, unification, export) reports where it is. The tools
//! draw a progress bar on a terminal and print plain lines otherwise; any `FnMut(&str)` is a
//! [`Progress`] that receives only the lines.

/// Receiver of progress reports.
pub trait Progress {
    /// A line that stays: a step begins or ends, a warning.
    fn line(&mut self, msg: &str);
    /// Counted work begins: `total` units (bytes or files, named by `unit`), None when unknown.
    fn begin(&mut self, _what: &str, _total: Option<u64>, _unit: &str) {}
    /// The counted work has reached `done` units; `note` is an optional transient detail
    /// (the file or package being handled).
    fn update(&mut self, _done: u64, _note: &str) {}
    /// The counted work ended.
    fn end(&mut self) {}
}

impl<F: FnMut(&str)> Progress for F {
    fn line(&mut self, msg: &str) {
        self(msg)
    }
}
