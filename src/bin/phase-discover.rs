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
    match discover::discover(&cfg) {
        Ok(Some(record)) => {
            if cfg.trusted.is_empty() {
                // Unpinned: say whose word this is, so the user can pin it.
                let name = record
                    .provider_name
                    .as_deref()
                    .map_or(String::new(), |n| format!(" \"{n}\""));
                eprintln!(
                    "phase-discover: record signed by {}{name} (pin it with --trust {})",
                    record.peer_id, record.peer_id
                );
            }
            if let Some(target) = &cfg.fetch {
                return match fetch::run(&record, target) {
                    Ok(files) => {
                        for f in files {
                            println!("{}", f.display());
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("phase-discover: error: {e}");
                        ExitCode::from(if e.is_mismatch() { 3 } else { 1 })
                    }
                };
            }
            if cfg.json {
                println!("{}", record.to_json());
            } else {
                println!("{}", record.url);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!(
                "phase-discover: no provider found for {}/{} within {}s",
                cfg.channel,
                cfg.arch,
                cfg.timeout.as_secs()
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("phase-discover: error: {e}");
            ExitCode::from(1)
        }
    }
}
