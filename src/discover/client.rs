//! The one client path, from a [`Query`] to a provider whose files verified:
//!
//! 1. read the rollback floor (with `state`), and judge the clock by it;
//! 2. look the channel/arch up in the DHT (the [`Session`]);
//! 3. choose: with release keys, check every provider's release and rank
//!    them newest first, refusing those below the floor; without, take the
//!    records in rank order and check each manifest when its turn comes;
//! 4. fetch: hand the candidates, best first, to the caller's `take` (a
//!    download, the boot files) until one succeeds;
//! 5. remember: raise the floor to the release used and save it.
//!
//! `phase-discover`, `phase-boot` and a mirror walk this same path; they
//! differ only in what `take` does and in how they say what happened
//! ([`Note`]). What the floor file holds is `release::floor`'s, how a
//! release is checked `fetch`'s and `choose`'s.

use std::collections::HashSet;
use std::time::Duration;

use super::session::Tried;
use super::{choose, DiscoverError, Query, Session};
use crate::fetch::{Checked, FetchError};
use crate::record::ManifestRecord;
use crate::release::floor::Floor;
use crate::time::{unix_now, Now};

/// Pause between looking again when nothing found was acceptable.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Why the path ended without a provider to use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The floor file cannot be read (the user's to fix).
    #[error("{0}")]
    Floor(String),
    /// The DHT session failed.
    #[error(transparent)]
    Lookup(#[from] DiscoverError),
    /// No valid record turned up within the timeout.
    #[error("no provider found for {0} within {1}s")]
    NotFound(String, u64),
    /// With release keys: no provider serves an acceptable release.
    #[error("no provider of {ca} serves a release signed by a release key ({keys}){floor}")]
    NoRelease {
        ca: String,
        keys: String,
        floor: &'static str,
        /// Whether a provider's data was refused (rather than unreachable).
        untrusted: bool,
    },
    /// Every candidate failed in `take`.
    #[error("no provider delivered verified files")]
    NoneDelivered {
        /// Whether any of them served bytes that did not verify.
        mismatch: bool,
    },
    /// The floor was raised but could not be written.
    #[error("{0}")]
    SaveFloor(String),
    /// The server that shares chunks with other boards cannot start.
    #[error("cannot share the download: {0}")]
    Share(String),
}

impl ClientError {
    /// `phase-discover`'s exit code for it: 2 nothing found (or a floor
    /// file the user must fix), 3 data that did not verify, 1 the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Floor(_) | ClientError::NotFound(..) => 2,
            ClientError::NoRelease { untrusted, .. }
            | ClientError::NoneDelivered {
                mismatch: untrusted,
            } => {
                if *untrusted {
                    3
                } else {
                    1
                }
            }
            ClientError::Lookup(_) | ClientError::SaveFloor(_) | ClientError::Share(_) => 1,
        }
    }
}

/// What happened on the way, for the caller to say in its own voice.
#[derive(Debug)]
pub enum Note<'a> {
    /// The clock reads `now`, earlier than `trusted`, a time known to have
    /// passed: records are judged against `trusted`, releases by
    /// `release_seq` only.
    ClockBehind { now: u64, trusted: u64 },
    /// The lookup found these records, best first.
    Found(&'a [ManifestRecord]),
    /// A provider's release was refused.
    Refused { url: &'a str, why: &'a str },
    /// A candidate failed in `take` (or its manifest did not check out).
    Failed { url: &'a str, why: &'a str },
    /// `take` passed a candidate over without trying it (see [`Failure::skip`]).
    Skipped { url: &'a str, why: &'a str },
}

/// Why `take` gave up on a candidate.
#[derive(Debug)]
pub struct Failure {
    /// The bytes were wrong (as opposed to unreachable).
    pub mismatch: bool,
    /// The candidate was passed over without being tried.
    pub skipped: bool,
    /// A sentence for the user.
    pub why: String,
}

impl Failure {
    /// A download that failed; `mismatch` when the bytes were wrong.
    pub fn failed(mismatch: bool, why: String) -> Self {
        Failure {
            mismatch,
            skipped: false,
            why,
        }
    }

    /// A candidate the caller passes over for now (e.g. it served bad
    /// bytes for this release a moment ago), saying why.
    pub fn skip(why: String) -> Self {
        Failure {
            mismatch: false,
            skipped: true,
            why,
        }
    }
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::failed(e.is_mismatch(), e.to_string())
    }
}

/// The providers a query may use, best first (steps 1-3).
pub struct Candidates {
    query: Query,
    floor: Option<Floor>,
    found: Vec<ManifestRecord>,
    /// With release keys: the providers whose release was accepted, ranked.
    /// Without: `None`, each record is checked when its turn comes.
    chosen: Option<Vec<Checked>>,
}

