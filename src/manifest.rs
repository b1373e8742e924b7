//! Manifests: what each `<channel>/<arch>` directory under the artifacts root
//! holds, as the `manifest.json` boards download.
//!
//! The [`Catalog`] scans the artifacts root, builds (or loads) one manifest
//! per channel/arch and caches it; a rescan only hashes files whose size,
//! mtime or inode changed, and reads them in fixed-size chunks, never whole.
//! It also answers "which file on disk is artifact X", refusing anything
//! outside the root. It does not watch for changes (that is `watch`), serve
//! HTTP (`http`) or publish (`publisher`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use sha2::{Digest, Sha256};

use crate::beneath::{self, BeneathError};
use crate::record::check_name;
use crate::release::minisign::{SecretKey, Signature};
use crate::release::SIGNATURE_NAME;

/// Name of the manifest file, generated or shipped in a channel/arch dir.
pub const MANIFEST_NAME: &str = "manifest.json";

/// Largest `manifest.json` we load from disk. A shipped manifest lists files,
/// it is not one: anything bigger is a mistake, not something to serve.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Largest `manifest.json.minisig` we load: a signature is a few hundred bytes.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// At most this many artifacts per channel/arch, so a directory flooded with
/// files cannot make the manifest (held in memory) grow without bound.
const MAX_FILES: usize = 4096;

/// At most this many channel/arch pairs are served.
const MAX_CHANNEL_ARCHS: usize = 256;

/// Hashing reads this much at a time.
const HASH_CHUNK: usize = 64 * 1024;

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
}

/// A channel/arch pair, e.g. `stable/arm64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelArch {
    pub channel: String,
    pub arch: String,
}

impl std::fmt::Display for ChannelArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.channel, self.arch)
    }
}

/// One artifact in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub size: u64,
    pub sha256: String,
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

/// Longest `boot.cmdline` (the arm64 kernel's own limit is 2048 bytes).
pub const MAX_BOOT_CMDLINE: usize = 2048;

/// Room for unescaping a manifest's strings while parsing it: the parser
/// unescapes every string it meets, the ones it skips too, so this must hold
/// the longest (the boot command line) with its escapes.
pub const UNESCAPE_BUFFER: usize = MAX_BOOT_CMDLINE + 512;

