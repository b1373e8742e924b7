//! The task that owns the swarm: it `select!`s over swarm events, commands
//! from [`super::Client`]s and a redial timer, and never panics on what
//! peers send.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{self, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot, watch};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::hygiene;
use super::{Command, DhtConfig, DhtError, Found, KAD_PROTOCOL};
use crate::record::RefusalKind;

mod incoming;

/// Idle connections are closed after this long; routing-table entries keep
/// the addresses, so a later query simply dials again.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long binding the listen addresses may take.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Redial bootstrap peers we are not connected to, backing off from the
/// first value to the second. The cap is short because a provider started
/// before its bootstrap node must find it within seconds of it appearing.
const REDIAL_FIRST: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(5);

/// How often refused PUTs are summed up at INFO.
const REFUSAL_REPORT: Duration = Duration::from_secs(60);
/// How often expired records are purged from the store, so their slots
/// free up without waiting to be read (or for libp2p's hourly jobs).
const PURGE_EVERY: Duration = Duration::from_secs(5);

/// A bootstrap peer: its address and, when the address names it, its id.
struct Bootstrap {
    addr: Multiaddr,
    peer: Option<PeerId>,
}

/// Owns the swarm; see the module header.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    /// Routing-table size, for the publisher to retry when peers appear.
    peers: watch::Sender<usize>,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Bootstrap>,
    redial_delay: Duration,
    pending_put: HashMap<QueryId, oneshot::Sender<Result<(), DhtError>>>,
    pending_get: HashMap<QueryId, mpsc::Sender<Found>>,
    /// Provider lookups: where to send each provider, and those sent
    /// (every storing node answers with its own list; one copy each).
    pending_providers: HashMap<QueryId, (mpsc::Sender<PeerId>, HashSet<PeerId>)>,
    /// PUTs refused since the last report, by kind, for the periodic INFO line.
    refused: std::collections::BTreeMap<RefusalKind, u64>,
    /// Who sent each record we hold for others, for fair eviction.
    sources: hygiene::Sources,
    /// Where the provider announcements held for others came from.
    provider_sources: hygiene::ProviderSources,
    /// Highest `seq` seen per (key, publisher), against replays.
    seqs: hygiene::SeqMemory,
    /// The remote IP of each open connection, to know where a PUT came
    /// from (bounded by the connection limits).
    remote_ips: HashMap<ConnectionId, (PeerId, std::net::IpAddr)>,
    /// `--trust` on a node: store only records of these publishers.
    trusted_publishers: Vec<PeerId>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl EventLoop {
    pub(super) fn new(
        cfg: DhtConfig,
        commands: mpsc::Receiver<Command>,
        peers: watch::Sender<usize>,
    ) -> Result<Self, DhtError> {
        let (ttl, role, agent) = (cfg.record_ttl, cfg.role, cfg.agent);
        let hide_listen = !cfg.announce.is_empty();
        let use_mdns = cfg.mdns;
        let trusted_publishers = cfg.trusted_publishers;
        let metrics = cfg.metrics;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| DhtError::Transport(e.to_string()))?
            .with_behaviour(|key| {
                Behaviour::new(key, ttl, role, agent, hide_listen, use_mdns)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|e| DhtError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
            .build();
        for addr in cfg.announce {
            swarm.add_external_address(addr);
        }
        let bootstrap = cfg
            .bootstrap
            .into_iter()
            .map(|addr| {
                let peer = addr.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                });
                Bootstrap { addr, peer }
            })
            .collect();
        Ok(EventLoop {
            swarm,
            commands,
            peers,
            listen: cfg.listen,
            bootstrap,
            redial_delay: REDIAL_FIRST,
            pending_put: HashMap::new(),
            pending_get: HashMap::new(),
            pending_providers: HashMap::new(),
            refused: Default::default(),
            sources: Default::default(),
            provider_sources: Default::default(),
            seqs: Default::default(),
            remote_ips: HashMap::new(),
            trusted_publishers,
            metrics,
        })
    }

    /// Binds every listen address and waits until each has reported its
    /// concrete address(es). Returns them with `/p2p/<our id>` appended.
    pub(super) async fn listen(&mut self) -> Result<Vec<Multiaddr>, DhtError> {
        let mut listeners = Vec::new();
        for addr in self.listen.clone() {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| DhtError::Listen(addr.clone(), transport_error(&e)))?;
            listeners.push((id, addr));
        }
        let mut up = std::collections::HashSet::new();
        let mut addrs = Vec::new();
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while up.len() < listeners.len() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| DhtError::ListenTimeout(LISTEN_TIMEOUT))?;
            match event {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    up.insert(listener_id);
                    addrs.push(address);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    let addr = listeners
                        .iter()
                        .find(|(id, _)| *id == listener_id)
                        .map(|(_, a)| a.clone())
                        .unwrap_or_else(Multiaddr::empty);
                    let why = match reason {
                        Err(e) => e.to_string(),
                        Ok(()) => "listener closed".into(),
                    };
                    return Err(DhtError::Listen(addr, why));
                }
                SwarmEvent::ListenerError { error, .. } => {
                    log::warn!("p2p listener error: {error}");
                }
                other => self.handle_event(other),
            }
        }
        // Interfaces of a 0.0.0.0 listener report one by one; give the rest a
        // moment so the printed list is complete.
        let grace = tokio::time::sleep(Duration::from_millis(100));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => break,
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
                    other => self.handle_event(other),
                },
            }
        }
        let me = *self.swarm.local_peer_id();
        Ok(addrs
            .into_iter()
            .map(|a| a.with(Protocol::P2p(me)))
            .collect())
    }

    /// Adds bootstrap peers to the routing table and dials them.
    pub(super) fn dial_bootstrap(&mut self) {
        for b in &self.bootstrap {
            if let Some(peer) = b.peer {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, b.addr.clone());
            }
        }
        self.redial();
    }

    /// Dials every bootstrap peer we have no connection to.
    fn redial(&mut self) {
        let any_connection = self.swarm.connected_peers().next().is_some();
        for b in &self.bootstrap {
            let connected = match b.peer {
                Some(p) => self.swarm.is_connected(&p),
                // Without a peer id we cannot tell which connection is theirs;
                // any connection means we have joined.
                None => any_connection,
            };
            if !connected {
                log::debug!("dialling bootstrap peer {}", b.addr);
                if let Err(e) = self.swarm.dial(b.addr.clone()) {
                    log::debug!("cannot dial bootstrap peer {}: {e}", b.addr);
                }
            }
        }
    }

    /// Runs until a `Stop` command arrives or every client is gone.
    pub async fn run(mut self) {
        let redial = tokio::time::sleep(self.redial_delay);
        tokio::pin!(redial);
        let mut report = tokio::time::interval(REFUSAL_REPORT);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(PURGE_EVERY);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Stop) | None => break,
                    Some(cmd) => self.handle_command(cmd),
                },
                _ = &mut redial => {
                    let missing = self.bootstrap.iter().any(|b| match b.peer {
                        Some(p) => !self.swarm.is_connected(&p),
                        None => self.swarm.connected_peers().next().is_none(),
                    });
                    if missing {
                        self.redial();
                        self.redial_delay = (self.redial_delay * 2).min(REDIAL_MAX);
                    } else {
                        self.redial_delay = REDIAL_FIRST;
                    }
                    redial.as_mut().reset(tokio::time::Instant::now() + self.redial_delay);
                }
                _ = report.tick() => self.report_refusals(),
                _ = purge.tick() => {
                    let store = self.swarm.behaviour_mut().kad.store_mut();
                    let n = hygiene::purge_expired(store, &mut self.sources, std::time::Instant::now());
                    hygiene::forget_gone_providers(store, &mut self.provider_sources);
                    if n > 0 {
                        log::debug!("purged {n} expired record(s)");
                    }
                    self.update_gauges();
                }
            }
        }
        for (_, reply) in self.pending_put.drain() {
            let _ = reply.send(Err(DhtError::Stopped));
        }
        log::debug!("DHT event loop stopped");
    }

    fn handle_command(&mut self, cmd: Command) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match cmd {
            Command::Put { record, reply } => {
                // Our own record from now on: never pushed out for fairness.
                hygiene::forget(&mut self.sources, &record.key);
                match kad.put_record(record, kad::Quorum::One) {
                    Ok(id) => {
                        self.pending_put.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(DhtError::Store(format!("{e:?}"))));
                    }
                }
            }
            Command::Get { key, reply } => {
                let id = kad.get_record(key);
                self.pending_get.insert(id, reply);
            }
            Command::RemoveLocal { key, reply } => {
                kad.remove_record(&key);
                let _ = reply.send(());
            }
            Command::Provide { key, addresses } => {
                for a in addresses {
                    self.swarm.add_external_address(a);
                }
                let kad = &mut self.swarm.behaviour_mut().kad;
                if let Err(e) = kad.start_providing(key) {
                    log::warn!("cannot announce as provider: {e:?}");
                }
            }
            Command::StopProviding { key } => kad.stop_providing(&key),
            Command::GetProviders { key, reply } => {
                let id = kad.get_providers(key);
                self.pending_providers.insert(id, (reply, HashSet::new()));
            }
            Command::Health { reply } => {
                let _ = reply.send(());
            }
            Command::Stop => {}
        }
    }

    /// The store and routing-table gauges, refreshed with each purge.
    fn update_gauges(&mut self) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        let stored = self.swarm.behaviour_mut().kad.store_mut().records().count();
        m.dht.records_stored.set(stored as i64);
        m.dht
            .routing_table_peers
            .set(self.routing_table_size() as i64);
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            use libp2p::metrics::Recorder;
            m.p2p.record(&event);
            match &event {
                SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => m.p2p.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => m.p2p.record(e),
                SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => m.p2p.record(e),
                _ => {}
            }
        }
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.handle_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Peers that dialled us are routable only through the listen
                // addresses they announce, and only if they speak our DHT.
                let kad_proto = StreamProtocol::new(KAD_PROTOCOL);
                if info.protocols.contains(&kad_proto) {
                    for addr in info.listen_addrs.into_iter().take(16) {
                        if is_dialable(&addr) {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found))) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for (peer, addr) in found.into_iter().take(64) {
                    log::debug!("mDNS: found {peer} at {addr}");
                    kad.add_address(&peer, addr);
                }
                // Learn the rest of the DHT through them.
                let _ = kad.bootstrap();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                    self.remote_ips.insert(connection_id, (peer_id, ip));
                }
                log::debug!(
                    "connected to {peer_id} at {}",
                    endpoint.get_remote_address()
                );
                let is_bootstrap = endpoint.is_dialer()
                    && self.bootstrap.iter().any(|b| {
                        b.peer == Some(peer_id) || b.addr == *endpoint.get_remote_address()
                    });
                if is_bootstrap {
                    // Joining: learn the peers near us. Fails only with no known
                    // peers, which cannot be the case right after connecting.
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                self.remote_ips.remove(&connection_id);
                log::debug!("disconnected from {peer_id}");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                log::debug!("dial {peer_id:?} failed: {error}");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                log::debug!("listening on {address}");
            }
            _ => {}
        }
    }

    fn handle_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::PutRecord(res) => {
                    if let Some(reply) = self.pending_put.remove(&id) {
                        let res = res.map(|_| ()).map_err(|e| DhtError::Put {
                            key: String::from_utf8_lossy(e.key().as_ref()).into_owned(),
                            reason: put_error(&e),
                        });
                        let _ = reply.send(res);
                    }
                }
                QueryResult::GetRecord(res) => self.handle_get(id, res, step.last),
                QueryResult::GetProviders(res) => {
                    let done = match res {
                        Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                            if let Some((reply, sent)) = self.pending_providers.get_mut(&id) {
                                for p in providers {
                                    // The channel holds every distinct one a
                                    // lookup may take: none is dropped for
                                    // arriving late behind a flood's copies.
                                    if sent.len() < super::MAX_PROVIDERS_PER_LOOKUP
                                        && sent.insert(p)
                                    {
                                        let _ = reply.try_send(p);
                                    }
                                }
                            }
                            step.last
                        }
                        _ => true,
                    };
                    if done {
                        self.pending_providers.remove(&id);
                    }
                }
                QueryResult::StartProviding(Err(e)) => log::debug!("provider announcement: {e}"),
                QueryResult::StartProviding(Ok(ok)) => {
                    log::debug!("provider announcement sent: {:?}", ok.key)
                }
                QueryResult::Bootstrap(Err(e)) => log::debug!("DHT bootstrap: {e}"),
                _ => {}
            },
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        connection,
                        record: Some(record),
                    },
            } => {
                let source = hygiene::Source {
                    peer: source,
                    ip: self.remote_ips.get(&connection).map(|(_, ip)| *ip),
                };
                self.store_if_valid(source, record)
            }
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(r) },
            } => {
                self.add_provider_if_valid(r);
            }
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } => {
                if is_new_peer {
                    log::debug!("routing table: added {peer}");
                }
                let n = self.routing_table_size();
                self.peers.send_replace(n);
            }
            _ => {}
        }
    }

    fn handle_get(&mut self, id: QueryId, res: kad::GetRecordResult, last: bool) {
        let Some(reply) = self.pending_get.get(&id) else {
            return;
        };
        let done = match res {
            Ok(kad::GetRecordOk::FoundRecord(peer_record)) => {
                let found = Found {
                    record: peer_record.record,
                    from: peer_record.peer,
                };
                // A full channel means the caller is not keeping up or gone;
                // dropping a copy is better than stalling the swarm.
                let gone = reply.try_send(found).is_err() && reply.is_closed();
                last || gone
            }
            Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => true,
            Err(e) => {
                log::debug!("DHT get: {e}");
                true
            }
        };
        if done {
            self.pending_get.remove(&id);
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
        }
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }
}

/// The IP of a remote multiaddr.
fn ip_of(addr: &Multiaddr) -> Option<std::net::IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    })
}

/// Listen addresses worth dialling: not the unspecified address.
fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

fn put_error(e: &kad::PutRecordError) -> String {
    match e {
        kad::PutRecordError::QuorumFailed { success, .. } if success.is_empty() => {
            "no peer stored it (no DHT peers reachable yet)".into()
        }
        kad::PutRecordError::QuorumFailed {
            success, quorum, ..
        } => {
            format!("only {} of {quorum} peers stored it", success.len())
        }
        kad::PutRecordError::Timeout { .. } => "timed out".into(),
    }
}

/// A transport error in one line, with the OS reason (e.g. "Address already in use").
fn transport_error<E: std::error::Error>(e: &E) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}
