//! A DHT client session: joined once with a throw-away identity (it
//! stores and routes nothing), asked as often as needed. A lookup reads the
//! spec key and every announced provider's own key, validates every copy
//! that comes back (JSON shape, sizes, key ↔ channel/arch, signature,
//! expiry, trust pins), keeps the best per publisher and ranks them.
//! Lookups repeat until one succeeds or the timeout passes, so it also
//! works while a provider is still starting.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::PeerId;
use tokio::time::Instant;

use super::{DiscoverError, Query};
use crate::dht::{self, DhtConfig, Role};
use crate::record::{self, manifest_dht_key, manifest_key, provider_key, ManifestRecord};

/// Pause between lookups that found nothing.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Once one valid record is in hand, wait at most this long for the rest of
/// the query (other copies may be newer).
const GRACE_AFTER_FIRST: Duration = Duration::from_secs(2);

/// At most this many announced providers are asked for their own record
/// in one round (all at once): with a flood of sybil ids, a round samples
/// this many, and the next round the ones not asked yet.
const MAX_PROVIDERS: usize = 64;

/// One key's lookup ends this long after it started, found or not: a
/// round is bounded even when peers answer slowly, and rounds repeat
/// until the query's timeout, so a short bound loses nothing.
const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// A DHT client joined once and asked as often as needed (`--watch`). Its
/// runtime only runs while a method is called: between calls the
/// connections are not served, so callers pause through [`Session::pause`].
pub struct Session {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) client: dht::Client,
    dht_task: tokio::task::JoinHandle<()>,
    /// The throw-away identity, which also signs a holder's record.
    pub(super) keypair: Keypair,
}

impl Session {
    /// Joins the DHT as a client with a throw-away identity.
    pub fn start(query: &Query) -> Result<Session, DiscoverError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DiscoverError::Runtime)?;
        let keypair = Keypair::generate_ed25519();
        let (client, event_loop, _) = rt.block_on(dht::start(DhtConfig {
            keypair: keypair.clone(),
            listen: Vec::new(),
            bootstrap: query.bootstrap.clone(),
            announce: Vec::new(),
            // A client stores nothing of its own; this only bounds the store.
            record_ttl: Duration::from_secs(60),
            mdns: query.mdns,
            role: Role::Client,
            agent: format!("phase-discover/{}", env!("CARGO_PKG_VERSION")),
            trusted_publishers: Vec::new(),
            metrics: None,
        }))?;
        let dht_task = rt.spawn(event_loop.run());
        Ok(Session {
            rt,
            client,
            dht_task,
            keypair,
        })
    }

    /// Asks until something valid is found or `query.timeout` passes; ranked
    /// best first.
    pub fn lookup(&self, query: &Query) -> Result<Vec<ManifestRecord>, DiscoverError> {
        let deadline = std::time::Instant::now() + query.timeout;
        self.lookup_until(query, deadline, &mut Tried::default())
    }

    /// Asks until something valid is found or `deadline` passes; ranked
    /// best first. Announced providers not yet in `tried` are asked first,
    /// so calling again (when what was found did not verify) looks further.
    pub fn lookup_until(
        &self,
        query: &Query,
        deadline: std::time::Instant,
        tried: &mut Tried,
    ) -> Result<Vec<ManifestRecord>, DiscoverError> {
        let deadline = Instant::from_std(deadline);
        self.rt
            .block_on(lookup(&self.client, query, deadline, tried))
    }

    /// Runs blocking work (downloads) on another thread while the DHT
    /// connections keep being served.
    pub fn run_blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let task = self.rt.spawn_blocking(f);
        match self.rt.block_on(task) {
            Ok(v) => v,
            // The closure panicked: carry it on here, as a direct call would.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Runs `work` on a thread of its own while this thread serves the DHT
    /// connections and drives `background` (which is dropped, unfinished,
    /// once `work` ends). Unlike [`Session::run_blocking`], `work` may
    /// borrow.
    pub fn while_running<T: Send>(
        &self,
        work: impl FnOnce() -> T + Send,
        background: impl std::future::Future<Output = ()>,
    ) -> T {
        std::thread::scope(|scope| {
            let worker = scope.spawn(work);
            self.rt.block_on(async {
                tokio::pin!(background);
                let mut background_done = false;
                while !worker.is_finished() {
                    let tick = tokio::time::sleep(Duration::from_millis(50));
                    if background_done {
                        tick.await;
                        continue;
                    }
                    tokio::select! {
                        _ = &mut background => background_done = true,
                        _ = tick => {}
                    }
                }
            });
            match worker.join() {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e),
            }
        })
    }

    /// Keeps serving the DHT connections for `d`.
    pub fn pause(&self, d: Duration) {
        // The timer is made inside the runtime: it needs its clock.
        self.rt.block_on(async { tokio::time::sleep(d).await });
    }

    /// Leaves the DHT.
    pub fn stop(self) {
        self.rt.block_on(async {
            self.client.stop().await;
            let _ = self.dht_task.await;
        });
    }
}

