//! `vservers [--mark M] [-j N] start|stop|status`: the guests of a start group, in dependency
//! order, N at a time (util-vserver's `vservers`/start-vservers). Exit 0 all ok, 1 none ok,
//! 2 some ok.

use clap::{Parser, ValueEnum};
use libvserver::guest::group::{self, Job, Outcome};
use libvserver::guest::Guest;
use std::collections::BTreeMap;
use std::process::{Child, Command, ExitCode, Stdio};
use vserver_tools::PathArgs;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Action {
    Start,
    Stop,
    Status,
}

#[derive(Parser)]
#[command(
    name = "vservers",
    version,
    about = "Start, stop or show the guests of a mark, in dependency order"
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    /// The start group (`mark = [...]` in NAME.toml).
    #[arg(long, default_value = "default")]
    mark: String,
    /// How many guests to start or stop at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 1)]
    jobs: usize,
    /// Print the outcome as one JSON object (guest name to "ok", "failed: ..." or
    /// "skipped: ...", or for status "running"/"stopped") instead of lines.
    #[arg(long)]
    json: bool,
    /// start, stop or status.
    action: Action,
}

/// One `vserver NAME start|stop` process.
struct Proc(Child);

impl Job for Proc {
    fn poll(&mut self) -> Option<Outcome> {
        match self.0.try_wait() {
            Ok(None) => None,
            Ok(Some(s)) if s.success() => Some(Outcome::Ok),
            Ok(Some(s)) => Some(Outcome::Failed(s.to_string())),
            Err(e) => Some(Outcome::Failed(e.to_string())),
        }
    }
}

/// Failed to spawn: reported at the first poll.
struct NotStarted(String);

enum Work {
    Proc(Proc),
    NotStarted(NotStarted),
    /// Already in the state asked for.
    Done,
}

impl Job for Work {
    fn poll(&mut self) -> Option<Outcome> {
        match self {
            Work::Proc(p) => p.poll(),
            Work::NotStarted(n) => Some(Outcome::Failed(n.0.clone())),
            Work::Done => Some(Outcome::Ok),
        }
    }
}

fn main() -> ExitCode {
    vserver_tools::die_on_closed_pipe();
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    let cli = Cli::parse();
    let paths = cli.paths.paths();
    let start = cli.action == Action::Start;
    let plan = match group::plan(&paths, &cli.mark, start) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vservers: {e}");
            return ExitCode::from(1);
        }
    };
    let waits = &plan.waits;
    if waits.is_empty() {
        eprintln!(
            "vservers: no guest has mark '{}' (mark = [...] in NAME.toml)",
            cli.mark
        );
    }
    if cli.action == Action::Status {
        let mut out = BTreeMap::new();
        let mut report = serde_json::Map::new();
        for name in waits.keys() {
            let running = Guest::load(&paths, name)
                .map(|g| g.running().is_some())
                .unwrap_or(false);
            let state = if running { "running" } else { "stopped" };
            if cli.json {
                report.insert(name.clone(), state.into());
            } else {
                println!("{name}: {state}");
            }
            out.insert(
                name.clone(),
                if running {
                    Outcome::Ok
                } else {
                    Outcome::Failed("stopped".into())
                },
            );
        }
        if cli.json {
            println!("{}", serde_json::Value::Object(report));
        }
        return ExitCode::from(group::exit_code(&out));
    }
    // The vserver binary next to this one.
    let vserver = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("vserver")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "vserver".into());
    let verb = if start { "start" } else { "stop" };
    // A guest already in the state asked for counts as done (a dependency already running is
    // satisfied): nothing is run for it.
    let already = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let outcomes = group::run(
        waits,
        cli.jobs,
        |name| {
            if let Some(why) = plan.failed.get(name) {
                return Work::NotStarted(NotStarted(why.clone()));
            }
            let running = Guest::load(&paths, name)
                .ok()
                .map(|g| g.running().is_some());
            if running == Some(start) {
                already.borrow_mut().insert(name.to_string());
                return Work::Done;
            }
            let spawned = Command::new(&vserver)
                .arg(name)
                .arg(verb)
                .env("VSERVER_CONFDIR", &paths.config_dir)
                .env("VSERVER_ROOTBASE", &paths.root_base)
                .env("VSERVER_RUNDIR", &paths.run_dir)
                .stdin(Stdio::null())
                .spawn();
            match spawned {
                Ok(c) => Work::Proc(Proc(c)),
                Err(e) => Work::NotStarted(NotStarted(format!("run {}: {e}", vserver.display()))),
            }
        },
        |name, outcome| {
            if cli.json {
                return;
            }
            match outcome {
                Outcome::Ok if already.borrow().contains(name) => println!(
                    "{name}: {}",
                    if start {
                        "already running"
                    } else {
                        "already stopped"
                    }
                ),
                Outcome::Ok => println!("{name}: {verb} ok"),
                Outcome::Failed(why) => println!("{name}: {verb} failed ({why})"),
                Outcome::Skipped(by) => println!("{name}: skipped ({by} failed)"),
            }
        },
    );
    if cli.json {
        let report: serde_json::Map<String, serde_json::Value> = outcomes
            .iter()
            .map(|(n, o)| {
                let v = match o {
                    Outcome::Ok if already.borrow().contains(n) => String::from(if start {
                        "already running"
                    } else {
                        "already stopped"
                    }),
                    Outcome::Ok => String::from("ok"),
                    Outcome::Failed(why) => format!("failed: {why}"),
                    Outcome::Skipped(by) => format!("skipped: {by} failed"),
                };
                (n.clone(), v.into())
            })
            .collect();
        println!("{}", serde_json::Value::Object(report));
    }
    ExitCode::from(group::exit_code(&outcomes))
}
