//! `phase-discover --fetch`: the verified chain from a DHT record down to
//! the bytes a board boots.
//!
//! The record's signature covers `manifest_sha256`; the manifest fetched
//! from `url` must hash to it; the manifest lists each artifact's size and
//! sha256; the artifact must match both before it is renamed into place.
//! Nothing unverified is ever left under the output name: downloads go to
//! `<name>.part` (kept only while it is a prefix that can be resumed with a
//! `Range` request) and are renamed after the check. This module owns the
//! small HTTP/1.1 client this needs (plain HTTP, bounded headers, timeouts)
//! and the bounded manifest parser; it does not look records up.

use std::fs::{self, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub mod chunked;
mod client;

pub use chunked::{Source, Tally};
use client::{get, get_small};
pub use client::{get_text, Limits};

use crate::channel::is_safe_file_name;
use crate::manifest::held::Held;
use crate::manifest::holding::{HeldFile, Holding};
use crate::manifest::{parse_manifest_and_boot, Artifact, BootSpec};
use crate::metrics::ChunkMetrics;
use crate::record::ManifestRecord;
use crate::release::{Release, ReleaseError, ReleaseKeys};

/// Largest manifest we download: a manifest lists files, it is not one.
const MAX_MANIFEST: u64 = 1024 * 1024;
/// Largest `manifest.json.minisig` we download.
const MAX_SIGNATURE: u64 = 4096;
const CHUNK: usize = 64 * 1024;

/// What `--fetch` / `--fetch-all` download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchTarget {
    /// One artifact, to `out` (default: its name in the current directory).
    One { name: String, out: Option<PathBuf> },
    /// Every artifact of the manifest, into a directory.
    All { dir: PathBuf },
}

/// What can go wrong fetching. `Mismatch` means the bytes did not verify:
/// nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: {1}")]
    Http(String, String),
    #[error("verification failed: {0}; nothing written")]
    Mismatch(String),
    #[error("{0} is not listed in the manifest at {1}")]
    NotListed(String, String),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("manifest at {0} is not a plasmd manifest: {1}")]
    BadManifest(String, String),
    #[error("release at {0} refused: {1}")]
    Release(String, ReleaseError),
}

impl FetchError {
    /// True when the data was wrong (as opposed to unreachable): worth
    /// trying another provider, and exit code 3.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            FetchError::Mismatch(_) | FetchError::BadManifest(..) | FetchError::Release(..)
        )
    }
}

/// A provider whose manifest checked out: the record, the artifacts its
/// manifest lists and, with release keys, the release it is.
#[derive(Debug, Clone)]
pub struct Checked {
    pub record: ManifestRecord,
    pub artifacts: Vec<Artifact>,
    pub release: Option<Release>,
    /// What the manifest says to boot, if anything.
    pub boot: Option<BootSpec>,
    /// The manifest as it came (and its release signature): what a holder
    /// of this release serves to others, byte for byte.
    pub manifest: Arc<Vec<u8>>,
    pub signature: Option<Arc<Vec<u8>>>,
}

/// Downloads the manifest the record points at and checks it: against the
/// record's signed `manifest_sha256`, or with release keys, against
/// `manifest.json.minisig` next to it (signed by one of the keys, a
/// release of `channel`/`arch`).
pub fn check_provider(
    record: &ManifestRecord,
    keys: &ReleaseKeys,
    channel: &str,
    arch: &str,
    limits: &Limits,
) -> Result<Checked, FetchError> {
    let body = get_small(&record.url, MAX_MANIFEST, limits)?
        .ok_or_else(|| FetchError::Http(record.url.clone(), "status 404".into()))?;
    let got = crate::text::sha256_hex(&body);
    let expected = record.manifest_sha256.as_deref().unwrap_or_default();
    // With release keys the record is only a location: the release
    // signature authenticates the manifest, and a provider re-publishing
    // after a change (its record a step behind its files) stays usable.
    // Without them, the record's signed hash is all there is.
    if got != expected && keys.is_empty() {
        return Err(FetchError::Mismatch(format!(
            "manifest at {} has sha256 {got}, the signed record says {expected}",
            record.url
        )));
    }
    let (artifacts, boot) = parse_manifest_and_boot(&body)
        .map_err(|e| FetchError::BadManifest(record.url.clone(), e))?;
    let (release, signature) = if keys.is_empty() {
        (None, None)
    } else {
        // Next to the manifest, whatever query the record's URL carries.
        let manifest_url = record.url.split(['?', '#']).next().unwrap_or(&record.url);
        let sig_url = format!("{manifest_url}.minisig");
        let sig = get_small(&sig_url, MAX_SIGNATURE, limits)?;
        let release = keys
            .verify(&body, sig.as_deref(), channel, arch)
            .map_err(|e| FetchError::Release(record.url.clone(), e))?;
        (Some(release), sig.map(Arc::new))
    };
    Ok(Checked {
        record: record.clone(),
        artifacts,
        release,
        boot,
        manifest: Arc::new(body),
        signature,
    })
}

