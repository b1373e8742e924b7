//! `phase.*` settings from the kernel command line (`/proc/cmdline`), the
//! only configuration a stage-1 board has: `phase.channel=`, `phase.arch=`
//! (default: the running architecture), `phase.bootstrap=` (repeatable),
//! `phase.mdns=0|1` (default 1), `phase.release_key=` (the base64 line of
//! a minisign public key; repeatable), `phase.state=LABEL`,
//! `phase.state_required=0|1` (default 0: without the state partition the
//! board boots without a floor; 1: it waits for the partition),
//! `phase.timeout=SECS` (one lookup round), `phase.min_rate=BYTES` and
//! `phase.rate_window=SECS` (how slow a provider may send; see
//! `fetch::Limits`), `phase.share_port=PORT` (where the board serves the
//! chunks it verified to the rest of the rack while it downloads; default
//! 8090, 0 turns sharing off), `phase.seed_linger=SECS` (how long at
//! most it keeps serving before kexec; default 60, 0 not at all; it stops
//! sooner once nothing was asked for 5 s) and `phase.share_rate=BYTES`
//! (its upload cap; default 0, none). Other words are the kernel's
//! and are ignored; a `phase.` word we do not know is an error, so a typo
//! does not silently fall back to a default.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::channel::check_name;
// The same bounds as `phase-discover --min-rate` and `--rate-window`.
use crate::config::{MAX_MIN_RATE, MAX_RATE_WINDOW};
use crate::fetch::Limits;
use crate::minisign::PublicKey;

/// Longest command line we read (the kernel's own limit is a few KiB).
const MAX_CMDLINE: usize = 64 * 1024;
/// Default and largest `phase.timeout`.
const DEFAULT_ROUND: u64 = 15;
const MAX_ROUND: u64 = 3600;
/// Where a booting board serves chunks to the others by default.
pub const DEFAULT_SHARE_PORT: u16 = 8090;

/// A bad `phase.*` word: the board says so on the console and keeps
/// waiting (there is no one to read an exit code).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("{0}")]
    Bad(String),
}

/// The settings read from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub channel: String,
    pub arch: String,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    /// Keys given inline (`phase.release_key=`).
    pub release_keys: Vec<PublicKey>,
    /// Label of a small partition holding the rollback floor.
    pub state_label: Option<String>,
    /// Boot only with the rollback floor (`phase.state_required=1`): while
    /// the state partition is missing, wait for it instead of booting.
    pub state_required: bool,
    /// How long one lookup round lasts before trying again.
    pub round: Duration,
    /// How slow a provider may be before it is passed over.
    pub limits: Limits,
    /// Serve verified chunks to other boards on this port (0: do not).
    pub share_port: u16,
    /// How long sharing may go on after the download, before kexec.
    pub linger: crate::discover::share::Linger,
    /// Upload cap of the share port, bytes per second (0: none).
    pub share_rate: u64,
}

/// The architecture name boards use for the machine this runs on.
pub fn running_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        "arm" => "armhf",
        other => other,
    }
}

/// `phase.NAME=VALUE` as a yes or no.
fn flag(name: &str, value: &str) -> Result<bool, CmdlineError> {
    match value {
        "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => Err(CmdlineError::Bad(format!(
            "phase.{name}={value}: use 1 or 0"
        ))),
    }
}

/// `phase.NAME=VALUE` as a whole number in `min..=max`.
fn number(name: &str, value: &str, min: u64, max: u64, unit: &str) -> Result<u64, CmdlineError> {
    value
        .parse()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            CmdlineError::Bad(format!("phase.{name}={value}: use {min} to {max} {unit}"))
        })
}

