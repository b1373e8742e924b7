//! `plasmd serve --mirror C/A` and its settings (`--mirror-keep`,
//! `--mirror-interval`, `--release-key`; `[provider] mirror…` in the
//! file), checked into a [`MirrorConfig`]. Following releases is the
//! provider's `mirror`; this module only says what to follow.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::FileConfig;
use super::{channel_arch, in_range, ConfigError};
use crate::channel::ChannelArch;
use crate::manifest::holding::MAX_HOLDINGS;
use crate::release::ReleaseKeys;

/// Releases kept by default: the one served and the one before it, for
/// boards still downloading it when the mirror switched.
pub const DEFAULT_MIRROR_KEEP: u64 = 2;
/// Seconds between looks for a newer release, by default.
pub const DEFAULT_MIRROR_INTERVAL: u64 = 15;
/// Longest `--mirror-interval` (1 hour).
const MAX_MIRROR_INTERVAL: u64 = 3600;

/// What a provider mirrors from others.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// The channel/archs followed.
    pub channel_archs: Vec<ChannelArch>,
    /// Only releases signed by one of these are followed.
    pub release_keys: ReleaseKeys,
    /// Releases kept on disk per channel/arch, the one served included.
    pub keep: usize,
    /// How often the DHT is asked for a newer release.
    pub interval: Duration,
    /// Where releases are kept: `ARTIFACTS/.mirror`.
    pub dir: PathBuf,
}

/// The mirror flags, before merging with the file.
#[derive(Debug, Default)]
pub(super) struct MirrorFlags {
    pub(super) mirror: Vec<String>,
    pub(super) keep: Option<u64>,
    pub(super) interval: Option<u64>,
}

/// `--mirror` and friends merged with `[provider]` (flags win); `None`
/// when nothing is mirrored. `release_keys` are the provider's
/// (`--release-key`).
pub(super) fn build_mirror(
    f: &MirrorFlags,
    file: &FileConfig,
    artifacts: Option<&Path>,
    release_keys: &ReleaseKeys,
) -> Result<Option<MirrorConfig>, ConfigError> {
    let p = &file.provider;
    let names = if f.mirror.is_empty() {
        p.mirror.clone().unwrap_or_default()
    } else {
        f.mirror.clone()
    };
    if names.is_empty() {
        if f.keep.is_some() || f.interval.is_some() {
            return Err(ConfigError::Invalid(
                "--mirror-keep and --mirror-interval only go with --mirror C/A".into(),
            ));
        }
        return Ok(None);
    }
    let mut channel_archs = Vec::new();
    for name in &names {
        let ca = channel_arch("--mirror", name)?;
        if !channel_archs.contains(&ca) {
            channel_archs.push(ca);
        }
    }
    if release_keys.is_empty() {
        return Err(ConfigError::Invalid(
            "--mirror follows signed releases only: give --release-key PUBFILE".into(),
        ));
    }
    let Some(artifacts) = artifacts else {
        return Err(ConfigError::Invalid(
            "--mirror needs --artifacts DIR: mirrored releases are kept in DIR/.mirror".into(),
        ));
    };
    let keep = in_range(
        "--mirror-keep / [provider] mirror_keep",
        f.keep.or(p.mirror_keep).unwrap_or(DEFAULT_MIRROR_KEEP),
        1,
        MAX_HOLDINGS as u64,
        "releases",
    )?;
    let interval = in_range(
        "--mirror-interval / [provider] mirror_interval",
        f.interval
            .or(p.mirror_interval)
            .unwrap_or(DEFAULT_MIRROR_INTERVAL),
        1,
        MAX_MIRROR_INTERVAL,
        "seconds",
    )?;
    Ok(Some(MirrorConfig {
        channel_archs,
        release_keys: release_keys.clone(),
        keep: keep as usize,
        interval: Duration::from_secs(interval),
        dir: artifacts.join(".mirror"),
    }))
}
