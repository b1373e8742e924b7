//! The catalog: the artifacts root scanned into one manifest per
//! `<channel>/<arch>` directory, cached.
//!
//! A rescan only hashes files whose size, mtime, ctime or inode changed, and
//! reads them in fixed-size chunks, never whole. The catalog also answers
//! "which file on disk is artifact X", refusing anything outside the root
//! (see `beneath`), and keeps the releases held while they download
//! (`holding`). It does not watch for changes (the provider's `changes`),
//! serve HTTP (`http`) or publish (the provider's `publisher`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::read::{read_fields, signed_sha256};
use super::write::{hash_reader, render, trusted_comment};
use super::{
    Artifact, Manifest, ManifestError, ReleaseTag, MANIFEST_NAME, MAX_FILES, MAX_MANIFEST_BYTES,
    SIGNATURE_NAME,
};
use crate::beneath::{self, BeneathError};
use crate::channel::{check_name, is_safe_file_name, ChannelArch};
use crate::minisign::{SecretKey, Signature};
use crate::text::sha256_hex;

/// Largest `manifest.json.minisig` we load: a signature is a few hundred bytes.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// A file's sha256 (hex) and its chunk hashes.
type Hashed = (String, Vec<[u8; 32]>);

/// At most this many channel/arch pairs are served.
const MAX_CHANNEL_ARCHS: usize = 256;

