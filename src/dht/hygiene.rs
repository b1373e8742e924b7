//! What a storage node keeps, beyond "is this record valid" (`record`):
//! - expired records are purged on a timer rather than when next read (so
//!   a flood that has expired frees its slots at once);
//! - when the store is full, a new valid record takes the place of one held
//!   for the heaviest source, never one of a source that holds few. A
//!   source is the sending address *and* the sending peer: an address
//!   holding more than the newcomer's (many peer ids on one machine) gives
//!   way first; among peers of one address (every test peer on 127.0.0.1,
//!   or one NAT) the peer holding the most does. A flood from one machine
//!   or one peer then only displaces its own records;
//! - the highest `seq` seen per (key, publisher) is remembered in a bounded
//!   LRU ([`SeqMemory`]), so a captured record replayed after any number of
//!   other writes to its key is still refused;
//! - provider announcements are held per key up to kad's 20, and when the
//!   list is full a newcomer from an address that holds fewer of them than
//!   the heaviest address takes the place of that address's oldest one
//!   ([`add_provider_fairly`]): a flood of sybil ids from one machine,
//!   before or after the honest providers start, fills at most the room the
//!   other addresses leave it (kad's own rule, first come, would keep every
//!   later provider out).
//!
//! Our own records (put locally by the publisher) have no source here and
//! are never pushed out. This module does no I/O and logs nothing; the
//! event loop counts what it reports.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

use crate::tally::Tally;

/// Where a record held for others came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub peer: PeerId,
    /// The sending connection's IP, when known.
    pub ip: Option<IpAddr>,
}

/// Which source sent each record held for others, and how many each holds.
#[derive(Default)]
pub struct Sources {
    by_key: HashMap<RecordKey, Source>,
    counts: Tally<PeerId>,
    ips: Tally<IpAddr>,
}

impl Sources {
    fn set(&mut self, key: RecordKey, source: Source) {
        if let Some(old) = self.by_key.insert(key, source) {
            self.uncount(old);
        }
        self.counts.add(source.peer);
        if let Some(ip) = source.ip {
            self.ips.add(ip);
        }
    }

    fn uncount(&mut self, old: Source) {
        self.counts.sub(old.peer);
        if let Some(ip) = old.ip {
            self.ips.sub(ip);
        }
    }

    fn forget(&mut self, key: &RecordKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.uncount(old);
        }
    }

    /// Records held now that `peer` sent.
    pub fn held_for(&self, peer: &PeerId) -> usize {
        self.counts.get(peer)
    }

    /// The record to give way for a newcomer from `source`, if any: one of
    /// a heavier address first, else one of the heaviest peer (see the
    /// module header).
    fn victim(&self, source: &Source) -> Option<RecordKey> {
        let of = |pred: &dyn Fn(&Source) -> bool| {
            // Within the chosen group, the record whose peer holds the most.
            self.by_key
                .iter()
                .filter(|(_, s)| pred(s))
                .max_by_key(|(_, s)| self.counts.get(&s.peer))
                .map(|(k, _)| k.clone())
        };
        if let Some((ip, held)) = self.ips.heaviest() {
            let mine = source.ip.map_or(0, |i| self.ips.get(&i));
            if Some(ip) != source.ip && mine + 1 < held {
                return of(&|s| s.ip == Some(ip));
            }
        }
        let (heavy, held) = self.counts.heaviest()?;
        if heavy == source.peer || self.held_for(&source.peer) + 1 >= held {
            return None;
        }
        of(&|s| s.peer == heavy)
    }
}

/// How many (key, publisher) pairs [`SeqMemory`] remembers.
pub const SEQ_MEMORY: usize = 4096;

/// The highest `seq` seen per (key, publisher), least recently used
/// forgotten first.
#[derive(Default)]
pub struct SeqMemory {
    seen: HashMap<(RecordKey, String), (u64, u64)>,
    /// Use tick → entry, oldest first.
    order: BTreeMap<u64, (RecordKey, String)>,
    tick: u64,
}

