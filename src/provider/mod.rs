//! `plasmd serve` and `plasmd node`: wiring the pieces together.
//!
//! Data flows one way: config → catalog (artifacts) → manifests → HTTP and
//! DHT. `serve` binds HTTP first (so the advertised URL works before anyone
//! can find it), starts the swarm, then runs the watcher and the publisher
//! on one current-thread tokio runtime; one shutdown signal stops them all,
//! in order: publisher (un-advertise), DHT, HTTP. This module owns that
//! order and the lines printed for the user; its rooms are [`publisher`]
//! (what to put in the DHT, and when), `changes` (artifact changes →
//! rescans) and `probes` (answering the board's health check).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{watch, Notify};

use crate::board::health::{self, HealthChecks};

mod changes;
pub mod mirror;
mod probes;
pub mod publisher;
use crate::board::notify::Notifier;
use crate::board::partition;
use crate::board::watchdog::{Watchdog, WatchdogError};
use crate::channel::ChannelArch;
use crate::config::{NodeConfig, P2pConfig, ServeConfig};
use crate::dht::{self, DhtConfig, DhtError, Role};
use crate::http::StatusSlot;
use crate::http::{HttpError, HttpServer};
use crate::identity::{self, IdentityError};
use crate::manifest::Catalog;
use crate::metrics::Metrics;
use crate::netboot::Netboot;
use crate::shutdown::{self, Shutdown};
use crate::status::StatusSource;
use publisher::{Publisher, SeqCounter, SeqError, Snapshot};

/// Everything between "stop" and exit must fit in the 2 s we promise.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(1500);

/// Errors of `serve` and `node`.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Seq(#[from] SeqError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Dht(#[from] DhtError),
    #[error(transparent)]
    Watchdog(#[from] WatchdogError),
    #[error(transparent)]
    Netboot(#[from] crate::netboot::NetbootError),
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
}

impl ProviderError {
    /// 2 for what the user must fix (key file, address in use), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProviderError::Identity(_)
            | ProviderError::Seq(_)
            | ProviderError::Http(_)
            | ProviderError::Netboot(_) => 2,
            ProviderError::Dht(DhtError::Listen(..)) => 2,
            _ => 1,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ProviderError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProviderError::Runtime)
}

fn dht_config(
    p2p: &P2pConfig,
    keypair: libp2p::identity::Keypair,
    metrics: Arc<Metrics>,
) -> DhtConfig {
    DhtConfig {
        metrics: Some(metrics),
        keypair,
        listen: p2p.listen.clone(),
        bootstrap: p2p.bootstrap.clone(),
        announce: p2p.announce.clone(),
        record_ttl: p2p.record_ttl,
        mdns: p2p.mdns,
        role: Role::Server,
        agent: format!("plasmd/{}", env!("CARGO_PKG_VERSION")),
        trusted_publishers: p2p.trusted_publishers.clone(),
    }
}

fn print_listen_addrs(addrs: &[Multiaddr]) {
    for a in addrs {
        println!("p2p listening on {a}");
    }
}

/// Picks the address to show as "--bootstrap": an announced address if
/// there is one (that is where peers reach us), else loopback, the one that
/// works on this machine for sure.
fn bootstrap_hint(p2p: &P2pConfig, addrs: &[Multiaddr], peer: PeerId) -> Option<Multiaddr> {
    if let Some(a) = p2p.announce.first() {
        return Some(a.clone().with_p2p(peer).unwrap_or_else(|a| a));
    }
    addrs
        .iter()
        .find(|a| a.to_string().starts_with("/ip4/127."))
        .or_else(|| addrs.first())
        .cloned()
}