/// Checks that `url` is a plain `http://` URL a download can use.
pub fn check_url(url: &str) -> Result<(), FetchError> {
    client::parse_url(url).map(|_| ())
}

/// The URL of artifact `name` next to the manifest.
fn artifact_url(manifest_url: &str, name: &str) -> String {
    let no_query = manifest_url
        .split(['?', '#'])
        .next()
        .unwrap_or(manifest_url);
    let base = match no_query.rfind('/') {
        Some(i) if i + 1 >= "http://x/".len() => &no_query[..=i],
        _ => no_query,
    };
    // Everything but RFC 3986's unreserved characters is escaped.
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    format!(
        "{base}{}",
        percent_encoding::utf8_percent_encode(name, ESCAPED)
    )
}

/// Other holders of the release a download may use, and where it offers
/// its own verified chunks to them.
#[derive(Default, Clone, Copy)]
pub struct Swarm<'a> {
    /// Manifest URLs of other holders of the same release, asked again now
    /// and then during a download (holders join while a rack boots).
    pub peers: Option<&'a (dyn Fn() -> Vec<String> + Sync)>,
    /// Where each artifact's verified chunks are offered as they arrive.
    pub holding: Option<&'a Holding>,
    /// Where chunks received (by source) and bad chunks are counted.
    pub metrics: Option<&'a ChunkMetrics>,
}

/// Fetches artifact `name` (listed in `manifest`) to `out`, verified:
/// chunk by chunk from the provider and the `swarm`'s peers when the
/// manifest lists chunk hashes, else whole from the provider. Returns
/// where the bytes came from.
pub fn fetch_artifact(
    record: &ManifestRecord,
    manifest: &[Artifact],
    name: &str,
    out: &Path,
    limits: &Limits,
    swarm: Swarm,
) -> Result<Tally, FetchError> {
    let listed = manifest
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| FetchError::NotListed(name.to_string(), record.url.clone()))?;
    if !crate::text::is_sha256_hex(&listed.sha256) || !is_safe_file_name(name) {
        return Err(FetchError::BadManifest(
            record.url.clone(),
            format!("bad sha256 for {name}"),
        ));
    }
    let url = artifact_url(&record.url, name);
    let part = part_path(out);
    if !listed.chunks.is_empty() {
        let origin = Source { url, origin: true };
        let peers = || {
            swarm
                .peers
                .map_or_else(Vec::new, |p| p())
                .iter()
                .map(|p| Source {
                    url: artifact_url(p, name),
                    origin: false,
                })
                .collect()
        };
        return fetch_chunked(listed, origin, &peers, swarm, &part, out, limits);
    }
    fetch_whole(listed, url, &part, out, limits)?;
    Ok(Tally {
        origin_bytes: listed.size,
        ..Tally::default()
    })
}

/// Opens a download's `.part` file for writing, never through a symlink.
fn open_part(part: &Path, append: Option<bool>) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.custom_flags(nix::libc::O_NOFOLLOW).create(true);
    match append {
        // Chunks go to their offsets: read-write, kept as it is.
        None => o.read(true).write(true),
        Some(append) => o.write(true).append(append).truncate(!append),
    };
    o.open(part)
}