/// [`Session::lookup_until`] for a process with a DHT node of its own (a
/// mirror): asks through `client` until something valid is found or
/// `deadline` passes; ranked best first.
pub(crate) async fn find(
    client: &dht::Client,
    query: &Query,
    deadline: Instant,
) -> Result<Vec<ManifestRecord>, DiscoverError> {
    lookup(client, query, deadline, &mut Tried::default()).await
}

async fn lookup(
    client: &dht::Client,
    query: &Query,
    deadline: Instant,
    tried: &mut Tried,
) -> Result<Vec<ManifestRecord>, DiscoverError> {
    let mut peers = client.peers();
    let mut found = Vec::new();
    while found.is_empty() && Instant::now() < deadline {
        // Asking before any peer is known ends at once with nothing.
        if *peers.borrow() == 0 {
            let _ = tokio::time::timeout_at(deadline, peers.wait_for(|n| *n > 0)).await;
        }
        found = one_round(client, query, deadline, tried).await?;
        if found.is_empty() {
            tokio::time::sleep_until(deadline.min(Instant::now() + RETRY_PAUSE)).await;
        }
    }
    // The ranking's `now`: the clock, or what is known to have passed.
    let now = crate::time::unix_now().max(query.trusted_time);
    Ok(rank(found, now))
}

/// What the rounds of one attempt have asked already.
#[derive(Debug, Default)]
pub struct Tried {
    providers: HashSet<PeerId>,
}

/// One pass: the spec key's record(s), then the own records of up to
/// [`MAX_PROVIDERS`] announced providers, all at once; the best valid
/// record per publisher.
///
/// The providers asked are a fair sample of every one announced, those not
/// asked in an earlier round first, in random order: a flood of sybil ids
/// can neither crowd the honest providers out by arriving first nor, over
/// a few rounds, keep them from being asked.
async fn one_round(
    client: &dht::Client,
    query: &Query,
    deadline: Instant,
    tried: &mut Tried,
) -> Result<Vec<ManifestRecord>, DiscoverError> {
    let began = Instant::now();
    let spec = manifest_key(&query.channel, &query.arch);
    let mut by_publisher: HashMap<String, ManifestRecord> = HashMap::new();
    for r in records_at(client, query, &spec, deadline).await? {
        keep_best(&mut by_publisher, r);
    }
    log::debug!(
        "lookup round: {} valid record(s) on the spec key after {:?}",
        by_publisher.len(),
        began.elapsed()
    );
    let mut providers = client
        .get_providers(manifest_dht_key(&query.channel, &query.arch))
        .await?;
    let mut announced = HashSet::new();
    let mut until = deadline.min(Instant::now() + LOOKUP_LIMIT);
    while let Ok(Some(p)) = tokio::time::timeout_at(until, providers.recv()).await {
        if announced.is_empty() {
            until = until.min(Instant::now() + GRACE_AFTER_FIRST);
        }
        announced.insert(p);
    }
    let (fresh, again): (Vec<PeerId>, Vec<PeerId>) = announced
        .into_iter()
        .partition(|p| !tried.providers.contains(p));
    let mut asked = shuffled(fresh);
    asked.extend(shuffled(again));
    asked.truncate(MAX_PROVIDERS);
    tried.providers.extend(asked.iter().copied());
    let keys: Vec<String> = asked
        .iter()
        .map(|p| provider_key(&query.channel, &query.arch, &p.to_string()))
        .collect();
    let lookups = keys
        .iter()
        .map(|key| records_at(client, query, key, deadline));
    for found in libp2p::futures::future::join_all(lookups).await {
        for r in found? {
            keep_best(&mut by_publisher, r);
        }
    }
    log::debug!(
        "lookup round: asked {} announced provider(s) ({} asked in all); \
         {} valid record(s) after {:?}",
        asked.len(),
        tried.providers.len(),
        by_publisher.len(),
        began.elapsed()
    );
    Ok(by_publisher.into_values().collect())
}

/// `items` in a random order (std's randomly keyed hasher decides).
fn shuffled<T: std::hash::Hash>(items: Vec<T>) -> Vec<T> {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let mut keyed: Vec<(u64, T)> = items.into_iter().map(|t| (state.hash_one(&t), t)).collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, t)| t).collect()
}

fn keep_best(map: &mut HashMap<String, ManifestRecord>, r: ManifestRecord) {
    match map.get(&r.peer_id) {
        Some(old) if old.seq >= r.seq => {}
        _ => {
            map.insert(r.peer_id.clone(), r);
        }
    }
}

