//! The Kademlia DHT: the one place that owns the libp2p swarm.
//!
//! [`start`] builds the swarm (TCP + Noise + Yamux, Kademlia on
//! `/phase/kad/1.0.0`, Identify, Ping), binds its listen addresses and
//! returns a cheap, cloneable [`Client`] plus the [`EventLoop`] to spawn.
//! Everything else talks to the swarm only through the client's commands
//! (put, get, remove, stop), in the manner of rust-libp2p's file-sharing
//! example. This module validates records that other peers try to store
//! (see `record`), but does not decide what to publish or when (that is
//! the provider's `publisher`).

mod behaviour;
mod event_loop;
mod hygiene;

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::kad::{self, RecordKey};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

pub use event_loop::EventLoop;

/// The Kademlia protocol name, from the conventions: keeps our records out
/// of the public IPFS DHT.
pub const KAD_PROTOCOL: &str = "/phase/kad/1.0.0";

/// How many commands may queue for the event loop before senders wait.
const COMMAND_QUEUE: usize = 64;
/// Distinct providers one provider lookup reports: each storing node keeps
/// at most 20 per key (K), and a lookup asks about K nodes, so a flood of
/// ids cannot push the rest past this, and what the caller samples from
/// is the whole answer.
pub const MAX_PROVIDERS_PER_LOOKUP: usize = 400;

/// Errors of the DHT layer.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(Multiaddr, String),
    #[error("no p2p listen address came up within {0:?}")]
    ListenTimeout(Duration),
    #[error("record not stored locally: {0}")]
    Store(String),
    #[error("DHT put of {key} failed: {reason}")]
    Put { key: String, reason: String },
    #[error("the DHT task has stopped")]
    Stopped,
}

/// Whether this peer stores records for others and is routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Providers and storage nodes: Kademlia server mode, set explicitly
    /// because libp2p's automatic mode stays a client on a LAN.
    Server,
    /// Lookup clients (`phase-discover`): ask, never store or route.
    Client,
}

/// How to build the swarm.
pub struct DhtConfig {
    pub keypair: Keypair,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses others should dial us at (e.g. a port forward). When set,
    /// only these are announced, not the listen addresses.
    pub announce: Vec<Multiaddr>,
    /// Cap on how long any record is kept, incoming or our own.
    pub record_ttl: Duration,
    /// Find peers on the local network with mDNS.
    pub mdns: bool,
    pub role: Role,
    /// Identify agent version, e.g. `plasmd/0.1.0`.
    pub agent: String,
    /// When not empty, records of other publishers are not stored
    /// (`plasmd node --trust`).
    pub trusted_publishers: Vec<PeerId>,
    /// Where libp2p's and our DHT figures are recorded, if anywhere.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// A record found by a lookup, with the peer that returned it (`None`: our
/// own store).
#[derive(Debug, Clone)]
pub struct Found {
    pub record: kad::Record,
    pub from: Option<PeerId>,
}

/// What the event loop is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Put {
        record: kad::Record,
        reply: oneshot::Sender<Result<(), DhtError>>,
    },
    Get {
        key: RecordKey,
        reply: mpsc::Sender<Found>,
    },
    /// Announce ourselves as a provider of `key` (Kademlia ADD_PROVIDER).
    Provide {
        key: RecordKey,
        /// Addresses to announce with it (added as our external addresses).
        addresses: Vec<Multiaddr>,
    },
    StopProviding {
        key: RecordKey,
    },
    GetProviders {
        key: RecordKey,
        reply: mpsc::Sender<PeerId>,
    },
    RemoveLocal {
        key: RecordKey,
        reply: oneshot::Sender<()>,
    },
    /// Answered at once: proves the event loop is alive.
    Health {
        reply: oneshot::Sender<()>,
    },
    Stop,
}

/// The handle every other task uses to reach the swarm.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    peers: watch::Receiver<usize>,
    peer_id: PeerId,
}

