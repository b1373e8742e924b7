//! Noticing artifact changes: inotify (through `nix`) on the artifacts root,
//! its channel directories and their channel/arch directories, debounced
//! into a rescan of the catalog, whose result is sent to the publisher as a
//! [`Snapshot`].
//!
//! A periodic rescan backs inotify up (watch limits, directories that appear
//! before their watch is added, network filesystems): it is cheap, since
//! unchanged files are not hashed again. This module does not decide what to
//! publish.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};

use super::publisher::{Advert, Snapshot};
use crate::manifest::{Catalog, ManifestError};
use crate::shutdown::Shutdown;

/// Events closer together than this are one change: a `cp -r` of a kernel
/// tree is one re-publish, not fifty.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Rescan this often even without events; also how soon a missing artifacts
/// root is looked for again.
const PERIODIC_RESCAN: Duration = Duration::from_secs(10);

/// Rescan period when inotify is unavailable, so changes still show up
/// within the promised 2 s.
const POLL_WITHOUT_INOTIFY: Duration = Duration::from_secs(1);

/// Events that can change what a directory serves.
fn watch_mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ATTRIB
}

/// `Inotify` with the raw-fd view tokio's `AsyncFd` wants.
struct Watcher(Inotify);

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Watcher {
    fn new() -> nix::Result<Self> {
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map(Watcher)
    }

    /// Watches the root, each channel dir and each channel/arch dir. Adding
    /// a watch that exists is harmless, so this simply runs after each scan.
    fn add_all(&self, catalog: &Catalog) {
        let Some(root) = catalog.root() else {
            return;
        };
        let mut dirs = vec![root.clone()];
        if let Ok(cas) = catalog.channel_archs() {
            for ca in cas {
                let channel = root.join(&ca.channel);
                if !dirs.contains(&channel) {
                    dirs.push(channel.clone());
                }
                dirs.push(channel.join(&ca.arch));
            }
        }
        for dir in dirs {
            if let Err(e) = self.0.add_watch(&dir, watch_mask()) {
                log::debug!("inotify watch on {}: {e}", dir.display());
            }
        }
    }
}

/// Scans the catalog off the async thread (hashing can take a while) and
/// returns the snapshot; an unreadable root gives an empty one. A failure is
/// logged when it first happens, not on every periodic rescan.
async fn rescan(catalog: &Arc<Catalog>, last_error: &mut Option<String>) -> Snapshot {
    let c = Arc::clone(catalog);
    let error = match tokio::task::spawn_blocking(move || c.rescan()).await {
        Ok(Ok(manifests)) => {
            if last_error.take().is_some() {
                log::info!("artifacts root readable again");
            }
            return manifests
                .into_iter()
                .map(|(ca, m)| {
                    let advert = Advert {
                        version: m.version.clone(),
                        manifest_sha256: m.sha256.clone(),
                        release: m.release.clone(),
                    };
                    (ca, advert)
                })
                .collect();
        }
        // Waiting for the board's netboot partition is normal at boot.
        Ok(Err(ManifestError::NoRoot)) => {
            if last_error.is_none() {
                log::info!("waiting for the artifacts root (netboot partition)");
            }
            *last_error = Some(ManifestError::NoRoot.to_string());
            catalog.clear();
            return Snapshot::new();
        }
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("artifact scan failed: {e}"),
    };
    if last_error.as_deref() != Some(error.as_str()) {
        log::error!("{error}; advertising nothing until it is back");
        *last_error = Some(error);
    }
    catalog.clear();
    Snapshot::new()
}

/// Scans once, then rescans on change (or when `rescan_now` is notified,
/// e.g. the artifacts root moved) until shutdown, sending each new snapshot
/// on `tx`.
pub async fn run(
    catalog: Arc<Catalog>,
    tx: watch::Sender<Snapshot>,
    rescan_now: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let watcher = match Watcher::new().map_err(std::io::Error::from).and_then(|w| {
        // SAFETY: `Watcher` owns the inotify fd and keeps it open and
        // unchanged for as long as the `AsyncFd` holds it.
        unsafe { AsyncFd::register(w) }.map_err(std::io::Error::from)
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!("inotify unavailable ({e}); polling the artifacts every second instead");
            None
        }
    };
    let periodic = if watcher.is_some() {
        PERIODIC_RESCAN
    } else {
        POLL_WITHOUT_INOTIFY
    };
    let mut pending: Option<tokio::time::Instant> = None;
    let mut next_periodic = tokio::time::Instant::now();
    let mut last_error = None;
    loop {
        let deadline = pending.map_or(next_periodic, |p| p.min(next_periodic));
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = rescan_now.notified() => {
                pending = Some(tokio::time::Instant::now());
            }
            _ = tokio::time::sleep_until(deadline) => {
                pending = None;
                next_periodic = tokio::time::Instant::now() + periodic;
                let snap = rescan(&catalog, &mut last_error).await;
                if let Some(w) = &watcher {
                    w.get_ref().add_all(&catalog);
                }
                tx.send_if_modified(|old| {
                    if *old == snap {
                        false
                    } else {
                        *old = snap;
                        true
                    }
                });
            }
            ready = async {
                match &watcher {
                    Some(w) => w.readable().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok(mut guard) = ready {
                    let mut any = false;
                    if let Some(w) = &watcher {
                        // Drain everything queued; EAGAIN ends the batch.
                        while let Ok(events) = w.get_ref().0.read_events() {
                            if events.is_empty() {
                                break;
                            }
                            any = true;
                        }
                    }
                    guard.clear_ready();
                    if any && pending.is_none() {
                        pending = Some(tokio::time::Instant::now() + DEBOUNCE);
                    }
                }
            }
        }
    }
}
