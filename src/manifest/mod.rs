//! The manifest: the one home of the `manifest.json` format a provider
//! serves and a board reads, and of the directories it describes.
//!
//! - [`read`]: untrusted bytes → release fields, artifacts, boot object
//!   (bounded, no panics); used by the server for shipped manifests, by
//!   clients for downloaded ones and by `release verify`;
//! - [`write`]: artifacts → the canonical bytes (`render`), the content
//!   version, hashing files;
//! - [`held`]: which verified chunks of an artifact a process holds, and
//!   its wire form;
//! - [`holding`]: releases held while they download, offered to others;
//! - [`catalog`]: scanning `<channel>/<arch>` trees under the artifacts
//!   root into manifests, cached, and opening the files they list.
//!
//! Adding a field to the manifest touches these files only. Checking a
//! release signature is `release`'s; serving is `http`'s; watching the tree
//! for changes is the provider's.

pub mod catalog;
pub mod held;
pub mod holding;
pub mod mirrored;
pub mod read;
pub mod write;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use crate::channel::ChannelArch;

pub use catalog::{Catalog, OpenArtifact, OpenError};
pub use read::{
    parse_manifest, parse_manifest_and_boot, read_fields, shipped_version, ReleaseFields,
};
pub use write::{content_version, render, trusted_comment};

/// Name of the manifest file, generated or shipped in a channel/arch dir.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Errors while scanning the artifacts tree.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("no artifacts root yet (netboot partition not found)")]
    NoRoot,
    #[error("artifacts directory {0}: {1}")]
    Root(PathBuf, io::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}: shipped manifest.json is invalid: {1}")]
    BadManifest(PathBuf, String),
    /// The signature names another manifest: a release being switched
    /// (`release sign` renames the manifest, then its signature).
    #[error("{0}: manifest.json and manifest.json.minisig do not belong together yet")]
    HalfSwitched(PathBuf),
}

/// One artifact in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// The sha256 of each [`CHUNK_SIZE`] piece of the file, in order (the
    /// last one may be shorter): covered by the release signature with the
    /// rest of the manifest, so a piece can be checked on arrival, alone.
    /// Empty for manifests written before chunk hashes (or without them).
    pub chunks: Vec<[u8; 32]>,
}

/// The size of the pieces an artifact's chunk hashes cover (the manifest's
/// `chunk_size`). 1 MiB: 32 bytes of hash (about 67 of manifest JSON) per
/// MiB of release, so a 1 GiB release adds about 68 KB to its manifest (the
/// choice against 256 KiB-4 MiB is measured by `bench/chunk-sizes`, which
/// builds with `PLASMD_CHUNK_KIB` set; such a build's manifests are read
/// only by builds with the same size).
pub const CHUNK_SIZE: u64 = match option_env!("PLASMD_CHUNK_KIB") {
    Some(kib) => kib_of(kib) * 1024,
    None => 1024 * 1024,
};

/// `PLASMD_CHUNK_KIB` as a number, at compile time: a power of two from
/// 64 to 16384, or the build fails.
const fn kib_of(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut n = 0u64;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "PLASMD_CHUNK_KIB: not a number");
        n = n * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    assert!(
        n.is_power_of_two() && n >= 64 && n <= 16384,
        "PLASMD_CHUNK_KIB: a power of two from 64 to 16384"
    );
    n
}

/// How many chunks a file of `size` bytes has at `chunk_size`.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size.max(1))
}

/// The byte offset and length of chunk `i` of a file of `size` bytes at
/// [`CHUNK_SIZE`] (the last chunk may be shorter; past the end, empty).
pub fn chunk_span(size: u64, i: usize) -> (u64, u64) {
    let start = (i as u64).saturating_mul(CHUNK_SIZE);
    (start, CHUNK_SIZE.min(size.saturating_sub(start)))
}

/// The manifest of one channel/arch, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The version advertised in the DHT record.
    pub version: String,
    /// The exact bytes served as `manifest.json`.
    pub json: Vec<u8>,
    /// Hex sha256 of `json`, signed into the DHT record.
    pub sha256: String,
    /// Files that may be served from this channel/arch, by name.
    pub artifacts: BTreeMap<String, Artifact>,
    /// The release signature served as `manifest.json.minisig`, if any.
    pub signature: Option<Vec<u8>>,
    /// What the record says about the release (from the signed manifest).
    pub release: Option<ReleaseTag>,
}

/// What a release boots: the manifest's optional `boot` object, covered by
/// the release signature. Names are artifacts of the same manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootSpec {
    pub kernel: String,
    pub initrd: Option<String>,
    pub dtb: Option<String>,
    /// The booted kernel's command line.
    pub cmdline: Option<String>,
}

/// Largest `manifest.json` we load from disk. A shipped manifest lists files,
/// it is not one: anything bigger is a mistake, not something to serve.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// At most this many artifacts per channel/arch, so a directory flooded with
/// files cannot make the manifest (held in memory) grow without bound.
pub const MAX_FILES: usize = 4096;

/// Longest `boot.cmdline` (the arm64 kernel's own limit is 2048 bytes).
pub const MAX_BOOT_CMDLINE: usize = 2048;

/// Room for unescaping a manifest's strings while parsing it: the parser
/// unescapes every string it meets, the ones it skips too, so this must hold
/// the longest (the boot command line) with its escapes.
pub const UNESCAPE_BUFFER: usize = MAX_BOOT_CMDLINE + 512;

/// Name of the signature served next to `manifest.json`.
pub const SIGNATURE_NAME: &str = "manifest.json.minisig";

/// A signed release as the DHT record advertises it: a hint for readers
/// (they verify the manifest itself), covered by the record signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseTag {
    pub release_seq: u64,
    /// Id of the minisign key that signed the manifest (16 hex digits).
    pub key_id: String,
}

/// The manifest URL a provider at `base_url` advertises for `ca`.
pub fn url(base_url: &str, ca: &ChannelArch) -> String {
    format!("{base_url}/{}/{}/{MANIFEST_NAME}", ca.channel, ca.arch)
}

#[cfg(test)]
mod tests;