/// The running kernel's command line (`/proc/cmdline`), read lossily: a
/// byte that is not UTF-8 must not stop the board; [`parse`] names a
/// `phase.` word it spoils.
/// `given` instead when there is one (`phase-boot --cmdline`).
pub fn read(given: Option<String>) -> std::io::Result<String> {
    if let Some(given) = given {
        return Ok(given);
    }
    let bytes = std::fs::read("/proc/cmdline")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Parses a kernel command line.
pub fn parse(cmdline: &str) -> Result<Settings, CmdlineError> {
    let bad = |m: String| CmdlineError::Bad(m);
    if cmdline.len() > MAX_CMDLINE {
        return Err(bad("the kernel command line is too long".into()));
    }
    let (mut channel, mut arch) = (None, None);
    let mut s = Settings {
        channel: String::new(),
        arch: String::new(),
        bootstrap: Vec::new(),
        mdns: true,
        release_keys: Vec::new(),
        state_label: None,
        state_required: false,
        round: Duration::from_secs(DEFAULT_ROUND),
        limits: Limits::default(),
        share_port: DEFAULT_SHARE_PORT,
        linger: Default::default(),
        share_rate: 0,
    };
    for word in cmdline.split_ascii_whitespace() {
        let Some(setting) = word.strip_prefix("phase.") else {
            continue;
        };
        // The command line was read lossily (bytes that are not UTF-8 show
        // as U+FFFD): say which of our words they are in.
        if word.contains('\u{fffd}') {
            return Err(bad(format!(
                "{word}: not UTF-8 on the kernel command line (bad bytes shown as \u{fffd})"
            )));
        }
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| bad(format!("phase.{setting}: expected phase.{setting}=VALUE")))?;
        match name {
            "channel" => channel = Some(value.to_string()),
            "arch" => arch = Some(value.to_string()),
            // The same rules as `--bootstrap` (a multiaddr with /tcp).
            "bootstrap" => s.bootstrap.extend(
                crate::config::parse_bootstrap(&[value.to_string()])
                    .map_err(|e| bad(format!("phase.bootstrap={value}: {e}")))?,
            ),
            "mdns" => s.mdns = flag(name, value)?,
            "state_required" => s.state_required = flag(name, value)?,
            "release_key" => s.release_keys.push(
                PublicKey::from_base64(value)
                    .map_err(|e| bad(format!("phase.release_key: {e}")))?,
            ),
            "state" => {
                if value.is_empty() || value.len() > 64 || value.contains(['/', '\0']) {
                    return Err(bad(format!("phase.state={value}: not a partition label")));
                }
                s.state_label = Some(value.to_string())
            }
            "timeout" => {
                s.round = Duration::from_secs(number(name, value, 1, MAX_ROUND, "seconds")?)
            }
            "min_rate" => {
                s.limits.min_rate = number(name, value, 0, MAX_MIN_RATE, "bytes per second")?
            }
            "rate_window" => {
                s.limits.window =
                    Duration::from_secs(number(name, value, 1, MAX_RATE_WINDOW, "seconds")?)
            }
            "share_port" => s.share_port = number(name, value, 0, 65535, "(a TCP port)")? as u16,
            "seed_linger" => {
                s.linger.max = Duration::from_secs(number(name, value, 0, 3600, "seconds")?)
            }
            "share_rate" => {
                s.share_rate = number(name, value, 0, MAX_MIN_RATE, "bytes per second")?
            }
            _ => return Err(bad(format!("phase.{name}: unknown setting"))),
        }
    }
    s.channel =
        channel.ok_or_else(|| bad("no phase.channel= on the kernel command line".into()))?;
    s.arch = arch.unwrap_or_else(|| running_arch().to_string());
    check_name("channel", &s.channel).map_err(|e| bad(format!("phase.channel: {e}")))?;
    check_name("arch", &s.arch).map_err(|e| bad(format!("phase.arch: {e}")))?;
    if s.state_required && s.state_label.is_none() {
        return Err(bad(
            "phase.state_required=1 needs phase.state=LABEL (the partition to wait for)".into(),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_command_line_gives_the_settings() {
        let key = crate::minisign::SecretKey::generate();
        let line = key.public_file().lines().nth(1).unwrap().to_string();
        let s = parse(&format!(
            "console=ttyAMA0 quiet phase.channel=stable phase.mdns=0 \
             phase.bootstrap=/ip4/192.0.2.1/tcp/4001 phase.release_key={line} \
             phase.state=PHASESTATE phase.timeout=5 phase.min_rate=0 phase.rate_window=20 \
             phase.share_port=0 phase.seed_linger=10 phase.share_rate=4000000"
        ))
        .unwrap();
        assert_eq!((s.share_port, s.linger.max), (0, Duration::from_secs(10)));
        assert_eq!(s.share_rate, 4_000_000);
        assert_eq!(
            (s.channel.as_str(), s.arch.as_str()),
            ("stable", running_arch())
        );
        assert!(!s.mdns);
        assert_eq!(s.bootstrap.len(), 1);
        assert_eq!(s.release_keys[0].id, key.id);
        assert_eq!(s.state_label.as_deref(), Some("PHASESTATE"));
        assert_eq!(s.round, Duration::from_secs(5));
        assert_eq!(s.limits.min_rate, 0);
        assert!(!s.state_required);
        let required = parse("phase.channel=s phase.state=ST phase.state_required=1").unwrap();
        assert!(required.state_required);
        assert_eq!(s.limits.window, Duration::from_secs(20));
        // Defaults: mDNS on, the running arch, the fetch limits.
        let d = parse("phase.channel=testing phase.arch=arm64").unwrap();
        assert!(d.mdns && d.arch == "arm64" && d.release_keys.is_empty());
        assert_eq!(d.limits, Limits::default());
    }

    #[test]
    fn bad_words_are_errors_naming_them() {
        for (line, needle) in [
            ("root=/dev/sda", "no phase.channel"),
            ("phase.channel=../x", "phase.channel"),
            ("phase.channel=s phase.chanel=t", "phase.chanel"),
            ("phase.channel=s phase.mdns=maybe", "phase.mdns"),
            ("phase.channel=s phase.timeout=0", "phase.timeout"),
            (
                "phase.channel=s phase.timeout=99999999999999999999",
                "phase.timeout",
            ),
            ("phase.channel=s phase.release_key=abc", "phase.release_key"),
            ("phase.channel=s phase.bootstrap=nope", "phase.bootstrap"),
            (
                "phase.channel=s phase.bootstrap=/ip4/192.0.2.1",
                "no /tcp/PORT",
            ),
            ("phase.channel=s phase.state=a/b", "phase.state"),
            ("phase.channel=s phase.min_rate=fast", "phase.min_rate"),
            ("phase.channel=s phase.min_rate=-1", "phase.min_rate"),
            ("phase.channel=s phase.rate_window=0", "phase.rate_window"),
            ("phase.channel=s phase.share_port=65536", "phase.share_port"),
            (
                "phase.channel=s phase.seed_linger=3601",
                "phase.seed_linger",
            ),
            (
                "phase.channel=s phase.state_required=1",
                "needs phase.state",
            ),
            (
                "phase.channel=s phase.state_required=maybe",
                "phase.state_required",
            ),
            (
                "phase.channel=s\u{fffd}x quiet",
                "phase.channel=s\u{fffd}x: not UTF-8",
            ),
            ("phase.channel", "expected"),
        ] {
            let e = parse(line).unwrap_err().to_string();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
