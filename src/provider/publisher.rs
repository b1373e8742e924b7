//! What to put in the DHT, and when: the first publish of each
//! channel/arch, retries with backoff until a peer takes it, refreshes
//! before the TTL runs out, re-publishes when the manifest changes, and
//! un-publishing when a channel/arch goes away or plasmd stops.
//!
//! It reads manifest versions from the catalog snapshots `changes` sends and
//! talks to the swarm only through a [`dht::Client`]. It does not scan files
//! or serve HTTP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::identity::Keypair;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::channel::ChannelArch;
use crate::config::DhtTiming;
use crate::dht::{self, DhtError};
use crate::metrics::{AdvertLabels, Metrics};
use crate::record::{manifest_dht_key, manifest_key, provider_key, ManifestRecord};
use crate::shutdown::Shutdown;
use libp2p::kad::RecordKey;
use std::sync::Arc;

/// What is advertised for one channel/arch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The manifest's version.
    pub version: String,
    /// Hex sha256 of the exact manifest bytes served.
    pub manifest_sha256: String,
    /// The signed release it is, if it is one.
    pub release: Option<crate::manifest::ReleaseTag>,
}

/// Channel/arch → what to advertise, as last scanned. Empty while the
/// artifacts root is unavailable.
pub type Snapshot = BTreeMap<ChannelArch, Advert>;

/// Record sequence numbers: milliseconds since the epoch, and always above
/// the last one used, which is kept in a file so a restart (or a clock
/// stepped back) never reuses or lowers one.
pub struct SeqCounter {
    last: u64,
    file: Option<PathBuf>,
}

impl SeqCounter {
    /// Resumes from `file` (next to the identity key); a missing file starts
    /// from the clock. A file that is there but holds no number (empty, or
    /// garbage) is an error, not a fresh start: its last value is unknown,
    /// and on a board whose clock is behind, counting again from the clock
    /// would publish records that peers refuse as older than the last ones.
    /// The file is only ever replaced atomically, so this takes damage from
    /// outside plasmd (or a version before atomic writes).
    pub fn load(file: Option<PathBuf>) -> Result<Self, SeqError> {
        let Some(path) = file else {
            return Ok(SeqCounter {
                last: 0,
                file: None,
            });
        };
        let last = match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                text.trim()
                    .parse()
                    .map_err(|_| SeqError::Damaged(path.clone(), text.chars().take(40).collect()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(SeqError::Read(path, e)),
        };
        Ok(SeqCounter {
            last,
            file: Some(path),
        })
    }

    /// The next sequence number, remembered (atomically) before it is used.
    pub fn next_seq(&mut self) -> u64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last = now_ms.max(self.last.saturating_add(1));
        if let Some(file) = &self.file {
            let text = format!("{}\n", self.last);
            if let Err(e) = crate::statefile::write_atomic(file, text.as_bytes(), 0o600) {
                log::warn!("cannot save record seq to {}: {e}", file.display());
            }
        }
        self.last
    }
}

/// Why the record `seq` file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeqError {
    #[error("record seq file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(
        "record seq file {0} holds {1:?}, not a number: its last value is unknown, and counting \
         again from the clock could publish records peers refuse as older; if this machine's \
         clock is right, delete the file"
    )]
    Damaged(PathBuf, String),
}

/// Retry delays after a failed put: 1 s doubling up to this cap. Short
/// enough that a provider whose peers come back is found again quickly;
/// a new peer in the routing table also triggers an immediate retry.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a put is being made, for the log lines users grep for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    First,
    Changed,
    Refresh,
    Retry,
}

/// The publishing state of one channel/arch.
struct Entry {
    advert: Advert,
    /// When the next put is due; `None` while one is in flight.
    due: Option<Instant>,
    reason: Reason,
    /// Consecutive failed puts, for the backoff.
    failures: u32,
    /// Bumped on every version change, so a result for an older version
    /// is recognised and followed by a put of the new one.
    generation: u64,
}

/// The result of one put, sent back by the task that awaited it.
struct PutDone {
    ca: ChannelArch,
    generation: u64,
    started: Instant,
    result: Result<(), DhtError>,
}

/// Publishes every channel/arch of the catalog; see the module header.
pub struct Publisher {
    client: dht::Client,
    /// Signs every record (the same key as the swarm's identity).
    keypair: Keypair,
    seq: SeqCounter,
    /// Base URL, e.g. `http://192.168.1.100:8080`.
    base_url: String,
    provider_name: Option<String>,
    timing: DhtTiming,
    entries: BTreeMap<ChannelArch, Entry>,
    done_tx: mpsc::Sender<PutDone>,
    done_rx: mpsc::Receiver<PutDone>,
    /// Puts, refreshes and what is advertised are recorded here.
    metrics: Arc<Metrics>,
}

