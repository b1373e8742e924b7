//! The board layer: what plasmd needs to know and do on a single-board
//! computer that a PC does not have.
//!
//! - [`BoardProfile`]: per-board data (netboot partition labels and
//!   filesystem, watchdog device and timeout), from the TOML files in the
//!   repository's `board/` directory (built in) or `/etc/plasmd/boards/`;
//! - [`partition`]: finding the netboot partition by filesystem label and
//!   mounting it read-only, and noticing when it goes away;
//! - [`watchdog`]: the hardware watchdog, petted only while plasmd is
//!   healthy;
//! - [`notify`]: systemd's `sd_notify` protocol (READY, WATCHDOG, STOPPING).
//!
//! This module does not scan artifacts or publish anything: it tells the
//! catalog where the artifacts root is, and checks health.

pub mod health;
pub mod notify;
pub mod partition;
pub mod watchdog;

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Profiles shipped inside the binary, from the repository's `board/`.
const BUILT_IN: &[(&str, &str)] = &[
    ("qemu-virt", include_str!("../../board/qemu-virt.toml")),
    (
        "raspberrypi4",
        include_str!("../../board/raspberrypi4.toml"),
    ),
    ("rock5b", include_str!("../../board/rock5b.toml")),
];

/// Where operators put their own profiles; a file here overrides a
/// built-in profile of the same name.
pub const PROFILE_DIR: &str = "/etc/plasmd/boards";

/// Longest `[watchdog] timeout` a profile may ask for, in seconds.
pub const MAX_WATCHDOG_TIMEOUT: u32 = 3600;

/// Errors loading a profile.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error(
        "unknown board {0:?}: no {1}/{0}.toml and no built-in profile of that name (built in: {2})"
    )]
    Unknown(String, String, String),
    #[error("board profile {0}: {1}")]
    Invalid(String, String),
}

/// Everything plasmd needs to know about one kind of board.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The board's architecture as channel/arch names spell it (`arm64`).
    pub arch: String,
    pub netboot: NetbootSpec,
    pub watchdog: Option<WatchdogSpec>,
}

/// Where the artifacts live on the board.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetbootSpec {
    /// Filesystem labels, tried in order.
    pub labels: Vec<String>,
    /// `vfat`, `ext4` or `auto`.
    #[serde(default = "default_fstype")]
    pub fstype: String,
    /// The artifacts root, relative to the partition's root.
    #[serde(default = "default_artifacts_dir")]
    pub artifacts_dir: String,
    /// Where to mount the partition if it is not mounted yet.
    #[serde(default = "default_mount_point")]
    pub mount_point: PathBuf,
}

/// The hardware watchdog.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSpec {
    #[serde(default = "default_watchdog_device")]
    pub device: PathBuf,
    /// Seconds asked of the driver; the value it reads back is used.
    pub timeout: u32,
    /// The kernel cannot disarm it: skip the magic close.
    #[serde(default)]
    pub nowayout: bool,
}

fn default_fstype() -> String {
    "auto".into()
}
fn default_artifacts_dir() -> String {
    "artifacts".into()
}
fn default_mount_point() -> PathBuf {
    PathBuf::from("/run/plasmd/netboot")
}
fn default_watchdog_device() -> PathBuf {
    PathBuf::from("/dev/watchdog")
}

impl BoardProfile {
    /// Parses and checks a profile's TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, BoardError> {
        let invalid = |m: String| BoardError::Invalid(origin.to_string(), m);
        let p: BoardProfile =
            toml::from_str(text).map_err(|e| invalid(crate::text::one_line(&e.to_string())))?;
        if p.netboot.labels.is_empty()
            || p.netboot
                .labels
                .iter()
                .any(|l| l.is_empty() || l.len() > 16)
        {
            return Err(invalid(
                "[netboot] labels: give 1-16 character filesystem labels".into(),
            ));
        }
        if !matches!(p.netboot.fstype.as_str(), "vfat" | "ext4" | "auto") {
            return Err(invalid(format!(
                "[netboot] fstype {:?}: use vfat, ext4 or auto",
                p.netboot.fstype
            )));
        }
        let dir = Path::new(&p.netboot.artifacts_dir);
        if dir.is_absolute()
            || dir
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(invalid(
                "[netboot] artifacts_dir must be a relative path inside the partition".into(),
            ));
        }
        if !p.netboot.mount_point.is_absolute() {
            return Err(invalid(
                "[netboot] mount_point must be an absolute path".into(),
            ));
        }
        if let Some(w) = &p.watchdog {
            // Drivers take an int and most cap far lower; an hour is
            // already more than any board wants before a reset.
            if w.timeout == 0 || w.timeout > MAX_WATCHDOG_TIMEOUT {
                return Err(invalid(format!(
                    "[watchdog] timeout {}: use 1 to {MAX_WATCHDOG_TIMEOUT} seconds",
                    w.timeout
                )));
            }
        }
        Ok(p)
    }

    /// Loads a profile by name (from [`PROFILE_DIR`], else built in) or by
    /// path (anything containing `/` or ending in `.toml`).
    pub fn load(name_or_path: &str) -> Result<Self, BoardError> {
        Self::load_from(name_or_path, Path::new(PROFILE_DIR))
    }

    fn load_from(name_or_path: &str, dir: &Path) -> Result<Self, BoardError> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            let text = read_small(Path::new(name_or_path))
                .map_err(|e| BoardError::Invalid(name_or_path.to_string(), e))?;
            return Self::parse(&text, name_or_path);
        }
        let file = dir.join(format!("{name_or_path}.toml"));
        if file.exists() {
            let origin = file.display().to_string();
            let text = read_small(&file).map_err(|e| BoardError::Invalid(origin.clone(), e))?;
            return Self::parse(&text, &origin);
        }
        match BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Self::parse(text, &format!("built-in {n}")),
            None => Err(BoardError::Unknown(
                name_or_path.to_string(),
                dir.display().to_string(),
                BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// The artifacts root once the partition is mounted at `mount`.
    pub fn artifacts_root(&self, mount: &Path) -> PathBuf {
        mount.join(&self.netboot.artifacts_dir)
    }
}

fn read_small(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_profile_parses() {
        for (name, text) in BUILT_IN {
            let p = BoardProfile::parse(text, name).unwrap();
            assert_eq!(&p.name, name);
            assert_eq!(p.arch, "arm64");
            assert!(p.watchdog.is_some());
        }
        let pi = BoardProfile::load_from("raspberrypi4", Path::new("/nonexistent")).unwrap();
        assert!(
            pi.watchdog.unwrap().timeout <= 15,
            "bcm2835_wdt allows 15 s at most"
        );
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let e = BoardProfile::load_from("toaster", Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("qemu-virt"), "{e}");
        let base = "name='x'\narch='arm64'\n[netboot]\nlabels=['NETBOOT']\n";
        assert!(BoardProfile::parse(base, "t").is_ok());
        for bad in [
            format!("{base}fstype='ntfs'\n"),
            format!("{base}artifacts_dir='../etc'\n"),
            format!("{base}mount_point='relative'\n"),
            format!("{base}[watchdog]\ntimeout=0\n"),
            format!("{base}[watchdog]\ntimeout=3601\n"),
            format!("{base}[watchdog]\ntimeout=4294967295\n"),
            format!("{base}[watchdog]\ntimeout=4294967296\n"),
            format!("{base}colour='red'\n"),
            "name='x'\narch='arm64'\n[netboot]\nlabels=[]\n".to_string(),
        ] {
            assert!(BoardProfile::parse(&bad, "t").is_err(), "{bad}");
        }
    }
}
