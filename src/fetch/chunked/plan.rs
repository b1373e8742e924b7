//! Which chunk to ask which source for next: the bookkeeping of a chunked
//! download, without any I/O (the workers in `chunked` do the asking).
//!
//! The rules, in order:
//! - a chunk is asked of one source at a time, never twice at once;
//! - a peer is asked for the rarest chunks it holds (the fewest live peers
//!   hold them), ties broken at random, so a rack's boards fetch different
//!   chunks and soon have something to give each other;
//! - the origin is asked only for chunks no live peer holds or is
//!   fetching; while peers hold every missing chunk it is left alone. When
//!   there is such a chunk the origin is asked first (the rack needs it from
//!   there, and its link is what a rack waits on), after peers' lists older
//!   than half a second are asked for again. Alone, a board asks it for
//!   runs of consecutive chunks (one `Range` each, as BitTorrent web seeds
//!   are); with peers about, for one chunk at a time, one request at a
//!   time, so a rack's boards spread over the release and pass on what
//!   each got;
//! - a source is used by at most [`PER_SOURCE`] requests at once;
//! - a source that sent a bad chunk is dropped at once. An origin that
//!   failed [`MAX_FAILURES`] times in a row is dropped too; a peer that did is
//!   rested for [`REST`] (in a storm a busy board times out now and answers
//!   later), and dropped after [`MAX_RESTS`] rests. The chunks of a peer
//!   dropped or resting count as held by nobody, so they fall to the origin.

use std::time::{Duration, Instant};

/// Requests one source serves at once.
pub const PER_SOURCE: usize = 2;
/// Chunks asked of a peer in one request.
pub const PEER_RUN: usize = 4;
/// Chunks asked of the origin in one request.
pub const ORIGIN_RUN: usize = 16;
/// Failures in a row (refused connections, stalls, bad answers) after
/// which a source is rested (a peer) or given up (the origin).
pub const MAX_FAILURES: u32 = 3;
/// How long a peer that failed [`MAX_FAILURES`] times in a row is left
/// alone: in a storm a busy board may time out now and answer later, and
/// giving it up for good would leave its chunks to the origin.
pub const REST: Duration = Duration::from_secs(10);
/// Rests after which a peer is given up for this download.
pub const MAX_RESTS: u32 = 6;
/// How often a peer's list of held chunks is asked for again while it has
/// nothing this download still needs.
pub const HAVE_REFRESH: Duration = Duration::from_millis(500);
/// How long the origin waits, at the start, for peers to say what they
/// hold (so it is not asked for chunks a peer would have given). A peer
/// whose first answer failed is not waited for.
pub const HAVE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    Asked,
    Done,
}

/// One place chunks may come from.
#[derive(Debug)]
pub struct SourceState {
    /// The artifact's URL there.
    pub url: String,
    /// The origin holds everything; a peer holds what its `have` says.
    pub origin: bool,
    have: Vec<bool>,
    /// What it is fetching now, by its last list.
    coming: Vec<bool>,
    /// `have` was received at least once.
    have_known: bool,
    /// A `?have` request to it is under way.
    have_asked: bool,
    /// When `have` was last asked for (or is being asked for now).
    have_at: Option<Instant>,
    busy: usize,
    failures: u32,
    /// Why it is no longer asked, once dropped.
    pub dropped: Option<String>,
    /// Left alone until then after failing (a peer); not counted as
    /// holding anything meanwhile.
    rest_until: Option<Instant>,
    rests: u32,
    /// It sent a chunk that did not verify (or, the origin, said its file
    /// is not the listed one).
    pub sent_bad: bool,
    /// Verified bytes received from it.
    pub bytes: u64,
}

impl SourceState {
    fn peer(url: String) -> SourceState {
        SourceState {
            url,
            origin: false,
            have: Vec::new(),
            coming: Vec::new(),
            have_known: false,
            have_asked: false,
            have_at: None,
            busy: 0,
            failures: 0,
            dropped: None,
            rest_until: None,
            rests: 0,
            sent_bad: false,
            bytes: 0,
        }
    }

    fn has(&self, i: usize) -> bool {
        self.origin || self.have.get(i).copied().unwrap_or(false)
    }

    fn live(&self) -> bool {
        self.dropped.is_none() && self.rest_until.is_none()
    }
}

/// What a worker is to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    /// Ask source `source` for chunks `first..first + count`.
    Run {
        source: usize,
        first: usize,
        count: usize,
    },
    /// Ask source `source` which chunks it holds.
    Have(usize),
    /// Nothing to ask now: wait for a request to end.
    Wait,
    /// Every chunk is in.
    Finished,
    /// No source is left that could finish the download.
    Stuck(String),
}

