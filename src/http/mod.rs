//! The HTTP server boards download from: a bounded HTTP/1.1 server on one
//! event loop of its own (a current-thread tokio runtime on the `http`
//! thread; the DHT keeps its own runtime).
//!
//! Routes: `GET`/`HEAD` `/{channel}/{arch}/manifest.json`,
//! `/{channel}/{arch}/{file}` (`?have`: its chunk list),
//! `/_release/{manifest_sha256}/{channel}/{arch}/…` (a release by its
//! manifest's hash, possibly still downloading), `/healthz`, `/metrics`
//! and the status documents; `404` for anything else, `405` for other
//! methods. When a rack of boards powers on, every board asks at
//! once, so the server is built for that moment:
//!
//! - every connection is a small task on the loop: an idle or slow client
//!   costs a socket and, while a head arrives, a buffer; never a thread;
//! - file bodies go out with non-blocking `sendfile` (`conn`), small
//!   responses in one write, with `TCP_NODELAY`;
//! - every wait is bounded by a deadline, and a response by a minimum
//!   transfer rate ([`HttpLimits`]);
//! - a connection budget from the descriptor limit; under pressure the
//!   longest-idle connections give way, then those of the address holding
//!   the most (`budget`); `503` only when descriptors truly run out;
//! - `/healthz` is answered by the loop like any request, and never waits
//!   behind a download; the board's health check asks the loop itself
//!   ([`LoopProbe`]).
//!
//! The parts: `parse` (request heads, ranges), `route` (what a target
//! asks for), `conn` (a
//! connection's life and its I/O), `files` (what to answer), `holding`
//! (what to answer for a release by its manifest hash), `budget`
//! (which connection gives way). (tiny_http, the first choice, reads
//! request heads without any size bound — upstream tiny-http#56 — and has no
//! deadlines, so these limits need control of the connection itself.) This
//! module does not scan or hash files; `manifest` does.

mod answer;
mod budget;
mod conn;
mod files;
mod holding;
mod pace;
mod parse;
mod route;
mod warm;

pub use parse::fuzz_request;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::manifest::Catalog;
use crate::metrics::{Metrics, RequestLabels};
use prometheus_client::metrics::counter::Counter;

/// Where `/status.json` comes from, filled in once known (the URL depends
/// on the address HTTP bound).
pub type StatusSlot = Arc<std::sync::OnceLock<crate::status::StatusSource>>;
use budget::{Admission, Registry};
use warm::Warmer;

/// Limits a deployment may tune (`--http-min-rate`, `--http-rate-window`;
/// a booting board's share port, `phase.share_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// All responses together send at most this many bytes per second (0:
    /// no cap): a board sharing chunks while it boots keeps CPU and link
    /// for its own download.
    pub max_rate: u64,
    /// A response slower than this many bytes per second, averaged over
    /// `rate_window`, is cut off: a client that stopped reading, or reads a
    /// segment now and then, holds nothing for long.
    pub min_rate: u64,
    /// The window the minimum rate is averaged over.
    pub rate_window: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_rate: 0,
            min_rate: 4096,
            rate_window: Duration::from_secs(30),
        }
    }
}

/// Descriptors kept back from the connection budget for everything else
/// plasmd opens: the DHT's connections (capped in `dht` at 640 established
/// and 192 in handshake), listeners, inotify, the watchdog, artifacts
/// being hashed, and refused connections being answered (at most
/// `budget::MAX_REFUSING`; lingering closes of admitted connections are
/// inside the budget).
const FD_RESERVE: u64 = 1024;
/// The budget never exceeds this, whatever the descriptor limit: each
/// connection also costs kernel socket memory.
const MAX_CONNECTIONS: u64 = 65_536;
/// Pending connections the kernel queues for us (capped by
/// `net.core.somaxconn`): a rack connecting at once is not made to retry.
const LISTEN_BACKLOG: u32 = 4096;

/// Threads that read cold files ahead of `sendfile`, and their stacks.
const BLOCKING_THREADS: usize = 4;
const BLOCKING_STACK: usize = 128 * 1024;

/// How long `stop` waits for downloads in progress. A board fetching a
/// rootfs over a slow link must not hold the process past the 2 s shutdown
/// promise; it resumes against this or another provider.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {0}: {1}")]
    Bind(SocketAddr, String),
    #[error("cannot start the HTTP loop: {0}")]
    Start(io::Error),
}

/// A running HTTP server; [`HttpServer::stop`] ends it.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    probe: mpsc::Sender<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

/// Asks the HTTP loop to answer, for the board's health check: a loop that
/// answers is turning, whatever its connections are doing.
#[derive(Clone)]
pub struct LoopProbe(mpsc::Sender<oneshot::Sender<()>>);