/// A signed release as the DHT record advertises it: a hint for readers
/// (they verify the manifest itself), covered by the record signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseTag {
    pub release_seq: u64,
    /// Id of the minisign key that signed the manifest (16 hex digits).
    pub key_id: String,
}

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
    hashes: Mutex<HashMap<PathBuf, (Stamp, String)>>,
    /// `--sign-key`: the provider signs the manifests it generates itself.
    signer: Option<Arc<SecretKey>>,
}

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
        }
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
                if found.len() >= MAX_CHANNEL_ARCHS {
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
    /// (it is not advertised); an unreadable root is an error.
    pub fn rescan(&self) -> Result<BTreeMap<ChannelArch, Arc<Manifest>>, ManifestError> {
        let root = self.require_root()?;
        let mut fresh = BTreeMap::new();
        for ca in self.channel_archs()? {
            match self.scan_one(&root, &ca) {
                Ok(m) => {
                    fresh.insert(ca, m);
                }
                Err(e) => log::error!("not serving {ca}: {e}"),
            }
        }
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

    /// Builds the manifest of one channel/arch directory.
    fn scan_one(&self, root: &Path, ca: &ChannelArch) -> Result<Arc<Manifest>, ManifestError> {
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
            let sha256 = self.hash(&path, &mut file, &meta)?;
            artifacts.insert(
                name.clone(),
                Artifact {
                    name,
                    size: meta.len(),
                    sha256,
                },
            );
        }
        let manifest = match (shipped, &self.signer) {
            (Some((path, file)), _) => load_shipped(&path, file, artifacts, signature)?,
            (None, Some(key)) => {
                let seq = u64::try_from(newest_change).unwrap_or(0);
                let mut m = render(ca, None, Some((seq, seq)), None, artifacts);
                let sig = key
                    .sign(&m.json, &trusted_comment(seq))
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
    ) -> Result<String, ManifestError> {
        let stamp = Stamp::of(meta);
        if let Some((s, h)) = lock(&self.hashes).get(path) {
            if *s == stamp {
                return Ok(h.clone());
            }
        }
        let h = sha256_reader(file).map_err(|e| ManifestError::Io(path.to_path_buf(), e))?;
        lock(&self.hashes).insert(path.to_path_buf(), (stamp, h.clone()));
        Ok(h)
    }

    /// Opens artifact `name` of `ca` for serving. Only names listed in the
    /// current manifest are served, and only regular files reached without
    /// leaving the root (see `beneath`). The size, mtime and sha256 describe
    /// the open handle, so a file replaced (renamed over) meanwhile is served
    /// whole, old or new.
    pub fn open(&self, ca: &ChannelArch, name: &str) -> Result<OpenArtifact, OpenError> {
        let manifest = self.manifest(ca).ok_or(OpenError::NotListed)?;
        if !manifest.artifacts.contains_key(name) {
            return Err(OpenError::NotListed);
        }
        let root = self.root().ok_or(OpenError::NotListed)?;
        let (file, meta) = beneath::open_regular(&root, &rel_path(ca, name)).map_err(|e| {
            if e.is_exhaustion() {
                OpenError::Exhausted(e)
            } else {
                OpenError::Unavailable(e)
            }
        })?;
        let stamp = Stamp::of(&meta);
        // The cached hash is only this handle's if nothing changed since.
        let path = dir_of(&root, ca).join(name);
        let sha256 = lock(&self.hashes)
            .get(&path)
            .filter(|(s, _)| *s == stamp)
            .map(|(_, h)| h.clone());
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

/// A file name we are willing to serve: no separators, no NUL, not `.`/`..`,
/// bounded length.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

/// Locks a mutex, recovering the data if another thread panicked while
/// holding it: the cache is always left consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hex sha256 of everything `file` yields, read in chunks.
pub fn sha256_reader(file: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// True for a sha256 as we write it: 64 lower-case hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The version of a generated manifest: derived from names, sizes and
/// hashes only, so the same files always give the same version.
pub fn content_version(artifacts: &BTreeMap<String, Artifact>) -> String {
    let mut h = Sha256::new();
    for a in artifacts.values() {
        h.update(a.name.as_bytes());
        h.update([0]);
        h.update(a.size.to_string().as_bytes());
        h.update([0]);
        h.update(a.sha256.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize()[..8])
}

/// Writes the canonical manifest of `artifacts`: `version` (default: the
/// content version) and, for a release, `release_seq` and `created`
/// (seconds since the epoch). The same inputs always give the same bytes.
pub fn render(
    ca: &ChannelArch,
    version: Option<&str>,
    release: Option<(u64, u64)>,
    boot: Option<&BootSpec>,
    artifacts: BTreeMap<String, Artifact>,
) -> Manifest {
    let version = version.map_or_else(|| content_version(&artifacts), str::to_string);
    let mut json = format!(
        "{{\n  \"channel\": \"{}\",\n  \"arch\": \"{}\",\n  \"version\": {},\n",
        ca.channel,
        ca.arch,
        json_string(&version)
    );
    if let Some((seq, created)) = release {
        json.push_str(&format!(
            "  \"release_seq\": {seq},\n  \"created\": \"{}\",\n",
            crate::record::rfc3339_secs(created)
        ));
    }
    if let Some(b) = boot {
        let mut fields = vec![format!("\"kernel\": {}", json_string(&b.kernel))];
        for (name, value) in [
            ("initrd", &b.initrd),
            ("dtb", &b.dtb),
            ("cmdline", &b.cmdline),
        ] {
            if let Some(v) = value {
                fields.push(format!("\"{name}\": {}", json_string(v)));
            }
        }
        json.push_str(&format!("  \"boot\": {{{}}},\n", fields.join(", ")));
    }
    json.push_str("  \"artifacts\": [");
    for (i, a) in artifacts.values().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "\n    {{\"name\": {}, \"size\": {}, \"sha256\": \"{}\"}}",
            json_string(&a.name),
            a.size,
            a.sha256
        ));
    }
    json.push_str("\n  ]\n}\n");
    Manifest {
        version,
        sha256: hex(&Sha256::digest(json.as_bytes())),
        json: json.into_bytes(),
        artifacts,
        signature: None,
        release: None,
    }
}

/// The trusted comment of a release signature, in minisign's own style.
pub fn trusted_comment(created: u64) -> String {
    format!("timestamp:{created}\tfile:{MANIFEST_NAME}\thashed")
}

/// A JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text from the network (URLs, versions, names, error messages quoting
/// them) made safe to show on a terminal: control characters (C0, DEL, C1)
/// and bidirectional overrides become `?`, so a hostile record can neither
/// drive the terminal with escape sequences nor reorder what it shows.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi {
                '?'
            } else {
                c
            }
        })
        .collect()
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
) -> Result<Manifest, ManifestError> {
    let bad = |m: &str| ManifestError::BadManifest(path.to_path_buf(), m.to_string());
    let json = read_bounded(path, file, MAX_MANIFEST_BYTES)?;
    let fields = crate::release::read_fields(&json).map_err(|e| bad(&e))?;
    let release = match (&signature, fields.release_seq) {
        (Some(sig), Some(release_seq)) => match Signature::parse(sig) {
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
        sha256: hex(&Sha256::digest(&json)),
        json,
        artifacts,
        signature,
        release,
    })
}

