//! `phase-discover`: find a provider's manifest URL through the DHT.
//! Run as `phase-boot` (a link to this binary, so a stage-1 image carries
//! one copy of libp2p), it is the stage 1 that boots a board: see `boot`.
//!
//! Exit codes: 0 found (and fetched), 2 nothing found before the timeout
//! or bad usage, 3 a download or release did not verify or is older than
//! the rollback floor, 1 any other error.

use std::process::ExitCode;

use plasmd::config::{self, DiscoverCommand, DiscoverConfig};
use plasmd::fetch::{self, Checked};
use plasmd::record::ManifestRecord;
use plasmd::release::floor::Floor;
use plasmd::time::Now;
use plasmd::{choose, discover};

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("phase-boot".as_ref()) {
        return phase_boot();
    }
    let mut cfg = match config::parse_discover(std::env::args_os().skip(1)) {
        Ok(DiscoverCommand::Run(cfg)) => *cfg,
        Ok(DiscoverCommand::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(2, &e.to_string()),
    };
    // stdout carries the answer; keep stderr to warnings unless asked.
    plasmd::init_logging("warn");
    let mut floor = match &cfg.state {
        Some(dir) => match Floor::load(dir, cfg.allow_downgrade) {
            Ok(f) => Some(f),
            Err(e) => return fail(2, &e.to_string()),
        },
        None => None,
    };
    if let Some(f) = &floor {
        cfg.trusted_time = cfg.trusted_time.max(f.trusted_time());
    }
    if let Now::NotBefore(t) = Now::judge(plasmd::time::unix_now(), cfg.trusted_time) {
        eprintln!(
            "phase-discover: the clock reads {}, earlier than {} (already seen or built): \
             treating it as unknown; records are judged against {}, releases by release_seq only",
            plasmd::time::rfc3339_secs(plasmd::time::unix_now()),
            plasmd::time::rfc3339_secs(t),
            plasmd::time::rfc3339_secs(t)
        );
    }
    if let Some(interval) = cfg.watch {
        return match discover::watch::run(&cfg, interval) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &e.to_string()),
        };
    }
    let records = match discover::discover(&cfg) {
        Ok(r) => r,
        Err(e) => return fail(1, &e.to_string()),
    };
    if records.is_empty() {
        eprintln!(
            "phase-discover: no provider found for {}/{} within {}s",
            cfg.channel,
            cfg.arch,
            cfg.timeout.as_secs()
        );
        return ExitCode::from(2);
    }
    if cfg.release_keys.is_empty() {
        say_who_signed(&cfg, &records);
        return match &cfg.fetch {
            Some(_) => {
                // Best provider first; each checked only when its turn comes.
                let checked = records.iter().map(|r| {
                    fetch::check_provider(r, &cfg.release_keys, &cfg.channel, &cfg.arch)
                        .map_err(|e| (r.url.clone(), e))
                });
                fetch_from(&cfg, checked, None)
            }
            None => print(&cfg, records.iter()),
        };
    }

    let choice = choose::releases(&records, &cfg, floor.as_ref());
    for (url, why) in &choice.refused {
        eprintln!("phase-discover: refusing {url}: {why}");
    }
    if choice.accepted.is_empty() {
        return fail(
            if choice.any_untrusted { 3 } else { 1 },
            &format!(
                "no provider of {}/{} serves a release signed by a release key ({}){}",
                cfg.channel,
                cfg.arch,
                cfg.release_keys.ids(),
                if floor.is_some() {
                    " at or above the rollback floor"
                } else {
                    ""
                }
            ),
        );
    }
    let code = match &cfg.fetch {
        Some(_) => fetch_from(
            &cfg,
            choice.accepted.iter().cloned().map(Ok),
            floor.as_mut(),
        ),
        None => {
            if let Some(f) = floor.as_mut() {
                choose::remember(f, &cfg, &choice.accepted[0]);
            }
            print(&cfg, choice.accepted.iter().map(|c| &c.record))
        }
    };
    if let Some(f) = &floor {
        if let Err(e) = f.save() {
            return fail(1, &e.to_string());
        }
    }
    code
}