/// The chunked download of `listed` to `out` through `part`: chunks a
/// `.part` file kept from an interrupted run are checked and kept.
fn fetch_chunked(
    listed: &Artifact,
    origin: Source,
    peers: &(dyn Fn() -> Vec<Source> + Sync),
    swarm: Swarm,
    part: &Path,
    out: &Path,
    limits: &Limits,
) -> Result<Tally, FetchError> {
    let io_err = |e| FetchError::Io(part.to_path_buf(), e);
    let file = Arc::new(open_part(part, None).map_err(io_err)?);
    let held = Arc::new(Held::empty(listed.chunks.len()));
    let resumed = file.metadata().map_err(io_err)?.len() > 0;
    file.set_len(listed.size).map_err(io_err)?;
    if resumed {
        chunked::check_existing(&file, listed.size, &listed.chunks, &held);
    }
    let job = chunked::Job {
        name: &listed.name,
        size: listed.size,
        sha256: &listed.sha256,
        hashes: &listed.chunks,
        file: &file,
        held: &held,
        // A download that offers its chunks is one of a rack's.
        shared: swarm.holding.is_some(),
        metrics: swarm.metrics,
    };
    if let Some(h) = swarm.holding {
        let offered = HeldFile {
            file: file.clone(),
            size: listed.size,
            held: held.clone(),
        };
        h.add(&listed.name, offered);
    }
    let progress = Progress::new(&listed.name, listed.size);
    let result = chunked::download(&job, origin, peers, limits, |got| progress.update(got));
    progress.done();
    if result.is_err() && held.count() == 0 {
        // Nothing verified is worth keeping.
        let _ = fs::remove_file(part);
    }
    let tally = result?;
    // Every chunk verified against the signed manifest, at its place in a
    // file of the listed size: the file is what the manifest lists.
    file.sync_all().map_err(io_err)?;
    fs::rename(part, out).map_err(|e| FetchError::Io(out.to_path_buf(), e))?;
    Ok(tally)
}

/// The whole-file download of `listed` from `url` to `out` through
/// `part`, resuming a `.part` prefix with `Range`.
fn fetch_whole(
    listed: &Artifact,
    url: String,
    part: &Path,
    out: &Path,
    limits: &Limits,
) -> Result<(), FetchError> {
    let name = listed.name.as_str();
    let io_err = |e| FetchError::Io(part.to_path_buf(), e);

    // Resume from a partial download: hash what is there, ask for the rest.
    let mut hasher = Sha256::new();
    let mut have = 0u64;
    let existing = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(part)
    };
    if let Ok(mut f) = existing {
        let len = f.metadata().map_err(io_err)?.len();
        if len < listed.size {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = f.read(&mut buf).map_err(io_err)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
    }
    let mut resp = get(&url, (have > 0).then_some(have), limits)?;
    match (resp.status, resp.range_start) {
        (206, Some(start)) if start == have => {}
        (200, _) => {
            // The server ignored the range: start over.
            have = 0;
            hasher = Sha256::new();
        }
        (416, _) if have > 0 => {
            let _ = fs::remove_file(part);
            return Err(FetchError::Http(
                url,
                "server refused to resume (416); run again to restart".into(),
            ));
        }
        (status, _) => return Err(FetchError::Http(url, format!("status {status}"))),
    }
    let remaining = listed.size.saturating_sub(have);
    resp.reader.expect(remaining);
    if let Some(len) = resp.content_length {
        if len != remaining {
            let _ = fs::remove_file(part);
            return Err(FetchError::Mismatch(format!(
                "{name}: server sends {len} bytes, the manifest says {} in all ({have} already here)",
                listed.size
            )));
        }
    }
    let mut file = open_part(part, Some(have > 0)).map_err(io_err)?;
    let progress = Progress::new(name, listed.size);
    let mut buf = vec![0u8; CHUNK];
    let mut got = have;
    // With a Content-Length (checked above) read exactly that, so a server
    // that keeps the connection open does not stall us; without one, read
    // to the end, one byte past the promised size to catch extra bytes.
    let limit = match resp.content_length {
        Some(len) => len,
        None => remaining.saturating_add(1),
    };
    let mut body = (&mut resp.reader).take(limit);
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                progress.done();
                // The partial file stays: a rerun resumes it.
                return Err(FetchError::Http(
                    url,
                    format!("{e} after {got} bytes; run again to resume"),
                ));
            }
        };
        got += n as u64;
        if got > listed.size {
            drop(file);
            let _ = fs::remove_file(part);
            progress.done();
            return Err(FetchError::Mismatch(format!(
                "{name}: more bytes than the {} the manifest lists",
                listed.size
            )));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io_err)?;
        progress.update(got);
    }
    progress.done();
    if got < listed.size {
        return Err(FetchError::Http(
            url,
            format!(
                "connection closed after {got} of {} bytes; run again to resume",
                listed.size
            ),
        ));
    }
    let hash = hex::encode(hasher.finalize());
    if hash != listed.sha256 {
        drop(file);
        let _ = fs::remove_file(part);
        return Err(FetchError::Mismatch(format!(
            "{name} has sha256 {hash}, the manifest says {}",
            listed.sha256
        )));
    }
    file.sync_all().map_err(io_err)?;
    fs::rename(part, out).map_err(|e| FetchError::Io(out.to_path_buf(), e))?;
    Ok(())
}

