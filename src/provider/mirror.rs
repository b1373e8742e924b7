//! `plasmd serve --mirror C/A`: a provider that follows a channel/arch
//! published by others. Every `--mirror-interval` it looks the channel/arch
//! up in the DHT (through the provider's own node); when a release newer
//! than the one it serves turns up, signed by a `--release-key`, it
//!
//! 1. holds it while downloading (`manifest::holding`), announced as a
//!    holder, so boards fetching the same release get its verified chunks;
//! 2. downloads it with the chunk engine, peers first (`fetch`), into
//!    `ARTIFACTS/.mirror/{channel}/{arch}/{manifest_sha256}/`, writing the
//!    manifest and its signature last (a directory with a `manifest.json`
//!    is complete);
//! 3. switches the catalog to it in one step (`manifest::mirrored`), so the
//!    publisher advertises it and boards asking after the switch get it;
//! 4. keeps the previous releases (`--mirror-keep`, the served one
//!    included) under `/_release/{manifest_sha256}/…`, announced as their
//!    holder, for boards still downloading them, and deletes older ones.
//!
//! A restart serves the newest complete release on disk at once. A mirror
//! never goes back: only a higher `release_seq` is fetched. Choosing and
//! checking releases is `discover`'s, verifying bytes `fetch`'s.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::identity::Keypair;
use tokio::sync::Notify;

use crate::channel::ChannelArch;
use crate::config::MirrorConfig;
use crate::dht;
use crate::discover::{choose, session, share, Query};
use crate::fetch::{self, Checked, FetchTarget, Swarm};
use crate::manifest::held::Held;
use crate::manifest::holding::{holding_path, HeldFile, Holding};
use crate::manifest::mirrored::Mirrored;
use crate::manifest::{
    parse_manifest_and_boot, Catalog, Manifest, ReleaseTag, MANIFEST_NAME, SIGNATURE_NAME,
};
use crate::shutdown::Shutdown;
use crate::text::sha256_hex;

/// One lookup of a round gives up after this long.
const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// Why a round did not switch to a newer release.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("the download thread could not run")]
    Thread,
}

/// A release on disk or being switched to.
#[derive(Debug, Clone)]
struct Kept {
    sha256: String,
    release_seq: u64,
    manifest: Arc<Manifest>,
}

