//! Downloading one artifact chunk by chunk, from several sources at once:
//! the engine `phase-discover --fetch`, `phase-boot` and a mirror share.
//!
//! The manifest (signed with the release) lists a sha256 per chunk, so
//! each chunk is checked on arrival, alone, and written to its place in the
//! file (`pwrite`), and only then marked held ([`Held`]) — which is what a
//! server may offer to others. A source that sends one bad chunk is dropped
//! for this download and the chunk is asked of another.
//!
//! Sources are the origin (a provider's artifact URL: it holds the whole
//! file) and peers (holders of some chunks, who say which with `?have`).
//! Which chunk goes to which source is `plan`'s; here a few worker threads
//! ask and write. Every request runs under the client's [`Limits`], so no
//! source holds a download for longer than its stall limit. This module
//! does not find sources nor decide where the file goes.

mod plan;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::client::{get_small, get_span, Limits};
use super::FetchError;
use crate::manifest::held::{parse_have, Held};
use crate::manifest::{chunk_span, CHUNK_SIZE};
use crate::metrics::ChunkMetrics;
pub use plan::Failure;
use plan::{Pick, Plan};

/// Requests in flight at once for one download, all sources together: each
/// holds one chunk's buffer, so this bounds memory to this many MiB.
pub const WORKERS: usize = 6;
/// Sources one download uses at most (the origin among them).
pub const MAX_SOURCES: usize = 24;
/// How often the list of peers is asked for newcomers.
const PEERS_AGAIN: Duration = Duration::from_secs(1);

/// One artifact to download in chunks.
pub struct Job<'a> {
    /// For messages.
    pub name: &'a str,
    pub size: u64,
    /// The whole file's sha256, as the manifest lists it: sent as
    /// `If-Match`, so a server that switched releases says so (`412`).
    pub sha256: &'a str,
    /// The manifest's sha256 per [`CHUNK_SIZE`] chunk.
    pub hashes: &'a [[u8; 32]],
    /// Where chunks are written, at their offset (already `size` long).
    pub file: &'a File,
    /// Chunks in `file` already verified; marked as they arrive.
    pub held: &'a Held,
    /// Part of a rack's download: peers are looked for while it runs.
    pub shared: bool,
    /// Where chunks received and bad chunks are counted, if anywhere.
    pub metrics: Option<&'a ChunkMetrics>,
}

impl Job<'_> {
    /// The byte offset and length of chunk `i`.
    fn span(&self, i: usize) -> (u64, u64) {
        chunk_span(self.size, i)
    }
}

/// Where a download's bytes came from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Verified bytes from the origin(s).
    pub origin_bytes: u64,
    /// Verified bytes from peers.
    pub peer_bytes: u64,
    /// Chunks that did not verify (each dropped its source).
    pub bad_chunks: u64,
}

impl Tally {
    /// Adds another download's figures to these.
    pub fn add(&mut self, other: Tally) {
        self.origin_bytes += other.origin_bytes;
        self.peer_bytes += other.peer_bytes;
        self.bad_chunks += other.bad_chunks;
    }
}

impl std::fmt::Display for Tally {
    /// `3.0 MiB from peers, 1.0 MiB from the origin, 1 bad chunk(s)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / 1048576.0;
        write!(
            f,
            "{:.1} MiB from peers, {:.1} MiB from the origin",
            mib(self.peer_bytes),
            mib(self.origin_bytes)
        )?;
        if self.bad_chunks > 0 {
            write!(f, ", {} bad chunk(s) refused", self.bad_chunks)?;
        }
        Ok(())
    }
}

/// A source: the artifact's URL there, and whether it is an origin (holds
/// the whole file) or a peer (holds what its `?have` list says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub url: String,
    pub origin: bool,
}

