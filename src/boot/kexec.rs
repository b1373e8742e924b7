//! Loading and starting the verified kernel with kexec-tools (`kexec_load`:
//! Debian's arm64 kernels have no `kexec_file_load`). `-i` skips
//! kexec-tools' own SHA-256 of the loaded segments in purgatory: every byte
//! was verified against the signed release already, and under emulation
//! that check costs seconds.

use std::process::Command;

use super::BootFiles;

/// The kexec-tools binary in the stage-1 image.
const KEXEC: &str = "/sbin/kexec";

/// Loads `files` and jumps into them. Returns only on failure, with why.
pub fn boot(files: &BootFiles) -> String {
    let mut load = Command::new(KEXEC);
    load.arg("-l").arg(&files.kernel).arg("-i");
    if let Some(initrd) = &files.initrd {
        load.arg(format!("--initrd={}", initrd.display()));
    }
    if let Some(dtb) = &files.dtb {
        load.arg(format!("--dtb={}", dtb.display()));
    }
    load.arg(format!("--append={}", files.cmdline));
    match load.status() {
        Ok(s) if s.success() => {}
        Ok(s) => return format!("{KEXEC} -l exited with {s}"),
        Err(e) => return format!("cannot run {KEXEC}: {e}"),
    }
    match Command::new(KEXEC).arg("-e").status() {
        Ok(s) => format!("{KEXEC} -e returned ({s})"),
        Err(e) => format!("cannot run {KEXEC} -e: {e}"),
    }
}
