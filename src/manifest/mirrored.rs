//! Releases a mirror follows (`plasmd serve --mirror C/A`): for each such
//! channel/arch, the signed release it serves now and the directory its
//! files are in, switched in one step. The catalog answers a mirrored
//! channel/arch from here instead of scanning a directory of the tree, so
//! a reader gets the old manifest with the old files or the new with the
//! new, never one of each.
//!
//! Downloading and choosing releases is the provider's `mirror`; this
//! module only keeps what was switched to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Manifest;
use crate::channel::ChannelArch;

/// The release a mirror serves for one channel/arch.
#[derive(Debug, Clone)]
pub struct Mirrored {
    /// The signed manifest (with its signature), served byte for byte; its
    /// artifacts are those of the verified download.
    pub manifest: Arc<Manifest>,
    /// Where its files are, relative to the artifacts root.
    pub dir: PathBuf,
}

/// Every mirrored channel/arch.
#[derive(Debug, Default)]
pub struct Mirrors(Mutex<BTreeMap<ChannelArch, Mirrored>>);

impl Mirrors {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<ChannelArch, Mirrored>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `m` for `ca` from now on.
    pub fn set(&self, ca: ChannelArch, m: Mirrored) {
        self.lock().insert(ca, m);
    }

    /// What is served for `ca`, if it is mirrored and has a release yet.
    pub fn get(&self, ca: &ChannelArch) -> Option<Mirrored> {
        self.lock().get(ca).cloned()
    }

    /// The mirrored channel/archs that have a release.
    pub fn channel_archs(&self) -> Vec<ChannelArch> {
        self.lock().keys().cloned().collect()
    }
}
