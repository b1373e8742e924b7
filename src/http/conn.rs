//! One connection's life on the HTTP loop: read a request head under its
//! deadlines, answer it, keep the connection for the next one or close it
//! politely.
//!
//! Nothing here blocks the loop: reads and writes are non-blocking and
//! resumed on readiness, file bodies go out with `sendfile` from the open
//! handle at an explicit offset (no userspace copy; the file's own offset is
//! never used, so a renamed-over file is still served whole from its
//! handle), and only over bytes already in the page cache: a cold window is
//! read on a small bounded pool first (see `warm`). A
//! connection waiting for a request holds a socket and, only while bytes of
//! a head are arriving, a buffer of at most 8 KiB; no thread.
//!
//! Every wait has a bound: the whole head within [`HEAD_TIMEOUT`], the
//! first byte of a kept-alive request within [`IDLE_TIMEOUT`], a response
//! at no less than the configured minimum rate averaged over its window
//! (which bounds a whole response, not a single write), and the lingering
//! close within [`LINGER`]. Which response to give is `files`' job.

use prometheus_client::metrics::gauge::Gauge;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::answer::answer;
use super::budget::Slot;
use super::files::{Body, Reply};
use super::pace::{Pacer, TURN_BYTES};
use super::parse::{self, Head, HeadError, Method, Scan, MAX_HEAD};
use super::warm::{Ahead, Warmer};
use super::{Ctx, HttpLimits};

/// The whole request head must arrive within this long (a deadline, not a
/// per-read timeout, so trickling one byte at a time does not extend it).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a kept-alive connection may sit idle between requests. It
/// starts when the response was handed to the kernel, while the client may
/// still be reading megabytes of it from the socket buffers; a short value
/// would close connections under clients about to send their next request
/// (a reset for them). Idle connections are the first to give way when the
/// budget runs short, so a long wait costs nothing in a storm.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests on one connection before it is closed.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// The whole lingering close (half-close, then drain what the client still
/// sends so the kernel does not reset the response in flight) takes at most
/// this long and drains at most [`LINGER_BYTES`].
pub const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Bytes a connection reads per call while a head arrives.
const READ_CHUNK: usize = 2048;

/// Serves one accepted connection until it closes, times out, or is told
/// to give way (its slot in the budget).
pub async fn run(stream: TcpStream, peer: SocketAddr, slot: Rc<Slot>, ctx: Rc<Ctx>) {
    let _registered = Registered {
        ctx: &ctx,
        slot: &slot,
    };
    // Boxed so the task itself stays small while it only waits: a server
    // holding 10,000 idle connections keeps 10,000 of these.
    let serve = Box::pin(serve(&stream, peer, &slot, &ctx));
    tokio::select! {
        biased;
        _ = slot.evicted() => {
            ctx.metrics.dropped("evicted");
            log::debug!("HTTP: {peer} gave way to a new connection")
        }
        _ = serve => {}
    }
}

/// Removes the connection from the budget however it ends (even when the
/// task is dropped at shutdown).
struct Registered<'a> {
    ctx: &'a Ctx,
    slot: &'a Slot,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut registry = self.ctx.registry.borrow_mut();
        registry.remove(self.slot.id);
        self.ctx
            .metrics
            .http
            .open_connections
            .set(registry.len() as i64);
    }
}

/// Counts a response in progress, so a stop can wait for it briefly and
/// operators see the downloads under way.
struct Responding<'a>(&'a Gauge);

impl<'a> Responding<'a> {
    fn new(g: &'a Gauge) -> Self {
        g.inc();
        Responding(g)
    }
}