/// Deepest nesting accepted in a shipped manifest. The parser recurses per
/// level, so unbounded nesting would be a stack overflow waiting to happen.
const MAX_JSON_DEPTH: usize = 32;

/// The top-level `"version"` string of a shipped manifest.
pub fn shipped_version(json: &[u8]) -> Result<String, String> {
    crate::release::read_fields(json).map(|f| f.version)
}

/// Rejects JSON nested deeper than `MAX_JSON_DEPTH`, without parsing it.
pub fn check_depth(json: &[u8]) -> Result<(), String> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!("nested deeper than {MAX_JSON_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn network_text_cannot_drive_the_terminal() {
        assert_eq!(printable("v1\x1b[2J\nboot"), "v1?[2J?boot");
        assert_eq!(printable("a\u{9b}31m\u{7f}"), "a?31m?");
        assert_eq!(printable("evil\u{202e}gpj.exe"), "evil?gpj.exe");
        assert_eq!(printable("stable 1.0 · ünï"), "stable 1.0 · ünï");
    }

    use super::*;

    fn tree() -> (tempdir::TempDir, Catalog) {
        let dir = tempdir::TempDir::new();
        let a = dir.path().join("stable/arm64");
        fs::create_dir_all(&a).unwrap();
        fs::write(a.join("vmlinuz"), b"kernel").unwrap();
        fs::write(a.join("initrd.img"), b"initramfs").unwrap();
        let cat = Catalog::new(Some(dir.path().to_path_buf()), vec![], vec![]);
        (dir, cat)
    }

    /// A tiny self-cleaning temp dir, to avoid a dev-dependency.
    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "plasmd-unit-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn stable() -> ChannelArch {
        ChannelArch {
            channel: "stable".into(),
            arch: "arm64".into(),
        }
    }

    #[test]
    fn same_files_same_version_and_changes_change_it() {
        let (dir, cat) = tree();
        let v1 = cat.rescan().unwrap()[&stable()].version.clone();
        assert_eq!(v1.len(), 16);
        assert_eq!(cat.rescan().unwrap()[&stable()].version, v1);
        fs::write(dir.path().join("stable/arm64/vmlinuz"), b"kernel 2").unwrap();
        let v2 = cat.rescan().unwrap()[&stable()].version.clone();
        assert_ne!(v1, v2);
        fs::write(dir.path().join("stable/arm64/vmlinuz"), b"kernel").unwrap();
        assert_eq!(cat.rescan().unwrap()[&stable()].version, v1);
    }

    #[test]
    fn generated_manifest_lists_name_size_and_sha256() {
        let (_dir, cat) = tree();
        let m = cat.rescan().unwrap()[&stable()].clone();
        let text = String::from_utf8(m.json.clone()).unwrap();
        assert!(text.contains("\"name\": \"vmlinuz\", \"size\": 6"));
        let hash = hex(&Sha256::digest(b"kernel"));
        assert_eq!(m.artifacts["vmlinuz"].sha256, hash);
        assert!(text.contains(&hash));
        assert_eq!(shipped_version(&m.json).unwrap(), m.version);
    }

    #[test]
    fn shipped_manifest_is_served_as_is() {
        let (dir, cat) = tree();
        let body = br#"{"version": "2026.11.1", "files": []}"#;
        fs::write(dir.path().join("stable/arm64/manifest.json"), body).unwrap();
        let m = cat.rescan().unwrap()[&stable()].clone();
        assert_eq!(m.version, "2026.11.1");
        assert_eq!(m.json, body.to_vec());
        assert!(m.artifacts.contains_key("vmlinuz"));
    }

    #[test]
    fn invalid_shipped_manifest_is_not_served() {
        let (dir, cat) = tree();
        fs::write(
            dir.path().join("stable/arm64/manifest.json"),
            b"{\"version\": 3}",
        )
        .unwrap();
        assert!(cat.rescan().unwrap().is_empty());
        let deep = format!(
            "{{\"a\":{}1{}, \"version\":\"x\"}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(shipped_version(deep.as_bytes()).is_err());
    }

    #[test]
    fn symlinks_out_of_the_root_are_not_listed() {
        let (dir, cat) = tree();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("stable/arm64/leak")).unwrap();
        std::os::unix::fs::symlink("vmlinuz", dir.path().join("stable/arm64/current")).unwrap();
        let m = cat.rescan().unwrap()[&stable()].clone();
        assert!(!m.artifacts.contains_key("leak"));
        assert!(m.artifacts.contains_key("current"));
        assert!(cat.open(&stable(), "leak").is_err());
        assert!(cat.open(&stable(), "../../../etc/passwd").is_err());
        let open = cat.open(&stable(), "vmlinuz").unwrap();
        assert_eq!(open.size, 6);
        assert_eq!(
            open.sha256.as_deref(),
            Some(m.artifacts["vmlinuz"].sha256.as_str())
        );
    }

    #[test]
    fn same_size_same_mtime_rewrite_is_rehashed() {
        // What `cp -p` or tar does to a file in place: new bytes, same size,
        // the old mtime put back. Only the ctime tells.
        let (dir, cat) = tree();
        let path = dir.path().join("stable/arm64/vmlinuz");
        let before = cat.rescan().unwrap()[&stable()].artifacts["vmlinuz"].clone();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, b"KERNEL").unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let after = cat.rescan().unwrap()[&stable()].artifacts["vmlinuz"].clone();
        assert_eq!(after.size, before.size);
        assert_eq!(after.sha256, hex(&Sha256::digest(b"KERNEL")));
    }

    #[test]
    fn channel_and_arch_filters_apply() {
        let (dir, _) = tree();
        fs::create_dir_all(dir.path().join("testing/arm64")).unwrap();
        fs::create_dir_all(dir.path().join("Bad Name/arm64")).unwrap();
        let all = Catalog::new(Some(dir.path().to_path_buf()), vec![], vec![]);
        assert_eq!(all.channel_archs().unwrap().len(), 2);
        let one = Catalog::new(
            Some(dir.path().to_path_buf()),
            vec!["testing".into()],
            vec![],
        );
        assert_eq!(one.channel_archs().unwrap()[0].channel, "testing");
    }
}