/// Runs `plasmd serve` until SIGTERM/SIGINT.
pub fn serve(cfg: ServeConfig) -> Result<(), ProviderError> {
    let keypair = identity::load_or_create(&cfg.p2p.identity)?;
    let peer_id = keypair.public().to_peer_id();
    let seq = SeqCounter::load(Some(cfg.p2p.identity.with_extension("seq")))?;
    let catalog = Arc::new(
        Catalog::new(
            cfg.artifacts.clone(),
            cfg.channels.clone(),
            cfg.archs.clone(),
        )
        .serving()
        .with_signer(cfg.sign_key.clone()),
    );
    if let Some(board) = &cfg.board {
        log::info!("board profile {}: {}", board.name, board.description);
    }
    // Armed before anything slow: from here on the board resets unless
    // plasmd comes up healthy.
    let watchdog = match cfg.board.as_ref().and_then(|b| b.watchdog.as_ref()) {
        Some(spec) => Watchdog::open(spec)?,
        None => None,
    };

    // HTTP first: the URL we advertise must already answer.
    raise_fd_limit();
    let metrics = Metrics::new();
    let status = StatusSlot::default();
    let http = HttpServer::start(
        cfg.http_listen,
        catalog.clone(),
        cfg.netboot.as_ref().map(|n| n.cache.clone()),
        metrics.clone(),
        status.clone(),
        cfg.http_limits,
    )?;
    let base_url = match &cfg.external_url {
        Some(u) => u.clone(),
        None => derived_base_url(http.local_addr()),
    };
    println!("plasmd {} peer id {peer_id}", env!("CARGO_PKG_VERSION"));
    println!("HTTP listening on {}", http.local_addr());
    let netboot = match &cfg.netboot {
        Some(n) => {
            let nb = Netboot::start(n.clone(), http.local_addr().port(), metrics.netboot.clone())?;
            println!(
                "netboot: answering firmware (ProxyDHCP {} and {}, TFTP {}); boards boot {}",
                n.dhcp.dhcp,
                n.dhcp.pxe,
                nb.tftp_addr(),
                n.default
            );
            Some(nb)
        }
        None => None,
    };

    let rt = runtime()?;
    let result = rt.block_on(async {
        let (client, event_loop, addrs) =
            dht::start(dht_config(&cfg.p2p, keypair.clone(), metrics.clone())).await?;
        print_listen_addrs(&addrs);
        // Until now `/status.json` and the page answered 503: the addresses
        // were not known yet.
        let shown = if cfg.p2p.announce.is_empty() {
            &addrs
        } else {
            &cfg.p2p.announce
        };
        let _ = status.set(StatusSource {
            peer_id: peer_id.to_string(),
            addrs: shown.iter().map(ToString::to_string).collect(),
            base_url: base_url.clone(),
            refresh_interval: cfg.dht.refresh_interval,
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            netboot: netboot.is_some(),
        });
        let dht_task = tokio::spawn(event_loop.run());

        let (trigger, shutdown) = shutdown::channel();
        shutdown::on_signals(trigger).map_err(ProviderError::Runtime)?;

        let (snap_tx, snap_rx) = watch::channel(Snapshot::new());
        let rescan = Arc::new(Notify::new());
        let watcher = tokio::spawn(changes::run(
            catalog.clone(),
            snap_tx,
            rescan.clone(),
            shutdown.clone(),
        ));
        let mirrors: Vec<_> = cfg
            .mirror
            .iter()
            .flat_map(|m| m.channel_archs.iter().map(move |ca| (m, ca)))
            .map(|(m, ca)| {
                let mirror = mirror::Mirror {
                    ca: ca.clone(),
                    cfg: m.clone(),
                    client: client.clone(),
                    keypair: keypair.clone(),
                    catalog: catalog.clone(),
                    base_url: base_url.clone(),
                    rescan: rescan.clone(),
                    metrics: metrics.clone(),
                };
                tokio::spawn(mirror.run(shutdown.clone()))
            })
            .collect();
        // On a board without --artifacts, the root is the netboot partition.
        let tracker = match (&cfg.board, &cfg.artifacts) {
            (Some(board), None) => Some(tokio::spawn(partition::track(
                board.clone(),
                catalog.clone(),
                rescan,
                metrics.clone(),
                shutdown.clone(),
            ))),
            _ => None,
        };
        let notifier = Notifier::from_env();
        notifier.ready();
        let health = tokio::spawn(health::supervise(
            HealthChecks {
                probes: vec![
                    Box::new(probes::DhtProbe(client.clone())),
                    Box::new(http.probe()),
                ],
                catalog: catalog.clone(),
                metrics: metrics.clone(),
            },
            watchdog,
            notifier,
            shutdown.clone(),
        ));
        let publisher = Publisher::new(
            client.clone(),
            keypair,
            seq,
            base_url.clone(),
            cfg.provider_name.clone(),
            cfg.dht,
            metrics.clone(),
        );
        let pub_task = tokio::spawn(publisher.run(snap_rx, shutdown.clone()));

        print_advertised(&cfg, &catalog, &base_url, &addrs, peer_id);

        wait_then_stop(shutdown, async move {
            let _ = pub_task.await;
            for m in mirrors {
                let _ = m.await;
            }
            let _ = watcher.await;
            let _ = health.await;
            if let Some(t) = tracker {
                let _ = t.await;
            }
            client.stop().await;
            let _ = dht_task.await;
        })
        .await;
        Ok(())
    });
    if let Some(nb) = netboot {
        nb.stop();
    }
    http.stop();
    result
}

