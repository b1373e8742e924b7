//! `plasmd status`: which running plasmd to ask.

use super::{string, Command, ConfigError};

const STATUS_HELP: &str = "\
plasmd status: ask a running plasmd (its /status.json) what it advertises and how it is doing

Usage: plasmd status [--url URL]

  --url URL    the plasmd's HTTP base URL (default http://127.0.0.1:8080)
Exit codes: 0 healthy, 1 cannot ask, 2 bad usage, 3 unhealthy (each problem is printed).
";

/// Parses what follows `plasmd status`.
pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Command, ConfigError> {
    use lexopt::prelude::*;
    let mut url = "http://127.0.0.1:8080".to_string();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Print(STATUS_HELP.into())),
            Long("url") => url = string(p, "--url")?,
            other => {
                return Err(ConfigError::Args(format!(
                    "{} (see plasmd status --help)",
                    other.unexpected()
                )))
            }
        }
    }
    if !url.starts_with("http://") {
        return Err(ConfigError::Invalid(format!(
            "--url {url:?}: expected http://HOST:PORT"
        )));
    }
    Ok(Command::Status { url })
}