impl Publisher {
    pub fn new(
        client: dht::Client,
        keypair: Keypair,
        seq: SeqCounter,
        base_url: String,
        provider_name: Option<String>,
        timing: DhtTiming,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::channel(64);
        Publisher {
            metrics,
            client,
            keypair,
            seq,
            base_url,
            provider_name,
            timing,
            entries: BTreeMap::new(),
            done_tx,
            done_rx,
        }
    }

    /// The manifest URL advertised for `ca`.
    pub fn url(base_url: &str, ca: &ChannelArch) -> String {
        format!("{base_url}/{}/{}/manifest.json", ca.channel, ca.arch)
    }

    /// Runs until shutdown, then un-publishes everything.
    pub async fn run(mut self, mut snapshots: watch::Receiver<Snapshot>, mut shutdown: Shutdown) {
        let mut peers = self.client.peers();
        let mut known_peers = *peers.borrow();
        let snap = snapshots.borrow_and_update().clone();
        self.apply(snap).await;
        loop {
            let next_due = self.entries.values().filter_map(|e| e.due).min();
            let sleep = async {
                match next_due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    self.apply(snap).await;
                }
                Ok(()) = peers.changed() => {
                    let n = *peers.borrow_and_update();
                    if n > known_peers {
                        self.retry_failed_now();
                    }
                    known_peers = n;
                }
                Some(done) = self.done_rx.recv() => self.finished(done),
                _ = sleep => self.put_due(),
            }
        }
        self.unpublish_all().await;
    }

    /// Brings the entries in line with a new catalog snapshot.
    async fn apply(&mut self, snap: Snapshot) {
        let adverts = &self.metrics.adverts;
        adverts.clear();
        for (ca, a) in &snap {
            adverts
                .get_or_create(&AdvertLabels {
                    channel: ca.channel.clone(),
                    arch: ca.arch.clone(),
                    version: a.version.clone(),
                    release_seq: a
                        .release
                        .as_ref()
                        .map_or_else(String::new, |r| r.release_seq.to_string()),
                })
                .set(1);
        }
        let gone: Vec<ChannelArch> = self
            .entries
            .keys()
            .filter(|ca| !snap.contains_key(*ca))
            .cloned()
            .collect();
        for ca in gone {
            self.entries.remove(&ca);
            self.metrics.dht.forget(&ca);
            self.unpublish(&ca).await;
        }
        let now = Instant::now();
        for (ca, advert) in snap {
            match self.entries.get_mut(&ca) {
                Some(e) if e.advert == advert => {}
                Some(e) => {
                    e.advert = advert;
                    e.generation += 1;
                    e.reason = Reason::Changed;
                    e.failures = 0;
                    // If a put is in flight, `finished` sees the generation
                    // changed and puts again at once.
                    if e.due.is_some() {
                        e.due = Some(now);
                    }
                }
                None => {
                    self.entries.insert(
                        ca,
                        Entry {
                            advert,
                            due: Some(now),
                            reason: Reason::First,
                            failures: 0,
                            generation: 0,
                        },
                    );
                }
            }
        }
    }

    /// Starts a put for every entry that is due.
    fn put_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ChannelArch> = self
            .entries
            .iter()
            .filter(|(_, e)| e.due.is_some_and(|t| t <= now))
            .map(|(ca, _)| ca.clone())
            .collect();
        for ca in due {
            self.start_put(ca, now);
        }
    }

    fn start_put(&mut self, ca: ChannelArch, now: Instant) {
        let Some(entry) = self.entries.get_mut(&ca) else {
            return;
        };
        entry.due = None;
        let url = Self::url(&self.base_url, &ca);
        let key = manifest_key(&ca.channel, &ca.arch);
        let me = self.client.peer_id().to_string();
        let own_key = provider_key(&ca.channel, &ca.arch, &me);
        // One record, signed twice: under the spec's key (other
        // implementations read it; with several providers the last writer
        // wins there) and under our own per-provider key (which nobody else
        // can overwrite; found through our provider announcement).
        let mut unsigned = ManifestRecord::new(
            &url,
            &me,
            self.provider_name.as_deref(),
            &entry.advert.version,
        );
        if let Some(tag) = &entry.advert.release {
            unsigned.release_seq = Some(tag.release_seq);
            unsigned.release_key = Some(tag.key_id.clone());
        }
        let (seq, expires) = (
            self.seq.next_seq(),
            SystemTime::now() + self.timing.record_ttl,
        );
        let sign = |k: &str| {
            unsigned
                .clone()
                .sign(
                    k,
                    &self.keypair,
                    seq,
                    expires,
                    &entry.advert.manifest_sha256,
                )
                .and_then(|r| r.to_bytes())
        };
        let (value, own_value) = match (sign(&key), sign(&own_key)) {
            (Ok(v), Ok(o)) => (v, o),
            (Err(e), _) | (_, Err(e)) => {
                // Only an absurdly long URL or name gets here; config bounds
                // them, so this is a bug worth shouting about, not retrying.
                log::error!("cannot publish {key}: {e}");
                return;
            }
        };
        match entry.reason {
            Reason::Refresh => log::debug!("Refreshing DHT record: {key} -> {url}"),
            _ => log::info!("Publishing boot manifest to DHT: {key} -> {url}"),
        }
        if entry.reason == Reason::Changed {
            log::info!("Re-published manifest after artifact change: {ca}");
        }
        let (client, ttl, tx) = (
            self.client.clone(),
            self.timing.record_ttl,
            self.done_tx.clone(),
        );
        let generation = entry.generation;
        tokio::spawn(async move {
            let spec = manifest_dht_key(&ca.channel, &ca.arch);
            let result = client.put(spec.clone(), value, ttl).await;
            // The per-provider copy and the announcement ride along; the spec
            // key's put decides success (and the log lines users grep for).
            if let Err(e) = client.put(RecordKey::new(&own_key), own_value, ttl).await {
                log::debug!("put of {own_key}: {e}");
            }
            let _ = client.provide(spec).await;
            let _ = tx
                .send(PutDone {
                    ca,
                    generation,
                    started: now,
                    result,
                })
                .await;
        });
    }

    fn finished(&mut self, done: PutDone) {
        let Some(entry) = self.entries.get_mut(&done.ca) else {
            return; // un-published while the put was in flight
        };
        let key = manifest_key(&done.ca.channel, &done.ca.arch);
        let now = Instant::now();
        self.metrics.dht.put_done(
            &done.ca,
            done.result.is_ok(),
            entry.reason == Reason::Refresh,
        );
        match done.result {
            Ok(()) => {
                log::info!("DHT record published: {key}");
                entry.failures = 0;
                entry.reason = Reason::Refresh;
                // Counted from when the put started: that is when the
                // record's expiry clock started too.
                entry.due = Some(done.started + self.timing.refresh_interval);
            }
            Err(e) => {
                entry.failures += 1;
                let delay = retry_delay(entry.failures).min(self.timing.refresh_interval);
                log::warn!("{e}; retrying in {}s", delay.as_secs_f32());
                entry.reason = Reason::Retry;
                entry.due = Some(now + delay);
            }
        }
        if entry.generation != done.generation {
            entry.reason = Reason::Changed;
            entry.due = Some(now);
        }
    }

    /// New peers appeared: whatever failed for want of peers goes now.
    fn retry_failed_now(&mut self) {
        let now = Instant::now();
        for e in self.entries.values_mut() {
            if e.failures > 0 && e.due.is_some() {
                e.due = Some(now);
            }
        }
    }

    async fn unpublish(&self, ca: &ChannelArch) {
        let spec = manifest_dht_key(&ca.channel, &ca.arch);
        let own = RecordKey::new(&provider_key(
            &ca.channel,
            &ca.arch,
            &self.client.peer_id().to_string(),
        ));
        let _ = self.client.stop_providing(spec.clone()).await;
        for key in [spec, own] {
            if let Err(e) = self.client.remove_local(key).await {
                log::warn!("removing local record of {ca}: {e}");
            }
        }
        log::info!("Stopped advertising manifest: {ca}");
    }

    async fn unpublish_all(&mut self) {
        let all: Vec<ChannelArch> = std::mem::take(&mut self.entries).into_keys().collect();
        for ca in all {
            self.unpublish(&ca).await;
        }
    }
}

