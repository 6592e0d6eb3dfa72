//! Shared argument pieces of the vserver tools. The tools only parse, call libvserver, print.

use clap::Args;
use libvserver::paths::Paths;
use std::path::PathBuf;

/// Global path overrides. The environment variables `VSERVER_CONFDIR`, `VSERVER_ROOTBASE`,
/// `VSERVER_RUNDIR` and `VSERVER_LOGDIR` are read by [`Paths::resolve`], not by clap: clap would
/// show options taken
/// from the environment in every usage line as if they had to be given.
#[derive(Debug, Args, Clone, Default)]
pub struct PathArgs {
    /// Configuration directory [env: VSERVER_CONFDIR] [default: /etc/vservers]
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Base directory of guest roots [env: VSERVER_ROOTBASE] [default: /var/lib/vservers]
    #[arg(long, global = true, value_name = "DIR")]
    pub root_base: Option<PathBuf>,
    /// Runtime state directory [env: VSERVER_RUNDIR] [default: /run/vservers]
    #[arg(long, global = true, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Guest log directory [env: VSERVER_LOGDIR] [default: /var/log/vservers]
    #[arg(long, global = true, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

impl PathArgs {
    /// Resolve with environment and defaults.
    pub fn paths(&self) -> Paths {
        Paths::resolve(
            self.config_dir.clone(),
            self.root_base.clone(),
            self.run_dir.clone(),
            self.log_dir.clone(),
        )
    }
}

/// Parse a signal given as `TERM`, `SIGTERM`, `15` or `0` (existence check).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if s == "0" {
        return Ok(0);
    }
    libvserver::config::parse_signal_name(s)
}

/// Human duration: `3d04h`, `2h03m`, `5m12s`, `42s`.
pub fn human_secs(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// When `VSERVER_GENERATE` is set in the environment, write the tool's man page (`man`), the man
/// page of one subcommand (`man:SUB`, named `TOOL-SUB`), the list of subcommands
/// (`subcommands`) or a shell completion script (`bash`, `zsh`, `fish`) for `cmd` to stdout and
/// exit; otherwise return. `scripts/install.sh` uses it so the pages and completions always
/// match the CLI definition.
pub fn generate_if_asked(mut cmd: clap::Command) {
    let Ok(what) = std::env::var("VSERVER_GENERATE") else {
        return;
    };
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout();
    if what == "subcommands" {
        for s in cmd.get_subcommands() {
            println!("{}", s.get_name());
        }
        std::process::exit(0)
    }
    if let Some(sub) = what.strip_prefix("man:") {
        let Some(s) = cmd.find_subcommand(sub) else {
            eprintln!("{name}: no subcommand {sub}");
            std::process::exit(2)
        };
        // The process ends right after: a leaked name is fine (clap names are &'static str).
        let page_name: &'static str = Box::leak(format!("{name}-{sub}").into_boxed_str());
        // The synopsis reads as the command is typed: `vserver NAME build ...` (the page keeps
        // its name, vserver-build(8)).
        let typed = if name == "vserver" {
            format!("{name} NAME {sub}")
        } else {
            format!("{name} {sub}")
        };
        let page = s.clone().name(page_name).bin_name(typed);
        let code = match clap_mangen::Man::new(page).section("8").render(&mut out) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{name}: man page: {e}");
                1
            }
        };
        std::process::exit(code)
    }
    let shell = match what.as_str() {
        "man" => {
            // No `help` subcommand in the page: it would point to a vserver-help(8) that is
            // not installed.
            let cmd = cmd.disable_help_subcommand(true);
            let code = match clap_mangen::Man::new(cmd).section("8").render(&mut out) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{name}: man page: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        other => {
            eprintln!("{name}: VSERVER_GENERATE={other}: want man, bash, zsh or fish");
            std::process::exit(2)
        }
    };
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut text);
    let _ = std::io::Write::write_all(&mut out, &text);
    std::process::exit(0)
}

