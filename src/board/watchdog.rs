//! The Linux hardware watchdog (`/dev/watchdog`).
//!
//! Opening the device starts the timer; [`Watchdog::pet`] resets it through
//! `WDIOC_KEEPALIVE`. The timeout is set with `WDIOC_SETTIMEOUT`, and the
//! value the driver writes back is the one used (boards differ: the
//! Raspberry Pi's allows 15 s at most). A deliberate stop writes the magic
//! close character `V` so the board is not reset, unless the profile says
//! the kernel cannot disarm it (`nowayout`). Deciding *whether* to pet is
//! `health`'s job, not this module's.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::libc::c_int;

use super::WatchdogSpec;

nix::ioctl_read!(wdioc_keepalive, b'W', 5, c_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, c_int);

/// Errors opening or using the watchdog.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("watchdog {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// An open, running hardware watchdog.
pub struct Watchdog {
    file: File,
    device: PathBuf,
    /// The timeout the driver actually uses, in seconds.
    timeout: u32,
    nowayout: bool,
}

impl Watchdog {
    /// Opens and arms the watchdog. `Ok(None)` when the device is missing or
    /// already held by someone else (systemd's `RuntimeWatchdogSec`, busybox
    /// `watchdog`): that is said in the log and plasmd carries on without it.
    pub fn open(spec: &WatchdogSpec) -> Result<Option<Watchdog>, WatchdogError> {
        let file = match OpenOptions::new().write(true).open(&spec.device) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                log::warn!(
                    "watchdog {} is already held by another process (systemd RuntimeWatchdogSec or a watchdog daemon?); not using it",
                    spec.device.display()
                );
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::warn!(
                    "watchdog {} does not exist; running without a hardware watchdog",
                    spec.device.display()
                );
                return Ok(None);
            }
            Err(e) => return Err(WatchdogError::Io(spec.device.clone(), e)),
        };
        let mut wd = Watchdog {
            file,
            device: spec.device.clone(),
            timeout: spec.timeout,
            nowayout: spec.nowayout,
        };
        wd.timeout = wd.set_timeout(spec.timeout);
        log::info!(
            "watchdog {} armed: {} s timeout (asked for {} s)",
            wd.device.display(),
            wd.timeout,
            spec.timeout
        );
        Ok(Some(wd))
    }

    /// Asks for `secs` and returns what the driver uses.
    fn set_timeout(&mut self, secs: u32) -> u32 {
        let fd = self.file.as_raw_fd();
        let mut value = c_int::try_from(secs).unwrap_or(c_int::MAX);
        // SAFETY: the fd is an open watchdog device and `value` outlives the call.
        match unsafe { wdioc_settimeout(fd, &mut value) } {
            Ok(_) if value > 0 => return value as u32,
            Ok(_) => {}
            Err(e) => log::warn!(
                "watchdog {}: cannot set the timeout to {secs} s: {e}",
                self.device.display()
            ),
        }
        let mut current: c_int = 0;
        // SAFETY: as above.
        match unsafe { wdioc_gettimeout(fd, &mut current) } {
            Ok(_) if current > 0 => current as u32,
            _ => secs,
        }
    }

    /// The timeout in force, in seconds.
    pub fn timeout(&self) -> u32 {
        self.timeout
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Resets the timer.
    pub fn pet(&mut self) -> Result<(), WatchdogError> {
        let mut dummy: c_int = 0;
        // SAFETY: the fd is an open watchdog device.
        match unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut dummy) } {
            Ok(_) => Ok(()),
            // Some drivers lack the ioctl; any write pets them too.
            Err(_) => self
                .file
                .write_all(b"\0")
                .map_err(|e| WatchdogError::Io(self.device.clone(), e)),
        }
    }

    /// A deliberate stop: disarm with the magic close (unless `nowayout`)
    /// and close the device.
    pub fn close(mut self) {
        if self.nowayout {
            log::info!(
                "watchdog {} is nowayout: leaving it armed",
                self.device.display()
            );
            return;
        }
        match self.file.write_all(b"V") {
            Ok(()) => log::info!("watchdog {} disarmed", self.device.display()),
            Err(e) => log::warn!(
                "watchdog {}: magic close failed: {e}",
                self.device.display()
            ),
        }
    }
}
