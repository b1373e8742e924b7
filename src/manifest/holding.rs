//! Releases a process holds while it downloads them (a board's stage-1,
//! `phase-discover --seed`, a mirror): the signed manifest byte for byte
//! and, per artifact, the file being written and which of its chunks
//! verified ([`Held`]). The HTTP server answers from here under
//! `/_release/{manifest_sha256}/{channel}/{arch}/…`, so one process can hold
//! two releases of one channel/arch at once (a mirror keeps the previous
//! one for boards still downloading it).
//!
//! Only verified chunks are ever offered: a chunk is marked held after its
//! bytes checked out against the signed manifest and were written. This
//! module does not download, verify or serve anything itself.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::held::Held;
use super::{read_fields, Manifest};
use crate::channel::ChannelArch;

/// Releases held at once, at most: a mirror keeps a few, a board one.
pub const MAX_HOLDINGS: usize = 8;

/// One artifact of a held release.
#[derive(Debug, Clone)]
pub struct HeldFile {
    /// The file being written (renames do not affect the handle).
    pub file: Arc<File>,
    pub size: u64,
    pub held: Arc<Held>,
}

/// One release held.
#[derive(Debug)]
pub struct Holding {
    pub ca: ChannelArch,
    /// The signed manifest and its signature, served as they came.
    pub manifest: Arc<Manifest>,
    files: Mutex<BTreeMap<String, HeldFile>>,
    /// When a chunk was last asked for, in ms since the epoch.
    asked_at: AtomicU64,
}

impl Holding {
    /// A release of `ca` whose manifest is `json` (with its `signature`),
    /// nothing of it held yet. `None` if the manifest cannot be read.
    pub fn new(ca: ChannelArch, json: Vec<u8>, signature: Option<Vec<u8>>) -> Option<Holding> {
        let fields = read_fields(&json).ok()?;
        let manifest = Manifest {
            version: fields.version,
            sha256: crate::text::sha256_hex(&json),
            json,
            artifacts: BTreeMap::new(),
            signature,
            release: None,
        };
        Some(Holding {
            ca,
            manifest: Arc::new(manifest),
            files: Mutex::new(BTreeMap::new()),
            asked_at: AtomicU64::new(now_ms()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, HeldFile>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers `name`'s verified chunks as they come.
    pub fn add(&self, name: &str, file: HeldFile) {
        self.lock().insert(name.to_string(), file);
    }

    /// The artifact `name`, if it is being held.
    pub fn file(&self, name: &str) -> Option<HeldFile> {
        self.lock().get(name).cloned()
    }

    /// Notes that another holder asked for chunks just now.
    pub fn asked(&self) {
        self.asked_at.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since chunks were last asked for (or since it was made).
    pub fn idle(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.asked_at.load(Ordering::Relaxed)))
    }

    /// Bytes held, of bytes listed so far.
    pub fn progress(&self) -> (u64, u64) {
        self.lock().values().fold((0, 0), |(held, all), f| {
            let chunks = f.held.chunks().max(1) as u64;
            (held + f.size * f.held.count() as u64 / chunks, all + f.size)
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The releases a process holds, by manifest sha256.
#[derive(Debug, Default)]
pub struct Holdings(Mutex<Vec<Arc<Holding>>>);

impl Holdings {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Holding>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `h` (again, if its manifest was held already), dropping the
    /// oldest beyond [`MAX_HOLDINGS`].
    pub fn add(&self, h: Arc<Holding>) {
        let mut all = self.lock();
        all.retain(|o| o.manifest.sha256 != h.manifest.sha256);
        all.push(h);
        let excess = all.len().saturating_sub(MAX_HOLDINGS);
        all.drain(..excess);
    }

    /// The release whose manifest hashes to `sha256`, if held.
    pub fn get(&self, sha256: &str) -> Option<Arc<Holding>> {
        self.lock()
            .iter()
            .find(|h| h.manifest.sha256 == sha256)
            .cloned()
    }

    /// Stops holding the release whose manifest hashes to `sha256`.
    pub fn remove(&self, sha256: &str) {
        self.lock().retain(|h| h.manifest.sha256 != sha256);
    }

    /// Every release held, oldest first.
    pub fn all(&self) -> Vec<Arc<Holding>> {
        self.lock().clone()
    }
}

/// The path a holder serves a release's manifest under (artifacts next to
/// it): `/_release/{sha256}/{channel}/{arch}/manifest.json`. It ends like a
/// provider's manifest path, so records and clients treat it alike.
pub fn holding_path(ca: &ChannelArch, sha256: &str) -> String {
    format!(
        "/_release/{sha256}/{}/{}/manifest.json",
        ca.channel, ca.arch
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(version: &str) -> Arc<Holding> {
        let ca = ChannelArch {
            channel: "stable".into(),
            arch: "arm64".into(),
        };
        let json = format!(r#"{{"version": "{version}", "artifacts": []}}"#).into_bytes();
        Arc::new(Holding::new(ca, json, None).unwrap())
    }

    #[test]
    fn holdings_are_found_by_manifest_hash_and_bounded() {
        let all = Holdings::default();
        let first = holding("v0");
        all.add(first.clone());
        for i in 1..=MAX_HOLDINGS {
            all.add(holding(&format!("v{i}")));
        }
        assert_eq!(all.all().len(), MAX_HOLDINGS);
        assert!(all.get(&first.manifest.sha256).is_none(), "the oldest went");
        let last = holding(&format!("v{MAX_HOLDINGS}"));
        assert!(all.get(&last.manifest.sha256).is_some());
        all.remove(&last.manifest.sha256);
        assert!(all.get(&last.manifest.sha256).is_none());
        assert!(Holding::new(last.ca.clone(), b"not json".to_vec(), None).is_none());
    }

    #[test]
    fn progress_counts_held_chunks_by_size() {
        let h = holding("v1");
        let file = Arc::new(tempfile_like());
        let held = Arc::new(Held::empty(4));
        held.set(0);
        h.add(
            "rootfs",
            HeldFile {
                file,
                size: 4_000_000,
                held,
            },
        );
        assert_eq!(h.progress(), (1_000_000, 4_000_000));
        assert!(h.file("rootfs").is_some() && h.file("other").is_none());
    }

    fn tempfile_like() -> File {
        File::open("/proc/self/stat").unwrap()
    }
}
