//! What a storage node keeps, beyond "is this record valid" (`record`):
//! expired records are purged on a timer rather than when next read (so a
//! flood that has expired frees its slots at once), and when the store is
//! full a new valid record takes the place of one held for the heaviest
//! source (the peer that sent the most records held now), never one of a
//! source that holds few. A flood from one peer then only displaces its own
//! records; other publishers keep theirs and can still add new keys. The
//! sending peer counts, not the address: on one machine (or behind one NAT)
//! every peer shares an address.
//!
//! Our own records (put locally by the publisher) have no source here and
//! are never pushed out. This module does no I/O and logs nothing; the
//! event loop counts what it reports.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{Record, RecordKey};
use libp2p::PeerId;

use crate::tally::Tally;

/// Which peer sent each record held for others, and how many each holds.
#[derive(Default)]
pub struct Sources {
    by_key: HashMap<RecordKey, PeerId>,
    counts: Tally<PeerId>,
}

impl Sources {
    fn set(&mut self, key: RecordKey, source: PeerId) {
        if let Some(old) = self.by_key.insert(key, source) {
            self.counts.sub(old);
        }
        self.counts.add(source);
    }

    fn forget(&mut self, key: &RecordKey) {
        if let Some(old) = self.by_key.remove(key) {
            self.counts.sub(old);
        }
    }

    /// Records held now that `peer` sent.
    pub fn held_for(&self, peer: &PeerId) -> usize {
        self.counts.get(peer)
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
    source: PeerId,
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
    let Some((heavy, held)) = sources.counts.heaviest() else {
        return Placed::Quota;
    };
    if heavy == source || sources.held_for(&source) + 1 >= held {
        return Placed::Quota;
    }
    let Some(victim) = sources
        .by_key
        .iter()
        .find(|(_, p)| **p == heavy)
        .map(|(k, _)| k.clone())
    else {
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

    #[test]
    fn a_flooding_peer_only_displaces_its_own_records() {
        let (mut s, mut src) = (store(10), Sources::default());
        let (flood, honest, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        store_fairly(&mut s, &mut src, honest, record("honest-1", None));
        for i in 0..20 {
            store_fairly(&mut s, &mut src, flood, record(&format!("f{i}"), None));
        }
        // The store filled up; the flood's extra records were refused.
        assert_eq!(src.held_for(&flood), 9);
        assert!(s.get(&RecordKey::new(&"honest-1")).is_some());
        // A new honest key takes a flood record's place.
        assert_eq!(
            store_fairly(&mut s, &mut src, other, record("other-1", None)),
            Placed::Evicted
        );
        assert_eq!(src.held_for(&flood), 8);
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
        let peer = PeerId::random();
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
        assert_eq!(src.held_for(&peer), 1);
        assert_eq!(s.records().count(), 1);
    }
}