/// 1 s, 2 s, 4 s … capped at `RETRY_MAX`.
fn retry_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_only_goes_up_even_across_restarts_and_clock_steps() {
        let dir = std::env::temp_dir().join(format!("plasmd-seq-{}", std::process::id()));
        let file = dir.join("id.seq");
        // No file yet: start from the clock.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(SeqCounter::load(Some(file.clone())).unwrap().next_seq() >= now_ms);
        // A value far in the future, as after the clock was stepped back.
        std::fs::write(&file, "99999999999999\n").unwrap();
        let mut a = SeqCounter::load(Some(file.clone())).unwrap();
        let first = a.next_seq();
        assert_eq!(first, 100_000_000_000_000);
        assert!(a.next_seq() > first);
        let mut b = SeqCounter::load(Some(file.clone())).unwrap();
        assert!(b.next_seq() > first + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_seq_file_is_an_error_not_a_fresh_start() {
        // Empty (a torn write by an older version) or garbage: the floor is
        // unknown, so plasmd refuses to guess it (see `SeqCounter::load`).
        let dir = std::env::temp_dir().join(format!("plasmd-seqbad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("id.seq");
        for bad in [
            &b""[..],
            b"garbage",
            b"\xff\xfe",
            b"-5\n",
            b"99999999999999999999999",
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = SeqCounter::load(Some(file.clone())).err().expect("refused");
            assert!(matches!(e, SeqError::Damaged(..)), "{bad:?}: {e}");
            assert!(e.to_string().contains("delete the file"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retry_backs_off_and_caps() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(16));
        assert_eq!(retry_delay(6), RETRY_MAX);
        assert_eq!(retry_delay(1000), RETRY_MAX);
    }
}
