//! The minimum-rate rule a response is sent under, the turns connections
//! take on the one HTTP loop, and the whole server's upload cap.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::HttpLimits;

/// Bytes one connection may send before letting the others have a turn: a
/// fast client cannot hog the loop, and `/healthz` waits for at most one
/// turn of each busy connection.
pub(super) const TURN_BYTES: usize = 256 * 1024;

/// The minimum-rate rule: in every window of `rate_window` a response must
/// move at least `min_rate × rate_window` bytes into the socket, or the
/// connection is closed. A reader that drains a segment now and then keeps
/// nothing for long.
pub(super) struct Pacer {
    window: Duration,
    min_bytes: u64,
    window_end: Instant,
    sent: u64,
    /// Bytes sent since this connection last let others have a turn.
    turn: usize,
    /// The server's upload cap this response draws from, if any.
    cap: Option<Rc<UploadCap>>,
}

impl Pacer {
    pub(super) fn new(limits: &HttpLimits, cap: Option<Rc<UploadCap>>) -> Self {
        Pacer {
            window: limits.rate_window,
            min_bytes: (limits.min_rate as f64 * limits.rate_window.as_secs_f64()) as u64,
            window_end: Instant::now() + limits.rate_window,
            sent: 0,
            turn: 0,
            cap,
        }
    }

    /// How many of `want` bytes may go now: all of them without a cap;
    /// under one, what it allows, after waiting for some (which excuses
    /// the wait from the minimum-rate rule: the server held back, not the
    /// client).
    pub(super) async fn allowance(&mut self, want: usize) -> usize {
        let Some(cap) = self.cap.clone() else {
            return want;
        };
        let started = Instant::now();
        let n = cap.take(want).await;
        self.excuse(started.elapsed());
        n
    }

    /// Gives back what an allowance did not use (the socket took less).
    pub(super) fn unused(&self, n: usize) {
        if let Some(cap) = &self.cap {
            cap.give_back(n);
        }
    }

    pub(super) fn sent(&mut self, n: usize) {
        self.sent += n as u64;
        self.turn += n;
    }

    /// Time the server spent waiting for its own disk is not the client's:
    /// the current window is extended by it.
    pub(super) fn excuse(&mut self, waited: Duration) {
        self.window_end += waited;
    }

    /// Fails once a window ends with too little sent; starts the next one.
    pub(super) fn check(&mut self) -> io::Result<()> {
        let now = Instant::now();
        if now < self.window_end {
            return Ok(());
        }
        if self.sent < self.min_bytes {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "client read {} bytes in {:.0?}, under the minimum rate",
                    self.sent, self.window
                ),
            ));
        }
        self.sent = 0;
        self.window_end = now + self.window;
        Ok(())
    }

    /// Waits for the socket to take more, at most until the window ends.
    pub(super) async fn writable(&mut self, stream: &TcpStream) -> io::Result<()> {
        self.turn = 0;
        match timeout_at(self.window_end, stream.writable()).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    /// After a turn's worth of bytes, lets the other connections run.
    pub(super) async fn take_turns(&mut self) {
        if self.turn >= TURN_BYTES {
            self.turn = 0;
            tokio::task::yield_now().await;
        }
    }
}

/// A token bucket every response of one server draws from: at most `rate`
/// bytes a second in all, with bursts of a tenth of a second. Lives on the
/// HTTP loop's one thread.
pub(super) struct UploadCap {
    rate: f64,
    burst: f64,
    /// Bytes that may go now, as of the instant.
    tokens: Cell<(f64, Instant)>,
}

impl UploadCap {
    /// A cap of `rate` bytes a second; `None` for 0 (no cap).
    pub(super) fn new(rate: u64) -> Option<Rc<UploadCap>> {
        (rate > 0).then(|| {
            let rate = rate as f64;
            // Room for at least one turn's worth, so a slow cap still
            // moves whole windows.
            let burst = (rate / 10.0).max(64.0 * 1024.0);
            Rc::new(UploadCap {
                rate,
                burst,
                tokens: Cell::new((burst, Instant::now())),
            })
        })
    }

    fn refill(&self) -> f64 {
        let (tokens, at) = self.tokens.get();
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.burst);
        self.tokens.set((tokens, now));
        tokens
    }

    /// Takes up to `want` bytes (at least one), waiting until some may go.
    async fn take(&self, want: usize) -> usize {
        let want = (want.max(1) as f64).min(self.burst);
        loop {
            let tokens = self.refill();
            if tokens >= want.min(16.0 * 1024.0) {
                let n = want.min(tokens);
                self.tokens.set((tokens - n, Instant::now()));
                return n as usize;
            }
            let short = want.min(16.0 * 1024.0) - tokens;
            tokio::time::sleep(Duration::from_secs_f64(short / self.rate)).await;
        }
    }

    fn give_back(&self, n: usize) {
        let tokens = self.refill();
        self.tokens
            .set(((tokens + n as f64).min(self.burst), Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_every_response_together_to_its_rate() {
        let cap = UploadCap::new(1_000_000).unwrap();
        let started = Instant::now();
        let mut sent = 0;
        // Two responses taking turns, as connections on the loop do.
        while sent < 5_000_000 {
            sent += cap.take(256 * 1024).await;
            sent += cap.take(256 * 1024).await;
        }
        let secs = started.elapsed().as_secs_f64();
        // 5 MB at 1 MB/s, less the first burst of 0.1 s.
        assert!((4.8..5.1).contains(&secs), "{secs} s");
        assert!(UploadCap::new(0).is_none(), "0 is no cap");
    }
}
