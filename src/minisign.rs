//! The minisign file formats: public key, secret key and signature files,
//! byte-compatible with the `minisign` CLI (and OpenBSD signify for public
//! keys and signatures).
//!
//! Verification is the `minisign-verify` crate's; this module adds what it
//! does not do: making a key pair, reading an *unencrypted* secret key
//! (what `plasmd release keygen` and `minisign -G -W` write) and signing,
//! always in the pre-hashed `ED` form current minisign writes (Ed25519 over
//! the BLAKE2b-512 of the file). Encrypted secret keys are refused with a
//! message saying how to sign with them instead: decrypting one needs
//! scrypt and a password prompt, neither of which belongs on a provider.
//! What is signed and what a signature means for a release is `release`'s.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest};
use libp2p::identity::ed25519;

/// Key and signature files are a few hundred bytes; anything larger is not one.
const MAX_FILE: u64 = 16 * 1024;
/// Longest trusted comment we write or accept (minisign's own limit is 8 KiB).
pub const MAX_TRUSTED_COMMENT: usize = 1024;

/// Signature algorithm of the key and of legacy (not pre-hashed) signatures.
const ALG_ED: [u8; 2] = *b"Ed";
/// Signature algorithm of pre-hashed signatures.
const ALG_PREHASHED: [u8; 2] = *b"ED";
/// Secret-key checksum algorithm: BLAKE2b-256.
const CHK_B2: [u8; 2] = *b"B2";
/// "No key derivation": the secret key is stored in the clear.
const KDF_NONE: [u8; 2] = [0, 0];

/// Errors reading, writing or using minisign files.
#[derive(Debug, thiserror::Error)]
pub enum MinisignError {
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}: {1}")]
    Format(PathBuf, String),
    #[error(
        "{0}: the secret key is encrypted with a password; plasmd reads only unencrypted keys \
         (make one with `plasmd release keygen` or `minisign -G -W`), or sign manifest.json \
         with `minisign -S -s KEY -m manifest.json` yourself"
    )]
    Encrypted(PathBuf),
    #[error("{0} already exists; not overwriting a key (remove it first)")]
    Exists(PathBuf),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A key id: 8 bytes, shown as minisign shows it (`%016X` of the
/// little-endian number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// A public key, ready to verify, with its id for messages.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub id: KeyId,
    /// The base64 line of the key file (what `minisign -P` takes).
    pub base64: String,
    key: minisign_verify::PublicKey,
}

impl PublicKey {
    /// Reads a public key file (`untrusted comment:` line, base64 line).
    pub fn load(path: &Path) -> Result<Self, MinisignError> {
        let line = key_line(path, "public")?;
        Self::from_base64(&line).map_err(|e| format_err(path, &e))
    }

    /// Reads the base64 line of a public key (e.g. from a command line).
    pub fn from_base64(line: &str) -> Result<Self, String> {
        let bin = B64
            .decode(line.trim())
            .map_err(|_| "not a minisign public key: the key line is not base64".to_string())?;
        if bin.len() != 42 || bin[..2] != ALG_ED {
            return Err("not an Ed25519 minisign public key (42 bytes starting \"Ed\")".into());
        }
        let key = minisign_verify::PublicKey::from_base64(line.trim())
            .map_err(|e| format!("not a minisign public key: {e}"))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&bin[2..10]);
        Ok(PublicKey {
            id: KeyId(id),
            base64: line.trim().to_string(),
            key,
        })
    }

    /// Checks `sig` over `data`. Legacy (not pre-hashed) signatures are
    /// accepted too: older minisign versions and signify write them.
    pub fn verify(&self, data: &[u8], sig: &Signature) -> Result<(), String> {
        if sig.key_id != self.id {
            return Err(format!(
                "signed by key {}, not by release key {}",
                sig.key_id, self.id
            ));
        }
        self.key
            .verify(data, &sig.parsed, true)
            .map_err(|_| format!("signature by key {} does not verify", self.id))
    }
}

/// A parsed signature file.
pub struct Signature {
    pub key_id: KeyId,
    /// The signed (trusted) comment, without its prefix.
    pub trusted_comment: String,
    parsed: minisign_verify::Signature,
}

