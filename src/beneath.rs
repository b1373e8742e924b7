//! Opening a file beneath a directory without ever leaving it.
//!
//! Checking a path (`canonicalize`, `metadata`) and then opening it by name
//! again leaves a window in which a symlink or a FIFO can be swapped in, so
//! an outside file is served or a reader blocks forever. Here the check *is*
//! the open: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`
//! resolves every component (symlinks included) strictly below the root
//! directory, and the handle is then `fstat`ed, so what is checked is what
//! is read. Kernels before 5.6 lack `openat2`; there each component is
//! opened with `O_NOFOLLOW` instead (no symlinks at all, which is stricter).
//! Opens are `O_NONBLOCK`, so a FIFO never blocks the opener; it is refused
//! by the `fstat` that follows.
//!
//! This module knows nothing of manifests or HTTP; `manifest` decides which
//! names may be opened.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Why a file was not opened.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// The path, or a symlink on it, leads out of the root (or is a magic
    /// link, or, without `openat2`, any symlink).
    #[error("leads outside the artifacts root")]
    Outside,
    /// A directory, FIFO, device or socket.
    #[error("not a regular file")]
    NotRegular,
    /// The open's own error: `NotFound`, or `EMFILE` when descriptors run out.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl BeneathError {
    /// True when the process (or system) is out of descriptors or memory:
    /// the file may well be there, the server is just full.
    pub fn is_exhaustion(&self) -> bool {
        matches!(self, BeneathError::Io(e) if is_exhaustion(e))
    }
}

/// True for the errors that mean "out of descriptors or kernel memory"
/// (`EMFILE`, `ENFILE`, `ENOMEM`, `ENOBUFS`), from an open or an accept:
/// the request may be fine, the process is full.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOBUFS)
    )
}

/// Opens `rel` (relative, no `..`) below the directory `root` for reading,
/// and returns it, with the metadata of the open handle, only if it is a
/// regular file.
pub fn open_regular(root: &Path, rel: &Path) -> Result<(File, fs::Metadata), BeneathError> {
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(BeneathError::Outside);
    }
    // The root itself may be a symlink (an operator's choice in the config).
    let dir = File::open(root)?;
    let fd = open_beneath(dir.as_fd(), rel)?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(BeneathError::NotRegular);
    }
    Ok((file, meta))
}

fn open_beneath(dir: std::os::fd::BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, BeneathError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir, rel, how) {
        Ok(fd) => Ok(fd),
        // ENOSYS: no openat2 (Linux < 5.6); EPERM: a seccomp filter that
        // does not know it (some container runtimes).
        Err(Errno::ENOSYS) | Err(Errno::EPERM) => walk_no_follow(dir, rel, flags),
        Err(Errno::EXDEV) | Err(Errno::ELOOP) => Err(BeneathError::Outside),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

/// The fallback: one `openat(O_NOFOLLOW)` per component.
fn walk_no_follow(
    dir: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
) -> Result<OwnedFd, BeneathError> {
    let parts: Vec<_> = rel.components().collect();
    let mut current: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let mut f = flags | OFlag::O_NOFOLLOW;
        if !last {
            f |= OFlag::O_DIRECTORY;
        }
        let at = current.as_ref().map_or(dir, |c| c.as_fd());
        let next = match openat(at, part.as_os_str(), f, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => return Err(BeneathError::Outside),
            Err(e) => return Err(io::Error::from(e).into()),
        };
        current = Some(next);
    }
    current.ok_or(BeneathError::Outside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_regular_files_beneath_the_root() {
        let base = std::env::temp_dir().join(format!("plasmd-beneath-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("root");
        fs::create_dir_all(root.join("c/a")).unwrap();
        fs::write(root.join("c/a/file"), b"x").unwrap();
        fs::write(base.join("outside"), b"secret").unwrap();
        symlink("file", root.join("c/a/inner")).unwrap();
        symlink("../../../outside", root.join("c/a/escape")).unwrap();
        symlink(base.join("outside"), root.join("c/a/absolute")).unwrap();
        symlink("/proc/self/exe", root.join("c/a/magic")).unwrap();
        nix::unistd::mkfifo(&root.join("c/a/fifo"), Mode::S_IRWXU).unwrap();

        assert!(open_regular(&root, Path::new("c/a/file")).is_ok());
        assert!(open_regular(&root, Path::new("c/a/inner")).is_ok());
        for bad in ["c/a/escape", "c/a/absolute", "c/a/magic"] {
            let e = open_regular(&root, Path::new(bad)).unwrap_err();
            assert!(matches!(e, BeneathError::Outside), "{bad}: {e}");
        }
        for bad in ["c/a/fifo", "c/a"] {
            let e = open_regular(&root, Path::new(bad)).unwrap_err();
            assert!(matches!(e, BeneathError::NotRegular), "{bad}: {e}");
        }
        for bad in ["../outside", "/etc/passwd", "c/../../outside"] {
            assert!(open_regular(&root, Path::new(bad)).is_err(), "{bad}");
        }
        let e = open_regular(&root, Path::new("c/a/missing")).unwrap_err();
        assert!(matches!(&e, BeneathError::Io(io) if io.kind() == io::ErrorKind::NotFound));
        assert!(!e.is_exhaustion());
        // The fallback refuses every symlink, and FIFOs too.
        let dir = File::open(&root).unwrap();
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        assert!(walk_no_follow(dir.as_fd(), Path::new("c/a/file"), flags).is_ok());
        assert!(walk_no_follow(dir.as_fd(), Path::new("c/a/inner"), flags).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
