//! The TOML config file every command may read (`--config FILE`): its
//! sections, each key optional, unknown keys refused, size bounded.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::text::one_line;

/// Largest config file we read: a config is a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) board: BoardSection,
    #[serde(default)]
    pub(super) provider: ProviderSection,
    #[serde(default)]
    pub(super) http: HttpSection,
    #[serde(default)]
    pub(super) p2p: P2pSection,
    #[serde(default)]
    pub(super) discover: DiscoverSection,
    /// Read only with the `netboot` feature (see `config::netboot`).
    #[serde(default)]
    pub(super) netboot: super::netboot::NetbootSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiscoverSection {
    pub(super) bootstrap: Option<Vec<String>>,
    pub(super) mdns: Option<bool>,
    pub(super) timeout: Option<u64>,
    pub(super) trusted_providers: Option<Vec<String>>,
    pub(super) release_keys: Option<Vec<PathBuf>>,
    pub(super) state: Option<PathBuf>,
    pub(super) min_rate: Option<u64>,
    pub(super) rate_window: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BoardSection {
    pub(super) profile: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderSection {
    pub(super) artifacts: Option<PathBuf>,
    pub(super) channels: Option<Vec<String>>,
    pub(super) archs: Option<Vec<String>>,
    pub(super) name: Option<String>,
    pub(super) external_url: Option<String>,
    pub(super) sign_key: Option<PathBuf>,
    pub(super) mirror: Option<Vec<String>>,
    pub(super) mirror_keep: Option<u64>,
    pub(super) mirror_interval: Option<u64>,
    pub(super) release_keys: Option<Vec<PathBuf>>,
    #[serde(default)]
    pub(super) dht: DhtSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DhtSection {
    pub(super) record_ttl: Option<u64>,
    pub(super) refresh_interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpSection {
    pub(super) listen: Option<String>,
    pub(super) min_rate: Option<u64>,
    pub(super) rate_window: Option<u64>,
    pub(super) max_rate: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct P2pSection {
    pub(super) listen: Option<Vec<String>>,
    pub(super) bootstrap: Option<Vec<String>>,
    pub(super) announce: Option<Vec<String>>,
    pub(super) mdns: Option<bool>,
    pub(super) identity: Option<PathBuf>,
    pub(super) trusted_publishers: Option<Vec<String>>,
}

pub(super) fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    use std::io::Read;
    let err = |m: String| ConfigError::File(path.to_path_buf(), m);
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(err(
            "larger than 256 KiB; is this really a config file?".into()
        ));
    }
    toml::from_str(&text).map_err(|e| err(one_line(&e.to_string())))
}