impl LoopProbe {
    /// `true` once the loop answered; never resolves if it is wedged (the
    /// caller bounds the wait).
    pub async fn turns(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.is_ok() && rx.await.is_ok()
    }
}

/// What every connection task on the loop shares.
struct Ctx {
    catalog: Arc<Catalog>,
    /// The prepared netboot tree served under `/_netboot/`, if netboot is on.
    netboot: Option<PathBuf>,
    metrics: Arc<Metrics>,
    /// Set once the provider knows its peer id and URL.
    status: StatusSlot,
    limits: HttpLimits,
    /// The whole server's upload cap (`limits.max_rate`), if any.
    cap: Option<Rc<pace::UploadCap>>,
    /// The bounded pool that reads cold file windows off the loop.
    warmer: Warmer,
    registry: RefCell<Registry>,
    /// Set on stop: no more keep-alive.
    stopping: Cell<bool>,
    /// The `Date` header, formatted once a second.
    date: RefCell<(u64, String)>,
    /// This loop's handles on the request counters: looking one up in the
    /// shared family takes its lock and hashes the labels, which cost a
    /// measurable share of a small response's time.
    counters: RefCell<HashMap<(&'static str, u16), Counter>>,
    /// The documents made for the asking (`/metrics`, `/status.json`, the
    /// page), each made at most once a second: a client asking in a loop
    /// costs copies, not rebuilds of the whole catalog or registry, on the
    /// loop boards download from. Emptied every second, so bounded.
    generated: RefCell<(u64, HashMap<Generated, Vec<u8>>)>,
}

/// A document made for the asking; see `Ctx::generated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Generated {
    Metrics,
    StatusJson,
    /// The status page without auto-refresh (see `status::page_with_refresh`).
    Page,
}

impl Ctx {
    fn new(
        catalog: Arc<Catalog>,
        netboot: Option<PathBuf>,
        metrics: Arc<Metrics>,
        status: StatusSlot,
        limits: HttpLimits,
        budget: usize,
    ) -> Self {
        Ctx {
            catalog,
            netboot,
            metrics,
            status,
            limits,
            cap: pace::UploadCap::new(limits.max_rate),
            warmer: Warmer::new(BLOCKING_THREADS),
            registry: RefCell::new(Registry::new(budget)),
            stopping: Cell::new(false),
            date: RefCell::new((0, String::new())),
            counters: RefCell::default(),
            generated: RefCell::default(),
        }
    }

    #[cfg(test)]
    fn for_tests() -> Self {
        Ctx::new(
            Arc::new(Catalog::new(None, vec![], vec![])),
            None,
            Metrics::new(),
            StatusSlot::default(),
            HttpLimits::default(),
            16,
        )
    }

    /// Counts an answered request under its route class and status.
    fn count_request(&self, route: &'static str, status: u16) {
        let mut counters = self.counters.borrow_mut();
        counters
            .entry((route, status))
            .or_insert_with(|| {
                self.metrics
                    .http
                    .requests
                    .get_or_create(&RequestLabels { route, status })
                    .clone()
            })
            .inc();
    }

    /// `what`, made by `make` unless it was made this second.
    fn generated(&self, what: Generated, make: impl FnOnce() -> String) -> Vec<u8> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut cache = self.generated.borrow_mut();
        if cache.0 != secs {
            *cache = (secs, HashMap::new());
        }
        cache
            .1
            .entry(what)
            .or_insert_with(|| make().into_bytes())
            .clone()
    }

    fn date(&self) -> String {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut cached = self.date.borrow_mut();
        if cached.0 != secs || cached.1.is_empty() {
            *cached = (secs, crate::time::http_date(now));
        }
        cached.1.clone()
    }
}