impl SeqMemory {
    /// Notes `seq` from `publisher` under `key`; `Err(highest)` when a
    /// higher one was seen before (a replay).
    pub fn note(&mut self, key: &RecordKey, publisher: &str, seq: u64) -> Result<(), u64> {
        let id = (key.clone(), publisher.to_string());
        self.tick += 1;
        let highest = match self.seen.get(&id) {
            Some(&(high, used)) => {
                self.order.remove(&used);
                high.max(seq)
            }
            None => seq,
        };
        self.seen.insert(id.clone(), (highest, self.tick));
        self.order.insert(self.tick, id);
        while self.seen.len() > SEQ_MEMORY {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.seen.remove(&old);
        }
        if seq < highest {
            Err(highest)
        } else {
            Ok(())
        }
    }

    /// How many pairs are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// What became of a record offered to a full or not-full store.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    Stored,
    /// Stored in the place of a record of the heaviest source.
    Evicted,
    /// The store is full and this source already holds the most: refused.
    Quota,
}

/// Stores a valid `record` that `source` sent, fairly (see the header).
pub fn store_fairly(
    store: &mut MemoryStore,
    sources: &mut Sources,
    source: Source,
    record: Record,
) -> Placed {
    let key = record.key.clone();
    match store.put(record.clone()) {
        Ok(()) => {
            sources.set(key, source);
            return Placed::Stored;
        }
        Err(libp2p::kad::store::Error::MaxRecords) => {}
        // Too large for the store's own backstop: our checks run first, so
        // this is the same verdict by another name.
        Err(_) => return Placed::Quota,
    }
    let Some(victim) = sources.victim(&source) else {
        return Placed::Quota;
    };
    store.remove(&victim);
    sources.forget(&victim);
    match store.put(record) {
        Ok(()) => {
            sources.set(key, source);
            Placed::Evicted
        }
        Err(_) => Placed::Quota,
    }
}

/// Where each provider announcement held for others came from: the
/// announcing peer's address (kad checked the provider is the sender).
#[derive(Default)]
pub struct ProviderSources {
    /// Per key, the address group of each provider held (20 at most each).
    by: HashMap<RecordKey, HashMap<PeerId, Option<IpAddr>>>,
}

/// The address a flood is counted by: an IPv4 address, or an IPv6 /64 (one
/// host or LAN is given a whole /64 and may use any address in it).
fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

/// Stores a provider announcement `ip` sent, fairly (see the header): an
/// update of one held, or a new one while there is room, goes in; into a
/// full list only in the place of the oldest announcement of the address
/// holding the most, and only when the newcomer's address holds fewer
/// than that. Our own announcements are never given up.
pub fn add_provider_fairly(
    store: &mut MemoryStore,
    sources: &mut ProviderSources,
    record: ProviderRecord,
    ip: Option<IpAddr>,
    max_per_key: usize,
) -> Placed {
    let key = record.key.clone();
    let held = store.providers(&key);
    // Only this key's entries are touched: O(20), whatever else is held.
    let of_key = sources.by.entry(key.clone()).or_default();
    of_key.retain(|p, _| held.iter().any(|h| h.provider == *p));
    let group = ip.map(address_group);
    let known = held.iter().any(|h| h.provider == record.provider);
    let mut placed = Placed::Stored;
    if !known && held.len() >= max_per_key {
        let group_of = |p: &PeerId| of_key.get(p).copied().flatten();
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for h in &held {
            if let Some(g) = group_of(&h.provider) {
                *counts.entry(g).or_default() += 1;
            }
        }
        let Some((&heavy, &most)) = counts.iter().max_by_key(|(_, n)| **n) else {
            return Placed::Quota;
        };
        let mine = group.map_or(0, |g| counts.get(&g).copied().unwrap_or(0));
        if Some(heavy) == group || mine + 1 >= most {
            return Placed::Quota;
        }
        // The heaviest address's announcement that expires first.
        let Some(victim) = held
            .iter()
            .filter(|h| group_of(&h.provider) == Some(heavy))
            .min_by_key(|h| h.expires)
            .map(|h| h.provider)
        else {
            return Placed::Quota;
        };
        store.remove_provider(&key, &victim);
        of_key.remove(&victim);
        placed = Placed::Evicted;
    }
    let provider = record.provider;
    match store.add_provider(record) {
        Ok(()) => {
            of_key.insert(provider, group);
            placed
        }
        Err(_) => Placed::Quota,
    }
}