impl Drop for Responding<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why no request head came.
enum NoHead {
    /// The client closed, or timed out: just close.
    Gone,
    /// Answer this and close.
    Refuse(u16, &'static str),
}

async fn serve(stream: &TcpStream, peer: SocketAddr, slot: &Slot, ctx: &Ctx) {
    let mut buf = Vec::new();
    let mut served = 0;
    let accepted = Instant::now();
    // A new connection must send its whole head within HEAD_TIMEOUT of
    // being accepted; a kept-alive one may first idle for IDLE_TIMEOUT.
    let mut head_started = Some(accepted);
    let mut idle_until = accepted + HEAD_TIMEOUT;
    loop {
        let now = std::time::Instant::now();
        ctx.registry.borrow_mut().set_idle(slot, Some(now));
        let head = read_head(stream, &mut buf, head_started, idle_until).await;
        ctx.registry.borrow_mut().set_idle(slot, None);
        // A head that could not be read is answered like any request, then
        // the connection is closed.
        let started = Instant::now();
        let (reply, head_only, keep, class) = match head {
            Ok(head) => {
                let keep = head.keep_alive
                    && head.method != Method::Other
                    && served + 1 < MAX_REQUESTS_PER_CONNECTION
                    && !ctx.stopping.get();
                let (reply, class) = answer(&head, ctx, peer);
                (reply, head.method == Method::Head, keep, class)
            }
            Err(NoHead::Gone) => return,
            Err(NoHead::Refuse(status, why)) => {
                log::info!("HTTP: refused a request from {peer}: {why} ({status})");
                let text = if status == 431 {
                    "request head too large\n"
                } else {
                    "bad request\n"
                };
                ctx.metrics.dropped("bad_request");
                (Reply::text(status, text), false, false, "other")
            }
        };
        let (status, body_len) = (reply.status, reply.body.len());
        ctx.count_request(class, status);
        let result = {
            let _guard = Responding::new(&ctx.metrics.http.responses_in_progress);
            // Boxed: only a connection that is answering holds the state
            // of answering.
            let date = ctx.date();
            Box::pin(send(
                stream,
                reply,
                head_only,
                keep,
                Pacer::new(&ctx.limits, ctx.cap.clone()),
                &ctx.warmer,
                &date,
            ))
            .await
        };
        let m = &ctx.metrics.http;
        m.response_seconds.observe(started.elapsed().as_secs_f64());
        if result.is_ok() && !head_only {
            m.sent_bytes.inc_by(body_len);
            if class == "chunks" && matches!(status, 200 | 206) {
                ctx.metrics.chunks.served(body_len);
            }
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                ctx.metrics.dropped("cut_off");
                log::info!("HTTP: cut off a response to {peer}: {e}");
                return;
            }
            Err(e) => {
                log::debug!("HTTP: response to {peer} not completed: {e}");
                return;
            }
            Ok(()) if !keep => {
                Box::pin(linger(stream)).await;
                return;
            }
            Ok(()) => {}
        }
        served += 1;
        // A pipelined next request already started its head clock.
        let now = Instant::now();
        head_started = (!buf.is_empty()).then_some(now);
        idle_until = now + IDLE_TIMEOUT;
    }
}