/// What one mirrored channel/arch needs.
pub struct Mirror {
    pub ca: ChannelArch,
    pub cfg: MirrorConfig,
    /// The provider's DHT node and identity (holder records are signed
    /// with it).
    pub client: dht::Client,
    pub keypair: Keypair,
    pub catalog: Arc<Catalog>,
    /// The provider's own base URL: its records are not ours to follow,
    /// and holdings are announced under it.
    pub base_url: String,
    /// Wakes the provider's rescan (and so the publisher) after a switch.
    pub rescan: Arc<Notify>,
    /// Chunks received are counted here (`/metrics`, the status page).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Mirror {
    /// Follows the channel/arch until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        let dir = self.dir();
        let mut current = self.restore(&dir);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                result = self.round(&dir, current.as_ref()) => match result {
                    Ok(Some(new)) => current = Some(new),
                    Ok(None) => {}
                    Err(e) => log::warn!("mirror {}: {e}", self.ca),
                },
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.cfg.interval) => {}
            }
        }
    }

    /// `ARTIFACTS/.mirror/{channel}/{arch}`.
    fn dir(&self) -> PathBuf {
        self.cfg.dir.join(&self.ca.channel).join(&self.ca.arch)
    }

    fn query(&self) -> Query {
        Query {
            channel: self.ca.channel.clone(),
            arch: self.ca.arch.clone(),
            bootstrap: Vec::new(),
            mdns: false,
            timeout: LOOKUP_LIMIT,
            trusted: Vec::new(),
            release_keys: self.cfg.release_keys.clone(),
            state: None,
            allow_downgrade: false,
            trusted_time: crate::time::BUILD_TIME,
            limits: fetch::Limits::default(),
        }
    }

    /// Serves the newest complete release on disk (and holds the others
    /// kept), as a restart finds them.
    fn restore(&self, dir: &Path) -> Option<Kept> {
        let mut kept = self.on_disk(dir);
        kept.sort_by_key(|k| std::cmp::Reverse(k.release_seq));
        let newest = kept.first()?.clone();
        for older in kept.iter().skip(1).take(self.cfg.keep.saturating_sub(1)) {
            self.hold_whole(dir, older);
        }
        self.switch(dir, &newest);
        log::info!(
            "mirror {}: serving release {} from {}",
            self.ca,
            newest.release_seq,
            dir.join(&newest.sha256).display()
        );
        Some(newest)
    }

    /// Every complete release under `dir` that verifies under the release
    /// keys and whose files are there, at their listed sizes.
    fn on_disk(&self, dir: &Path) -> Vec<Kept> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let keys = &self.cfg.release_keys;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(sha) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            let (Ok(json), Ok(sig)) = (
                fs::read(path.join(MANIFEST_NAME)),
                fs::read(path.join(SIGNATURE_NAME)),
            ) else {
                continue;
            };
            let kept = keys
                .verify(&json, Some(&sig), &self.ca.channel, &self.ca.arch)
                .map_err(|e| e.to_string())
                .and_then(|release| {
                    let tag = ReleaseTag {
                        release_seq: release.release_seq,
                        key_id: release.key_id.to_string(),
                    };
                    release_manifest(json.clone(), Some(sig.clone()), tag)
                })
                .and_then(|m| complete(&path, &sha, m));
            match kept {
                Ok(k) => found.push(k),
                Err(why) => log::warn!("mirror {}: ignoring {}: {why}", self.ca, path.display()),
            }
        }
        found
    }

    /// One look for a newer release and, if there is one, its download and
    /// the switch. Returns the release switched to.
    async fn round(&self, dir: &Path, current: Option<&Kept>) -> Result<Option<Kept>, MirrorError> {
        let query = self.query();
        let deadline = tokio::time::Instant::now() + LOOKUP_LIMIT;
        let mut records = match session::find(&self.client, &query, deadline).await {
            Ok(r) => r,
            Err(e) => {
                log::debug!("mirror {}: lookup failed: {e}", self.ca);
                return Ok(None);
            }
        };
        // Our own record advertises what we mirror: nothing to learn there.
        let own = format!("{}/", self.base_url);
        records.retain(|r| !r.url.starts_with(&own));
        if records.is_empty() {
            return Ok(None);
        }
        let floor = current.map_or(0, |c| c.release_seq);
        let check = query.clone();
        let choice = off_loop(move || choose::releases(&records, &check, None))
            .await
            .ok_or(MirrorError::Thread)?;
        for (url, why) in &choice.refused {
            log::debug!("mirror {}: not following {url}: {why}", self.ca);
        }
        let newer = choice
            .accepted
            .into_iter()
            .filter(|c| c.release.as_ref().is_some_and(|r| r.release_seq > floor))
            .collect::<Vec<_>>();
        let Some(best) = newer.first() else {
            return Ok(None);
        };
        // Room for the new one first; its own earlier, interrupted
        // download stays (its verified chunks are resumed).
        let new_sha = sha256_hex(&best.manifest);
        let served = current.map_or("", |c| c.sha256.as_str());
        let keep_before = self.cfg.keep.saturating_sub(1).max(1);
        self.prune(dir, keep_before, &[served, new_sha.as_str()]);
        let kept = self.download(dir, best, &query).await?;
        if let Some(old) = current {
            self.hold_whole(dir, old);
        }
        self.switch(dir, &kept);
        self.prune(dir, self.cfg.keep, &[kept.sha256.as_str()]);
        Ok(Some(kept))
    }

    /// Downloads the release `checked` into `dir/{sha256}`, held and
    /// announced while it arrives; its manifest and signature are written
    /// once every file is in place.
    async fn download(
        &self,
        dir: &Path,
        checked: &Checked,
        query: &Query,
    ) -> Result<Kept, MirrorError> {
        let bad =
            |why: &str| fetch::FetchError::BadManifest(checked.record.url.clone(), why.into());
        let release = checked
            .release
            .as_ref()
            .ok_or_else(|| bad("not a release"))?;
        let signature = checked.signature.as_ref().map(|s| s.to_vec());
        let tag = ReleaseTag {
            release_seq: release.release_seq,
            key_id: release.key_id.to_string(),
        };
        let json = checked.manifest.to_vec();
        let manifest =
            release_manifest(json.clone(), signature.clone(), tag).map_err(|e| bad(&e))?;
        let sha = manifest.sha256.clone();
        let target = dir.join(&sha);
        log::info!(
            "mirror {}: fetching release {} ({}) found at {}",
            self.ca,
            release.release_seq,
            &sha[..16],
            checked.record.url
        );
        let holding = Holding::new(self.ca.clone(), json.clone(), signature.clone())
            .map(Arc::new)
            .ok_or_else(|| bad("unreadable"))?;
        self.catalog.holdings().add(holding.clone());
        let own_url = format!("{}{}", self.base_url, holding_path(&self.ca, &sha));
        self.announce(&sha, &own_url, &manifest.version).await;

        let found = Arc::new(Mutex::new(Vec::new()));
        share::look_once(&self.client, query, &sha, Some(&own_url), &found).await;
        let fetching = {
            let (checked, found, holding) = (checked.clone(), found.clone(), holding.clone());
            let metrics = self.metrics.clone();
            let target = FetchTarget::All {
                dir: target.clone(),
            };
            let limits = query.limits;
            off_loop(move || {
                let peers = || found.lock().map(|f| f.clone()).unwrap_or_default();
                let swarm = Swarm {
                    peers: Some(&peers),
                    holding: Some(&holding),
                    metrics: Some(&metrics.chunks),
                };
                fetch::run(&checked, &target, &limits, swarm)
            })
        };
        let look = share::look_for_holders(&self.client, query, &sha, Some(&own_url), &found);
        let result = tokio::select! {
            r = fetching => r,
            () = look => None,
        };
        let done = match result {
            Some(Ok(done)) => Ok(done),
            Some(Err(e)) => Err(MirrorError::Fetch(e)),
            None => Err(MirrorError::Thread),
        };
        // On failure the verified chunks stay in their `.part` files: the
        // next round resumes them.
        let (_, tally) = done.inspect_err(|_| self.catalog.holdings().remove(&sha))?;
        write_atomically(
            &target.join(SIGNATURE_NAME),
            signature.as_deref().unwrap_or_default(),
        )?;
        write_atomically(&target.join(MANIFEST_NAME), &json)?;
        log::info!(
            "mirror {}: release {} complete ({tally})",
            self.ca,
            release.release_seq
        );
        Ok(Kept {
            sha256: sha,
            release_seq: release.release_seq,
            manifest: Arc::new(manifest),
        })
    }

    /// Serves `kept` for the channel/arch from now on.
    fn switch(&self, dir: &Path, kept: &Kept) {
        let rel = dir
            .join(&kept.sha256)
            .strip_prefix(self.catalog.root().unwrap_or_default())
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| dir.join(&kept.sha256));
        self.catalog.set_mirrored(
            self.ca.clone(),
            Mirrored {
                manifest: kept.manifest.clone(),
                dir: rel,
            },
        );
        // The tree answers for it now; `/_release/` falls back to the tree.
        self.catalog.holdings().remove(&kept.sha256);
        self.rescan.notify_one();
        log::info!(
            "mirror {}: now serving release {} ({})",
            self.ca,
            kept.release_seq,
            &kept.sha256[..16]
        );
    }

    /// Holds a complete release on disk under `/_release/…`, every chunk
    /// offered, and announces it (boards may still be downloading it).
    fn hold_whole(&self, dir: &Path, kept: &Kept) {
        let m = &kept.manifest;
        let Some(holding) = Holding::new(self.ca.clone(), m.json.clone(), m.signature.clone())
        else {
            return;
        };
        for a in m.artifacts.values() {
            let path = dir.join(&kept.sha256).join(&a.name);
            match fs::File::open(&path) {
                Ok(file) => holding.add(
                    &a.name,
                    HeldFile {
                        file: Arc::new(file),
                        size: a.size,
                        held: Arc::new(Held::full(a.chunks.len())),
                    },
                ),
                Err(e) => log::warn!("mirror {}: {}: {e}", self.ca, path.display()),
            }
        }
        self.catalog.holdings().add(Arc::new(holding));
        let url = format!("{}{}", self.base_url, holding_path(&self.ca, &kept.sha256));
        let (client, keypair, ca) = (self.client.clone(), self.keypair.clone(), self.ca.clone());
        let (sha, version) = (kept.sha256.clone(), m.version.clone());
        tokio::spawn(async move {
            let put = share::announce(&client, &keypair, &ca, &sha, &url, &version);
            if tokio::time::timeout(share::ANNOUNCE_LIMIT, put)
                .await
                .is_err()
            {
                log::debug!("mirror {ca}: announcing {url}: no answer in time");
            }
        });
    }

    async fn announce(&self, sha: &str, url: &str, version: &str) {
        let put = share::announce(&self.client, &self.keypair, &self.ca, sha, url, version);
        match tokio::time::timeout(share::ANNOUNCE_LIMIT, put).await {
            Ok(Ok(())) => log::debug!("mirror {}: holding {url}", self.ca),
            Ok(Err(e)) => log::warn!("mirror {}: cannot announce {url}: {e}", self.ca),
            Err(_) => log::warn!("mirror {}: cannot announce {url}: no answer", self.ca),
        }
    }

    /// Deletes releases beyond the `keep` newest complete ones and any
    /// incomplete download; those named in `stay` stay whatever they are
    /// (the one served, the one about to resume): disk use stays bounded by
    /// `--mirror-keep`.
    fn prune(&self, dir: &Path, keep: usize, stay: &[&str]) {
        let mut complete = self.on_disk(dir);
        complete.sort_by_key(|k| std::cmp::Reverse(k.release_seq));
        let mut stay: Vec<String> = stay.iter().map(|s| s.to_string()).collect();
        stay.extend(complete.iter().take(keep).map(|k| k.sha256.clone()));
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stay.contains(&name) || !entry.path().is_dir() {
                continue;
            }
            self.catalog.holdings().remove(&name);
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => log::info!("mirror {}: deleted {}", self.ca, entry.path().display()),
                Err(e) => log::warn!("mirror {}: {}: {e}", self.ca, entry.path().display()),
            }
        }
    }
}

