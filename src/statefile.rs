//! Small state files (the identity key, the record `seq`) written so that a
//! power cut at any moment leaves either the old content or the new one,
//! never a truncated or half-written file: write a temporary file next to
//! it (a new, unguessable name, opened exclusively without following
//! links), `fsync` it, rename it over the old one, then `fsync` the
//! directory so the rename itself is on disk.
//!
//! This module only writes bytes; what they mean and how a damaged file is
//! treated is up to the module that owns the state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` atomically, creating the file (and its
/// directory) with `mode` if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(path, mode, |file| file.write_all(bytes))
}

/// Replaces `path` atomically with what `write` puts in a new file (for
/// content too large to hold in memory), as [`write_atomic`] does.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir)?;
    }
    let (tmp_path, mut file) = create_temp(path, mode)?;
    let tmp = tmp_path.as_path();
    let written = write(&mut file).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    // The rename lives in the directory: sync it too, or a power cut may
    // bring the old name back. Some filesystems refuse to sync a directory
    // opened read-only; the data itself is safe by then, so that is ignored.
    let _ = File::open(dir.unwrap_or(Path::new("."))).and_then(|d| d.sync_all());
    Ok(())
}

/// How many temporary names are tried before giving up (each taken one
/// is another writer's, or planted).
const TEMP_ATTEMPTS: u32 = 16;

/// Creates a new temporary file next to `path`, exclusively (`O_EXCL`) and
/// without following a symlink (`O_NOFOLLOW`), under a name no one can
/// guess in advance: a file or link planted at a predictable name cannot
/// redirect the write, and two writers never share a temporary file. The
/// name starts with a dot, which every scan of an artifacts tree skips, so
/// a `manifest.json` being written is never listed as an artifact.
fn create_temp(path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut last = io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name");
    for _ in 0..TEMP_ATTEMPTS {
        // std's randomly keyed hasher as a random source (no RNG crate).
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
        let mut name = std::ffi::OsString::from(".");
        name.push(path.file_name().unwrap_or_default());
        name.push(format!(".{}.{:016x}.tmp", std::process::id(), h.finish()));
        let tmp = path.with_file_name(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_files_with_the_mode_asked_for() {
        let dir = std::env::temp_dir().join(format!("plasmd-state-{}", std::process::id()));
        let path = dir.join("sub/state");
        write_atomic(&path, b"first\n", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&path, b"second\n", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second\n");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.join("sub")).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_planted_link_or_file_cannot_redirect_the_write() {
        let dir = std::env::temp_dir().join(format!("plasmd-plant-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, b"keep me\n").unwrap();
        // The names a writer of `state` used to take, planted.
        std::os::unix::fs::symlink(&victim, dir.join(".state.tmp")).unwrap();
        fs::write(dir.join(".state.tmp2"), b"other writer\n").unwrap();
        write_atomic(&dir.join("state"), b"new\n", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me\n");
        assert_eq!(fs::read(dir.join("state")).unwrap(), b"new\n");
        // Only what was there, plus the file itself: no temporary left.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 4);
        // Two writers at once never share a temporary file.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = dir.join("shared");
                std::thread::spawn(move || write_atomic(&path, format!("{i}\n").as_bytes(), 0o600))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let got = fs::read_to_string(dir.join("shared")).unwrap();
        assert!(got.trim().parse::<u32>().is_ok_and(|n| n < 8), "{got:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