/// Unpinned and without a release key: say whose word this is, so the
/// user can pin it (or, better, use a release key).
fn say_who_signed(cfg: &DiscoverConfig, records: &[ManifestRecord]) {
    if !cfg.trusted.is_empty() {
        return;
    }
    for r in if cfg.all { records } else { &records[..1] } {
        let name = r
            .provider_name
            .as_deref()
            .map_or(String::new(), |n| format!(" \"{n}\""));
        eprintln!(
            "phase-discover: record signed by {}{name} (pin it with --trust {}, or trust releases with --release-key)",
            r.peer_id, r.peer_id
        );
    }
}

/// Downloads from the first provider that delivers verified files; the
/// floor (if kept) is raised to the release that was used.
fn fetch_from(
    cfg: &DiscoverConfig,
    providers: impl Iterator<Item = Result<Checked, (String, fetch::FetchError)>>,
    floor: Option<&mut Floor>,
) -> ExitCode {
    let Some(target) = &cfg.fetch else {
        return ExitCode::SUCCESS;
    };
    let mut mismatch = false;
    for p in providers {
        let result = p.and_then(|c| {
            fetch::run(&c, target)
                .map(|files| (c.clone(), files))
                .map_err(|e| (c.record.url.clone(), e))
        });
        match result {
            Ok((used, files)) => {
                for f in files {
                    println!("{}", f.display());
                }
                if let Some(floor) = floor {
                    choose::remember(floor, cfg, &used);
                }
                return ExitCode::SUCCESS;
            }
            Err((url, e)) => {
                eprintln!("phase-discover: from {url}: {e}");
                mismatch |= e.is_mismatch();
            }
        }
    }
    fail(
        if mismatch { 3 } else { 1 },
        "no provider delivered verified files",
    )
}

/// Prints the answer: the best URL, every URL (`--all`), or JSON.
fn print<'a>(
    cfg: &DiscoverConfig,
    mut records: impl Iterator<Item = &'a ManifestRecord>,
) -> ExitCode {
    match (cfg.all, cfg.json) {
        (true, true) => {
            let items: Vec<String> = records.map(|r| r.to_json()).collect();
            println!("[{}]", items.join(","));
        }
        (true, false) => records.for_each(|r| println!("{}", r.url)),
        (false, true) => {
            if let Some(r) = records.next() {
                println!("{}", r.to_json())
            }
        }
        (false, false) => {
            if let Some(r) = records.next() {
                println!("{}", r.url)
            }
        }
    }
    ExitCode::SUCCESS
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("phase-discover: error: {msg}");
    ExitCode::from(code)
}

const PHASE_BOOT_HELP: &str = "\
phase-boot: the stage 1 of a netbooting board: find a provider, verify the release, kexec into it

Usage: phase-boot [--cmdline STRING]

Reads its settings from the kernel command line (/proc/cmdline, or --cmdline):
  phase.channel=C           the channel to boot (required)
  phase.arch=A              the architecture (default: the running one)
  phase.release_key=BASE64  a release key (the second line of a minisign .pub file),
                            repeatable; keys in /etc/phase/release-keys/*.pub count too
  phase.mdns=0|1            find providers on the LAN by mDNS (default 1)
  phase.bootstrap=MULTIADDR a DHT peer to ask, repeatable
  phase.state=LABEL         a partition holding the rollback floor
  phase.timeout=SECS        one lookup round (default 15)
Runs until it has kexec'd into a verified release; never gives up.
";

/// `phase-boot`: the stage 1 (see `plasmd::boot`).
fn phase_boot() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mut cmdline = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-h" | "--help") => {
                print!("{PHASE_BOOT_HELP}");
                return ExitCode::SUCCESS;
            }
            Some("--cmdline") => match args.next().map(|v| v.into_string()) {
                Some(Ok(v)) => cmdline = Some(v),
                Some(Err(_)) => return fail(2, "phase-boot: --cmdline is not UTF-8"),
                None => return fail(2, "phase-boot: --cmdline needs a value"),
            },
            _ => {
                return fail(
                    2,
                    &format!("phase-boot: unknown argument {a:?} (see --help)"),
                )
            }
        }
    }
    plasmd::init_logging("warn");
    let cmdline = match cmdline {
        Some(c) => c,
        None => match std::fs::read_to_string("/proc/cmdline") {
            Ok(c) => c,
            Err(e) => return fail(1, &format!("/proc/cmdline: {e}")),
        },
    };
    plasmd::boot::run(&cmdline)
}
