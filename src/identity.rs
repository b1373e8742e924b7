//! The node's ed25519 identity, kept in a key file so its peer id survives
//! restarts.
//!
//! The file holds libp2p's protobuf encoding of the keypair and is created
//! with mode 0600. This module only loads and creates key files; it does not
//! decide where they live (that is `config`).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// A key file is about 70 bytes; refuse to read anything much larger.
const MAX_KEY_FILE: u64 = 4096;

/// Why an identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file {0}: {1}")]
    Io(PathBuf, io::Error),
    #[error(
        "identity file {0}: not a libp2p key file ({1}); move it away to create a new identity"
    )]
    Invalid(PathBuf, String),
}

/// Loads the keypair in `path`, creating a new ed25519 key (mode 0600, and
/// its directory) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |e| IdentityError::Io(path.to_path_buf(), e);
    match fs::File::open(path) {
        Ok(file) => {
            let mut bytes = Vec::new();
            file.take(MAX_KEY_FILE + 1)
                .read_to_end(&mut bytes)
                .map_err(io_err)?;
            if bytes.len() as u64 > MAX_KEY_FILE {
                return Err(IdentityError::Invalid(
                    path.to_path_buf(),
                    "too large".into(),
                ));
            }
            if let Ok(meta) = fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    log::warn!(
                        "identity file {} is readable by others (mode {:o}); chmod 600 it",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    );
                }
            }
            Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| IdentityError::Invalid(path.to_path_buf(), e.to_string()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path),
        Err(e) => Err(io_err(e)),
    }
}

fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |e| IdentityError::Io(path.to_path_buf(), e);
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| IdentityError::Invalid(path.to_path_buf(), e.to_string()))?;
    // A crash never leaves a truncated key that would fail the next start.
    crate::statefile::write_atomic(path, &bytes, 0o600).map_err(io_err)?;
    log::info!(
        "created new identity {} in {}",
        keypair.public().to_peer_id(),
        path.display()
    );
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_0600_and_reloads_to_the_same_peer() {
        let dir = std::env::temp_dir().join(format!("plasmd-id-{}", std::process::id()));
        let path = dir.join("sub/id.key");
        let a = load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Invalid(..))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
