//! Which of the providers a lookup found a board may use, when it trusts
//! release keys: each provider's manifest is downloaded and checked
//! (record → manifest bytes → release signature → channel/arch), releases
//! below the rollback floor are refused, and the rest are ranked newest
//! release first. The DHT record is only a location here: who published
//! it does not matter, what it points at does.
//!
//! Finding records is the session's job, downloading `fetch`'s, the floor
//! file `release::floor`'s; this module only decides.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::Query;
use crate::fetch::{Checked, FetchError};
use crate::record::ManifestRecord;
use crate::release::floor::Floor;

/// At most this many providers' manifests are downloaded and checked at
/// once: enough that a few tarpits cannot hold a round, few enough for a
/// board's memory and a provider's connection budget.
pub const CONCURRENT_CHECKS: usize = 4;

/// Providers checked against the release keys.
#[derive(Debug, Default)]
pub struct Choice {
    /// Usable providers, highest `release_seq` first (record rank kept
    /// among equals).
    pub accepted: Vec<Checked>,
    /// Refused providers: their URL and why, for the user.
    pub refused: Vec<(String, String)>,
    /// Whether any refusal was about the data (bad or missing signature,
    /// wrong channel, older than the floor) rather than reachability.
    pub any_untrusted: bool,
}

/// Checks every record's release; `floor` is the rollback floor, if kept.
pub fn releases(records: &[ManifestRecord], query: &Query, floor: Option<&Floor>) -> Choice {
    let ca = format!("{}/{}", query.channel, query.arch);
    let least = floor.and_then(|f| f.seq(&ca));
    let mut choice = Choice::default();
    // With release keys the record is only a location: records of several
    // publishers pointing at one URL are one provider, downloaded once.
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&ManifestRecord> = records
        .iter()
        .filter(|r| seen.insert(r.url.as_str()))
        .collect();
    for (r, checked) in unique.iter().zip(check_all(&unique, query)) {
        let checked = match checked {
            Ok(c) => c,
            Err(e) => {
                choice.any_untrusted |= e.is_mismatch();
                choice.refused.push((r.url.clone(), e.to_string()));
                continue;
            }
        };
        let seq = checked.release.as_ref().map_or(0, |rel| rel.release_seq);
        match least {
            Some(least) if seq < least && !query.allow_downgrade => {
                choice.any_untrusted = true;
                choice.refused.push((
                    r.url.clone(),
                    format!(
                        "release_seq {seq} is older than {least}, the newest release this board \
                         accepted (a rollback; --allow-downgrade accepts it)"
                    ),
                ));
                continue;
            }
            Some(least) if seq < least => log::warn!(
                "accepting release_seq {seq} from {} below the floor {least} (--allow-downgrade)",
                r.url
            ),
            _ => {}
        }
        choice.accepted.push(checked);
    }
    // Stable: equal releases keep the lookup's order (newest record, ties
    // shuffled so boards spread over providers).
    choice
        .accepted
        .sort_by_key(|c| std::cmp::Reverse(c.release.as_ref().map_or(0, |r| r.release_seq)));
    choice
}

/// Checks every record's manifest and release, [`CONCURRENT_CHECKS`] at a
/// time, each under the query's limits: a slow, silent or unroutable
/// provider costs one deadline per round, not one per provider after it.
/// The results are in the order of `records`.
fn check_all(records: &[&ManifestRecord], query: &Query) -> Vec<Result<Checked, FetchError>> {
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Checked, FetchError>>>> =
        records.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(r) = records.get(i) else { break };
        let checked = query.check(r);
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(checked);
    };
    std::thread::scope(|s| {
        for _ in 1..CONCURRENT_CHECKS.min(records.len()) {
            // Without a thread (out of them), this one does all the work.
            if std::thread::Builder::new().spawn_scoped(s, work).is_err() {
                break;
            }
        }
        work();
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(FetchError::Http(String::new(), "not checked".into())))
        })
        .collect()
}

/// Raises (or with `--allow-downgrade`, sets) the floor to the release
/// that was used, and remembers its creation time as a time that has
/// passed. Only release-key-signed times count: a provider's record time
/// is its own word, and a far-future one would make the board distrust a
/// correct clock.
pub fn remember(floor: &mut Floor, query: &Query, used: &Checked) {
    if let Some(r) = &used.release {
        let ca = format!("{}/{}", query.channel, query.arch);
        floor.accept(&ca, r.release_seq, r.created);
    }
}