/// Forgets where announcements came from once they are no longer held
/// (expired, or their key gone), so the map stays as bounded as the store.
pub fn forget_gone_providers(store: &MemoryStore, sources: &mut ProviderSources) {
    sources.by.retain(|k, of_key| {
        let held = store.providers(k);
        of_key.retain(|p, _| held.iter().any(|h| h.provider == *p));
        !of_key.is_empty()
    });
}

/// Removes every record whose expiry has passed; returns how many.
pub fn purge_expired(store: &mut MemoryStore, sources: &mut Sources, now: Instant) -> usize {
    let expired: Vec<RecordKey> = store
        .records()
        .filter(|r| r.is_expired(now))
        .map(|r| r.key.clone())
        .collect();
    for key in &expired {
        store.remove(key);
        sources.forget(key);
    }
    expired.len()
}

/// Forgets the source of a record removed by other means (un-publish).
pub fn forget(sources: &mut Sources, key: &RecordKey) {
    sources.forget(key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::kad::store::MemoryStoreConfig;
    use std::time::Duration;

    fn store(max: usize) -> MemoryStore {
        MemoryStore::with_config(
            PeerId::random(),
            MemoryStoreConfig {
                max_records: max,
                ..Default::default()
            },
        )
    }

    fn record(name: &str, expires: Option<Instant>) -> Record {
        let mut r = Record::new(RecordKey::new(&name), b"v".to_vec());
        r.expires = expires;
        r
    }

    /// A peer on 127.0.0.1, like every test peer.
    fn local(peer: PeerId) -> Source {
        Source {
            peer,
            ip: Some(IpAddr::from([127, 0, 0, 1])),
        }
    }

    #[test]
    fn a_flooding_peer_only_displaces_its_own_records() {
        let (mut s, mut src) = (store(10), Sources::default());
        let (flood, honest, other) = (
            local(PeerId::random()),
            local(PeerId::random()),
            local(PeerId::random()),
        );
        store_fairly(&mut s, &mut src, honest, record("honest-1", None));
        for i in 0..20 {
            store_fairly(&mut s, &mut src, flood, record(&format!("f{i}"), None));
        }
        // The store filled up; the flood's extra records were refused.
        assert_eq!(src.held_for(&flood.peer), 9);
        assert!(s.get(&RecordKey::new(&"honest-1")).is_some());
        // A new honest key takes a flood record's place.
        assert_eq!(
            store_fairly(&mut s, &mut src, other, record("other-1", None)),
            Placed::Evicted
        );
        assert_eq!(src.held_for(&flood.peer), 8);
        assert_eq!(
            store_fairly(&mut s, &mut src, flood, record("f-more", None)),
            Placed::Quota
        );
        // Replacing a key one already holds is always fine.
        assert_eq!(
            store_fairly(&mut s, &mut src, honest, record("honest-1", None)),
            Placed::Stored
        );
    }

    #[test]
    fn expired_records_are_purged_and_free_their_slots() {
        let (mut s, mut src) = (store(4), Sources::default());
        let now = Instant::now();
        let peer = local(PeerId::random());
        for i in 0..3 {
            let r = record(&format!("old{i}"), Some(now - Duration::from_secs(1)));
            store_fairly(&mut s, &mut src, peer, r);
        }
        store_fairly(
            &mut s,
            &mut src,
            peer,
            record("fresh", Some(now + Duration::from_secs(60))),
        );
        assert_eq!(purge_expired(&mut s, &mut src, now), 3);
        assert_eq!(src.held_for(&peer.peer), 1);
        assert_eq!(s.records().count(), 1);
    }

    #[test]
    fn many_peer_ids_on_one_address_are_one_heavy_source() {
        let (mut s, mut src) = (store(10), Sources::default());
        let sybil_ip = Some(IpAddr::from([192, 0, 2, 66]));
        for i in 0..20 {
            let sybil = Source {
                peer: PeerId::random(),
                ip: sybil_ip,
            };
            store_fairly(&mut s, &mut src, sybil, record(&format!("s{i}"), None));
        }
        // Each sybil peer holds one record, yet a newcomer from another
        // address gets in, in the place of one of theirs.
        let honest = Source {
            peer: PeerId::random(),
            ip: Some(IpAddr::from([192, 0, 2, 10])),
        };
        assert_eq!(
            store_fairly(&mut s, &mut src, honest, record("honest", None)),
            Placed::Evicted
        );
        assert!(s.get(&RecordKey::new(&"honest")).is_some());
    }

    #[test]
    fn a_replay_is_refused_whatever_was_written_in_between() {
        let mut m = SeqMemory::default();
        let key = RecordKey::new(&"/phase/stable/arm64/manifest");
        assert_eq!(m.note(&key, "genuine", 5), Ok(()));
        assert_eq!(m.note(&key, "genuine", 6), Ok(()));
        assert_eq!(m.note(&key, "attacker", 1), Ok(()));
        assert_eq!(m.note(&key, "genuine", 5), Err(6));
        // Bounded: the oldest pairs are forgotten first.
        for i in 0..SEQ_MEMORY {
            m.note(&RecordKey::new(&format!("k{i}")), "p", 1).unwrap();
        }
        assert_eq!(m.len(), SEQ_MEMORY);
        assert_eq!(m.note(&key, "genuine", 5), Ok(()));
    }

    fn announce(key: &RecordKey, peer: PeerId, ttl_secs: u64) -> ProviderRecord {
        ProviderRecord {
            key: key.clone(),
            provider: peer,
            expires: Some(Instant::now() + Duration::from_secs(ttl_secs)),
            addresses: vec![],
        }
    }

    #[test]
    fn a_sybil_flood_before_the_honest_provider_does_not_keep_it_out() {
        let mut store = store(16);
        let mut sources = ProviderSources::default();
        let key = RecordKey::new(&"/phase/stable/arm64/manifest");
        let attacker = Some(IpAddr::from([192, 0, 2, 66]));
        for i in 0..64 {
            let placed = add_provider_fairly(
                &mut store,
                &mut sources,
                announce(&key, PeerId::random(), 100 + i),
                attacker,
                20,
            );
            assert_eq!(placed == Placed::Quota, i >= 20, "sybil {i}: {placed:?}");
        }
        // Honest providers on their own addresses each take a sybil's place.
        let honest: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for (i, p) in honest.iter().enumerate() {
            let ip = Some(IpAddr::from([192, 0, 2, 10 + i as u8]));
            let placed =
                add_provider_fairly(&mut store, &mut sources, announce(&key, *p, 50), ip, 20);
            assert_eq!(placed, Placed::Evicted);
        }
        let held = store.providers(&key);
        assert_eq!(held.len(), 20);
        assert!(honest.iter().all(|p| held.iter().any(|h| h.provider == *p)));
        // A second announcement from an honest address, or a refresh, is
        // fine; the flood cannot win the places back.
        let again = add_provider_fairly(
            &mut store,
            &mut sources,
            announce(&key, honest[0], 60),
            Some(IpAddr::from([192, 0, 2, 10])),
            20,
        );
        assert_eq!(again, Placed::Stored);
        let more = add_provider_fairly(
            &mut store,
            &mut sources,
            announce(&key, PeerId::random(), 500),
            attacker,
            20,
        );
        assert_eq!(more, Placed::Quota);
        // IPv6 sybils spread over a /64 count as one address.
        let v6 = |n: u16| Some(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, n]));
        let key6 = RecordKey::new(&"/phase/edge/arm64/manifest");
        for n in 0..30 {
            add_provider_fairly(
                &mut store,
                &mut sources,
                announce(&key6, PeerId::random(), 100),
                v6(n),
                20,
            );
        }
        let late = PeerId::random();
        let placed = add_provider_fairly(
            &mut store,
            &mut sources,
            announce(&key6, late, 100),
            v6(999),
            20,
        );
        assert_eq!(placed, Placed::Quota);
        forget_gone_providers(&store, &mut sources);
        assert_eq!(sources.by.values().map(HashMap::len).sum::<usize>(), 40);
    }
}
