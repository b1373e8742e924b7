//! `phase-discover`: find a provider's manifest URL through the DHT.
//!
//! Exit codes: 0 found (and fetched), 2 nothing found before the timeout
//! or bad usage, 3 a download did not verify, 1 any other error.

use std::process::ExitCode;

use plasmd::config::{self, DiscoverCommand};
use plasmd::{discover, fetch};

fn main() -> ExitCode {
    let cfg = match config::parse_discover(std::env::args_os().skip(1)) {
        Ok(DiscoverCommand::Run(cfg)) => cfg,
        Ok(DiscoverCommand::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("phase-discover: error: {e}");
            return ExitCode::from(2);
        }
    };
    // stdout carries the answer; keep stderr to warnings unless asked.
    plasmd::init_logging("warn");
    let records = match discover::discover(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phase-discover: error: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(best) = records.first() else {
        eprintln!(
            "phase-discover: no provider found for {}/{} within {}s",
            cfg.channel,
            cfg.arch,
            cfg.timeout.as_secs()
        );
        return ExitCode::from(2);
    };
    if cfg.trusted.is_empty() {
        // Unpinned: say whose word this is, so the user can pin it.
        for r in if cfg.all { &records[..] } else { &records[..1] } {
            let name = r
                .provider_name
                .as_deref()
                .map_or(String::new(), |n| format!(" \"{n}\""));
            eprintln!(
                "phase-discover: record signed by {}{name} (pin it with --trust {})",
                r.peer_id, r.peer_id
            );
        }
    }
    if let Some(target) = &cfg.fetch {
        // Best provider first; on any failure, the next one.
        let mut last = None;
        for r in &records {
            match fetch::run(r, target) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    return ExitCode::SUCCESS;
                }
                Err(e) => {
                    eprintln!("phase-discover: from {}: {e}", r.url);
                    last = Some(e);
                }
            }
        }
        let mismatch = last.is_some_and(|e| e.is_mismatch());
        eprintln!("phase-discover: error: no provider delivered verified files");
        return ExitCode::from(if mismatch { 3 } else { 1 });
    }
    match (cfg.all, cfg.json) {
        (true, true) => {
            let items: Vec<String> = records.iter().map(|r| r.to_json()).collect();
            println!("[{}]", items.join(","));
        }
        (true, false) => {
            for r in &records {
                println!("{}", r.url);
            }
        }
        (false, true) => println!("{}", best.to_json()),
        (false, false) => println!("{}", best.url),
    }
    ExitCode::SUCCESS
}
