//! Start groups (util-vserver's `vservers --mark M start|stop|status`, its start-vservers):
//! the guests carrying a mark, in dependency order (`depends`), several at a time.
//!
//! A start takes the marked guests that are not `disabled`, plus everything they depend on
//! (transitively, marked or not); a guest starts once all its dependencies have started, and is
//! skipped when one of them failed. A stop takes the marked guests and stops each one only after
//! every selected guest that depends on it has stopped. The work itself is done by a caller's
//! `spawn` (the tools run `vserver NAME start` processes), so this module owns only the order.

use super::Guest;
use crate::paths::Paths;
use std::collections::{BTreeMap, BTreeSet};

/// What happened to one guest of a group operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The operation succeeded.
    Ok,
    /// It failed; the text says how (exit status).
    Failed(String),
    /// Not attempted because guest `.0` (a dependency, or for a stop a dependant) failed.
    Skipped(String),
}

/// Errors of planning a group operation: an unknown or broken guest, a dependency cycle.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// A guest named in `depends` has no configuration.
    #[error("{guest}: depends on {missing}, which is not configured")]
    UnknownDependency {
        /// The depending guest.
        guest: String,
        /// The missing one.
        missing: String,
    },
    /// A configuration does not load.
    #[error("{0}")]
    Config(String),
    /// The dependencies form a cycle.
    #[error("dependency cycle: {0}")]
    Cycle(String),
}

/// A group operation's order: each selected guest with the guests it must wait for, and the
/// guests that failed before any work (a configuration that does not load, a dependency that
/// is not configured), each with why. A failed guest is in `waits` too, so that what depends
/// on it is skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// For a start, a guest's dependencies; for a stop, the selected guests that depend on it.
    pub waits: BTreeMap<String, Vec<String>>,
    /// Guests to report failed without running anything, with the reason (file:line: key for
    /// a configuration error).
    pub failed: BTreeMap<String, String>,
}

/// The guests of `mark` to start (with their dependencies) or to stop, each with the guests it
/// must wait for. Names are sorted for a stable order.
///
/// A configuration that does not load fails only its own guest (its marks are unknown, so for
/// a start it is reported failed, and what depends on it is skipped; a stop leaves it out with
/// a warning); a start of a guest whose dependency is not configured fails that guest only.
///
/// Errors: [`GroupError::Cycle`] for a start whose dependencies form a cycle (a stop goes on
/// without the ordering it spoils).
pub fn plan(paths: &Paths, mark: &str, start: bool) -> Result<Plan, GroupError> {
    let mut configs: BTreeMap<String, Guest> = BTreeMap::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for (name, _) in super::configured_guests(paths) {
        match Guest::load(paths, &name) {
            Ok(g) => {
                configs.insert(name, g);
            }
            Err(e) if start => {
                failed.insert(name, e.to_string());
            }
            // Its marks are unknown: a stop or status goes on with the others.
            Err(e) => eprintln!("vservers: {e}; left out"),
        }
    }
    let marked: BTreeSet<String> = configs
        .values()
        .filter(|g| g.config.mark.iter().any(|m| m == mark))
        .filter(|g| !(start && g.config.disabled))
        .map(|g| g.name.clone())
        .collect();
    // A guest's dependencies that can be ordered against (configured, or broken: then it is
    // skipped); for a start, one that is not configured at all fails the guest.
    let mut missing: BTreeMap<String, String> = BTreeMap::new();
    let mut deps_of = |name: &str| -> Vec<String> {
        let Some(g) = configs.get(name) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for d in &g.config.depends {
            if configs.contains_key(d) || failed.contains_key(d) {
                v.push(d.clone());
            } else if start {
                // A stop never fails on a dependency: guests must stop at shutdown however
                // their configuration was edited.
                missing
                    .entry(name.to_string())
                    .or_insert_with(|| format!("depends on {d}, which is not configured"));
            }
        }
        v
    };
    let mut selected = marked.clone();
    if start {
        // Close over dependencies; a broken configuration may be of a marked guest.
        selected.extend(failed.keys().cloned());
        let mut todo: Vec<String> = marked.iter().cloned().collect();
        while let Some(n) = todo.pop() {
            for d in deps_of(&n) {
                if selected.insert(d.clone()) {
                    todo.push(d);
                }
            }
        }
    }
    let mut waits: BTreeMap<String, Vec<String>> =
        selected.iter().map(|n| (n.clone(), Vec::new())).collect();
    for n in &selected {
        for d in deps_of(n) {
            if !selected.contains(&d) {
                continue;
            }
            if start {
                waits.get_mut(n).expect("selected").push(d);
            } else {
                waits.get_mut(&d).expect("selected").push(n.clone());
            }
        }
    }
    failed.extend(missing);
    if let Err(e) = check_acyclic(&waits) {
        if start {
            return Err(e);
        }
        // Stop anyway, without ordering: a cycle must not keep guests running at shutdown.
        eprintln!("vservers: {e}; stopping without dependency order");
        for w in waits.values_mut() {
            w.clear();
        }
    }
    Ok(Plan { waits, failed })
}

