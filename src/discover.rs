//! `phase-discover`: find the manifest URL of a channel/arch through the DHT.
//!
//! Joins the DHT as a client (it stores and routes nothing) with a
//! throw-away identity, looks the record key up, validates every copy that
//! comes back (JSON shape, sizes, key ↔ channel/arch, signature, expiry)
//! and picks the newest `last_updated`. Lookups repeat until one succeeds or
//! the timeout passes, so it also works while a provider is still starting.

use std::time::Duration;

use libp2p::identity::Keypair;
use tokio::time::Instant;

use crate::config::DiscoverConfig;
use crate::dht::{self, DhtConfig, DhtError, Role};
use crate::record::{self, manifest_dht_key, manifest_key, ManifestRecord};

/// Pause between lookups that found nothing.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Once one valid record is in hand, wait at most this long for the rest of
/// the query (other copies may be newer).
const GRACE_AFTER_FIRST: Duration = Duration::from_secs(2);

/// Errors of a lookup (not finding anything is not an error: `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Dht(#[from] DhtError),
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
}

/// Looks the channel/arch up; `Ok(None)` when nothing valid turned up
/// before the timeout.
pub fn discover(cfg: &DiscoverConfig) -> Result<Option<ManifestRecord>, DiscoverError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DiscoverError::Runtime)?;
    rt.block_on(lookup(cfg))
}

async fn lookup(cfg: &DiscoverConfig) -> Result<Option<ManifestRecord>, DiscoverError> {
    let deadline = Instant::now() + cfg.timeout;
    let (client, event_loop, _) = dht::start(DhtConfig {
        keypair: Keypair::generate_ed25519(),
        listen: Vec::new(),
        bootstrap: cfg.bootstrap.clone(),
        announce: Vec::new(),
        // A client stores nothing of its own; this only bounds the store.
        record_ttl: Duration::from_secs(60),
        mdns: cfg.mdns,
        role: Role::Client,
        agent: format!("phase-discover/{}", env!("CARGO_PKG_VERSION")),
    })
    .await?;
    let dht_task = tokio::spawn(event_loop.run());
    let key = manifest_key(&cfg.channel, &cfg.arch);

    let mut peers = client.peers();
    let mut best: Option<ManifestRecord> = None;
    while best.is_none() && Instant::now() < deadline {
        // Asking before any peer is known ends at once with nothing.
        if *peers.borrow() == 0 {
            let _ = tokio::time::timeout_at(deadline, peers.wait_for(|n| *n > 0)).await;
        }
        best = one_lookup(&client, cfg, &key, deadline).await?;
        if best.is_none() {
            tokio::time::sleep_until(deadline.min(Instant::now() + RETRY_PAUSE)).await;
        }
    }
    client.stop().await;
    let _ = dht_task.await;
    Ok(best)
}

/// Whether `a` should be preferred over `b`: from the same publisher the
/// higher `seq` wins (it is signed and strictly increasing); across
/// publishers the newer `last_updated`.
fn newer(a: &ManifestRecord, b: &ManifestRecord) -> bool {
    if a.peer_id == b.peer_id {
        a.seq > b.seq
    } else {
        a.updated_at() > b.updated_at()
    }
}

/// One DHT query: the newest valid record among the copies found.
async fn one_lookup(
    client: &dht::Client,
    cfg: &DiscoverConfig,
    key: &str,
    deadline: Instant,
) -> Result<Option<ManifestRecord>, DiscoverError> {
    let mut found = client
        .get(manifest_dht_key(&cfg.channel, &cfg.arch))
        .await?;
    let mut best: Option<ManifestRecord> = None;
    let mut until = deadline;
    while let Ok(Some(f)) = tokio::time::timeout_at(until, found.recv()).await {
        let from = f
            .from
            .map_or_else(|| "local store".to_string(), |p| p.to_string());
        match record::decode_for_key(key.as_bytes(), &f.record.value, record::unix_now()) {
            Ok(r) => {
                if !cfg.trusted.is_empty()
                    && !cfg.trusted.iter().any(|t| t.to_string() == r.peer_id)
                {
                    log::warn!(
                        "ignoring record from untrusted publisher {} (not in --trust)",
                        r.peer_id
                    );
                    continue;
                }
                log::debug!("valid record from {from}: {r}");
                if best.as_ref().is_none_or(|b| newer(&r, b)) {
                    best = Some(r);
                }
                until = until.min(Instant::now() + GRACE_AFTER_FIRST);
            }
            Err(e) => log::warn!("ignoring invalid record from {from}: {e}"),
        }
    }
    Ok(best)
}
