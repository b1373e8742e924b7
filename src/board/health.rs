//! Deciding whether plasmd is healthy, and petting the watchdogs (hardware
//! and systemd's) only when it is.
//!
//! Healthy means: the DHT task answered a health command, the HTTP loop
//! answered a probe (it is turning, however many slow clients it holds:
//! asking it over TCP would fail exactly when a boot storm fills its
//! connection budget, and reset the provider when it is needed most), and
//! the artifacts root (when there is one) can be listed, each within a
//! deadline. A hung or wedged plasmd fails a
//! check or never gets to run one, stops petting, and the board resets. A
//! missing netboot partition is not a failure: plasmd keeps serving
//! `/healthz` and looks for it again (see `partition`).
//!
//! The board layer sits below the DHT and the HTTP server: it asks them
//! through [`Probe`], which the provider implements for each.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::notify::Notifier;
use super::watchdog::Watchdog;
use crate::manifest::Catalog;
use crate::shutdown::Shutdown;

/// One task of plasmd the health check asks whether it is alive, defined
/// here and implemented by the provider (for the DHT task and the HTTP
/// loop), so the board layer needs neither.
pub trait Probe: Send + Sync {
    /// The check's name in metrics and logs (`dht`, `http`).
    fn check(&self) -> &'static str;
    /// What it asks, for messages (`the DHT task`).
    fn what(&self) -> &'static str;
    /// Resolves `Ok` once the task answered, `Err(why)` (a sentence naming
    /// the task) if it cannot; may
    /// never resolve if the task is wedged (the caller bounds the wait).
    fn ask(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Each check must answer within this long. Well under any watchdog
/// timeout, so a slow check is a failed check, not a reset.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// What the health checks look at.
pub struct HealthChecks {
    /// The tasks asked, in order (the DHT task, the HTTP loop).
    pub probes: Vec<Box<dyn Probe>>,
    pub catalog: Arc<Catalog>,
    /// Pets and failures are counted here.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl HealthChecks {
    /// `Ok` when every part answered in time; otherwise which check
    /// (`dht`, `http`, `storage`) failed, and why.
    pub async fn check(&self) -> Result<(), (&'static str, String)> {
        for probe in &self.probes {
            match tokio::time::timeout(CHECK_DEADLINE, probe.ask()).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err((probe.check(), why)),
                Err(_) => {
                    return Err((probe.check(), format!("{} did not answer", probe.what())));
                }
            }
        }

        if let Some(root) = self.catalog.root() {
            let check = tokio::task::spawn_blocking(move || {
                // A root that does not exist is a known state (logged by the
                // catalog); only an I/O error or a hang means sick storage.
                match std::fs::read_dir(&root) {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("artifacts root {}: {e}", root.display())),
                }
            });
            match tokio::time::timeout(CHECK_DEADLINE, check).await {
                Ok(Ok(r)) => r.map_err(|e| ("storage", e))?,
                _ => {
                    return Err((
                        "storage",
                        "the artifacts root did not answer (hung storage?)".into(),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// How often to check and pet: a third of the shortest watchdog interval,
/// so two missed checks in a row still do not reset a healthy board.
pub fn pet_interval(hw_timeout: Option<u32>, systemd: Option<Duration>) -> Option<Duration> {
    let hw = hw_timeout.map(|s| Duration::from_secs(u64::from(s)));
    let shortest = match (hw, systemd) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }?;
    Some((shortest / 3).max(Duration::from_millis(500)))
}

/// Checks health periodically and pets the watchdogs while healthy, until
/// shutdown; then disarms the hardware watchdog with the magic close.
pub async fn supervise(
    checks: HealthChecks,
    mut watchdog: Option<Watchdog>,
    notifier: Notifier,
    mut shutdown: Shutdown,
) {
    let Some(every) = pet_interval(
        watchdog.as_ref().map(Watchdog::timeout),
        notifier.watchdog_interval(),
    ) else {
        shutdown.wait().await;
        notifier.stopping();
        return;
    };
    log::info!("health checks every {:.1} s", every.as_secs_f32());
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        match checks.check().await {
            Ok(()) => {
                if !was_healthy {
                    log::info!("healthy again: petting the watchdog");
                }
                was_healthy = true;
                if let Some(wd) = watchdog.as_mut() {
                    match wd.pet() {
                        Ok(()) => {
                            checks.metrics.watchdog_pets.inc();
                        }
                        Err(e) => log::error!("{e}"),
                    }
                }
                notifier.watchdog();
            }
            Err((check, why)) => {
                checks
                    .metrics
                    .health_failures
                    .get_or_create(&crate::metrics::ReasonLabel { reason: check })
                    .inc();
                log::warn!("unhealthy: {why}; not petting the watchdog");
                was_healthy = false;
            }
        }
    }
    notifier.stopping();
    if let Some(wd) = watchdog {
        wd.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pets_at_a_third_of_the_shortest_interval() {
        assert_eq!(pet_interval(None, None), None);
        assert_eq!(pet_interval(Some(15), None), Some(Duration::from_secs(5)));
        assert_eq!(
            pet_interval(Some(30), Some(Duration::from_secs(9))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            pet_interval(Some(1), None),
            Some(Duration::from_millis(500))
        );
    }
}