/// The state of one chunked download.
#[derive(Debug)]
pub struct Plan {
    chunks: Vec<State>,
    /// Every source, origins first.
    pub sources: Vec<SourceState>,
    done: usize,
    started: Instant,
    progress_at: Instant,
    /// How long the download may go without a chunk arriving while no live
    /// source holds a missing one (peers still downloading may get it).
    patience: Duration,
    rng: u64,
    /// Where the next request to the origin starts looking.
    origin_cursor: usize,
    /// Peers may join (see [`Plan::expect_peers`]).
    expect_peers: bool,
    /// Chunks that did not verify.
    pub bad_chunks: u64,
    /// For the debug log: time workers spent with nothing to do, lists
    /// asked for, runs asked for.
    pub waited: Duration,
    pub haves: u64,
    pub runs: u64,
}

impl Plan {
    /// A download of `chunks` chunks, of which those `held` says are in
    /// already, from `sources` (`(url, origin)`).
    pub fn new(
        chunks: usize,
        held: impl Fn(usize) -> bool,
        sources: Vec<(String, bool)>,
        patience: Duration,
    ) -> Plan {
        let states: Vec<State> = (0..chunks)
            .map(|i| if held(i) { State::Done } else { State::Missing })
            .collect();
        let done = states.iter().filter(|s| **s == State::Done).count();
        let mut sources: Vec<SourceState> = sources
            .into_iter()
            .map(|(url, origin)| SourceState {
                origin,
                ..SourceState::peer(url)
            })
            .collect();
        sources.sort_by_key(|s| !s.origin);
        Plan {
            chunks: states,
            sources,
            done,
            started: Instant::now(),
            progress_at: Instant::now(),
            patience,
            rng: seed(),
            origin_cursor: (seed() >> 8) as usize % chunks.max(1),
            expect_peers: false,
            bad_chunks: 0,
            waited: Duration::ZERO,
            haves: 0,
            runs: 0,
        }
    }

    /// Treats the download as one among others from the start, as when
    /// peers are looked for while it runs: the origin is asked for single
    /// chunks, one at a time, even before the first peer is found (long
    /// runs committed before the rack is known would be fetched by many
    /// boards at once).
    pub fn expect_peers(mut self) -> Self {
        self.expect_peers = true;
        self
    }

    /// A peer found during the download joins it, unless it is there
    /// already or `max` sources are.
    pub fn add_source(&mut self, url: String, max: usize) {
        if self.sources.len() < max && !self.sources.iter().any(|s| s.url == url) {
            self.sources.push(SourceState::peer(url));
        }
    }

    /// How many chunks are in.
    pub fn done(&self) -> usize {
        self.done
    }

    /// Whether other boards take part: a live peer, or peers expected
    /// (a shared download, whose peers are still being found).
    fn peers_about(&self) -> bool {
        self.expect_peers || self.sources.iter().any(|s| !s.origin && s.live())
    }

    /// How many live peers hold chunk `i`.
    fn offers(&self, i: usize) -> usize {
        self.sources
            .iter()
            .filter(|s| !s.origin && s.live() && s.has(i))
            .count()
    }

    /// Whether a live peer is fetching chunk `i` (and will offer it).
    fn coming(&self, i: usize) -> bool {
        self.sources
            .iter()
            .any(|s| !s.origin && s.live() && s.coming.get(i).copied().unwrap_or(false))
    }

