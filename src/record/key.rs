//! Record keys: `/phase/{channel}/{arch}/manifest` (the conventions' key,
//! where providers announce themselves) and the per-provider key below it,
//! built and taken apart.

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

/// A record key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub channel: String,
    pub arch: String,
    /// For a per-provider key, the provider's peer id.
    pub provider: Option<String>,
}

/// Splits a record key (the spec key or a per-provider key) back into its
/// parts, checking the names.
pub fn parse_key(key: &[u8]) -> Result<ParsedKey, RecordError> {
    let s = std::str::from_utf8(key).map_err(|_| RecordError::BadKey)?;
    let rest = s.strip_prefix("/phase/").ok_or(RecordError::BadKey)?;
    let mut parts = rest.split('/');
    let (channel, arch, manifest, provider) =
        (parts.next(), parts.next(), parts.next(), parts.next());
    if manifest != Some("manifest") || parts.next().is_some() {
        return Err(RecordError::BadKey);
    }
    let (channel, arch) = (channel.unwrap_or(""), arch.unwrap_or(""));
    check_name("channel", channel).map_err(|_| RecordError::BadKey)?;
    check_name("arch", arch).map_err(|_| RecordError::BadKey)?;
    let provider = match provider {
        None => None,
        Some(p) => {
            p.parse::<libp2p::PeerId>()
                .map_err(|_| RecordError::BadKey)?;
            Some(p.to_string())
        }
    };
    Ok(ParsedKey {
        channel: channel.to_string(),
        arch: arch.to_string(),
        provider,
    })
}