/// Runs `--fetch` / `--fetch-all` for a checked provider (and the
/// `swarm`, see [`fetch_artifact`]): downloads and verifies each artifact against
/// its manifest. Returns the files written and where their bytes came from.
pub fn run(
    checked: &Checked,
    target: &FetchTarget,
    limits: &Limits,
    swarm: Swarm,
) -> Result<(Vec<PathBuf>, Tally), FetchError> {
    let (record, manifest) = (&checked.record, &checked.artifacts);
    match target {
        FetchTarget::One { name, out } => {
            let out = match out {
                Some(o) if o.is_dir() => o.join(name),
                Some(o) => o.clone(),
                None => PathBuf::from(name),
            };
            let tally = fetch_artifact(record, manifest, name, &out, limits, swarm)?;
            Ok((vec![out], tally))
        }
        FetchTarget::All { dir } => {
            fs::create_dir_all(dir).map_err(|e| FetchError::Io(dir.clone(), e))?;
            let mut written = Vec::new();
            let mut tally = Tally::default();
            for a in manifest {
                // A hostile manifest could list "../x": never write outside DIR.
                if !is_safe_file_name(&a.name) || a.name.starts_with('.') {
                    return Err(FetchError::BadManifest(
                        record.url.clone(),
                        format!("unsafe artifact name {:?}", a.name),
                    ));
                }
                let out = dir.join(&a.name);
                tally.add(fetch_artifact(
                    record, manifest, &a.name, &out, limits, swarm,
                )?);
                written.push(out);
            }
            Ok((written, tally))
        }
    }
}

/// `.NAME.part` next to the output: a dot name, which no artifact can have
/// (they are never listed), so a download cannot clobber another file.
fn part_path(out: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out.file_name().unwrap_or_default());
    name.push(".part");
    out.with_file_name(name)
}

/// A one-line progress display on stderr, only when it is a terminal.
struct Progress {
    name: String,
    total: u64,
    tty: bool,
    started: Instant,
    /// When the line was last redrawn: a serial console at 115200 baud
    /// cannot take a redraw per chunk.
    shown: std::cell::Cell<Option<Instant>>,
}

impl Progress {
    fn new(name: &str, total: u64) -> Self {
        Progress {
            name: name.to_string(),
            total,
            tty: io::stderr().is_terminal(),
            started: Instant::now(),
            shown: std::cell::Cell::new(None),
        }
    }

    /// `fetching vmlinuz 31.4/33.0 MiB (95%, 3.1 MB/s)`, redrawn in place
    /// at most 4 times a second, on a terminal only.
    fn update(&self, got: u64) {
        let due = self
            .shown
            .get()
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
        if self.tty && (due || got == self.total) {
            self.shown.set(Some(Instant::now()));
            let pct = got
                .saturating_mul(100)
                .checked_div(self.total)
                .unwrap_or(100);
            let rate = got as f64 / self.started.elapsed().as_secs_f64().max(0.001) / 1e6;
            let mib = |b: u64| b as f64 / 1048576.0;
            eprint!(
                "\rfetching {} {:.1}/{:.1} MiB ({pct}%, {rate:.1} MB/s)",
                self.name,
                mib(got),
                mib(self.total)
            );
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::parse_url;

    #[test]
    fn urls() {
        assert_eq!(
            artifact_url("http://h:1/stable/arm64/manifest.json", "my file+1"),
            "http://h:1/stable/arm64/my%20file%2B1"
        );
        assert_eq!(
            artifact_url("http://h:1/stable/arm64/manifest.json?v=2", "vmlinuz"),
            "http://h:1/stable/arm64/vmlinuz"
        );
        assert_eq!(artifact_url("http://h:1/m.json", "a"), "http://h:1/a");
        assert_eq!(parse_url("http://[::1]/x").unwrap().host_port, "[::1]:80");
        assert_eq!(parse_url("http://[::1]:8/x").unwrap().host_port, "[::1]:8");
        assert!(parse_url("https://h/x").is_err());
        assert!(parse_url("ftp://h/x").is_err());
        let u = parse_url("http://h/x").unwrap();
        assert_eq!((u.host_port.as_str(), u.path.as_str()), ("h:80", "/x"));
        let u = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.host_port.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "/")
        );
        assert_eq!(
            part_path(Path::new("/tmp/x/vmlinuz")),
            Path::new("/tmp/x/.vmlinuz.part")
        );
    }
}