/// Downloads every chunk of `job` that `job.held` lacks from `sources`,
/// verifying each; returns where the bytes came from. Fails only when no
/// source is left that could finish it (every chunk already written stays
/// marked in `job.held`, so a retry with other sources resumes).
/// `progress` is called with the bytes held now and then while it runs.
///
/// `peers` is asked now and then for the peers known now: new ones join
/// the download (at most [`MAX_SOURCES`] sources in all).
pub fn download(
    job: &Job,
    origin: Source,
    peers: &(dyn Fn() -> Vec<Source> + Sync),
    limits: &Limits,
    progress: impl Fn(u64),
) -> Result<Tally, FetchError> {
    let chunks = job.hashes.len();
    // Peers still downloading may come to hold what nobody holds yet: wait
    // for them as long as a stalled source would be waited for.
    let patience = limits.window.max(Duration::from_secs(1)) * 2;
    let mut sources = vec![origin];
    sources.extend(peers());
    sources.truncate(MAX_SOURCES);
    let mut plan = Plan::new(
        chunks,
        |i| job.held.has(i),
        sources.iter().map(|s| (s.url.clone(), s.origin)).collect(),
        patience,
    );
    if job.shared {
        plan = plan.expect_peers();
    }
    let shared = Shared {
        plan: Mutex::new(plan),
        changed: Condvar::new(),
    };
    let stuck: Vec<Option<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS.min(chunks.max(1)))
            .map(|_| scope.spawn(|| work(job, &shared, limits)))
            .collect();
        let mut asked_peers = Instant::now();
        let began = Instant::now();
        while !workers.iter().all(|w| w.is_finished()) {
            progress((job.held.count() as u64 * CHUNK_SIZE).min(job.size));
            if log::log_enabled!(log::Level::Trace) {
                let plan = shared.lock();
                let from_origin: u64 = plan
                    .sources
                    .iter()
                    .filter(|s| s.origin)
                    .map(|s| s.bytes)
                    .sum();
                log::trace!(
                    "{}: {:.2} s: {}/{chunks} chunks, {} MiB from the origin, {} peer(s)",
                    job.name,
                    began.elapsed().as_secs_f64(),
                    job.held.count(),
                    from_origin >> 20,
                    plan.sources.len() - 1
                );
            }
            if asked_peers.elapsed() >= PEERS_AGAIN {
                asked_peers = Instant::now();
                let found = peers();
                let mut plan = shared.lock();
                for p in found {
                    plan.add_source(p.url, MAX_SOURCES);
                }
            }
            // Woken by every step a worker ends, its last one included.
            let plan = shared.lock();
            let _ = shared
                .changed
                .wait_timeout(plan, Duration::from_millis(250));
        }
        progress((job.held.count() as u64 * CHUNK_SIZE).min(job.size));
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Some("a worker panicked".into()))
            })
            .collect()
    });
    let plan = shared.lock();
    let mut tally = Tally {
        bad_chunks: plan.bad_chunks,
        ..Tally::default()
    };
    for s in &plan.sources {
        log::debug!(
            "{}: {} bytes from {}{}",
            job.name,
            s.bytes,
            s.url,
            s.dropped
                .as_deref()
                .map_or(String::new(), |d| format!(" (dropped: {d})"))
        );
        if s.origin {
            tally.origin_bytes += s.bytes;
        } else {
            tally.peer_bytes += s.bytes;
        }
    }
    log::debug!(
        "{}: workers waited {:.1} s in all; {} have lists, {} runs",
        job.name,
        plan.waited.as_secs_f64(),
        plan.haves,
        plan.runs
    );
    if plan.done() == chunks {
        return Ok(tally);
    }
    let why = stuck.into_iter().flatten().next().unwrap_or_default();
    let why = format!("{why}; {} of {chunks} chunk(s) verified", plan.done());
    // An origin that served bad bytes is a release not to take from it
    // again (exit 3, like a whole file that did not verify); anything else
    // is worth another try.
    if plan.sources.iter().any(|s| s.origin && s.sent_bad) {
        Err(FetchError::Mismatch(format!("{}: {why}", job.name)))
    } else {
        Err(FetchError::Http(job.name.to_string(), why))
    }
}