/// The served form of a signed release: `json` byte for byte, its
/// artifacts as it lists them.
fn release_manifest(
    json: Vec<u8>,
    signature: Option<Vec<u8>>,
    tag: ReleaseTag,
) -> Result<Manifest, String> {
    let fields = crate::manifest::read_fields(&json)?;
    let (artifacts, _) = parse_manifest_and_boot(&json)?;
    Ok(Manifest {
        version: fields.version,
        sha256: sha256_hex(&json),
        artifacts: artifacts.into_iter().map(|a| (a.name.clone(), a)).collect(),
        json,
        signature,
        release: Some(tag),
    })
}

/// `m` as kept in directory `path` (named `sha`), if it is that manifest's
/// and every file is there at its listed size.
fn complete(path: &Path, sha: &str, m: Manifest) -> Result<Kept, String> {
    if m.sha256 != sha {
        return Err(format!("its manifest has sha256 {}", m.sha256));
    }
    for a in m.artifacts.values() {
        let size = fs::metadata(path.join(&a.name)).map(|md| md.len());
        if size.as_ref().ok() != Some(&a.size) {
            return Err(format!("{} is missing or not {} bytes", a.name, a.size));
        }
    }
    Ok(Kept {
        sha256: m.sha256.clone(),
        release_seq: m.release.as_ref().map_or(0, |r| r.release_seq),
        manifest: Arc::new(m),
    })
}

/// Writes `path` whole or not at all (a temporary name, then a rename).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MirrorError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| MirrorError::Io(path.to_path_buf(), e))
}

/// Runs blocking `f` on a thread of its own, not tokio's blocking pool: a
/// download still running at shutdown must not hold up the runtime's
/// drop (it is simply abandoned; its verified chunks stay for the next
/// start).
async fn off_loop<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("mirror".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.await.ok()
}
