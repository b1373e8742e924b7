//! Sharing a release while downloading it: what makes a rack boot in the
//! time of one board. A process that shares (`phase-boot`, `phase-discover
//! --seed`) runs a small HTTP server of its own; for each release it
//! downloads it
//!
//! - holds the release (`manifest::holding`): the signed manifest and the
//!   chunks that verified so far are served under
//!   `/_release/{manifest_sha256}/{channel}/{arch}/…` as they arrive;
//! - announces itself as a holder of that release in the DHT (a provider
//!   record on the release key and its own signed record with that URL,
//!   see `record::release_key`), so other boards find it;
//! - looks for the other holders every few seconds and hands them to the
//!   download (`fetch::Swarm`), which asks them for chunks before the
//!   origin;
//! - and once done, keeps serving for a while ([`Linger`]) so the last
//!   boards of a rack still have sources.
//!
//! Nothing here verifies bytes (`fetch` does, per chunk) or chooses the
//! release (`client`).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use libp2p::identity::Keypair;
use libp2p::kad::RecordKey;

use super::client::{self, ClientError, Failure, Note};
use super::{Query, Session};
use crate::channel::ChannelArch;
use crate::dht;
use crate::fetch::{self, Checked, FetchTarget, Swarm, Tally};
use crate::http::{HttpError, HttpLimits, HttpServer, StatusSlot};
use crate::manifest::holding::{holding_path, Holding};
use crate::manifest::Catalog;
use crate::record::{holder_key, release_key, release_shard_key, shard_of, ManifestRecord};

/// How long a holder's record stays valid: a board shares for one boot.
const HOLDER_TTL: Duration = Duration::from_secs(600);
/// How often other holders are looked for during a download.
const LOOK_AGAIN: Duration = Duration::from_secs(2);
/// One look (announcements, then records) ends this long after it began.
const LOOK_LIMIT: Duration = Duration::from_secs(3);
/// At most this many holders' records are read per look.
const MAX_HOLDERS: usize = 32;
/// Announcing (one put and one provider record) gives up after this long:
/// the download goes on without it.
pub(crate) const ANNOUNCE_LIMIT: Duration = Duration::from_secs(5);

/// How long a process keeps serving a release it finished downloading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Stop once no chunk was asked for this long.
    pub idle: Duration,
    /// Stop after this long whatever is asked.
    pub max: Duration,
}

