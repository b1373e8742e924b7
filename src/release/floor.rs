//! The rollback floor: the highest `release_seq` a board has accepted per
//! channel/arch and the newest time it has seen, kept in a small state
//! file (`phase-discover --state DIR`), so a board is never sent back to
//! an older signed release, and a board without a real-time clock can tell
//! when its clock is wrong.
//!
//! The file is replaced atomically (`statefile`), so after a power cut it
//! holds the old floor or the new one. A file that is nevertheless empty or
//! unreadable was damaged by something else: it is refused with an error,
//! never read as "no floor", because that would let an old release back in.
//! Only a *missing* file means a fresh board. `--allow-downgrade` accepts a
//! lower release once and writes the new (lower) floor; it also resets a
//! damaged file, on purpose.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::channel::check_name;
use crate::time::{unix_now, Now, BUILD_TIME, CLOCK_SKEW_SECS};

/// The state file's name inside `--state DIR`.
pub const FLOOR_FILE: &str = "rollback-floor";
/// First line of the file; bump when the format changes.
const HEADER: &str = "plasmd-rollback-floor v1";
/// A floor is one line per channel/arch: this is plenty.
const MAX_BYTES: u64 = 64 * 1024;
const MAX_ENTRIES: usize = 1024;

/// Errors of the rollback floor.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("state file {0}: {1}")]
    Io(PathBuf, io::Error),
    #[error(
        "state file {0} is damaged ({1}); refusing to guess the rollback floor. \
         Run once with --allow-downgrade to accept the newest valid release and rewrite it"
    )]
    Damaged(PathBuf, String),
}

/// The floor as loaded from (and saved to) `--state DIR`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floor {
    path: PathBuf,
    /// Newest record or release time seen, seconds since the epoch.
    pub newest_seen: u64,
    /// Highest `release_seq` accepted, by `channel/arch`.
    seqs: BTreeMap<String, u64>,
}

impl Floor {
    /// Loads `dir/rollback-floor`. Missing: an empty floor (a fresh board).
    /// With `reset` (`--allow-downgrade`), a damaged file is an empty floor.
    pub fn load(dir: &Path, reset: bool) -> Result<Self, FloorError> {
        let path = dir.join(FLOOR_FILE);
        let empty = Floor {
            path: path.clone(),
            ..Floor::default()
        };
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(empty),
            Err(e) => return Err(FloorError::Io(path, e)),
        };
        let mut text = String::new();
        let read = file.take(MAX_BYTES + 1).read_to_string(&mut text);
        let parsed = match read {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err("not UTF-8 text".to_string()),
            Err(e) => return Err(FloorError::Io(path, e)),
            Ok(_) if text.len() as u64 > MAX_BYTES => Err("larger than 64 KiB".to_string()),
            Ok(_) => parse(&text),
        };
        match parsed {
            Ok((newest_seen, seqs)) => Ok(Floor {
                path,
                newest_seen,
                seqs,
            }),
            Err(_) if reset => {
                log::warn!(
                    "state file {} is damaged; starting a new floor (--allow-downgrade)",
                    path.display()
                );
                Ok(empty)
            }
            Err(why) => Err(FloorError::Damaged(path, why)),
        }
    }

    /// The highest release accepted for `channel/arch`.
    pub fn seq(&self, channel_arch: &str) -> Option<u64> {
        self.seqs.get(channel_arch).copied()
    }

    /// Judges the system clock `system_now` against what was seen: when it
    /// reads earlier than the newest time seen (or the build), it is wrong
    /// (a board without a real-time clock before NTP), and only that lower
    /// bound is known.
    pub fn clock(&self, system_now: u64) -> Now {
        Now::judge(system_now, self.trusted_time())
    }

    /// The newest time known to have passed: what was seen, or the build.
    pub fn trusted_time(&self) -> u64 {
        self.newest_seen.max(BUILD_TIME)
    }

    /// Records an accepted release and the newest time seen. A time ahead
    /// of what is known (the clock, or the newest time seen if the clock is
    /// behind it) by more than the skew is kept only up to that bound: a
    /// release dated in the future, validly signed or not, must not move
    /// the board's "newest seen" to where a correct clock never catches up.
    pub fn accept(&mut self, channel_arch: &str, release_seq: u64, seen: u64) {
        self.accept_at(channel_arch, release_seq, seen, unix_now());
    }

    /// [`Floor::accept`] with the clock reading `system_now`.
    fn accept_at(&mut self, channel_arch: &str, release_seq: u64, seen: u64, system_now: u64) {
        self.seqs.insert(channel_arch.to_string(), release_seq);
        let bound = system_now
            .max(self.trusted_time())
            .saturating_add(CLOCK_SKEW_SECS);
        self.newest_seen = self.newest_seen.max(seen.min(bound));
    }

    /// Writes the floor (temp + fsync + rename).
    pub fn save(&self) -> Result<(), FloorError> {
        let mut text = format!("{HEADER}\nnewest_seen {}\n", self.newest_seen);
        for (ca, seq) in &self.seqs {
            text.push_str(&format!("release {ca} {seq}\n"));
        }
        crate::statefile::write_atomic(&self.path, text.as_bytes(), 0o644)
            .map_err(|e| FloorError::Io(self.path.clone(), e))
    }
}

