//! Small state files (the identity key, the record `seq`) written so that a
//! power cut at any moment leaves either the old content or the new one,
//! never a truncated or half-written file: write a temporary file next to
//! it, `fsync` it, rename it over the old one, then `fsync` the directory
//! so the rename itself is on disk.
//!
//! This module only writes bytes; what they mean and how a damaged file is
//! treated is up to the module that owns the state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `bytes` atomically, creating the file (and its
/// directory) with `mode` if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir)?;
    }
    // A dot name: every scan of an artifacts tree skips it, so a
    // `manifest.json` being written is never listed as an artifact.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp_path = path.with_file_name(&tmp_name);
    let tmp = tmp_path.as_path();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    // The rename lives in the directory: sync it too, or a power cut may
    // bring the old name back. Some filesystems refuse to sync a directory
    // opened read-only; the data itself is safe by then, so that is ignored.
    let _ = File::open(dir.unwrap_or(Path::new("."))).and_then(|d| d.sync_all());
    Ok(())
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
}
