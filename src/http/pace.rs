//! The minimum-rate rule a response is sent under, and the turns
//! connections take on the one HTTP loop.

use std::io;
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
}

impl Pacer {
    pub(super) fn new(limits: &HttpLimits) -> Self {
        Pacer {
            window: limits.rate_window,
            min_bytes: (limits.min_rate as f64 * limits.rate_window.as_secs_f64()) as u64,
            window_end: Instant::now() + limits.rate_window,
            sent: 0,
            turn: 0,
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
