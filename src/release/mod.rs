//! Releases: a channel/arch manifest signed offline with the fleet's
//! release key, so a board trusts what it boots rather than the server it
//! came from.
//!
//! A *release* is a `manifest.json` that names its `channel`, `arch`,
//! `version`, a `release_seq` that only ever grows, and its creation time,
//! with a minisign signature next to it (`manifest.json.minisig`). Any
//! provider may carry it; a board holding the public key checks the
//! signature, that the release is for the channel/arch it asked for, and
//! (with a state directory, see [`floor`]) that it is not older than one it
//! already accepted.
//!
//! This module owns what a signed manifest must say and how it is checked
//! ([`ReleaseKeys::verify`]), making one for a directory ([`sign`]), and the
//! rollback floor ([`floor`]). The file formats are `minisign`'s and
//! `manifest`'s; finding
//! providers and downloading is `discover` and `fetch`'s.

pub mod command;
pub mod floor;
pub mod sign;

use std::path::PathBuf;

use crate::channel::check_name;
use crate::channel::ChannelArch;
use crate::manifest::{read_fields, Catalog, Manifest, SIGNATURE_NAME};
use crate::minisign::{self, PublicKey, Signature};
use crate::time::parse_rfc3339;

/// At most this many release keys (old and new during a rotation, a few spare).
pub const MAX_RELEASE_KEYS: usize = 16;

/// Errors loading release keys or checking a release.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Key(#[from] minisign::MinisignError),
    #[error("the manifest is not signed (no {SIGNATURE_NAME} next to it)")]
    Unsigned,
    #[error("{SIGNATURE_NAME} is not a signature: {0}")]
    BadSignatureFile(String),
    #[error("the manifest signature is not valid: {0}")]
    BadSignature(String),
    #[error("the signed manifest is not a release: {0}")]
    NotARelease(String),
    #[error("the signed release is for {0}, not {1}")]
    OtherChannel(String, String),
    #[error("too many release keys (at most {MAX_RELEASE_KEYS})")]
    TooManyKeys,
}

/// What a signed manifest says about itself (the fields a board checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub channel: String,
    pub arch: String,
    pub version: String,
    /// Grows with every release of this channel/arch; boards refuse to go back.
    pub release_seq: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The key that signed it.
    pub key_id: minisign::KeyId,
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} version {} release_seq {} (signed by {})",
            self.channel, self.arch, self.version, self.release_seq, self.key_id
        )
    }
}

/// Scans one channel/arch of `root` the way the server does (and only
/// that one: the rest of the tree is not hashed); `None` when it cannot be
/// served (the reason is logged).
pub fn scan_one(
    root: &std::path::Path,
    ca: &ChannelArch,
) -> Result<Option<std::sync::Arc<Manifest>>, String> {
    let catalog = Catalog::new(
        Some(root.to_path_buf()),
        vec![ca.channel.clone()],
        vec![ca.arch.clone()],
    );
    catalog.rescan().map_err(|e| e.to_string())?;
    Ok(catalog.manifest(ca))
}

/// Splits `<artifacts>/<channel>/<arch>` into the artifacts root and the
/// channel/arch it names (checked against the naming rules).
pub fn split_release_dir(dir: &std::path::Path) -> Result<(PathBuf, ChannelArch), String> {
    use std::path::Path;
    let abs = dir.canonicalize().map_err(|e| e.to_string())?;
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .map(str::to_string)
    };
    let (Some(arch), Some(channel), Some(root)) = (
        name(Some(&abs)),
        name(abs.parent()),
        abs.parent().and_then(Path::parent),
    ) else {
        return Err("expected <artifacts>/<channel>/<arch>".into());
    };
    check_name("channel", &channel).map_err(|e| e.to_string())?;
    check_name("arch", &arch).map_err(|e| e.to_string())?;
    Ok((root.to_path_buf(), ChannelArch { channel, arch }))
}

/// The release keys a board trusts (`--release-key`, `[discover] release_keys`).
#[derive(Debug, Clone, Default)]
pub struct ReleaseKeys(Vec<PublicKey>);

impl ReleaseKeys {
    /// Loads public key files.
    pub fn load(paths: &[PathBuf]) -> Result<Self, ReleaseError> {
        if paths.len() > MAX_RELEASE_KEYS {
            return Err(ReleaseError::TooManyKeys);
        }
        let keys = paths
            .iter()
            .map(|p| PublicKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReleaseKeys(keys))
    }

    /// Adds keys (e.g. given on a kernel command line).
    pub fn extend(
        &mut self,
        keys: impl IntoIterator<Item = PublicKey>,
    ) -> Result<(), ReleaseError> {
        self.0.extend(keys);
        if self.0.len() > MAX_RELEASE_KEYS {
            return Err(ReleaseError::TooManyKeys);
        }
        Ok(())
    }

    /// True when no key is configured (releases are not checked).
    /// The base64 line of each key (what `phase.release_key=` takes).
    pub fn base64_lines(&self) -> Vec<String> {
        self.0.iter().map(|k| k.base64.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids of the keys, for messages.
    pub fn ids(&self) -> String {
        let ids: Vec<String> = self.0.iter().map(|k| k.id.to_string()).collect();
        ids.join(", ")
    }

    /// Checks a manifest and its signature: signed by one of the keys, a
    /// complete release, for `channel`/`arch`.
    pub fn verify(
        &self,
        json: &[u8],
        minisig: Option<&[u8]>,
        channel: &str,
        arch: &str,
    ) -> Result<Release, ReleaseError> {
        let sig = Signature::parse(minisig.ok_or(ReleaseError::Unsigned)?)
            .map_err(ReleaseError::BadSignatureFile)?;
        let key = self.0.iter().find(|k| k.id == sig.key_id).ok_or_else(|| {
            ReleaseError::BadSignature(format!(
                "signed by key {}, which is not a release key ({})",
                sig.key_id,
                self.ids()
            ))
        })?;
        key.verify(json, &sig).map_err(ReleaseError::BadSignature)?;
        let not = |m: &str| ReleaseError::NotARelease(m.to_string());
        let f = read_fields(json).map_err(|e| not(&e))?;
        let (Some(c), Some(a)) = (f.channel, f.arch) else {
            return Err(not("it names no channel and arch"));
        };
        check_name("channel", &c).map_err(|e| not(&e.to_string()))?;
        check_name("arch", &a).map_err(|e| not(&e.to_string()))?;
        if c != channel || a != arch {
            return Err(ReleaseError::OtherChannel(
                format!("{c}/{a}"),
                format!("{channel}/{arch}"),
            ));
        }
        let release_seq = f.release_seq.ok_or_else(|| not("it has no release_seq"))?;
        let created = f
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .ok_or_else(|| not("it has no RFC 3339 \"created\" time"))?;
        Ok(Release {
            channel: c,
            arch: a,
            version: f.version,
            release_seq,
            created,
            key_id: sig.key_id,
        })
    }
}
