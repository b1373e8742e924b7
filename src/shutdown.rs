//! One shutdown signal for the whole process.
//!
//! SIGTERM or SIGINT (through `signal-hook`, on a small thread of its own)
//! flips a `tokio::sync::watch` flag that every task holds a [`Shutdown`]
//! for. The HTTP server, which runs its own loop on its own thread, is told
//! to stop by the provider once the records are withdrawn (see `provider`).
//! A second signal while shutting down exits at once, for the impatient
//! operator. This module does not know what the tasks do when told to stop.

use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::watch;

/// The sending side: fire it once to stop everything.
#[derive(Clone)]
pub struct Trigger(watch::Sender<bool>);

/// A handle a task waits on (async) or polls (threads).
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new, unfired shutdown signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every holder of a [`Shutdown`] to stop.
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// True once shutdown has been requested.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is requested (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means every Trigger is gone, which only happens at exit:
        // treat it as a shutdown too.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Fires `trigger` on the first SIGTERM/SIGINT; exits the process with
/// status 130 on the second.
pub fn on_signals(trigger: Trigger) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = false;
            for sig in signals.forever() {
                if seen {
                    log::warn!("second signal ({sig}): exiting now");
                    std::process::exit(130);
                }
                seen = true;
                log::info!("received signal {sig}: shutting down");
                trigger.fire();
            }
        })?;
    Ok(())
}
