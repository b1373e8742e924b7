//! `plasmd release sign`: turn a `<artifacts>/<channel>/<arch>` directory
//! into a signed release, offline.
//!
//! The directory is scanned exactly as `plasmd serve` scans it (same
//! opens, same rules for which files count), so the signed list is what a
//! provider will serve. The canonical `manifest.json` (see
//! [`crate::manifest::render`]) and its `manifest.json.minisig` are each
//! replaced atomically. The release number only grows: by default it is
//! the larger of the previous release's number + 1 and the current Unix
//! time, so a release made in a fresh directory still outranks older ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::minisign::SecretKey;
use super::{read_fields, split_release_dir, Release, ReleaseError, SIGNATURE_NAME};
use crate::manifest::{render, trusted_comment, BootSpec, MANIFEST_NAME};
use crate::time::unix_now;

/// Errors of `plasmd release sign`.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}: {1}")]
    Dir(PathBuf, String),
    #[error("{0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(
        "--release-seq {0} is not above the current release_seq {1} of this directory: \
         boards that saw {1} would refuse it"
    )]
    SeqNotAbove(u64, u64),
}

/// What `release sign` was asked for.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// `--version`; default: derived from the files.
    pub version: Option<String>,
    /// `--release-seq`; default: max(previous + 1, now).
    pub release_seq: Option<u64>,
    /// `--kernel`, `--initrd`, `--dtb`, `--cmdline`: what the release boots.
    pub boot: Option<BootSpec>,
}

/// Signs `dir` with `key`; returns the release written.
pub fn sign_dir(key: &SecretKey, dir: &Path, opts: &SignOptions) -> Result<Release, SignError> {
    let bad = |m: &str| SignError::Dir(dir.to_path_buf(), m.to_string());
    let (root, ca) = split_release_dir(dir).map_err(|e| bad(&e))?;
    let dir = root.join(&ca.channel).join(&ca.arch);

    let current = super::scan_one(&root, &ca)
        .map_err(|e| bad(&e))?
        .ok_or_else(|| bad("cannot be scanned (see the error above)"))?;
    if current.artifacts.is_empty() {
        return Err(bad("holds no artifacts to sign"));
    }
    let previous = if dir.join(MANIFEST_NAME).exists() {
        read_fields(&current.json).ok().and_then(|f| f.release_seq)
    } else {
        None
    };
    let now = unix_now();
    let release_seq = match (opts.release_seq, previous) {
        (Some(asked), Some(prev)) if asked <= prev => {
            return Err(SignError::SeqNotAbove(asked, prev))
        }
        (Some(asked), _) => asked,
        (None, prev) => prev.map_or(now, |p| p.saturating_add(1).max(now)),
    };
    if let Some(b) = &opts.boot {
        for name in [Some(&b.kernel), b.initrd.as_ref(), b.dtb.as_ref()]
            .into_iter()
            .flatten()
        {
            if !current.artifacts.contains_key(name) {
                return Err(bad(&format!("boot file {name:?} is not in the directory")));
            }
        }
    }
    let manifest = render(
        &ca,
        opts.version.as_deref(),
        Some((release_seq, now)),
        opts.boot.as_ref(),
        current.artifacts.clone(),
    );
    let sig = key
        .sign(&manifest.json, &trusted_comment(now))
        .map_err(ReleaseError::from)?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        crate::statefile::write_atomic(&path, bytes, 0o644).map_err(|e| SignError::Write(path, e))
    };
    write(MANIFEST_NAME, &manifest.json)?;
    write(SIGNATURE_NAME, sig.as_bytes())?;
    Ok(Release {
        channel: ca.channel,
        arch: ca.arch,
        version: manifest.version,
        release_seq,
        created: now,
        key_id: key.id,
    })
}

/// Loads the secret key for `--sign-key` / `release sign -s`.
pub fn load_key(path: &Path) -> Result<Arc<SecretKey>, ReleaseError> {
    Ok(Arc::new(SecretKey::load(path)?))
}
