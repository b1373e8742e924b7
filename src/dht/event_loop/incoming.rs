//! Records other peers PUT to this node: checked (signature, expiry,
//! replays, the newest on the shared key, `--trust`) before they are
//! stored fairly (`hygiene`), refused ones counted by kind and summed up
//! in one log line a minute; and provider announcements, held fairly
//! between the addresses that send them.

use libp2p::kad::{self, store::RecordStore};

use super::{EventLoop, REFUSAL_REPORT};
use crate::dht::hygiene;
use crate::record::{self, ManifestRecord, RecordError, RefusalKind};

impl EventLoop {
    /// Stores a record another peer PUT to us if it is a valid, signed,
    /// unexpired manifest record for its key, not a replay (a lower `seq`
    /// than one seen from the same publisher under that key), not older
    /// than the record held on the shared spec key, and from a trusted
    /// publisher when `--trust` is set. Everything else is refused:
    /// counted by kind, logged at DEBUG.
    pub(super) fn store_if_valid(&mut self, source: hygiene::Source, record: kad::Record) {
        match self.check_incoming(&record) {
            Ok(()) => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                match hygiene::store_fairly(store, &mut self.sources, source, record) {
                    hygiene::Placed::Stored => {}
                    hygiene::Placed::Evicted => {
                        log::debug!(
                            "store full: a record of the heaviest source made room for one from {}",
                            source.peer
                        );
                    }
                    // Counted and summed up once a minute: a flood must not
                    // also flood the log.
                    hygiene::Placed::Quota => {
                        *self.refused.entry(RefusalKind::Quota).or_default() += 1;
                        if let Some(m) = &self.metrics {
                            m.refused(RefusalKind::Quota);
                        }
                        log::debug!(
                            "refused quota record from {}: its sender holds the most",
                            source.peer
                        );
                    }
                }
            }
            Err(e) => {
                *self.refused.entry(e.kind()).or_default() += 1;
                if let Some(m) = &self.metrics {
                    m.refused(e.kind());
                }
                let key = record.key.as_ref();
                log::debug!(
                    "refused {} record {:?} from {}: {e}",
                    e.kind(),
                    String::from_utf8_lossy(&key[..key.len().min(80)]),
                    source.peer
                );
            }
        }
    }

    /// Stores a provider announcement for a manifest key or a release key
    /// (never a per-publisher key), fairly between
    /// the addresses announcing (`hygiene`); kad already checked that the
    /// provider is the peer that sent it.
    pub(super) fn add_provider_if_valid(&mut self, r: kad::ProviderRecord) {
        if !record::parse_key(r.key.as_ref()).is_ok_and(|k| k.provider.is_none()) {
            *self.refused.entry(RefusalKind::Rekeyed).or_default() += 1;
            log::debug!("refused rekeyed provider announcement from {}", r.provider);
            return;
        }
        let from = r.provider;
        let ip = self
            .remote_ips
            .values()
            .find(|(p, _)| *p == from)
            .map(|(_, ip)| *ip);
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let placed = hygiene::add_provider_fairly(
            store,
            &mut self.provider_sources,
            r,
            ip,
            kad::K_VALUE.get(),
        );
        if placed == hygiene::Placed::Quota {
            *self.refused.entry(RefusalKind::Quota).or_default() += 1;
            if let Some(m) = &self.metrics {
                m.refused(RefusalKind::Quota);
            }
            log::debug!("provider announcement from {from} not stored: its address holds the most");
        }
    }

    fn check_incoming(&mut self, record: &kad::Record) -> Result<(), RecordError> {
        let now_secs = crate::time::unix_now();
        let now = crate::time::Now::At(now_secs);
        let decoded = record::decode_for_key(record.key.as_ref(), &record.value, now)?;
        if !self.trusted_publishers.is_empty()
            && !self
                .trusted_publishers
                .iter()
                .any(|p| p.to_string() == decoded.peer_id)
        {
            return Err(RecordError::Untrusted(decoded.peer_id));
        }
        // Kademlia's `publisher` field is unauthenticated metadata (and
        // rust-only): the signature over the value is what counts.
        let new_seq = decoded.seq.unwrap_or(0);
        self.seqs
            .note(&record.key, &decoded.peer_id, new_seq)
            .map_err(|highest| RecordError::Replayed(new_seq, highest))?;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let Some(existing) = store.get(&record.key) else {
            return Ok(());
        };
        // Only a record still valid now can stand in the way. It was
        // checked, signature and all, when it was stored: only its expiry
        // is news.
        let old = match ManifestRecord::from_bytes(&existing.value) {
            Ok(old) if !old.expired_at(now_secs) => old,
            _ => return Ok(()),
        };
        if old.peer_id == decoded.peer_id {
            let old_seq = old.seq.unwrap_or(0);
            if old_seq > new_seq {
                return Err(RecordError::Replayed(new_seq, old_seq));
            }
        } else if dated(&old, now_secs) > dated(&decoded, now_secs) {
            // The shared spec key holds the newest valid record, never an
            // older one (per-provider keys have one publisher only). A date
            // ahead of our clock (inside the skew, or the record would not
            // be valid) counts as now: being early never outranks an honest
            // record, so a re-dated capture cannot hold the key against the
            // honest publisher's refreshes.
            return Err(RecordError::Older(
                decoded.last_updated.clone(),
                old.last_updated.clone(),
            ));
        }
        Ok(())
    }

    /// One INFO line summing up the refused PUTs since the last one.
    pub(super) fn report_refusals(&mut self) {
        if self.refused.is_empty() {
            return;
        }
        let total: u64 = self.refused.values().sum();
        let by_kind: Vec<String> = self
            .refused
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        log::info!(
            "refused {total} DHT record(s) in the last {}s: {}",
            REFUSAL_REPORT.as_secs(),
            by_kind.join(" ")
        );
        self.refused.clear();
    }
}

/// A record's date for ranking on the spec key: never later than `now`.
fn dated(r: &ManifestRecord, now: u64) -> u64 {
    r.updated_at().min(now)
}