impl Signature {
    /// Parses the text of a `.minisig` file (untrusted bytes).
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        if text.len() as u64 > MAX_FILE {
            return Err("larger than a signature file can be".into());
        }
        let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
        let parsed = minisign_verify::Signature::decode(text)
            .map_err(|e| format!("not a minisign signature: {e}"))?;
        let line = text.lines().nth(1).unwrap_or_default();
        let bin = B64
            .decode(line.trim())
            .map_err(|_| "not a minisign signature: bad base64".to_string())?;
        let mut id = [0u8; 8];
        id.copy_from_slice(bin.get(2..10).ok_or("signature line too short")?);
        Ok(Signature {
            key_id: KeyId(id),
            trusted_comment: parsed.trusted_comment().to_string(),
            parsed,
        })
    }
}

/// An unencrypted secret key. Its `Debug` shows the id only.
pub struct SecretKey {
    pub id: KeyId,
    keypair: ed25519::Keypair,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// A new random key pair.
    pub fn generate() -> Self {
        let mut id = [0u8; 8];
        // The id only tells keys apart; the first bytes of a fresh random
        // public key are as random as anything else we have.
        let keypair = ed25519::Keypair::generate();
        let public = keypair.public().to_bytes();
        let mut h = Blake2b512::new();
        h.update(public);
        id.copy_from_slice(&h.finalize()[..8]);
        SecretKey {
            id: KeyId(id),
            keypair,
        }
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<Self, MinisignError> {
        let line = key_line(path, "secret")?;
        let bin = B64.decode(line).map_err(|_| {
            format_err(
                path,
                "not a minisign secret key: the key line is not base64",
            )
        })?;
        // sig_alg(2) kdf_alg(2) chk_alg(2) salt(32) opslimit(8) memlimit(8)
        // key id(8) secret key(64) checksum(32)
        if bin.len() != 158 || bin[..2] != ALG_ED || bin[4..6] != CHK_B2 {
            return Err(format_err(path, "not a minisign Ed25519 secret key"));
        }
        if bin[2..4] != KDF_NONE {
            return Err(MinisignError::Encrypted(path.to_path_buf()));
        }
        let keynum = &bin[54..];
        let (id, sk, chk) = (&keynum[..8], &keynum[8..72], &keynum[72..104]);
        // `minisign -G -W` (0.11) leaves the checksum of an unencrypted key
        // all zeros; the key pair check below still catches damage there.
        if chk.iter().any(|b| *b != 0) && checksum(id, sk)[..] != *chk {
            return Err(format_err(
                path,
                "checksum mismatch: the key file is damaged",
            ));
        }
        let mut sk_bytes = [0u8; 64];
        sk_bytes.copy_from_slice(sk);
        let keypair = ed25519::Keypair::try_from_bytes(&mut sk_bytes)
            .map_err(|e| format_err(path, &format!("damaged: not an Ed25519 key pair ({e})")))?;
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(id);
        Ok(SecretKey {
            id: KeyId(key_id),
            keypair,
        })
    }

    /// The public key file's text.
    pub fn public_file(&self) -> String {
        let mut bin = Vec::with_capacity(42);
        bin.extend_from_slice(&ALG_ED);
        bin.extend_from_slice(&self.id.0);
        bin.extend_from_slice(&self.keypair.public().to_bytes());
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.id,
            B64.encode(bin)
        )
    }

    /// The secret key file's text (unencrypted, as `minisign -G -W` writes).
    pub fn secret_file(&self) -> String {
        let sk = self.keypair.to_bytes();
        let mut bin = Vec::with_capacity(158);
        bin.extend_from_slice(&ALG_ED);
        bin.extend_from_slice(&KDF_NONE);
        bin.extend_from_slice(&CHK_B2);
        bin.extend_from_slice(&[0u8; 48]); // salt and limits: unused without a KDF
        bin.extend_from_slice(&self.id.0);
        bin.extend_from_slice(&sk);
        bin.extend_from_slice(&checksum(&self.id.0, &sk));
        format!(
            "untrusted comment: minisign secret key {} (UNENCRYPTED: keep it offline, mode 0600)\n{}\n",
            self.id,
            B64.encode(bin)
        )
    }

    /// A signature file for `data`: pre-hashed, with `trusted_comment`
    /// signed too.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String, MinisignError> {
        if trusted_comment.len() > MAX_TRUSTED_COMMENT || trusted_comment.contains(['\n', '\r']) {
            return Err(MinisignError::Sign(
                "the trusted comment must be one line of at most 1024 bytes".into(),
            ));
        }
        let digest = Blake2b512::digest(data);
        let sig = self.keypair.sign(&digest);
        let mut global = sig.clone();
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_sig = self.keypair.sign(&global);
        let mut line = Vec::with_capacity(74);
        line.extend_from_slice(&ALG_PREHASHED);
        line.extend_from_slice(&self.id.0);
        line.extend_from_slice(&sig);
        Ok(format!(
            "untrusted comment: signature from plasmd secret key {}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
            self.id,
            B64.encode(line),
            B64.encode(global_sig)
        ))
    }
}

