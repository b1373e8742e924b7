//! Deciding whether plasmd is healthy, and petting the watchdogs (hardware
//! and systemd's) only when it is.
//!
//! Healthy means: the DHT task answered a health command, the HTTP server
//! answered its own `/healthz`, and the artifacts root (when there is one)
//! can be listed, each within a deadline. A hung or wedged plasmd fails a
//! check or never gets to run one, stops petting, and the board resets. A
//! missing netboot partition is not a failure: plasmd keeps serving
//! `/healthz` and looks for it again (see `partition`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::notify::Notifier;
use super::watchdog::Watchdog;
use crate::dht;
use crate::manifest::Catalog;
use crate::shutdown::Shutdown;

/// Each check must answer within this long. Well under any watchdog
/// timeout, so a slow check is a failed check, not a reset.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

/// What the health checks look at.
pub struct HealthChecks {
    pub dht: dht::Client,
    pub http_addr: SocketAddr,
    pub catalog: Arc<Catalog>,
}

impl HealthChecks {
    /// `Ok` when every part answered in time; otherwise which one did not.
    pub async fn check(&self) -> Result<(), String> {
        tokio::time::timeout(CHECK_DEADLINE, self.dht.health())
            .await
            .map_err(|_| "the DHT task did not answer".to_string())?
            .map_err(|e| format!("the DHT task: {e}"))?;

        let addr = self.http_addr;
        let http = tokio::task::spawn_blocking(move || http_healthz(addr));
        match tokio::time::timeout(CHECK_DEADLINE, http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(format!("HTTP /healthz: {e}")),
            _ => return Err("HTTP /healthz did not answer".into()),
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
                Ok(Ok(r)) => r?,
                _ => return Err("the artifacts root did not answer (hung storage?)".into()),
            }
        }
        Ok(())
    }
}

/// GET /healthz on our own server, over loopback for a wildcard address.
fn http_healthz(addr: SocketAddr) -> Result<(), String> {
    let target = if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    };
    let mut s = TcpStream::connect_timeout(&target, CHECK_DEADLINE).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CHECK_DEADLINE))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CHECK_DEADLINE))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    if &head[9..12] == b"200" {
        Ok(())
    } else {
        Err(format!("status {}", String::from_utf8_lossy(&head[9..12])))
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
                    if let Err(e) = wd.pet() {
                        log::error!("{e}");
                    }
                }
                notifier.watchdog();
            }
            Err(why) => {
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