type Parsed = (u64, BTreeMap<String, u64>);

fn parse(text: &str) -> Result<Parsed, String> {
    let mut lines = text.lines();
    match lines.next() {
        None => return Err("empty".into()),
        Some(HEADER) => {}
        Some(_) => return Err(format!("the first line is not {HEADER:?}")),
    }
    let mut newest_seen = None;
    let mut seqs = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["newest_seen", t] => {
                newest_seen = Some(t.parse().map_err(|_| format!("line {n}: bad time"))?)
            }
            ["release", ca, seq] => {
                let (c, a) = ca
                    .split_once('/')
                    .ok_or_else(|| format!("line {n}: bad channel/arch"))?;
                if check_name("channel", c).is_err() || check_name("arch", a).is_err() {
                    return Err(format!("line {n}: bad channel/arch"));
                }
                let seq = seq
                    .parse()
                    .map_err(|_| format!("line {n}: bad release_seq"))?;
                if seqs.insert(ca.to_string(), seq).is_some() {
                    return Err(format!("line {n}: {ca} appears twice"));
                }
                if seqs.len() > MAX_ENTRIES {
                    return Err(format!("more than {MAX_ENTRIES} entries"));
                }
            }
            _ => return Err(format!("line {n} is not understood")),
        }
    }
    // A write is whole or absent, so a missing last line means damage.
    let newest_seen = newest_seen.ok_or("no newest_seen line (truncated?)")?;
    if !text.ends_with('\n') {
        return Err("the last line is cut short (truncated?)".into());
    }
    Ok((newest_seen, seqs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("plasmd-floor-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_floor_survives_a_save_and_only_a_missing_file_is_empty() {
        let d = dir("roundtrip");
        let mut f = Floor::load(&d, false).unwrap();
        assert_eq!(f.seq("stable/arm64"), None);
        f.accept_at("stable/arm64", 7, 1_800_000_000, 1_800_000_000);
        f.save().unwrap();
        let g = Floor::load(&d, false).unwrap();
        assert_eq!(g.seq("stable/arm64"), Some(7));
        assert_eq!(g.newest_seen, 1_800_000_000);

        for damage in [
            &b""[..],
            b"garbage\n",
            b"plasmd-rollback-floor v1\nrelease stable/arm64 7\n",
        ] {
            fs::write(d.join(FLOOR_FILE), damage).unwrap();
            let err = Floor::load(&d, false).unwrap_err();
            assert!(matches!(err, FloorError::Damaged(..)), "{err}");
            // --allow-downgrade resets it, deliberately.
            assert_eq!(Floor::load(&d, true).unwrap().seq("stable/arm64"), None);
        }
        fs::write(d.join(FLOOR_FILE), [0xff, 0xfe, 0]).unwrap();
        assert!(Floor::load(&d, false).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_clock_behind_what_was_seen_is_unknown() {
        let mut f = Floor::default();
        let late = BUILD_TIME + 1_000_000;
        f.accept_at("stable/arm64", 1, late, late);
        assert_eq!(f.clock(late + 10), Now::At(late + 10));
        // A board booting at 1970 before NTP.
        assert_eq!(f.clock(5), Now::NotBefore(late));
        // No state at all: the build time is still a floor.
        assert_eq!(Floor::default().clock(5), Now::NotBefore(BUILD_TIME));
    }

    #[test]
    fn a_release_dated_in_the_future_moves_newest_seen_only_to_now_and_the_skew() {
        let now = BUILD_TIME + 1_000;
        let mut f = Floor::default();
        // Signed a year ahead: kept as now + skew, which a correct clock
        // passes five minutes later.
        f.accept_at("stable/arm64", 9, now + 365 * 86_400, now);
        assert_eq!(f.newest_seen, now + CLOCK_SKEW_SECS);
        assert_eq!(f.seq("stable/arm64"), Some(9));
        assert_eq!(
            f.clock(now + CLOCK_SKEW_SECS + 1),
            Now::At(now + CLOCK_SKEW_SECS + 1)
        );
        // With the clock behind (1970), the bound is what was seen before.
        let mut g = Floor::default();
        g.accept_at("stable/arm64", 1, now, now);
        g.accept_at("stable/arm64", 2, now + 86_400, 5);
        assert_eq!(g.newest_seen, now + CLOCK_SKEW_SECS);
        // An honest release time is kept as it is.
        let mut h = Floor::default();
        h.accept_at("stable/arm64", 3, now - 60, now);
        assert_eq!(h.newest_seen, now - 60);
    }
}