/// Identity of a file's content as far as `stat` can tell: if none of these
/// changed, the cached hash is still right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    /// The ctime too: `cp -p`, tar and reproducible builds set the mtime of a
    /// same-size replacement to the old one's, but writing it moves the ctime,
    /// which no unprivileged tool can set back.
    ctime: i64,
    ctime_nsec: i64,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Stamp {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// Scans the artifacts root and caches one manifest per channel/arch.
pub struct Catalog {
    /// The artifacts root; `None` while the board layer has not found the
    /// netboot partition (or it went away).
    root: RwLock<Option<PathBuf>>,
    /// When set, only these channels/archs are served (`--channel`, `--arch`).
    channels: Vec<String>,
    archs: Vec<String>,
    manifests: Mutex<BTreeMap<ChannelArch, Arc<Manifest>>>,
    /// sha256 by path, valid while the file's stamp is unchanged. Kept across
    /// rescans so an unchanged multi-GiB rootfs is hashed once.
    hashes: Mutex<HashMap<PathBuf, (Stamp, Hashed)>>,
    /// `--sign-key`: the provider signs the manifests it generates itself.
    signer: Option<Arc<SecretKey>>,
    /// How long a manifest whose signature names another manifest (a
    /// release being switched) is answered with the previous pair; zero
    /// for tools (`release sign`, `release verify`), which take the files
    /// as they are.
    switch_grace: Duration,
    /// When each channel/arch was first seen half-switched.
    half_switched: Mutex<HashMap<ChannelArch, Instant>>,
    /// Releases held while they download, served beside the tree.
    holdings: super::holding::Holdings,
    /// Channel/archs a mirror serves instead of a directory of the tree.
    mirrors: super::mirrored::Mirrors,
}

/// How long a server keeps the previous manifest and signature while the
/// new pair is not both in place: far longer than the two renames of
/// `release sign` take, short enough that a pair that never matches (a
/// hand-edited manifest) is soon served as it is, for boards to refuse
/// and say why.
pub const SWITCH_GRACE: Duration = Duration::from_secs(5);

impl Catalog {
    /// A catalog of `root`; empty `channels`/`archs` mean "every directory".
    pub fn new(root: Option<PathBuf>, channels: Vec<String>, archs: Vec<String>) -> Self {
        Catalog {
            root: RwLock::new(root),
            channels,
            archs,
            manifests: Mutex::new(BTreeMap::new()),
            hashes: Mutex::new(HashMap::new()),
            signer: None,
            switch_grace: Duration::ZERO,
            half_switched: Mutex::new(HashMap::new()),
            holdings: Default::default(),
            mirrors: Default::default(),
        }
    }

    /// Serves `m` for `ca` from now on, instead of `ca`'s directory (a
    /// mirror switching releases): the manifest and the files switch
    /// together. The publisher hears of it at the next rescan.
    pub fn set_mirrored(&self, ca: ChannelArch, m: super::mirrored::Mirrored) {
        let manifest = m.manifest.clone();
        self.mirrors.set(ca.clone(), m);
        lock(&self.manifests).insert(ca, manifest);
    }

    /// Releases held while they download (see `holding`), served under
    /// `/_release/…` next to the tree's.
    pub fn holdings(&self) -> &super::holding::Holdings {
        &self.holdings
    }

    /// Signs every generated manifest with `key` (`--sign-key`), making it
    /// a release. Shipped manifests are served as they are.
    /// A catalog a server answers from: a release being switched keeps
    /// its previous manifest and signature for [`SWITCH_GRACE`].
    pub fn serving(mut self) -> Self {
        self.switch_grace = SWITCH_GRACE;
        self
    }

    /// Signs every generated manifest with `key` (`--sign-key`), making it
    /// a release. Shipped manifests are served as they are.
    pub fn with_signer(mut self, key: Option<Arc<SecretKey>>) -> Self {
        self.signer = key;
        self
    }

    /// The artifacts root this catalog serves, if there is one now.
    pub fn root(&self) -> Option<PathBuf> {
        self.root.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Points the catalog at a new artifacts root (or none). The next
    /// rescan picks it up.
    pub fn set_root(&self, root: Option<PathBuf>) {
        *self.root.write().unwrap_or_else(|e| e.into_inner()) = root;
    }

    fn require_root(&self) -> Result<PathBuf, ManifestError> {
        self.root().ok_or(ManifestError::NoRoot)
    }

    /// The channel/arch directories that exist now and are selected.
    pub fn channel_archs(&self) -> Result<Vec<ChannelArch>, ManifestError> {
        let root = self.require_root()?;
        let mut found = Vec::new();
        for channel in self.list_dirs(&root, &self.channels, true)? {
            let dir = root.join(&channel);
            let archs = match self.list_dirs(&dir, &self.archs, false) {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("skipping channel {channel}: {e}");
                    continue;
                }
            };
            for arch in archs {
                if found.len() + self.mirrors.channel_archs().len() >= MAX_CHANNEL_ARCHS {
                    log::warn!(
                        "more than {MAX_CHANNEL_ARCHS} channel/arch directories; ignoring the rest"
                    );
                    return Ok(found);
                }
                found.push(ChannelArch {
                    channel: channel.clone(),
                    arch,
                });
            }
        }
        // A mirrored channel/arch is served whether or not its directory
        // exists (the mirror's wins if it does).
        for ca in self.mirrors.channel_archs() {
            if !found.contains(&ca) {
                found.push(ca);
            }
        }
        found.sort();
        Ok(found)
    }

    /// Subdirectories of `dir` whose names are valid channel/arch names,
    /// restricted to `only` when it is non-empty.
    fn list_dirs(
        &self,
        dir: &Path,
        only: &[String],
        is_root: bool,
    ) -> Result<Vec<String>, ManifestError> {
        let entries = fs::read_dir(dir).map_err(|e| {
            if is_root {
                ManifestError::Root(dir.to_path_buf(), e)
            } else {
                ManifestError::Io(dir.to_path_buf(), e)
            }
        })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ManifestError::Io(dir.to_path_buf(), e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if check_name("directory", &name).is_err() {
                continue;
            }
            if !only.is_empty() && !only.contains(&name) {
                continue;
            }
            // Follow symlinks here: a channel dir may be a link, but the files
            // served from it are checked against the root (see `open`).
            if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Rescans every channel/arch, updates the cache and returns the current
    /// manifests. A channel/arch that fails to scan is logged and left out
    /// (it is not advertised); one whose manifest and signature do not
    /// belong together yet keeps its previous pair until they do; an
    /// unreadable root is an error.
    pub fn rescan(&self) -> Result<BTreeMap<ChannelArch, Arc<Manifest>>, ManifestError> {
        let root = self.require_root()?;
        let mut fresh = BTreeMap::new();
        let cas = self.channel_archs()?;
        for ca in cas.iter().cloned() {
            if let Some(m) = self.mirrors.get(&ca) {
                fresh.insert(ca, m.manifest);
                continue;
            }
            match self.scan_one(&root, &ca, true) {
                Ok(m) => {
                    lock(&self.half_switched).remove(&ca);
                    fresh.insert(ca, m);
                }
                // Readers get the old pair or the new, never one of each,
                // for a grace period; then the files as they are.
                Err(e @ ManifestError::HalfSwitched(_)) => {
                    let since = *lock(&self.half_switched)
                        .entry(ca.clone())
                        .or_insert_with(Instant::now);
                    let waiting = since.elapsed() < self.switch_grace;
                    match self.manifest(&ca) {
                        Some(old) if waiting => {
                            log::info!("{e}: serving the previous release of {ca} meanwhile");
                            fresh.insert(ca, old);
                        }
                        None if waiting => log::info!("not serving {ca} yet: {e}"),
                        _ => match self.scan_one(&root, &ca, false) {
                            Ok(m) => {
                                log::warn!(
                                    "{e} after {:.0?}: serving them as they are \
                                     (boards with a release key will refuse them)",
                                    since.elapsed()
                                );
                                fresh.insert(ca, m);
                            }
                            Err(e) => log::error!("not serving {ca}: {e}"),
                        },
                    }
                }
                Err(e) => log::error!("not serving {ca}: {e}"),
            }
        }
        // Only directories there now are remembered as half-switched: the
        // map stays as bounded as the list of channel/archs.
        lock(&self.half_switched).retain(|ca, _| cas.contains(ca));
        *lock(&self.manifests) = fresh.clone();
        // Forget hashes of files that are gone, so the cache stays bounded.
        let keep: std::collections::HashSet<PathBuf> = fresh
            .iter()
            .flat_map(|(ca, m)| {
                let dir = dir_of(&root, ca);
                m.artifacts.keys().map(move |n| dir.join(n))
            })
            .collect();
        lock(&self.hashes).retain(|p, _| keep.contains(p));
        Ok(fresh)
    }

    /// Forgets every manifest (the artifacts root went away).
    pub fn clear(&self) {
        lock(&self.manifests).clear();
    }

    /// Every manifest served now, from the cache (no disk access).
    pub fn manifests(&self) -> BTreeMap<ChannelArch, Arc<Manifest>> {
        lock(&self.manifests).clone()
    }

    /// The cached manifest of `ca`, if it is served.
    pub fn manifest(&self, ca: &ChannelArch) -> Option<Arc<Manifest>> {
        lock(&self.manifests).get(ca).cloned()
    }

    /// Builds the manifest of one channel/arch directory; `pairs` refuses a
    /// signature that names another manifest (`HalfSwitched`).
    fn scan_one(
        &self,
        root: &Path,
        ca: &ChannelArch,
        pairs: bool,
    ) -> Result<Arc<Manifest>, ManifestError> {
        let dir = dir_of(root, ca);
        let mut artifacts = BTreeMap::new();
        let mut shipped = None;
        let mut signature = None;
        // The newest ctime in the directory (its own too: it moves when a
        // file is added, removed or renamed): a generated release's number.
        let mut newest_change = fs::metadata(&dir).map_or(0, |m| m.ctime());
        let entries = fs::read_dir(&dir).map_err(|e| ManifestError::Io(dir.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ManifestError::Io(dir.clone(), e))?;
            let Ok(name) = entry.file_name().into_string() else {
                log::warn!("{}: skipping file with a non-UTF-8 name", dir.display());
                continue;
            };
            // Dot files are editors' and copy tools' temporaries, not artifacts.
            if name.starts_with('.') || !is_safe_file_name(&name) {
                continue;
            }
            let path = entry.path();
            // Opened the way the server opens it, and hashed from that
            // handle, so what is listed is exactly what can be served.
            let (mut file, meta) = match beneath::open_regular(root, &rel_path(ca, &name)) {
                Ok(opened) => opened,
                Err(BeneathError::Outside) => {
                    log::warn!(
                        "{}: leads outside the artifacts root; not serving it",
                        path.display()
                    );
                    continue;
                }
                Err(_) => continue,
            };
            if name == MANIFEST_NAME {
                // Read from this handle, not by name again: the name may
                // point elsewhere by then.
                shipped = Some((path, file));
                continue;
            }
            if name == SIGNATURE_NAME {
                signature = Some(read_bounded(&path, file, MAX_SIGNATURE_BYTES)?);
                continue;
            }
            newest_change = newest_change.max(meta.ctime());
            if artifacts.len() >= MAX_FILES {
                log::warn!(
                    "{}: more than {MAX_FILES} files; ignoring the rest",
                    dir.display()
                );
                break;
            }
            let (sha256, chunks) = self.hash(&path, &mut file, &meta)?;
            artifacts.insert(
                name.clone(),
                Artifact {
                    name,
                    size: meta.len(),
                    sha256,
                    chunks,
                },
            );
        }
        let manifest = match (shipped, &self.signer) {
            (Some((path, file)), _) => load_shipped(&path, file, artifacts, signature, pairs)?,
            (None, Some(key)) => {
                let seq = u64::try_from(newest_change).unwrap_or(0);
                let mut m = render(ca, None, Some((seq, seq)), None, artifacts);
                let sig = key
                    .sign(&m.json, &trusted_comment(seq, &m.json))
                    .map_err(|e| ManifestError::BadManifest(dir.clone(), e.to_string()))?;
                m.release = Some(ReleaseTag {
                    release_seq: seq,
                    key_id: key.id.to_string(),
                });
                m.signature = Some(sig.into_bytes());
                m
            }
            (None, None) => render(ca, None, None, None, artifacts),
        };
        Ok(Arc::new(manifest))
    }

    fn hash(
        &self,
        path: &Path,
        file: &mut File,
        meta: &fs::Metadata,
    ) -> Result<Hashed, ManifestError> {
        let stamp = Stamp::of(meta);
        if let Some((s, h)) = lock(&self.hashes).get(path) {
            if *s == stamp {
                return Ok(h.clone());
            }
        }
        let h = hash_reader(file).map_err(|e| ManifestError::Io(path.to_path_buf(), e))?;
        lock(&self.hashes).insert(path.to_path_buf(), (stamp, h.clone()));
        Ok(h)
    }

    /// Opens artifact `name` of `ca` for serving. Only names listed in the
    /// current manifest are served, and only regular files reached without
    /// leaving the root (see `beneath`). The size, mtime and sha256 describe
    /// the open handle, so a file replaced (renamed over) meanwhile is served
    /// whole, old or new.
    pub fn open(&self, ca: &ChannelArch, name: &str) -> Result<OpenArtifact, OpenError> {
        // A mirrored release's manifest and directory, taken together.
        let mirrored = self.mirrors.get(ca);
        let manifest = match &mirrored {
            Some(m) => m.manifest.clone(),
            None => self.manifest(ca).ok_or(OpenError::NotListed)?,
        };
        let Some(listed) = manifest.artifacts.get(name) else {
            return Err(OpenError::NotListed);
        };
        let root = self.root().ok_or(OpenError::NotListed)?;
        let rel = match &mirrored {
            Some(m) => m.dir.join(name),
            None => rel_path(ca, name),
        };
        let (file, meta) = beneath::open_regular(&root, &rel).map_err(|e| {
            if e.is_exhaustion() {
                OpenError::Exhausted(e)
            } else {
                OpenError::Unavailable(e)
            }
        })?;
        if mirrored.is_some() {
            // Written by the mirror, every chunk verified on arrival; a
            // file of another size is not the one listed.
            let sha256 = (meta.len() == listed.size).then(|| listed.sha256.clone());
            return Ok(OpenArtifact {
                file,
                size: meta.len(),
                modified: meta.modified().ok(),
                sha256,
            });
        }
        let stamp = Stamp::of(&meta);
        // The cached hash is only this handle's if nothing changed since.
        let path = dir_of(&root, ca).join(name);
        let sha256 = lock(&self.hashes)
            .get(&path)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, (h, _))| h.clone());
        Ok(OpenArtifact {
            file,
            size: meta.len(),
            modified: meta.modified().ok(),
            sha256,
        })
    }
}

/// Why an artifact could not be opened for serving.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not in the current manifest (or nothing is served now).
    #[error("not listed in the manifest")]
    NotListed,
    /// Listed, but gone, swapped for something else, or unreadable.
    #[error("{0}")]
    Unavailable(BeneathError),
    /// Out of descriptors or memory: the server is full, the file is fine.
    #[error("{0}")]
    Exhausted(BeneathError),
}