/// Floor → lookup → choose.
pub fn candidates(
    session: &Session,
    query: &Query,
    note: &mut dyn FnMut(Note),
) -> Result<Candidates, ClientError> {
    let floor = match &query.state {
        Some(dir) => Some(
            Floor::load(dir, query.allow_downgrade)
                .map_err(|e| ClientError::Floor(e.to_string()))?,
        ),
        None => None,
    };
    let mut query = query.clone();
    if let Some(f) = &floor {
        query.trusted_time = query.trusted_time.max(f.trusted_time());
    }
    if let Now::NotBefore(trusted) = Now::judge(unix_now(), query.trusted_time) {
        note(Note::ClockBehind {
            now: unix_now(),
            trusted,
        });
    }
    let deadline = std::time::Instant::now() + query.timeout;
    let mut tried = Tried::default();
    let found = session.lookup_until(&query, deadline, &mut tried)?;
    if found.is_empty() {
        return Err(ClientError::NotFound(
            format!("{}/{}", query.channel, query.arch),
            query.timeout.as_secs(),
        ));
    }
    note(Note::Found(&found));
    let chosen = if query.release_keys.is_empty() {
        None
    } else {
        Some(choose_until(
            session,
            &query,
            floor.as_ref(),
            found.clone(),
            deadline,
            &mut tried,
            note,
        )?)
    };
    Ok(Candidates {
        query,
        floor,
        found,
        chosen,
    })
}

/// With release keys: checks the releases of what was found and, while
/// none is acceptable and `deadline` has not passed, looks again (further
/// among the announced providers) and checks what is new. Records that
/// point at a refused URL are not checked twice in one attempt: a
/// provider that failed (a tarpit, a forged release) is passed over, and
/// a lookup full of such records does not end the search.
fn choose_until(
    session: &Session,
    query: &Query,
    floor: Option<&Floor>,
    mut found: Vec<ManifestRecord>,
    deadline: std::time::Instant,
    tried: &mut Tried,
    note: &mut dyn FnMut(Note),
) -> Result<Vec<Checked>, ClientError> {
    let mut refused: HashSet<String> = HashSet::new();
    let mut untrusted = false;
    loop {
        found.retain(|r| !refused.contains(&r.url));
        let choice = choose::releases(&found, query, floor);
        for (url, why) in &choice.refused {
            note(Note::Refused { url, why });
            refused.insert(url.clone());
        }
        untrusted |= choice.any_untrusted;
        if !choice.accepted.is_empty() {
            return Ok(choice.accepted);
        }
        if std::time::Instant::now() >= deadline {
            return Err(ClientError::NoRelease {
                ca: format!("{}/{}", query.channel, query.arch),
                keys: query.release_keys.ids(),
                floor: if floor.is_some() {
                    " at or above the rollback floor"
                } else {
                    ""
                },
                untrusted,
            });
        }
        session
            .pause(RETRY_PAUSE.min(deadline.saturating_duration_since(std::time::Instant::now())));
        found = session.lookup_until(query, deadline, tried)?;
    }
}

impl Candidates {
    /// The records of the candidates, best first: with release keys those
    /// accepted, without every record found.
    pub fn records(&self) -> Vec<&ManifestRecord> {
        match &self.chosen {
            Some(chosen) => chosen.iter().map(|c| &c.record).collect(),
            None => self.found.iter().collect(),
        }
    }

    /// Takes the best candidate as used without downloading (a lookup
    /// that only prints): the floor is raised to its release and saved.
    pub fn keep_best(mut self) -> Result<(), ClientError> {
        if let Some(best) = self.chosen.as_ref().and_then(|c| c.first()) {
            if let Some(f) = self.floor.as_mut() {
                choose::remember(f, &self.query, best);
            }
        }
        self.save_floor()
    }

    /// Fetch → remember: hands the candidates, best first, to `take` until
    /// one succeeds; the floor is then raised to that release and saved.
    pub fn take_first<T>(
        mut self,
        mut take: impl FnMut(&Checked) -> Result<T, Failure>,
        note: &mut dyn FnMut(Note),
    ) -> Result<(Checked, T), ClientError> {
        let mut mismatch = false;
        let chosen = self.chosen.take();
        let count = chosen.as_ref().map_or(self.found.len(), Vec::len);
        for i in 0..count {
            let candidate = match &chosen {
                Some(chosen) => Ok(chosen[i].clone()),
                // Without release keys each manifest is checked against its
                // record only when its turn comes.
                None => {
                    let r = &self.found[i];
                    self.query
                        .check(r)
                        .map_err(|e| (r.url.clone(), Failure::from(e)))
                }
            };
            let result = candidate.and_then(|c| match take(&c) {
                Ok(v) => Ok((c, v)),
                Err(f) => Err((c.record.url.clone(), f)),
            });
            match result {
                Ok((used, value)) => {
                    if let Some(f) = self.floor.as_mut() {
                        choose::remember(f, &self.query, &used);
                    }
                    self.save_floor()?;
                    return Ok((used, value));
                }
                Err((url, failure)) => {
                    let (url, why) = (url.as_str(), failure.why.as_str());
                    note(if failure.skipped {
                        Note::Skipped { url, why }
                    } else {
                        Note::Failed { url, why }
                    });
                    mismatch |= failure.mismatch;
                }
            }
        }
        Err(ClientError::NoneDelivered { mismatch })
    }

    fn save_floor(&self) -> Result<(), ClientError> {
        match &self.floor {
            Some(f) => f.save().map_err(|e| ClientError::SaveFloor(e.to_string())),
            None => Ok(()),
        }
    }
}

/// The whole path once: floor → lookup → choose → fetch (`take`) →
/// remember. Returns the provider used and what `take` made of it.
pub fn run<T>(
    session: &Session,
    query: &Query,
    take: impl FnMut(&Checked) -> Result<T, Failure>,
    note: &mut dyn FnMut(Note),
) -> Result<(Checked, T), ClientError> {
    candidates(session, query, note)?.take_first(take, note)
}