/// Newest `last_updated` first (none later than `now`); equal ones
/// shuffled, records dated ahead of `now` after the others.
fn rank(records: Vec<ManifestRecord>, now: u64) -> Vec<ManifestRecord> {
    use std::hash::{BuildHasher, Hasher};
    // A random tie-breaker per record, from std's randomly keyed hasher.
    let state = std::collections::hash_map::RandomState::new();
    // A record dated ahead of `now` (inside the clock skew, or it would
    // not be valid) counts as dated `now` and loses ties: being early
    // never outranks an honest record.
    let mut keyed: Vec<(u64, bool, u64, ManifestRecord)> = records
        .into_iter()
        .map(|r| {
            let mut h = state.build_hasher();
            h.write(r.peer_id.as_bytes());
            let updated = r.updated_at();
            (updated.min(now), updated <= now, h.finish(), r)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    keyed.into_iter().map(|(_, _, _, r)| r).collect()
}

/// The manifest URLs of up to `max` holders of the release whose manifest
/// hashes to `sha` (announced under its release key, a random sample of
/// them), each from its own valid record; asked until `until`.
pub(super) async fn holders(
    client: &dht::Client,
    query: &Query,
    sha: &str,
    max: usize,
    until: Instant,
) -> Result<Vec<String>, DiscoverError> {
    let (channel, arch) = (&query.channel, &query.arch);
    // The release key (its first 20 holders) and two shards at random: a
    // look sees up to 60 holders, and every holder of a large rack turns up
    // in some look.
    let mut keys = vec![record::release_key(channel, arch, sha)];
    let shards = shuffled((0..record::RELEASE_SHARDS).collect());
    keys.extend(
        shards
            .iter()
            .take(2)
            .map(|s| record::release_shard_key(channel, arch, sha, *s)),
    );
    let asks = keys
        .into_iter()
        .map(|k| client.get_providers(libp2p::kad::RecordKey::new(&k)));
    let mut peers = HashSet::new();
    for announced in libp2p::futures::future::join_all(asks).await {
        let mut announced = announced?;
        while let Ok(Some(p)) = tokio::time::timeout_at(until, announced.recv()).await {
            peers.insert(p);
        }
    }
    let mut peers = shuffled(peers.into_iter().collect());
    peers.truncate(max);
    let keys: Vec<String> = peers
        .iter()
        .map(|p| record::holder_key(channel, arch, sha, &p.to_string()))
        .collect();
    let lookups = keys.iter().map(|key| records_at(client, query, key, until));
    let mut urls = Vec::new();
    for found in libp2p::futures::future::join_all(lookups).await {
        urls.extend(found?.into_iter().map(|r| r.url));
    }
    Ok(urls)
}

/// The valid, trusted records found under one key (best per publisher).
async fn records_at(
    client: &dht::Client,
    query: &Query,
    key: &str,
    deadline: Instant,
) -> Result<Vec<ManifestRecord>, DiscoverError> {
    let mut found = client.get(libp2p::kad::RecordKey::new(&key)).await?;
    let mut best: HashMap<String, ManifestRecord> = HashMap::new();
    let mut until = deadline.min(Instant::now() + LOOKUP_LIMIT);
    while let Ok(Some(f)) = tokio::time::timeout_at(until, found.recv()).await {
        let from = f
            .from
            .map_or_else(|| "local store".to_string(), |p| p.to_string());
        let now = crate::time::Now::judge(crate::time::unix_now(), query.trusted_time);
        match record::decode_for_key(key.as_bytes(), &f.record.value, now) {
            Ok(r) => {
                if !query.trusted.is_empty()
                    && !query.trusted.iter().any(|t| t.to_string() == r.peer_id)
                {
                    log::warn!(
                        "ignoring record from untrusted publisher {} (not in --trust)",
                        r.peer_id
                    );
                    continue;
                }
                log::debug!("valid record from {from}: {r}");
                keep_best(&mut best, r);
                until = until.min(Instant::now() + GRACE_AFTER_FIRST);
            }
            Err(e) => log::warn!("ignoring invalid record from {from}: {e}"),
        }
    }
    Ok(best.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(peer: &str, updated: u64) -> ManifestRecord {
        let mut r = ManifestRecord::new("http://192.0.2.1/m.json", peer, None, "v");
        r.last_updated = crate::time::rfc3339_secs(updated);
        r
    }

    #[test]
    fn being_dated_early_never_outranks_an_honest_record() {
        let now = 1_800_000_000;
        for _ in 0..20 {
            let ranked = rank(
                vec![
                    record("early", now + 290),
                    record("honest", now),
                    record("older", now - 60),
                ],
                now,
            );
            let order: Vec<&str> = ranked.iter().map(|r| r.peer_id.as_str()).collect();
            assert_eq!(order, ["honest", "early", "older"]);
        }
    }
}