/// Let a closed pipe end a listing tool quietly, as it ends `ps` or `ls` (`vserver-stat | head`):
/// the Rust runtime ignores SIGPIPE, which turns a closed pipe into a panic in `println!`.
pub fn die_on_closed_pipe() {
    // SAFETY: restoring the default disposition of one signal in a single-threaded process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Options shared by `vserver NAME unify` and `vhashify`.
#[derive(clap::Args, Debug, Clone)]
pub struct UnifyArgs {
    /// Report what would be shared; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON (vhashify: one object per guest and one for the total,
    /// "guest": null, a line each).
    #[arg(long)]
    pub json: bool,
    /// A path inside the guest(s) to leave alone (repeatable).
    #[arg(long = "exclude", value_name = "PATH")]
    pub exclude: Vec<String>,
    /// Skip files smaller than BYTES (default 4096).
    #[arg(long, value_name = "BYTES")]
    pub min_size: Option<u64>,
}

/// Progress of long storage work on standard error: a bar (or a spinner when the total is
/// unknown) on a terminal, plain lines otherwise (one every 5 seconds at most, and a last
/// one with the count). Every line is prefixed with the tool's name.
pub struct Reporter {
    prefix: String,
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
    what: String,
    unit: String,
    total: Option<u64>,
    done: u64,
    last: std::time::Instant,
}

impl Reporter {
    /// A reporter whose lines start with `prefix: `.
    pub fn new(prefix: &str) -> Reporter {
        use std::io::IsTerminal;
        Reporter {
            prefix: prefix.to_string(),
            bar: None,
            tty: std::io::stderr().is_terminal(),
            what: String::new(),
            unit: String::new(),
            total: None,
            done: 0,
            last: std::time::Instant::now(),
        }
    }

    fn count(&self) -> String {
        let f = |n: u64| {
            if self.unit == "bytes" {
                libvserver::stats::format::format_size(n)
            } else {
                n.to_string()
            }
        };
        let unit = if self.unit == "bytes" {
            ""
        } else {
            self.unit.as_str()
        };
        match self.total {
            Some(t) => format!("{} of {} {unit}", f(self.done), f(t)),
            None => format!("{} {unit}", f(self.done)),
        }
        .trim_end()
        .to_string()
    }
}

impl libvserver::storage::progress::Progress for Reporter {
    fn line(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("{}: {msg}", self.prefix)),
            None => eprintln!("{}: {msg}", self.prefix),
        }
    }

    fn begin(&mut self, what: &str, total: Option<u64>, unit: &str) {
        (self.what, self.unit, self.total, self.done) =
            (what.to_string(), unit.to_string(), total, 0);
        self.last = std::time::Instant::now();
        if !self.tty {
            return;
        }
        let pos = if unit == "bytes" {
            "{bytes}/{total_bytes}"
        } else {
            "{pos}/{len}"
        };
        let b = match total {
            Some(t) => indicatif::ProgressBar::new(t).with_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{prefix}} {{elapsed_precise}} [{{bar:30}}] {pos} {{wide_msg}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template(if unit == "bytes" {
                    "{prefix} {spinner} {elapsed_precise} {bytes} {wide_msg}"
                } else if unit.is_empty() {
                    "{prefix} {spinner} {elapsed_precise} {wide_msg}"
                } else {
                    "{prefix} {spinner} {elapsed_precise} {pos} {wide_msg}"
                })
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            ),
        };
        b.set_prefix(format!("{}: {what}", self.prefix));
        b.enable_steady_tick(std::time::Duration::from_millis(200));
        self.bar = Some(b);
    }

    fn update(&mut self, done: u64, note: &str) {
        self.done = done;
        if let Some(b) = &self.bar {
            b.set_position(done);
            if !note.is_empty() {
                b.set_message(note.to_string());
            }
        } else if self.last.elapsed() >= std::time::Duration::from_secs(5) {
            self.last = std::time::Instant::now();
            let note = if note.is_empty() || self.unit.is_empty() {
                note.to_string()
            } else {
                format!(" ({note})")
            };
            if self.unit.is_empty() {
                eprintln!("{}: {}: {note}", self.prefix, self.what);
            } else {
                eprintln!("{}: {}: {}{note}", self.prefix, self.what, self.count());
            }
        }
    }

    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if !self.unit.is_empty() {
            self.total = None;
            eprintln!("{}: {}: {}", self.prefix, self.what, self.count());
        }
    }
}