    fn random(&mut self) -> u64 {
        // xorshift64: enough to spread picks, seeded from std's random keys.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// The next thing to do, marked as begun (chunks asked, the source
    /// busy): each [`Pick::Run`] and [`Pick::Have`] must be answered with
    /// [`Plan::finish_run`] or [`Plan::finish_have`].
    pub fn pick(&mut self, now: Instant) -> Pick {
        if self.done == self.chunks.len() {
            return Pick::Finished;
        }
        // Rested peers come back, their lists asked for again.
        for src in &mut self.sources {
            if src.rest_until.is_some_and(|t| now >= t) {
                src.rest_until = None;
                src.have_at = None;
                src.failures = 0;
            }
        }
        // Sources from a random one on, so requests spread over them.
        let n = self.sources.len();
        let start = if n == 0 {
            0
        } else {
            self.random() as usize % n
        };
        let order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        let (origins, peers): (Vec<usize>, Vec<usize>) =
            order.into_iter().partition(|&s| self.sources[s].origin);
        let peers_live = self.peers_about();
        // A peer not heard from yet is asked what it holds first.
        for &s in &peers {
            let src = &self.sources[s];
            if src.live() && src.busy < PER_SOURCE && src.have_at.is_none() {
                return self.begin_have(s, now);
            }
        }
        // The origin next: what it is asked for, no board of the rack holds
        // or is fetching (by our lists of them), so the rack needs it from
        // there, and the sooner the better — the origin's link is what the
        // whole rack waits on. Lists gone stale are asked for again first,
        // so the origin is not asked for what a peer got a moment ago.
        let stale = |p: &Plan| {
            (0..n)
                .filter(|&s| {
                    let src = &p.sources[s];
                    !src.origin
                        && src.live()
                        && !src.have_asked
                        && src.busy < PER_SOURCE
                        && src
                            .have_at
                            .is_some_and(|t| now.duration_since(t) >= HAVE_REFRESH)
                })
                .min_by_key(|&s| p.sources[s].have_at)
        };
        // With peers about, the origin serves one request at a time: the
        // rest of the rack asks it too, and what it sends one board, that
        // board passes on.
        let origin_cap = if peers_live { 1 } else { PER_SOURCE };
        for s in origins {
            let src = &self.sources[s];
            if !src.live() || src.busy >= origin_cap {
                continue;
            }
            if let Some(stale) = stale(self) {
                return self.begin_have(stale, now);
            }
            if let Some(run) = self.run_for(s, now) {
                return self.begin_run(s, run);
            }
        }
        for s in peers {
            let src = &self.sources[s];
            if !src.live() || src.busy >= PER_SOURCE {
                continue;
            }
            if let Some(run) = self.run_for(s, now) {
                return self.begin_run(s, run);
            }
        }
        // Nothing to fetch: look again at the peer whose list is oldest.
        if let Some(s) = stale(self) {
            return self.begin_have(s, now);
        }
        let asked = self.chunks.contains(&State::Asked);
        let busy = self.sources.iter().any(|s| s.busy > 0);
        if !asked && !busy {
            let resting = self.sources.iter().any(|s| s.rest_until.is_some());
            if !resting && !self.sources.iter().any(SourceState::live) {
                let why = self
                    .sources
                    .iter()
                    .filter_map(|s| s.dropped.as_ref().map(|d| format!("{}: {d}", s.url)))
                    .collect::<Vec<_>>()
                    .join("; ");
                return Pick::Stuck(format!("every source failed ({why})"));
            }
            if now.duration_since(self.progress_at) >= self.patience {
                let missing = self.chunks.iter().filter(|c| **c == State::Missing).count();
                return Pick::Stuck(format!(
                    "no source holds {missing} missing chunk(s) after {} s",
                    self.patience.as_secs()
                ));
            }
        }
        Pick::Wait
    }

    fn begin_run(&mut self, s: usize, (first, count): (usize, usize)) -> Pick {
        self.runs += 1;
        self.sources[s].busy += 1;
        for c in &mut self.chunks[first..first + count] {
            *c = State::Asked;
        }
        Pick::Run {
            source: s,
            first,
            count,
        }
    }

    fn begin_have(&mut self, s: usize, now: Instant) -> Pick {
        self.haves += 1;
        let src = &mut self.sources[s];
        src.busy += 1;
        src.have_at = Some(now);
        src.have_asked = true;
        Pick::Have(s)
    }

    /// The chunks source `s` should be asked for now, if any.
    fn run_for(&mut self, s: usize, now: Instant) -> Option<(usize, usize)> {
        let src = &self.sources[s];
        let n = self.chunks.len();
        let origin = src.origin;
        let peers_unheard = self.sources.iter().any(|p| {
            !p.origin && p.live() && !p.have_known && (p.have_asked || p.have_at.is_none())
        });
        if origin && peers_unheard && now.duration_since(self.started) < HAVE_GRACE {
            return None;
        }
        // The origin is left what no live peer holds or is fetching.
        let wanted = |p: &Plan, i: usize| {
            p.chunks[i] == State::Missing
                && p.sources[s].has(i)
                && (!origin || (p.offers(i) == 0 && !p.coming(i)))
        };
        let first = if origin {
            // The chunk after the last one asked of the origin (a random
            // one at first): each board of a rack works through a stretch
            // of its own. Once that runs into chunks another board holds or
            // is fetching, it starts again in the middle of the longest
            // stretch nobody has: boards keep far apart, so two rarely ask
            // the origin for the same chunk even while their lists of each
            // other are a moment old.
            let next = self.origin_cursor % n.max(1);
            let first = if wanted(self, next) {
                next
            } else {
                let mut longest: Option<(usize, usize)> = None;
                let mut i = 0;
                while i < n {
                    let start = i;
                    while i < n && wanted(self, i) {
                        i += 1;
                    }
                    if i > start && longest.is_none_or(|(_, len)| i - start > len) {
                        longest = Some((start, i - start));
                    }
                    i += 1;
                }
                let (start, len) = longest?;
                start + len / 2
            };
            self.origin_cursor = first + 1;
            first
        } else {
            // Rarest first, ties at random.
            let candidates: Vec<(usize, usize)> = (0..n)
                .filter(|&i| wanted(self, i))
                .map(|i| (self.offers(i), i))
                .collect();
            let rarest = candidates.iter().map(|c| c.0).min()?;
            let rare: Vec<usize> = candidates
                .iter()
                .filter(|c| c.0 == rarest)
                .map(|c| c.1)
                .collect();
            rare[self.random() as usize % rare.len()]
        };
        // The origin sends long runs to a board alone; with peers about,
        // single chunks, so the rack's requests spread over the release.
        let peers_live = self.peers_about();
        let max = match (origin, peers_live) {
            (true, false) => ORIGIN_RUN,
            (true, true) => 1,
            (false, _) => PEER_RUN,
        };
        let mut count = 1;
        while count < max && first + count < n && wanted(self, first + count) {
            count += 1;
        }
        Some((first, count))
    }

    /// Chunk `i` arrived from `source`, verified and written: `len` bytes.
    pub fn chunk_done(&mut self, source: usize, i: usize, len: u64, now: Instant) {
        if self.chunks[i] != State::Done {
            self.chunks[i] = State::Done;
            self.done += 1;
        }
        let src = &mut self.sources[source];
        src.bytes += len;
        src.failures = 0;
        self.progress_at = now;
    }

    /// The request for `first..first + count` from `source` ended; chunks
    /// not done go back to missing. `failure`, if any, is why it ended
    /// early; `fatal` drops the source at once (a bad chunk).
    pub fn finish_run(
        &mut self,
        source: usize,
        first: usize,
        count: usize,
        failure: Option<Failure>,
    ) {
        for c in &mut self.chunks[first..first + count] {
            if *c == State::Asked {
                *c = State::Missing;
            }
        }
        let src = &mut self.sources[source];
        src.busy = src.busy.saturating_sub(1);
        match failure {
            None => {}
            // The peer no longer (or not yet) holds what its list said:
            // ask for its list again, no fault.
            Some(Failure::NotHeld) => src.have_at = None,
            Some(f) => self.fail(source, f),
        }
    }

    /// The answer to [`Pick::Have`]: the chunks the peer holds and those
    /// it is fetching, or a failure.
    pub fn finish_have(&mut self, source: usize, have: Result<(Vec<bool>, Vec<bool>), Failure>) {
        let src = &mut self.sources[source];
        src.busy = src.busy.saturating_sub(1);
        src.have_asked = false;
        match have {
            Ok((h, coming)) if h.len() == self.chunks.len() && coming.len() == h.len() => {
                src.have = h;
                src.coming = coming;
                src.have_known = true;
                src.failures = 0;
            }
            Ok(_) => self.fail(
                source,
                Failure::Fatal("a chunk list of the wrong size".into()),
            ),
            Err(f) => self.fail(source, f),
        }
    }

    fn fail(&mut self, source: usize, f: Failure) {
        let src = &mut self.sources[source];
        match f {
            Failure::NotHeld => {}
            Failure::Fatal(why) => src.dropped = Some(why),
            Failure::BadChunk(why) => {
                src.dropped = Some(why);
                src.sent_bad = true;
                self.bad_chunks += 1;
            }
            Failure::Moved(why) => {
                src.dropped = Some(why);
                src.sent_bad |= src.origin;
            }
            Failure::Again(why) => {
                src.failures += 1;
                if src.failures < MAX_FAILURES {
                    return;
                }
                if src.origin || src.rests >= MAX_RESTS {
                    src.dropped = Some(why);
                } else {
                    src.rests += 1;
                    src.failures = 0;
                    src.rest_until = Some(Instant::now() + REST);
                }
            }
        }
    }
}

/// Why a request to a source did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The source answered that it does not hold the chunk (`416`).
    NotHeld,
    /// Worth trying again (unreachable, stalled, cut off); counted.
    Again(String),
    /// Never again in this download: a malformed answer.
    Fatal(String),
    /// A chunk that did not verify: never again in this download, counted.
    BadChunk(String),
    /// Its file by that name is not the one the manifest lists (`412`): a
    /// mirror that moved on, or an origin whose file was altered. Never
    /// again in this download; from the origin, the release is not to be
    /// had there (like a bad chunk, but nothing was sent).
    Moved(String),
}

/// A random seed from std's randomly keyed hasher (no RNG crate).
fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id()) | 1
}

#[cfg(test)]
mod tests;