/// Writes a new key pair to `public` and `secret` (mode 0600), refusing
/// to overwrite either.
pub fn keygen(public: &Path, secret: &Path) -> Result<SecretKey, MinisignError> {
    for p in [public, secret] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(MinisignError::Exists(p.to_path_buf()));
        }
    }
    let key = SecretKey::generate();
    crate::statefile::write_atomic(secret, key.secret_file().as_bytes(), 0o600)
        .map_err(|e| MinisignError::Io(secret.to_path_buf(), e))?;
    crate::statefile::write_atomic(public, key.public_file().as_bytes(), 0o644)
        .map_err(|e| MinisignError::Io(public.to_path_buf(), e))?;
    Ok(key)
}

/// BLAKE2b-256 of "Ed" || key id || secret key, minisign's key checksum.
fn checksum(id: &[u8], sk: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(ALG_ED);
    h.update(id);
    h.update(sk);
    h.finalize().into()
}

/// The base64 line of a key file: the first that is not a comment.
fn key_line(path: &Path, what: &str) -> Result<String, MinisignError> {
    let text = read_small(path)?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .map(str::to_string)
        .ok_or_else(|| {
            format_err(
                path,
                &format!("no key line (is this a minisign {what} key?)"),
            )
        })
}

fn read_small(path: &Path) -> Result<String, MinisignError> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(|e| MinisignError::Io(path.to_path_buf(), e))?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| MinisignError::Io(path.to_path_buf(), e))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format_err(path, "too large for a minisign key file"));
    }
    Ok(text)
}

fn format_err(path: &Path, msg: &str) -> MinisignError {
    MinisignError::Format(path.to_path_buf(), msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let sk = SecretKey::generate();
        let pk = PublicKey::from_base64(sk.public_file().lines().nth(1).unwrap()).unwrap();
        assert_eq!(pk.id, sk.id);
        let sig = sk.sign(b"hello", "timestamp:1\tfile:x\thashed").unwrap();
        let parsed = Signature::parse(sig.as_bytes()).unwrap();
        assert_eq!(parsed.trusted_comment, "timestamp:1\tfile:x\thashed");
        pk.verify(b"hello", &parsed).unwrap();
        assert!(pk.verify(b"hellO", &parsed).is_err());
        // A changed trusted comment breaks the global signature.
        let forged = sig.replace("timestamp:1", "timestamp:2");
        assert!(pk
            .verify(b"hello", &Signature::parse(forged.as_bytes()).unwrap())
            .is_err());
        // Another key is named in the error.
        let other = SecretKey::generate();
        let opk = PublicKey::from_base64(other.public_file().lines().nth(1).unwrap()).unwrap();
        let err = opk.verify(b"hello", &parsed).unwrap_err();
        assert!(err.contains(&sk.id.to_string()), "{err}");
    }

    #[test]
    fn secret_key_files_round_trip_and_damage_is_detected() {
        let dir = std::env::temp_dir().join(format!("plasmd-minisign-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (p, s) = (dir.join("k.pub"), dir.join("k.key"));
        let key = keygen(&p, &s).unwrap();
        assert!(matches!(keygen(&p, &s), Err(MinisignError::Exists(_))));
        let loaded = SecretKey::load(&s).unwrap();
        assert_eq!(loaded.id, key.id);
        assert_eq!(PublicKey::load(&p).unwrap().id, key.id);
        // Flip one byte of the key line: the checksum catches it.
        let mut text = fs::read_to_string(&s).unwrap();
        let line_start = text.find('\n').unwrap() + 1;
        let pos = line_start + 100;
        let c = text.as_bytes()[pos];
        let repl = if c == b'A' { "B" } else { "A" };
        text.replace_range(pos..pos + 1, repl);
        fs::write(&s, text).unwrap();
        assert!(SecretKey::load(&s).is_err());
        fs::write(&s, "garbage").unwrap();
        assert!(SecretKey::load(&s).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hostile_signature_files_are_errors() {
        for bad in [
            &b""[..],
            b"untrusted comment: x\n",
            b"untrusted comment: x\nRUQ=\ntrusted comment: x\nAAAA\n",
            &[0xff; 100][..],
        ] {
            assert!(Signature::parse(bad).is_err());
        }
        assert!(Signature::parse(&vec![b'a'; 20_000]).is_err());
    }
}
