//! `plasmd`: parse the command line and hand over to the library.

use std::process::ExitCode;

use plasmd::config::{self, Command};
use plasmd::{identity, provider, release};

fn main() -> ExitCode {
    let command = match config::parse_plasmd(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("plasmd: error: {e}");
            return ExitCode::from(2);
        }
    };
    // libp2p is chatty at INFO; our own lines are what users grep for.
    plasmd::init_logging("info,libp2p=warn,libp2p_kad=warn,libp2p_swarm=warn");
    let result = match command {
        Command::Print(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::Id { identity } => match identity::load_or_create(&identity) {
            Ok(key) => {
                println!("{}", key.public().to_peer_id());
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("plasmd: error: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Release(cmd) => match release::command::run(&cmd) {
            Ok(text) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("plasmd: error: {e}");
                return ExitCode::from(e.exit_code());
            }
        },
        Command::Status { url } => match plasmd::status::query(&url) {
            Ok((table, healthy)) => {
                print!("{table}");
                return ExitCode::from(if healthy { 0 } else { 3 });
            }
            Err(e) => {
                eprintln!("plasmd: error: {e}");
                return ExitCode::from(1);
            }
        },
        Command::CheckServe(cfg, ok) => {
            print!("{ok}{}", provider::describe(&cfg));
            return ExitCode::SUCCESS;
        }
        Command::Serve(cfg) => provider::serve(*cfg),
        Command::Node(cfg) => provider::node(cfg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("plasmd: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
