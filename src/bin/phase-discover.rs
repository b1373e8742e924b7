//! `phase-discover`: find a provider's manifest URL through the DHT, and
//! with `--fetch` the verified files. Run as `phase-boot` (a link to this
//! binary, so a stage-1 image carries one copy of libp2p), it is the stage 1
//! that boots a board: see `plasmd::boot`.
//!
//! Both walk the library's one client path (`plasmd::discover::client`);
//! this file parses arguments, says what happened and picks the exit code:
//! 0 found (and fetched), 2 nothing found in time or bad usage, 3 a download
//! or release did not verify or is below the rollback floor, 1 the rest.

use std::process::ExitCode;

use plasmd::config::{self, BootCommand, DiscoverCommand, DiscoverConfig};
use plasmd::discover::client::{self, ClientError, Note};
use plasmd::discover::{share, watch, Session};
use plasmd::record::ManifestRecord;
use plasmd::time::rfc3339_secs;

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some("phase-boot".as_ref()) {
        return phase_boot();
    }
    let cfg = match config::parse_discover(std::env::args_os().skip(1)) {
        Ok(DiscoverCommand::Run(cfg)) => *cfg,
        Ok(DiscoverCommand::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(2, &e.to_string()),
    };
    // stdout carries the answer; keep stderr to warnings unless asked.
    plasmd::init_logging("warn");
    if let Some(interval) = cfg.watch {
        return match watch::run(&cfg.query, cfg.json, interval) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &e.to_string()),
        };
    }
    let session = match Session::start(&cfg.query) {
        Ok(s) => s,
        Err(e) => return fail(1, &e.to_string()),
    };
    let result = lookup(&session, &cfg);
    session.stop();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ClientError::NotFound(..)) => {
            eprintln!("phase-discover: {e}");
            ExitCode::from(2)
        }
        Err(e) => fail(e.exit_code(), &e.to_string()),
    }
}

/// The client path: with `--fetch` down to verified files (their paths
/// printed), else the best record (or all of them) printed.
fn lookup(session: &Session, cfg: &DiscoverConfig) -> Result<(), ClientError> {
    let mut note = |n: Note| match n {
        Note::ClockBehind { now, trusted } => eprintln!(
            "phase-discover: the clock reads {}, earlier than {} (already seen or built): \
             treating it as unknown; records are judged against {}, releases by release_seq only",
            rfc3339_secs(now),
            rfc3339_secs(trusted),
            rfc3339_secs(trusted)
        ),
        Note::Found(records) if cfg.query.release_keys.is_empty() => say_who_signed(cfg, records),
        Note::Found(_) => {}
        Note::Refused { url, why } => eprintln!("phase-discover: refusing {url}: {why}"),
        Note::Failed { url, why } | Note::Skipped { url, why } => {
            eprintln!("phase-discover: from {url}: {why}")
        }
    };
    match &cfg.fetch {
        Some(target) => {
            let (files, tally) = share::fetch(session, &cfg.query, target, &cfg.share, &mut note)?;
            if tally.peer_bytes > 0 || tally.bad_chunks > 0 {
                eprintln!("phase-discover: {tally}");
            }
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
        None => {
            let found = client::candidates(session, &cfg.query, &mut note)?;
            print(cfg, found.records());
            found.keep_best()
        }
    }
}

/// Unpinned and without a release key: say whose word this is, so the
/// user can pin it (or, better, use a release key).
fn say_who_signed(cfg: &DiscoverConfig, records: &[ManifestRecord]) {
    if !cfg.query.trusted.is_empty() {
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

/// Prints the answer: the best URL, every URL (`--all`), or JSON.
fn print(cfg: &DiscoverConfig, records: Vec<&ManifestRecord>) {
    let shown = if cfg.all { &records[..] } else { &records[..1] };
    if cfg.json && cfg.all {
        let items: Vec<String> = shown.iter().map(|r| r.to_json()).collect();
        println!("[{}]", items.join(","));
    } else {
        for r in shown {
            println!("{}", if cfg.json { r.to_json() } else { r.url.clone() });
        }
    }
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("phase-discover: error: {msg}");
    ExitCode::from(code)
}

/// `phase-boot`: the stage 1 (see `plasmd::boot`). Never returns once it
/// runs: it boots a verified release or keeps trying.
fn phase_boot() -> ExitCode {
    let cmdline = match config::parse_boot(std::env::args_os().skip(1)) {
        Ok(BootCommand::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(BootCommand::Run(cmdline)) => cmdline,
        Err(e) => return fail(2, &format!("phase-boot: {e}")),
    };
    plasmd::init_logging("warn");
    match plasmd::boot::cmdline::read(cmdline) {
        Ok(cmdline) => plasmd::boot::run(&cmdline),
        Err(e) => fail(1, &format!("/proc/cmdline: {e}")),
    }
}
