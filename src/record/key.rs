//! Record keys: `/phase/{channel}/{arch}/manifest` (the conventions' key,
//! where providers announce themselves) and the per-provider key below it;
//! and for holders of one release's content (boards downloading it,
//! mirrors), `/phase/{channel}/{arch}/release/{manifest_sha256}` (where
//! they announce themselves) and the per-holder key below it. Built and
//! taken apart.

use super::RecordError;
use crate::channel::check_name;

/// The record key string for a channel/arch: `/phase/{channel}/{arch}/manifest`.
pub fn manifest_key(channel: &str, arch: &str) -> String {
    format!("/phase/{channel}/{arch}/manifest")
}

/// The record key as libp2p wants it.
pub fn manifest_dht_key(channel: &str, arch: &str) -> libp2p::kad::RecordKey {
    libp2p::kad::RecordKey::new(&manifest_key(channel, arch))
}

/// The per-provider record key, `/phase/{channel}/{arch}/manifest/{peer_id}`:
/// where each provider keeps its own record, so several providers of one
/// channel/arch do not overwrite each other (they announce themselves as
/// Kademlia providers of the spec key).
pub fn provider_key(channel: &str, arch: &str, peer_id: &str) -> String {
    format!("/phase/{channel}/{arch}/manifest/{peer_id}")
}

/// The key holders of a release's content announce themselves under
/// (Kademlia provider records only): `/phase/{channel}/{arch}/release/{sha}`,
/// `sha` the hex sha256 of the release's signed manifest. Older clients
/// never look here, so a holder with half a file is not offered to them.
pub fn release_key(channel: &str, arch: &str, manifest_sha256: &str) -> String {
    format!("/phase/{channel}/{arch}/release/{manifest_sha256}")
}

/// Shards of a release's announcements: storage nodes keep at most 20
/// announcements per key, so holders also announce under one of these
/// (by their peer id) and a rack of 160 is found, not only its first 20.
pub const RELEASE_SHARDS: u8 = 8;

/// Shard `shard` of the release key: `/phase/{channel}/{arch}/release/{sha}/{shard}`
/// (announcements only, like the release key).
pub fn release_shard_key(channel: &str, arch: &str, manifest_sha256: &str, shard: u8) -> String {
    format!("{}/{shard}", release_key(channel, arch, manifest_sha256))
}

/// The shard a holder announces under: a fixed spread of peer ids.
pub fn shard_of(peer_id: &str) -> u8 {
    use sha2::{Digest, Sha256};
    Sha256::digest(peer_id.as_bytes())[0] % RELEASE_SHARDS
}

/// A holder's own record of where it serves that release:
/// `/phase/{channel}/{arch}/release/{sha}/{peer_id}`.
pub fn holder_key(channel: &str, arch: &str, manifest_sha256: &str, peer_id: &str) -> String {
    format!("{}/{peer_id}", release_key(channel, arch, manifest_sha256))
}

/// A record key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub channel: String,
    pub arch: String,
    /// For a per-provider or per-holder key, the publisher's peer id.
    pub provider: Option<String>,
    /// For a release or per-holder key, the release's manifest sha256.
    pub release: Option<String>,
    /// For a shard of a release key, which one.
    pub shard: Option<u8>,
}

/// Splits a record key (the spec key, a per-provider key, a release key or
/// a per-holder key) back into its parts, checking the names.
pub fn parse_key(key: &[u8]) -> Result<ParsedKey, RecordError> {
    let s = std::str::from_utf8(key).map_err(|_| RecordError::BadKey)?;
    let rest = s.strip_prefix("/phase/").ok_or(RecordError::BadKey)?;
    let parts: Vec<&str> = rest.splitn(6, '/').collect();
    let (channel, arch, release, provider) = match parts.as_slice() {
        [c, a, "manifest"] => (c, a, None, None),
        [c, a, "manifest", p] => (c, a, None, Some(p)),
        [c, a, "release", sha] => (c, a, Some(sha), None),
        [c, a, "release", sha, p] => (c, a, Some(sha), Some(p)),
        _ => return Err(RecordError::BadKey),
    };
    // One digit below the shard count is a shard; no peer id is that short.
    let shard = match (release, provider) {
        (Some(_), Some(p)) if p.len() == 1 => Some(
            p.parse::<u8>()
                .ok()
                .filter(|s| *s < RELEASE_SHARDS)
                .ok_or(RecordError::BadKey)?,
        ),
        _ => None,
    };
    let provider = provider.filter(|_| shard.is_none());
    check_name("channel", channel).map_err(|_| RecordError::BadKey)?;
    check_name("arch", arch).map_err(|_| RecordError::BadKey)?;
    if let Some(sha) = release {
        if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(RecordError::BadKey);
        }
    }
    if let Some(p) = provider {
        p.parse::<libp2p::PeerId>()
            .map_err(|_| RecordError::BadKey)?;
    }
    Ok(ParsedKey {
        channel: channel.to_string(),
        arch: arch.to_string(),
        provider: provider.map(|p| p.to_string()),
        release: release.map(|r| r.to_string()),
        shard,
    })
}