fn check_acyclic(waits: &BTreeMap<String, Vec<String>>) -> Result<(), GroupError> {
    // Depth-first search with colours: 1 = on the current path, 2 = done.
    fn visit(
        n: &str,
        waits: &BTreeMap<String, Vec<String>>,
        colour: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Result<(), GroupError> {
        match colour.get(n) {
            Some(2) => return Ok(()),
            Some(1) => {
                let at = path.iter().position(|p| p == n).unwrap_or(0);
                let mut cycle = path[at..].to_vec();
                cycle.push(n.to_string());
                return Err(GroupError::Cycle(cycle.join(" -> ")));
            }
            _ => {}
        }
        colour.insert(n.to_string(), 1);
        path.push(n.to_string());
        for w in &waits[n] {
            visit(w, waits, colour, path)?;
        }
        path.pop();
        colour.insert(n.to_string(), 2);
        Ok(())
    }
    let mut colour = BTreeMap::new();
    for n in waits.keys() {
        visit(n, waits, &mut colour, &mut Vec::new())?;
    }
    Ok(())
}

/// A running piece of work: polled until it reports its outcome.
pub trait Job {
    /// None while running; then the outcome.
    fn poll(&mut self) -> Option<Outcome>;
}

/// Run `waits` (from [`plan`]) with at most `jobs` at once (at least 1): `spawn(name)` begins
/// one guest's work; a guest begins once everything it waits for ended [`Outcome::Ok`], and is
/// skipped when one of those did not. `report` hears each outcome as it happens. Returns every
/// guest's outcome.
pub fn run<J: Job>(
    waits: &BTreeMap<String, Vec<String>>,
    jobs: usize,
    mut spawn: impl FnMut(&str) -> J,
    mut report: impl FnMut(&str, &Outcome),
) -> BTreeMap<String, Outcome> {
    let mut done: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut running: Vec<(String, J)> = Vec::new();
    loop {
        // Skip what waits for a failure; start what is ready, up to the limit.
        let mut progressed = false;
        for (n, w) in waits {
            if done.contains_key(n) || running.iter().any(|(r, _)| r == n) {
                continue;
            }
            if let Some(bad) = w
                .iter()
                .find(|d| matches!(done.get(*d), Some(o) if *o != Outcome::Ok))
            {
                let o = Outcome::Skipped(bad.clone());
                report(n, &o);
                done.insert(n.clone(), o);
                progressed = true;
                continue;
            }
            if running.len() < jobs.max(1) && w.iter().all(|d| done.get(d) == Some(&Outcome::Ok)) {
                running.push((n.clone(), spawn(n)));
                progressed = true;
            }
        }
        if done.len() == waits.len() {
            return done;
        }
        let mut i = 0;
        while i < running.len() {
            if let Some(o) = running[i].1.poll() {
                let (n, _) = running.remove(i);
                report(&n, &o);
                done.insert(n, o);
                progressed = true;
            } else {
                i += 1;
            }
        }
        if !progressed {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Exit code of a group operation, as util-vserver's start-vservers: 0 when every guest is ok
/// (or there were none), 1 when none is, 2 when some are.
pub fn exit_code(outcomes: &BTreeMap<String, Outcome>) -> u8 {
    let ok = outcomes.values().filter(|o| **o == Outcome::Ok).count();
    match (ok, outcomes.len()) {
        (_, 0) => 0,
        (o, n) if o == n => 0,
        (0, _) => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::Cell;
    use std::rc::Rc;

    struct Fake {
        left: u32,
        ok: bool,
        live: Rc<Cell<i32>>,
    }

    impl Job for Fake {
        fn poll(&mut self) -> Option<Outcome> {
            if self.left > 0 {
                self.left -= 1;
                return None;
            }
            self.live.set(self.live.get() - 1);
            Some(if self.ok {
                Outcome::Ok
            } else {
                Outcome::Failed("exit 1".into())
            })
        }
    }

    fn waits(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(n, w)| (n.to_string(), w.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn order_limit_and_skips() {
        let w = waits(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
            ("e", &["x"]),
            ("x", &[]),
        ]);
        let mut started = Vec::new();
        let live = Rc::new(Cell::new(0));
        let mut max_running = 0;
        let out = run(
            &w,
            2,
            |n| {
                started.push(n.to_string());
                live.set(live.get() + 1);
                max_running = max_running.max(live.get());
                Fake {
                    left: 2,
                    ok: n != "x",
                    live: live.clone(),
                }
            },
            |_, _| {},
        );
        assert!(max_running <= 2);
        let pos = |n: &str| started.iter().position(|s| s == n).unwrap();
        assert!(pos("a") < pos("b") && pos("b") < pos("c"));
        assert_eq!(out["e"], Outcome::Skipped("x".into()));
        assert!(!started.contains(&"e".to_string()));
        assert_eq!(exit_code(&out), 2);
    }

    #[test]
    fn cycles_are_named() {
        let w = waits(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        let e = check_acyclic(&w).unwrap_err().to_string();
        assert!(e.contains("a -> b -> c -> a"), "{e}");
    }
}