impl HttpServer {
    /// Binds `listen` and starts the loop on a thread of its own; serves
    /// `catalog`'s files, and `netboot`'s under `/_netboot/` if given.
    pub fn start(
        listen: SocketAddr,
        catalog: Arc<Catalog>,
        netboot: Option<PathBuf>,
        metrics: Arc<Metrics>,
        status: StatusSlot,
        limits: HttpLimits,
    ) -> Result<Self, HttpError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            // First reads of cold files happen here (see `conn`); a few
            // threads are enough to keep a disk busy.
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_stack_size(BLOCKING_STACK)
            .build()
            .map_err(HttpError::Start)?;
        let listener = {
            let _in_rt = rt.enter();
            bind(listen).map_err(|e| HttpError::Bind(listen, e.to_string()))?
        };
        let addr = listener
            .local_addr()
            .map_err(|e| HttpError::Bind(listen, e.to_string()))?;
        let budget = connection_budget();
        log::info!("HTTP: up to {budget} connections (from the descriptor limit)");
        let (stop_tx, stop_rx) = oneshot::channel();
        let (probe_tx, probe_rx) = mpsc::channel(4);
        let thread = thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let ctx = Rc::new(Ctx::new(catalog, netboot, metrics, status, limits, budget));
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, run(listener, ctx, stop_rx, probe_rx));
                // Dropping the tasks closes every connection still open; a
                // read ahead stuck on a dead disk does not hold the exit.
                drop(local);
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(HttpError::Start)?;
        Ok(HttpServer {
            addr,
            stop: Some(stop_tx),
            probe: probe_tx,
            thread: Some(thread),
        })
    }

    /// The address actually bound (the port is real even for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle the health check uses to see the loop turning.
    pub fn probe(&self) -> LoopProbe {
        LoopProbe(self.probe.clone())
    }

    /// Stops accepting, lets responses being written finish for a short
    /// grace period; downloads still running after it are cut off (clients
    /// resume them).
    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind(listen: SocketAddr) -> io::Result<TcpListener> {
    let socket = match listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections the server may hold: two thirds of the descriptors left
/// after [`FD_RESERVE`]. A waiting connection needs one descriptor and a
/// download two (socket and file), so up to half the connections can
/// download at once before an open runs out (and answers `503`); in a boot
/// storm most connections are short manifest requests or waiting.
fn connection_budget() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let budget = (soft.saturating_sub(FD_RESERVE) * 2 / 3).clamp(16, MAX_CONNECTIONS);
    usize::try_from(budget).unwrap_or(16)
}

/// The loop: accepts until told to stop, answers health probes, then gives
/// responses in progress a short grace.
async fn run(
    listener: TcpListener,
    ctx: Rc<Ctx>,
    stop: oneshot::Receiver<()>,
    mut probes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    tokio::task::spawn_local(async move {
        while let Some(reply) = probes.recv().await {
            let _ = reply.send(());
        }
    });
    tokio::select! {
        _ = accept_loop(&listener, &ctx) => {}
        _ = stop => {}
    }
    drop(listener);
    ctx.stopping.set(true);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while ctx.metrics.http.responses_in_progress.get() > 0 && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if ctx.metrics.http.responses_in_progress.get() > 0 {
        log::info!("stopping with HTTP downloads still in progress");
    }
}

async fn accept_loop(listener: &TcpListener, ctx: &Rc<Ctx>) {
    // One descriptor held back, so that when the process runs out a client
    // can still be accepted and told `503` instead of left hanging.
    let mut reserve = File::open("/dev/null").ok();
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => admit(stream, peer, ctx),
            // Out of descriptors or kernel memory: a persistent state, so
            // never retried in a tight loop.
            Err(e) if crate::beneath::is_exhaustion(&e) => {
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now - t > Duration::from_secs(10)) {
                    log::warn!("HTTP: out of file descriptors or memory ({e}); answering 503");
                    last_warning = Some(now);
                }
                drop(reserve.take());
                let one = tokio::time::timeout(Duration::ZERO, listener.accept()).await;
                if let Ok(Ok((stream, _))) = one {
                    ctx.metrics.dropped("out_of_descriptors");
                    refuse(stream, ctx);
                }
                reserve = File::open("/dev/null").ok();
                // Let closing connections give descriptors back.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // A connection reset before we took it, or similar: not ours
            // to worry about.
            Err(e) => log::debug!("HTTP: accept: {e}"),
        }
    }
}

/// Answers a connection there is no room for with `503` while fewer than
/// `budget::MAX_REFUSING` such answers are under way, else closes it at
/// once: refusals never hold more descriptors than the reserve has.
fn refuse(stream: TcpStream, ctx: &Ctx) {
    let Some(place) = ctx.registry.borrow().refusing() else {
        return;
    };
    let answer = conn::refuse(stream, ctx.limits, ctx.warmer.clone(), ctx.date());
    tokio::task::spawn_local(async move {
        answer.await;
        drop(place);
    });
}

fn admit(stream: TcpStream, peer: SocketAddr, ctx: &Rc<Ctx>) {
    // Responses are written whole or as sendfile runs; nothing gains from
    // Nagle holding a small response back for the client's delayed ACK.
    let _ = stream.set_nodelay(true);
    let admission = ctx
        .registry
        .borrow_mut()
        .admit(peer.ip(), std::time::Instant::now());
    match admission {
        Admission::Admitted(slot) => {
            let open = ctx.registry.borrow().len();
            ctx.metrics.http.open_connections.set(open as i64);
            tokio::task::spawn_local(conn::run(stream, peer, slot, ctx.clone()));
        }
        Admission::Refused => {
            ctx.metrics.dropped("budget_full");
            let open = ctx.registry.borrow().len();
            log::debug!("HTTP: connection budget full ({open} open); refusing {peer}");
            refuse(stream, ctx);
        }
    }
}