/// Raises the soft descriptor limit to the hard one: a boot storm is many
/// connections at once, and the HTTP budget and the DHT's limits are sized
/// from it. Where it cannot be raised, plasmd runs with what it has.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    // Past this, more descriptors buy nothing (the HTTP budget is capped).
    let want = hard.min(1 << 20);
    if soft < want {
        match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
            Ok(()) => log::debug!("raised the descriptor limit from {soft} to {want}"),
            Err(e) => log::info!("descriptor limit stays at {soft}: {e}"),
        }
    }
}

/// The start-up lines a user copies from: what is advertised and the
/// `phase-discover` command that finds it.
fn print_advertised(
    cfg: &ServeConfig,
    catalog: &Catalog,
    base_url: &str,
    addrs: &[Multiaddr],
    peer_id: PeerId,
) {
    let cas = catalog.channel_archs().unwrap_or_default();
    for ca in &cas {
        println!("advertising {}", Publisher::url(base_url, ca));
    }
    for line in mirror_lines(cfg).lines() {
        println!("{}", line.trim_start());
    }
    match (&cfg.artifacts, cas.is_empty()) {
        (Some(dir), true) => println!(
            "nothing to advertise yet: no <channel>/<arch> directories under {}",
            dir.display()
        ),
        (None, _) => println!("artifacts: on the board's netboot partition, once it is found"),
        _ => {}
    }
    let first = cas.first().cloned().unwrap_or(ChannelArch {
        channel: "stable".into(),
        arch: "arm64".into(),
    });
    if let Some(addr) = bootstrap_hint(&cfg.p2p, addrs, peer_id) {
        println!(
            "find it with: phase-discover --channel {} --arch {} --bootstrap {addr}",
            first.channel, first.arch
        );
    }
    flush_stdout();
}

