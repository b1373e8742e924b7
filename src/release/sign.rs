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
        .sign(&manifest.json, &trusted_comment(now, &manifest.json))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelArch;
    use crate::manifest::Catalog;

    #[test]
    fn a_server_never_pairs_a_manifest_with_another_releases_signature() {
        let tmp = crate::testdir::TempDir::new("switch");
        let root = tmp.path().to_path_buf();
        let dir = root.join("stable/arm64");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinuz"), b"kernel 1").unwrap();
        let key = SecretKey::generate();
        let opts = |seq| SignOptions {
            release_seq: Some(seq),
            ..SignOptions::default()
        };
        let ca = ChannelArch {
            channel: "stable".into(),
            arch: "arm64".into(),
        };
        let catalog = Catalog::new(Some(root.clone()), vec![], vec![]).serving();
        sign_dir(&key, &dir, &opts(1)).unwrap();
        let first = catalog.rescan().unwrap()[&ca].clone();
        let first_sig = std::fs::read(dir.join(SIGNATURE_NAME)).unwrap();

        // Release 2, caught half-way: its manifest with release 1's signature.
        std::fs::write(dir.join("vmlinuz"), b"kernel 2").unwrap();
        sign_dir(&key, &dir, &opts(2)).unwrap();
        let second_sig = std::fs::read(dir.join(SIGNATURE_NAME)).unwrap();
        std::fs::write(dir.join(SIGNATURE_NAME), &first_sig).unwrap();
        let during = catalog.rescan().unwrap()[&ca].clone();
        assert_eq!(during.json, first.json, "the previous pair is still served");
        assert_eq!(during.signature, first.signature);
        // A server that never saw release 1 serves nothing rather than a mix.
        let fresh = Catalog::new(Some(root.clone()), vec![], vec![]).serving();
        assert!(fresh.rescan().unwrap().is_empty());
        // Tools take the files as they are.
        let tool = Catalog::new(Some(root.clone()), vec![], vec![]);
        assert_eq!(
            tool.rescan().unwrap()[&ca].signature.as_deref(),
            Some(&first_sig[..])
        );

        // Both in place: release 2, with its own signature.
        std::fs::write(dir.join(SIGNATURE_NAME), &second_sig).unwrap();
        let after = catalog.rescan().unwrap()[&ca].clone();
        assert_eq!(after.release.as_ref().map(|r| r.release_seq), Some(2));
        assert_eq!(after.signature.as_deref(), Some(&second_sig[..]));
    }
}