/// Reads until `buf` holds a complete head, and takes it out of `buf` (what
/// follows is a pipelined next request, left in `buf`).
async fn read_head(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    mut started: Option<Instant>,
    idle_until: Instant,
) -> Result<Head, NoHead> {
    let mut scanned = 0;
    loop {
        match parse::scan(buf, scanned) {
            Scan::Complete(end) => {
                let parsed = parse::parse_head(&buf[..end]);
                buf.drain(..end);
                if buf.is_empty() {
                    // Idle connections hold no buffer.
                    *buf = Vec::new();
                }
                return parsed.map_err(|e| match e {
                    HeadError::TooLarge => NoHead::Refuse(431, "head too large"),
                    HeadError::Malformed(why) => NoHead::Refuse(400, why),
                });
            }
            Scan::BareLf => return Err(NoHead::Refuse(400, "bare LF")),
            Scan::Incomplete if buf.len() > MAX_HEAD => {
                return Err(NoHead::Refuse(431, "head too large"));
            }
            Scan::Incomplete => scanned = buf.len(),
        }
        let until = started.map_or(idle_until, |t| t + HEAD_TIMEOUT);
        match timeout_at(until, stream.readable()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(NoHead::Gone),
        }
        // Read into the stack, not `buf`: readiness can be spurious, and an
        // idle connection must not be left holding a grown buffer.
        let mut chunk = [0u8; READ_CHUNK];
        let want = READ_CHUNK.min(MAX_HEAD + 1 - buf.len());
        match read_some(stream, &mut chunk[..want]) {
            Ok(0) => return Err(NoHead::Gone),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                started.get_or_insert_with(Instant::now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Err(NoHead::Gone),
        }
    }
}

/// Reads what the socket holds into `into`. A read that did not fill
/// `into` drained the socket, so the loop is told the socket is no longer
/// readable (as if the next read had returned `EAGAIN`): the next wait goes
/// straight to epoll, saving a read that would only say "nothing yet" on
/// every kept-alive request.
fn read_some(stream: &TcpStream, into: &mut [u8]) -> io::Result<usize> {
    use nix::sys::socket::{recv, MsgFlags};
    let mut short = 0;
    let read = stream.try_io(Interest::READABLE, || {
        let n = recv(stream.as_raw_fd(), into, MsgFlags::empty()).map_err(io::Error::from)?;
        if n > 0 && n < into.len() {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
        other => other,
    }
}

/// Writes a whole response under the minimum-rate rule; a file body's
/// cold windows are read into the cache by `warmer` first.
pub async fn send(
    stream: &TcpStream,
    reply: Reply,
    head_only: bool,
    keep: bool,
    mut pacer: Pacer,
    warmer: &Warmer,
    date: &str,
) -> io::Result<()> {
    let head = reply.head_bytes(keep, date);
    let Body::File { file, start, len } = reply.body else {
        let body = if head_only {
            &[][..]
        } else {
            reply.memory_body()
        };
        return write_all(stream, &head, body, &mut pacer).await;
    };
    if head_only {
        return write_all(stream, &head, &[], &mut pacer).await;
    }
    // Nagle on while a file goes out, so the head and the body leave in
    // full segments; turning TCP_NODELAY back on at the end pushes the last
    // partial one at once (what nginx's `tcp_nopush` does with TCP_CORK).
    stream.set_nodelay(false)?;
    write_all(stream, &head, &[], &mut pacer).await?;
    send_file(stream, Arc::new(file), start, len, &mut pacer, warmer).await?;
    stream.set_nodelay(true)
}

/// Writes `head` then `body`, in one vectored write when the socket takes
/// them, under the minimum-rate rule.
async fn write_all(
    stream: &TcpStream,
    mut head: &[u8],
    mut body: &[u8],
    pacer: &mut Pacer,
) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        pacer.check()?;
        let parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
        match stream.try_write_vectored(&parts) {
            Ok(n) => {
                pacer.sent(n);
                let from_head = n.min(head.len());
                head = &head[from_head..];
                body = &body[n - from_head..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => pacer.writable(stream).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `len` bytes of `file` from `start`, with `sendfile` (page cache →
/// socket, no copy through userspace), resumed whenever the socket has room.
///
/// `sendfile` is only given bytes that are cached (see `warm`): a cold
/// window is read on the pool while only this connection waits, and the
/// time it waits for the disk is not held against the client's rate.
async fn send_file(
    stream: &TcpStream,
    file: Arc<std::fs::File>,
    start: u64,
    len: u64,
    pacer: &mut Pacer,
    warmer: &Warmer,
) -> io::Result<()> {
    let too_big = |_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond 2^63");
    let mut offset = i64::try_from(start).map_err(too_big)?;
    let end = i64::try_from(start.saturating_add(len)).map_err(too_big)?;
    let mut ahead = Ahead::new(file.clone(), offset, end);
    while offset < end {
        pacer.check()?;
        let (ready, waited) = ahead.ready_from(offset, warmer).await?;
        pacer.excuse(waited);
        let count = usize::try_from(ready - offset)
            .unwrap_or(usize::MAX)
            .min(TURN_BYTES);
        // Under an upload cap, only what it allows now (waiting for it is
        // not the client's slowness).
        let count = pacer.allowance(count).await;
        let sent = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream.as_fd(), file.as_fd(), Some(&mut offset), count)
                .map_err(io::Error::from)
        });
        pacer.unused(count - sent.as_ref().map_or(0, |n| *n));
        match sent {
            // The file shrank under us: the client sees a short body and
            // must not take it for the whole file.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while serving",
                ))
            }
            Ok(n) => {
                pacer.sent(n);
                pacer.take_turns().await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => pacer.writable(stream).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Half-closes, then reads and drops what the client still sends until it
/// closes too, within [`LINGER`] in all: closing with unread input makes
/// Linux send a reset, which can destroy the response still in flight.
pub async fn linger(stream: &TcpStream) {
    let _ = nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    let drain = async {
        let mut drained = 0;
        let mut sink = [0u8; 1024];
        while drained < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Refuses a connection the budget has no room for: `503`, best effort and
/// without waiting, then closed.
pub async fn refuse(stream: TcpStream, limits: HttpLimits, warmer: Warmer, date: String) {
    let send = send(
        &stream,
        Reply::busy(),
        false,
        false,
        Pacer::new(&limits, None),
        &warmer,
        &date,
    );
    if tokio::time::timeout(Duration::from_secs(1), send)
        .await
        .is_ok_and(|r| r.is_ok())
    {
        linger(&stream).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_task_is_small() {
        // What each of 10,000 idle connections costs the loop, beyond its
        // socket: the task's future (the serving part is boxed).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let s = TcpStream::connect(addr).await.unwrap();
            let ctx = Rc::new(Ctx::for_tests());
            let slot = match ctx
                .registry
                .borrow_mut()
                .admit(addr.ip(), std::time::Instant::now())
            {
                super::super::budget::Admission::Admitted(slot) => slot,
                super::super::budget::Admission::Refused => unreachable!(),
            };
            let fut = run(s, addr, slot.clone(), ctx);
            let size = std::mem::size_of_val(&fut);
            assert!(size < 512, "connection task is {size} bytes");
            // The boxed serving part, while it waits for a request: what
            // answering needs (responses, lingering) is boxed again.
            let s2 = TcpStream::connect(addr).await.unwrap();
            let ctx2 = Ctx::for_tests();
            let waiting = std::mem::size_of_val(&serve(&s2, addr, &slot, &ctx2));
            assert!(waiting < 1024, "a waiting connection holds {waiting} bytes");
        });
    }
}