/// Runs `plasmd node` until SIGTERM/SIGINT.
pub fn node(cfg: NodeConfig) -> Result<(), ProviderError> {
    let keypair = identity::load_or_create(&cfg.p2p.identity)?;
    let peer_id = keypair.public().to_peer_id();
    raise_fd_limit();
    let metrics = Metrics::new();
    // Storage nodes serve no artifacts: an HTTP server only for /metrics
    // (and /healthz), and only when asked.
    let http = match cfg.metrics_listen {
        Some(addr) => {
            let empty = Arc::new(Catalog::new(None, vec![], vec![]));
            let server = HttpServer::start(
                addr,
                empty,
                None,
                metrics.clone(),
                StatusSlot::default(),
                Default::default(),
            )?;
            println!("metrics on http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let rt = runtime()?;
    let result = rt.block_on(async {
        let (client, event_loop, addrs) =
            dht::start(dht_config(&cfg.p2p, keypair, metrics)).await?;
        println!(
            "plasmd {} node, peer id {peer_id}",
            env!("CARGO_PKG_VERSION")
        );
        print_listen_addrs(&addrs);
        flush_stdout();
        let dht_task = tokio::spawn(event_loop.run());
        let (trigger, shutdown) = shutdown::channel();
        shutdown::on_signals(trigger).map_err(ProviderError::Runtime)?;
        wait_then_stop(shutdown, async move {
            client.stop().await;
            let _ = dht_task.await;
        })
        .await;
        Ok(())
    });
    if let Some(h) = http {
        h.stop();
    }
    result
}

/// Waits for the shutdown signal, then runs `stop` within the budget.
async fn wait_then_stop(mut shutdown: Shutdown, stop: impl std::future::Future<Output = ()>) {
    shutdown.wait().await;
    if tokio::time::timeout(SHUTDOWN_BUDGET, stop).await.is_err() {
        log::warn!("shutdown took longer than {SHUTDOWN_BUDGET:?}; exiting anyway");
    }
}

/// Tests and scripts read our stdout through a pipe; make lines appear now.
fn flush_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// `plasmd serve --check-config`: what would be advertised, from a scan
/// of the artifacts tree as `serve` would make it, without binding or
/// publishing anything.
pub fn describe(cfg: &ServeConfig) -> String {
    let mirrored = mirror_lines(cfg);
    let Some(root) = &cfg.artifacts else {
        return "  artifacts: on the board's netboot partition; nothing to show until it is found\n"
            .into();
    };
    let catalog = Catalog::new(Some(root.clone()), cfg.channels.clone(), cfg.archs.clone())
        .with_signer(cfg.sign_key.clone());
    let base = cfg
        .external_url
        .clone()
        .unwrap_or_else(|| derived_base_url(cfg.http_listen));
    let manifests = match catalog.rescan() {
        Ok(m) => m,
        Err(e) => return format!("  nothing to advertise: {e}\n{mirrored}"),
    };
    if manifests.is_empty() {
        return format!(
            "  nothing to advertise: no <channel>/<arch> directories under {}\n{mirrored}",
            root.display()
        );
    }
    let mut out = String::new();
    for (ca, m) in &manifests {
        let bytes: u64 = m.artifacts.values().map(|a| a.size).sum();
        let signed = match (&m.release, &m.signature) {
            (Some(r), _) => format!("release_seq {} signed by {}", r.release_seq, r.key_id),
            (None, Some(_)) => {
                "signed, but no release_seq: boards with a release key will refuse it".into()
            }
            (None, None) => "unsigned".into(),
        };
        out.push_str(&format!(
            "  {ca}: version {}, {} file(s), {bytes} bytes, {signed}\n    -> {}\n",
            m.version,
            m.artifacts.len(),
            Publisher::url(&base, ca)
        ));
    }
    out + &mirrored
}

/// One line per mirrored channel/arch: what it follows and where it keeps
/// it.
fn mirror_lines(cfg: &ServeConfig) -> String {
    let Some(m) = &cfg.mirror else {
        return String::new();
    };
    m.channel_archs
        .iter()
        .map(|ca| {
            format!(
                "  {ca}: mirrored from other providers (releases signed by {}), kept in {}\n",
                m.release_keys.ids(),
                m.dir.join(&ca.channel).join(&ca.arch).display()
            )
        })
        .collect()
}

/// `http://<host>:<port>` for the bound HTTP address: the address itself,
/// or for an unspecified one (`0.0.0.0`, `::`) the first non-loopback
/// interface address.
fn derived_base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match first_interface_address() {
            Some((ip, ifname)) => {
                log::info!(
                    "advertising interface {ifname} address {ip} (HTTP listens on {addr}; set --external-url to choose)"
                );
                ip
            }
            None => {
                log::warn!("no non-loopback interface address found; advertising 127.0.0.1 (set --external-url)");
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
        }
    } else {
        addr.ip()
    };
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}", addr.port()),
    }
}

/// The first up, non-loopback IPv4 interface address (IPv6 if there is no
/// IPv4), with the interface's name.
fn first_interface_address() -> Option<(IpAddr, String)> {
    use nix::net::if_::InterfaceFlags;
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs().ok()?.collect();
    let usable = |a: &&nix::ifaddrs::InterfaceAddress| {
        a.flags.contains(InterfaceFlags::IFF_UP) && !a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
    };
    let v4 = addrs.iter().filter(usable).find_map(|a| {
        let sin = a.address.as_ref()?.as_sockaddr_in()?;
        Some((IpAddr::V4(sin.ip()), a.interface_name.clone()))
    });
    v4.or_else(|| {
        addrs.iter().filter(usable).find_map(|a| {
            let sin6 = a.address.as_ref()?.as_sockaddr_in6()?;
            let ip = sin6.ip();
            // Link-local addresses need a zone id in URLs; skip them.
            if (ip.segments()[0] & 0xffc0) == 0xfe80 {
                return None;
            }
            Some((IpAddr::V6(ip), a.interface_name.clone()))
        })
    })
}