struct Shared {
    plan: Mutex<Plan>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Plan> {
        // A worker that panicked left the plan as consistent as any other
        // moment: chunks are only marked done after they are written.
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One worker: asks what to do, does it, reports, until the download is
/// finished or stuck (then `Some(why)`).
fn work(job: &Job, shared: &Shared, limits: &Limits) -> Option<String> {
    loop {
        let pick = {
            let mut plan = shared.lock();
            loop {
                match plan.pick(Instant::now()) {
                    Pick::Wait => {
                        let t = Instant::now();
                        plan = shared
                            .changed
                            .wait_timeout(plan, Duration::from_millis(50))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        plan.waited += t.elapsed();
                    }
                    other => break other,
                }
            }
        };
        match pick {
            // The inner loop waits those out.
            Pick::Wait => {}
            Pick::Finished => {
                shared.changed.notify_all();
                return None;
            }
            Pick::Stuck(why) => {
                shared.changed.notify_all();
                return Some(why);
            }
            Pick::Have(s) => {
                let url = shared.lock().sources[s].url.clone();
                let have = ask_have(&url, job.hashes.len(), limits);
                shared.lock().finish_have(s, have);
            }
            Pick::Run {
                source,
                first,
                count,
            } => {
                let (url, origin) = {
                    let plan = shared.lock();
                    (
                        plan.sources[source].url.clone(),
                        plan.sources[source].origin,
                    )
                };
                let result = fetch_run(job, &url, first, count, limits, |i, len| {
                    shared.lock().chunk_done(source, i, len, Instant::now());
                    if let Some(m) = job.metrics {
                        m.received(origin, len);
                    }
                });
                if let Err(Failure::Fatal(why) | Failure::BadChunk(why) | Failure::Moved(why)) =
                    &result
                {
                    log::warn!("{}: dropping source {url}: {why}", job.name);
                }
                if let (Err(Failure::BadChunk(_)), Some(m)) = (&result, job.metrics) {
                    m.bad.inc();
                }
                shared.lock().finish_run(source, first, count, result.err());
            }
        }
        shared.changed.notify_all();
    }
}

/// Asks a peer which chunks it holds and which are coming: `GET URL?have`.
fn ask_have(url: &str, chunks: usize, limits: &Limits) -> Result<(Vec<bool>, Vec<bool>), Failure> {
    let max = 2 * chunks.div_ceil(8) as u64;
    match get_small(&format!("{url}?have"), max, limits) {
        Ok(Some(body)) => {
            parse_have(&body, chunks).ok_or_else(|| Failure::Fatal("a malformed ?have list".into()))
        }
        Ok(None) => Err(Failure::Fatal(
            "no ?have list (404): not a holder of this file".into(),
        )),
        Err(e) if e.is_mismatch() => Err(Failure::Fatal(e.to_string())),
        Err(e) => Err(Failure::Again(e.to_string())),
    }
}

/// Asks `url` for chunks `first..first + count` in one `Range`, verifies
/// each as it arrives, writes it and reports it with `done(i, len)`. Stops
/// at the first fault, keeping what verified before it.
fn fetch_run(
    job: &Job,
    url: &str,
    first: usize,
    count: usize,
    limits: &Limits,
    done: impl Fn(usize, u64),
) -> Result<(), Failure> {
    let (start, _) = job.span(first);
    let (last_start, last_len) = job.span(first + count - 1);
    let end = last_start + last_len - 1;
    let mut resp = get_span(url, (start, end), job.sha256, limits)
        .map_err(|e| Failure::Again(e.to_string()))?;
    match (resp.status, resp.range_start) {
        (206, Some(s)) if s == start => {}
        // A server that ignores Range sends the file from its start.
        (200, _) if start == 0 => {}
        (200, _) => return Err(Failure::Fatal("ignores Range requests".into())),
        (416, _) => return Err(Failure::NotHeld),
        // A mirror that moved on to a newer release, or a file altered
        // behind its manifest: nothing of this release under that name.
        (412, _) => {
            return Err(Failure::Moved(
                "its file is not the one the manifest lists (412: another release, or altered)"
                    .into(),
            ))
        }
        (status, _) => return Err(Failure::Again(format!("status {status}"))),
    }
    let want = end + 1 - start;
    if resp.status == 206 && resp.content_length.is_some_and(|l| l != want) {
        return Err(Failure::Fatal(format!(
            "answered bytes {start}-{end} with {} bytes",
            resp.content_length.unwrap_or_default()
        )));
    }
    resp.reader.expect(want);
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    // Other boards leave these to us meanwhile (see `Held`).
    for i in first..first + count {
        job.held.set_coming(i, true);
    }
    let result = read_run(job, &mut resp, &mut buf, first, count, done);
    for i in first..first + count {
        job.held.set_coming(i, false);
    }
    result
}

/// Reads chunks `first..first + count` from `resp`, each verified, written
/// and reported in turn.
fn read_run(
    job: &Job,
    resp: &mut super::client::Response,
    buf: &mut [u8],
    first: usize,
    count: usize,
    done: impl Fn(usize, u64),
) -> Result<(), Failure> {
    for i in first..first + count {
        let (offset, len) = job.span(i);
        let buf = &mut buf[..len as usize];
        resp.reader
            .read_exact(buf)
            .map_err(|e| Failure::Again(format!("chunk {i}: {e} (kept {} chunk(s))", i - first)))?;
        let got: [u8; 32] = Sha256::digest(&*buf).into();
        if got != job.hashes[i] {
            return Err(Failure::BadChunk(format!(
                "chunk {i} did not verify (sha256 {})",
                hex::encode(got)
            )));
        }
        job.file
            .write_all_at(buf, offset)
            .map_err(|e| Failure::Again(format!("writing chunk {i}: {e}")))?;
        job.held.set(i);
        done(i, len);
    }
    Ok(())
}

/// Reads `file` (at least `size` bytes long) and marks in `held` every
/// chunk that verifies: what an earlier, interrupted download kept.
pub fn check_existing(file: &File, size: u64, hashes: &[[u8; 32]], held: &Held) {
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    for (i, want) in hashes.iter().enumerate() {
        let (start, len) = chunk_span(size, i);
        let len = len as usize;
        if file.read_exact_at(&mut buf[..len], start).is_err() {
            return;
        }
        if Sha256::digest(&buf[..len]).as_slice() == want {
            held.set(i);
        }
    }
}