impl Client {
    /// Our own peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Puts `key = value` in the DHT with `Quorum::One` and the given TTL,
    /// storing it locally first. Completes when the put query ends: `Ok`
    /// means at least one other peer acknowledged it.
    pub async fn put(&self, key: RecordKey, value: Vec<u8>, ttl: Duration) -> Result<(), DhtError> {
        let record = kad::Record {
            key,
            value,
            publisher: Some(self.peer_id),
            expires: Some(std::time::Instant::now() + ttl),
        };
        let (reply, rx) = oneshot::channel();
        self.send(Command::Put { record, reply }).await?;
        rx.await.map_err(|_| DhtError::Stopped)?
    }

    /// Looks `key` up. Every copy found (local store first) arrives on the
    /// returned channel, which closes when the query ends. Nothing is
    /// validated here: callers must.
    pub async fn get(&self, key: RecordKey) -> Result<mpsc::Receiver<Found>, DhtError> {
        let (reply, rx) = mpsc::channel(32);
        self.send(Command::Get { key, reply }).await?;
        Ok(rx)
    }

    /// Announces us as a provider of `key` to the nodes closest to it (and
    /// in our own store); renewed by calling it again before the TTL.
    pub async fn provide(&self, key: RecordKey) -> Result<(), DhtError> {
        self.provide_at(key, Vec::new()).await
    }

    /// [`Client::provide`], announcing `addresses` with it. A DHT client has
    /// no confirmed address of its own, and storage nodes never hand out an
    /// announcement without one (libp2p keeps such records, but answers
    /// lookups only with providers whose addresses it knows).
    pub async fn provide_at(
        &self,
        key: RecordKey,
        addresses: Vec<Multiaddr>,
    ) -> Result<(), DhtError> {
        self.send(Command::Provide { key, addresses }).await
    }

    /// Stops announcing us as a provider of `key`.
    pub async fn stop_providing(&self, key: RecordKey) -> Result<(), DhtError> {
        self.send(Command::StopProviding { key }).await
    }

    /// The peers announced as providers of `key`, each once and at most
    /// [`MAX_PROVIDERS_PER_LOOKUP`]; the channel closes when the query ends.
    pub async fn get_providers(&self, key: RecordKey) -> Result<mpsc::Receiver<PeerId>, DhtError> {
        let (reply, rx) = mpsc::channel(MAX_PROVIDERS_PER_LOOKUP);
        self.send(Command::GetProviders { key, reply }).await?;
        Ok(rx)
    }

    /// Drops our own record for `key` from the local store, so we stop
    /// serving it; copies elsewhere expire at their TTL.
    pub async fn remove_local(&self, key: RecordKey) -> Result<(), DhtError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::RemoveLocal { key, reply }).await?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Completes when the event loop answers; for the watchdog's checks.
    pub async fn health(&self) -> Result<(), DhtError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Health { reply }).await?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Tells the event loop to close the swarm and return.
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }

    /// Number of peers in the routing table, updated as it changes. Wakes
    /// the publisher when the first peers appear.
    pub fn peers(&self) -> watch::Receiver<usize> {
        self.peers.clone()
    }

    async fn send(&self, cmd: Command) -> Result<(), DhtError> {
        self.commands.send(cmd).await.map_err(|_| DhtError::Stopped)
    }
}

/// Builds the swarm, binds every listen address and dials the bootstrap
/// peers. Returns the client, the event loop to spawn and the full listen
/// multiaddrs (with `/p2p/<peer id>`) to show the user.
pub async fn start(cfg: DhtConfig) -> Result<(Client, EventLoop, Vec<Multiaddr>), DhtError> {
    let peer_id = cfg.keypair.public().to_peer_id();
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (peers_tx, peers_rx) = watch::channel(0);
    let mut event_loop = EventLoop::new(cfg, rx, peers_tx)?;
    let addrs = event_loop.listen().await?;
    event_loop.dial_bootstrap();
    let client = Client {
        commands: tx,
        peers: peers_rx,
        peer_id,
    };
    Ok((client, event_loop, addrs))
}
