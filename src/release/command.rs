//! Runs `plasmd release keygen|sign|verify` and says what it did in words
//! an operator can paste into a runbook.

use std::path::{Path, PathBuf};

use super::sign::SignOptions;
use super::sign::{sign_dir, SignError};
use super::{ReleaseError, ReleaseKeys, SIGNATURE_NAME};
use crate::manifest::MANIFEST_NAME;
use crate::minisign::{self, SecretKey};

/// Errors of a `plasmd release` command, with the exit code each means.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Key(#[from] minisign::MinisignError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("{0}: {1}")]
    Read(std::path::PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Dir(std::path::PathBuf, String),
    #[error("{0}: verification failed: {1}")]
    Verify(std::path::PathBuf, String),
}

impl CommandError {
    /// 3 when something did not verify, 1 when writing the release
    /// failed, else 2 (a key file or directory the user named is wrong).
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Verify(..) => 3,
            CommandError::Sign(SignError::Write(..)) => 1,
            _ => 2,
        }
    }
}

/// What `plasmd release` was asked to do.
#[derive(Debug, Clone)]
pub enum ReleaseCommand {
    Keygen {
        public: PathBuf,
        secret: PathBuf,
    },
    Sign {
        secret: PathBuf,
        dir: PathBuf,
        opts: SignOptions,
    },
    Verify {
        public: PathBuf,
        dir: PathBuf,
    },
    /// Print this text and exit 0.
    Print(String),
}

/// Runs the command; returns what to print on stdout.
pub fn run(cmd: &ReleaseCommand) -> Result<String, CommandError> {
    match cmd {
        ReleaseCommand::Print(text) => Ok(text.clone()),
        ReleaseCommand::Keygen { public, secret } => {
            let key = minisign::keygen(public, secret)?;
            Ok(format!(
                "release key {}: public key in {}, secret key (unencrypted, mode 0600) in {}\n\
                 Keep the secret key offline; flash the public key into boards \
                 (phase-discover --release-key {}).\n",
                key.id,
                public.display(),
                secret.display(),
                public.display()
            ))
        }
        ReleaseCommand::Sign { secret, dir, opts } => {
            let key = SecretKey::load(secret)?;
            let r = sign_dir(&key, dir, opts)?;
            Ok(format!(
                "signed {}/{} version {} release_seq {} with key {}: {} and {} written in {}\n",
                r.channel,
                r.arch,
                r.version,
                r.release_seq,
                r.key_id,
                MANIFEST_NAME,
                SIGNATURE_NAME,
                dir.display()
            ))
        }
        ReleaseCommand::Verify { public, dir } => verify_dir(public, dir),
    }
}

/// Checks a signed directory as a board would: the signature, the release
/// fields, and that every listed file is there with its size and sha256.
fn verify_dir(public: &Path, dir: &Path) -> Result<String, CommandError> {
    let keys = ReleaseKeys::load(&[public.to_path_buf()]).map_err(|e| match e {
        ReleaseError::Key(k) => CommandError::Key(k),
        other => CommandError::Dir(public.to_path_buf(), other.to_string()),
    })?;
    let bad = |m: String| CommandError::Verify(dir.to_path_buf(), m);
    let (root, ca) =
        super::split_release_dir(dir).map_err(|e| CommandError::Dir(dir.to_path_buf(), e))?;
    let abs = root.join(&ca.channel).join(&ca.arch);
    let read = |n: &str| {
        let p = abs.join(n);
        std::fs::read(&p).map_err(|e| CommandError::Read(p, e))
    };
    let json = read(MANIFEST_NAME)?;
    let sig = match read(SIGNATURE_NAME) {
        Ok(s) => Some(s),
        Err(CommandError::Read(_, e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let release = keys
        .verify(&json, sig.as_deref(), &ca.channel, &ca.arch)
        .map_err(|e| bad(e.to_string()))?;
    let listed = crate::manifest::parse_manifest(&json).map_err(bad)?;
    // The files as the server would list them.
    let on_disk = super::scan_one(&root, &ca)
        .map_err(|e| CommandError::Dir(dir.to_path_buf(), e))?
        .map(|m| m.artifacts.clone());
    for a in &listed {
        let have = on_disk.as_ref().and_then(|d| d.get(&a.name));
        match have {
            Some(h) if h.size == a.size && h.sha256 == a.sha256 => {}
            Some(h) => {
                return Err(bad(format!(
                    "{} is {} bytes with sha256 {}, the signed manifest says {} bytes, {}",
                    a.name, h.size, h.sha256, a.size, a.sha256
                )))
            }
            None => return Err(bad(format!("{} is listed but missing", a.name))),
        }
    }
    Ok(format!("OK: {release}; {} files match\n", listed.len()))
}