/// An artifact opened for serving.
pub struct OpenArtifact {
    pub file: File,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
    /// Its sha256, when known to match the open handle.
    pub sha256: Option<String>,
}

fn dir_of(root: &Path, ca: &ChannelArch) -> PathBuf {
    root.join(&ca.channel).join(&ca.arch)
}

/// `<channel>/<arch>/<name>`, relative to the artifacts root.
fn rel_path(ca: &ChannelArch, name: &str) -> PathBuf {
    Path::new(&ca.channel).join(&ca.arch).join(name)
}

/// Locks a mutex, recovering the data if another thread panicked while
/// holding it: the cache is always left consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads at most `max` bytes of an open file; more is an error.
fn read_bounded(path: &Path, file: File, max: u64) -> Result<Vec<u8>, ManifestError> {
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ManifestError::Io(path.to_path_buf(), e))?;
    if bytes.len() as u64 > max {
        return Err(ManifestError::BadManifest(
            path.to_path_buf(),
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Loads a `manifest.json` shipped in the directory: served byte for byte,
/// its top-level `version` string advertised; with its signature, the
/// release it claims to be advertised too (boards check it, we only tell).
fn load_shipped(
    path: &Path,
    file: File,
    artifacts: BTreeMap<String, Artifact>,
    signature: Option<Vec<u8>>,
    pairs: bool,
) -> Result<Manifest, ManifestError> {
    let bad = |m: &str| ManifestError::BadManifest(path.to_path_buf(), m.to_string());
    let json = read_bounded(path, file, MAX_MANIFEST_BYTES)?;
    let sha256 = sha256_hex(&json);
    let parsed = signature.as_deref().map(Signature::parse);
    if let (Some(Ok(sig)), true) = (&parsed, pairs) {
        if signed_sha256(&sig.trusted_comment).is_some_and(|named| named != sha256) {
            return Err(ManifestError::HalfSwitched(path.to_path_buf()));
        }
    }
    let fields = read_fields(&json).map_err(|e| bad(&e))?;
    let release = match (parsed, fields.release_seq) {
        (Some(sig), Some(release_seq)) => match sig {
            Ok(sig) => Some(ReleaseTag {
                release_seq,
                key_id: sig.key_id.to_string(),
            }),
            Err(e) => {
                log::warn!("{}: {SIGNATURE_NAME}: {e}", path.display());
                None
            }
        },
        (Some(_), None) => {
            log::warn!(
                "{}: signed, but has no release_seq: boards with a release key will refuse it",
                path.display()
            );
            None
        }
        _ => None,
    };
    Ok(Manifest {
        version: fields.version,
        sha256,
        json,
        artifacts,
        signature,
        release,
    })
}
