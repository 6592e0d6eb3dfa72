//! `vhashify [OPTIONS] NAME... | --all`: unify the files of several guests (util-vserver's
//! vhashify): identical files share their blocks through reflink dedupe on btrfs and xfs, kept
//! in a content store `.hash` beside the guest roots. Exit 0 when every guest was unified, 1
//! when one failed (the others are still done), 2 on usage errors.

use clap::Parser;
use libvserver::guest::Guest;
use libvserver::storage::unify::{self, UnifyReport};
use std::process::ExitCode;
use vserver_tools::{PathArgs, UnifyArgs};

#[derive(Parser)]
#[command(
    name = "vhashify",
    version,
    about = "Share the blocks of identical files across guests (reflink dedupe on btrfs and xfs)",
    after_long_help = "Each guest's /etc (or its NAME.toml disk.unify_exclude) is left alone. A \
guest that later writes a unified file gets its own copy of what it writes: no guest can change \
another's file. Template guests (sharing a base already) and disk-image guests are skipped.\n\n\
EXIT STATUS: 0 all done; 1 a guest failed; 2 usage error."
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    /// Every configured guest.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    #[command(flatten)]
    unify: UnifyArgs,
    /// Empty the content store(s) of the given guests afterwards (their savings stay); alone,
    /// empty the store of the root base.
    #[arg(long)]
    prune: bool,
    /// Guest names.
    names: Vec<String>,
}

fn main() -> ExitCode {
    vserver_tools::generate_if_asked(<Cli as clap::CommandFactory>::command());
    vserver_tools::die_on_closed_pipe();
    let cli = Cli::parse();
    let paths = cli.paths.paths();
    let names: Vec<String> = if cli.all {
        libvserver::guest::configured_guests(&paths)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    } else {
        cli.names.clone()
    };
    if names.is_empty() && cli.prune && !cli.unify.dry_run {
        // --prune alone: empty the store beside the guest roots of the root base.
        return match unify::prune(&paths.root_base.join(".hash")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(m) => {
                eprintln!("vhashify: {m}");
                ExitCode::from(1)
            }
        };
    }
    if names.is_empty() {
        eprintln!("vhashify: give guest names or --all (or --prune alone)");
        return ExitCode::from(2);
    }
    let mut total = UnifyReport {
        dry_run: cli.unify.dry_run,
        ..Default::default()
    };
    let mut failed = false;
    let mut explained = false;
    let mut stores = Vec::new();
    for name in &names {
        let g = match Guest::load(&paths, name) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("vhashify: {e}");
                failed = true;
                continue;
            }
        };
        if cli.all && (g.config.disk.template.is_some() || g.config.disk.size.is_some()) {
            eprintln!("vhashify: {name}: skipped (template guest or disk image)");
            continue;
        }
        let mut rep = vserver_tools::Reporter::new(&format!("vhashify: {name}"));
        match unify::unify_guest(
            &g,
            cli.unify.dry_run,
            &cli.unify.exclude,
            cli.unify.min_size,
            &mut rep,
        ) {
            Ok(r) => {
                if cli.unify.json {
                    let mut v = serde_json::to_value(&r).unwrap_or_default();
                    v["guest"] = serde_json::Value::from(name.as_str());
                    println!("{v}");
                } else {
                    println!(
                        "{name}: {} files, {} bytes {}",
                        r.files,
                        r.bytes,
                        if r.dry_run {
                            "would be shared"
                        } else {
                            "shared"
                        }
                    );
                }
                if !stores.contains(&r.store) {
                    stores.push(r.store.clone());
                }
                total.add(&r);
            }
            Err(m) => {
                // The explanation of a file system without reflinks is said once; later
                // guests on such a file system get its first clause.
                match m.split_once("; ") {
                    Some((head, _)) if m.contains("cannot share blocks") && explained => {
                        eprintln!("vhashify: {name}: {head} (see above)");
                    }
                    _ => eprintln!("vhashify: {name}: {m}"),
                }
                explained |= m.contains("cannot share blocks");
                failed = true;
            }
        }
    }
    if cli.unify.json {
        let mut v = serde_json::to_value(&total).unwrap_or_default();
        v["guest"] = serde_json::Value::Null;
        println!("{v}");
    } else {
        println!(
            "total: {} files, {} {}",
            total.files,
            libvserver::stats::format::format_size(total.bytes),
            if total.dry_run {
                "would be saved"
            } else {
                "saved"
            }
        );
    }
    if cli.prune && !cli.unify.dry_run {
        for s in stores {
            if let Err(m) = unify::prune(&s) {
                eprintln!("vhashify: {m}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