impl Default for Linger {
    /// Until 5 s without a request, at most 60 s: boards of a rack that
    /// started together ask within seconds of each other; a board should
    /// not wait long to boot for the sake of a straggler.
    fn default() -> Self {
        Linger {
            idle: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

/// How a download shares (`phase-discover --peer`, `--seed`,
/// `--seed-linger`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareConfig {
    /// Manifest URLs of holders known beforehand, asked besides any found.
    pub peers: Vec<String>,
    /// Serve and announce what is downloaded, on this address.
    pub seed: Option<SocketAddr>,
    pub linger: Linger,
    /// Upload cap of that server, bytes per second (0: none).
    pub rate: u64,
}

/// `--fetch`/`--fetch-all` along the client path, sharing as `share`
/// says: the files written (best provider's release) and where their
/// bytes came from.
pub fn fetch(
    session: &Session,
    query: &Query,
    target: &FetchTarget,
    share: &ShareConfig,
    note: &mut dyn FnMut(Note),
) -> Result<(Vec<PathBuf>, Tally), ClientError> {
    let sharing = share
        .seed
        .map(|listen| Sharing::start(listen, share.linger, share.rate))
        .transpose()
        .map_err(|e| ClientError::Share(e.to_string()))?;
    let take = |c: &Checked| {
        let run = |swarm: Swarm| {
            let from_dht = swarm.peers;
            // Holders named on the command line, and those found.
            let peers = || {
                let mut all = share.peers.clone();
                all.extend(from_dht.map_or_else(Vec::new, |p| p()));
                all
            };
            let swarm = Swarm {
                peers: Some(&peers),
                ..swarm
            };
            fetch::run(c, target, &query.limits, swarm)
        };
        let result = match &sharing {
            Some(s) => s.download(session, query, c, run),
            None => run(Swarm::default()),
        };
        Ok::<_, Failure>(result?)
    };
    let (_, fetched) = client::run(session, query, take, note)?;
    if let Some(s) = sharing {
        s.linger(session);
        s.stop();
    }
    Ok(fetched)
}

/// A process's share of the swarm: its HTTP server and what it holds.
pub struct Sharing {
    server: HttpServer,
    catalog: Arc<Catalog>,
    /// The server's metrics (`/metrics` on the share port): chunks served
    /// to other boards, and received by this download.
    metrics: Arc<crate::metrics::Metrics>,
    linger: Linger,
}

impl Sharing {
    /// Starts the server on `listen` (what it holds is added per download),
    /// sending at most `rate` bytes a second in all (0: no cap).
    pub fn start(listen: SocketAddr, linger: Linger, rate: u64) -> Result<Sharing, HttpError> {
        let catalog = Arc::new(Catalog::new(None, Vec::new(), Vec::new()));
        let metrics = crate::metrics::Metrics::new();
        let server = HttpServer::start(
            listen,
            catalog.clone(),
            None,
            metrics.clone(),
            StatusSlot::default(),
            HttpLimits {
                max_rate: rate,
                ..HttpLimits::default()
            },
        )?;
        Ok(Sharing {
            server,
            catalog,
            metrics,
            linger,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Runs `download` of the release `checked` with this process as one of
    /// its holders: announced, its chunks served as they verify, other
    /// holders found and handed to the download through its `Swarm`.
    pub fn download<T: Send>(
        &self,
        session: &Session,
        query: &Query,
        checked: &Checked,
        download: impl FnOnce(Swarm) -> T + Send,
    ) -> T {
        let ca = ChannelArch {
            channel: query.channel.clone(),
            arch: query.arch.clone(),
        };
        let signature = checked.signature.as_ref().map(|s| s.to_vec());
        let Some(holding) = Holding::new(ca.clone(), checked.manifest.to_vec(), signature) else {
            return download(Swarm::default());
        };
        let holding = Arc::new(holding);
        let sha = holding.manifest.sha256.clone();
        self.catalog.holdings().add(holding.clone());
        let own_url = self.url_towards(&checked.record.url, &ca, &sha);
        if let Some(url) = &own_url {
            // The timer is made inside the runtime: it needs its clock.
            let announced = session.rt.block_on(async {
                let put = announce(
                    &session.client,
                    &session.keypair,
                    &ca,
                    &sha,
                    url,
                    &checked.record.version,
                );
                tokio::time::timeout(ANNOUNCE_LIMIT, put).await
            });
            match announced {
                Ok(Ok(())) => log::info!("holding {ca} release {}: {url}", &sha[..16]),
                Ok(Err(e)) => log::warn!("cannot announce {url} as a holder: {e}"),
                Err(_) => log::warn!("cannot announce {url} as a holder: no answer in time"),
            }
        }
        // Holders are anyone's boards: the chunks they send are verified, so
        // publisher pins (`--trust`) are not for them.
        let query = &Query {
            trusted: Vec::new(),
            ..query.clone()
        };
        // A first look before the download starts, so holders already
        // there are asked from the first chunk on; then every few seconds.
        let found = Mutex::new(Vec::new());
        session.rt.block_on(look_once(
            &session.client,
            query,
            &sha,
            own_url.as_deref(),
            &found,
        ));
        let peers = || found.lock().map(|f| f.clone()).unwrap_or_default();
        let swarm = Swarm {
            peers: Some(&peers),
            holding: Some(&holding),
            metrics: Some(&self.metrics.chunks),
        };
        let look = look_for_holders(&session.client, query, &sha, own_url.as_deref(), &found);
        session.while_running(|| download(swarm), look)
    }

    /// Keeps serving what is held, on `session`'s runtime, until nothing was
    /// asked for `linger.idle` or `linger.max` passed.
    pub fn linger(&self, session: &Session) {
        let start = std::time::Instant::now();
        loop {
            let idle = self
                .catalog
                .holdings()
                .all()
                .iter()
                .map(|h| h.idle())
                .min()
                .unwrap_or(Duration::MAX);
            let left = self.linger.max.saturating_sub(start.elapsed());
            if idle >= self.linger.idle || left.is_zero() {
                return;
            }
            session.pause((self.linger.idle - idle).min(left));
        }
    }

    /// Stops serving.
    pub fn stop(self) {
        self.server.stop();
    }

    /// The URL other boards reach this holding at: the address this host
    /// uses towards the origin (same LAN, same route back), our port.
    fn url_towards(&self, origin_url: &str, ca: &ChannelArch, sha: &str) -> Option<String> {
        let listen = self.server.local_addr();
        let ip = if listen.ip().is_unspecified() {
            local_ip_towards(origin_url)?
        } else {
            listen.ip()
        };
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Some(format!(
            "http://{host}:{}{}",
            listen.port(),
            holding_path(ca, sha)
        ))
    }
}

/// The local address the kernel would send from to reach `url`'s host (a
/// UDP socket's `connect` picks the route; nothing is sent).
fn local_ip_towards(url: &str) -> Option<IpAddr> {
    let rest = url.strip_prefix("http://")?;
    let host_port = rest.split('/').next()?;
    let addr: SocketAddr = match host_port.parse() {
        Ok(a) => a,
        Err(_) => format!("{host_port}:80").parse().ok()?,
    };
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// `/ip4/IP/tcp/PORT/http` (or `/ip6/…`) of an `http://IP:PORT/…` URL.
fn http_multiaddr(url: &str) -> Option<libp2p::Multiaddr> {
    let host_port = url.strip_prefix("http://")?.split('/').next()?;
    let addr: SocketAddr = host_port.parse().ok()?;
    let ip = match addr.ip() {
        IpAddr::V4(v4) => format!("/ip4/{v4}"),
        IpAddr::V6(v6) => format!("/ip6/{v6}"),
    };
    // `/http` at the end: a libp2p TCP transport does not dial it (it is
    // not a libp2p listener).
    format!("{ip}/tcp/{}/http", addr.port()).parse().ok()
}

/// Puts this process's holder record for release `sha` of `ca` (naming
/// `url`, signed with `keypair`, our DHT identity) and announces it as a
/// holder.
pub(crate) async fn announce(
    client: &dht::Client,
    keypair: &Keypair,
    ca: &ChannelArch,
    sha: &str,
    url: &str,
    version: &str,
) -> Result<(), String> {
    let me = client.peer_id().to_string();
    let key = holder_key(&ca.channel, &ca.arch, sha, &me);
    let seq = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let record = ManifestRecord::new(url, &me, None, version)
        .sign(&key, keypair, seq, SystemTime::now() + HOLDER_TTL, sha)
        .and_then(|r| r.to_bytes())
        .map_err(|e| e.to_string())?;
    client
        .put(RecordKey::new(&key), record, HOLDER_TTL)
        .await
        .map_err(|e| e.to_string())?;
    // The announcement carries our HTTP address: libp2p passes on only
    // announcements with an address; nothing dials it (the record above
    // says where the chunks are, and `/http` is no libp2p transport).
    let address: Vec<_> = http_multiaddr(url).into_iter().collect();
    // Under the release key, where every version looks, and under our
    // shard of it, where holders past the first 20 are found.
    let shard = release_shard_key(&ca.channel, &ca.arch, sha, shard_of(&me));
    for key in [release_key(&ca.channel, &ca.arch, sha), shard] {
        client
            .provide_at(RecordKey::new(&key), address.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every [`LOOK_AGAIN`], the manifest URLs of the holders of release `sha`
/// (but `own`) into `found`. Runs until dropped.
pub(crate) async fn look_for_holders(
    client: &dht::Client,
    query: &Query,
    sha: &str,
    own: Option<&str>,
    found: &Mutex<Vec<String>>,
) {
    loop {
        tokio::time::sleep(LOOK_AGAIN).await;
        look_once(client, query, sha, own, found).await;
    }
}

/// One look for the holders of release `sha` (but `own`), into `found`;
/// `query` carries no publisher pins (see `Sharing::download`).
pub(crate) async fn look_once(
    client: &dht::Client,
    query: &Query,
    sha: &str,
    own: Option<&str>,
    found: &Mutex<Vec<String>>,
) {
    let until = tokio::time::Instant::now() + LOOK_LIMIT;
    let urls = super::session::holders(client, query, sha, MAX_HOLDERS, until)
        .await
        .unwrap_or_default();
    let urls: Vec<String> = urls
        .into_iter()
        .filter(|u| Some(u.as_str()) != own)
        .collect();
    log::debug!("{} other holder(s) of release {}", urls.len(), &sha[..16]);
    if let Ok(mut f) = found.lock() {
        *f = urls;
    }
}
