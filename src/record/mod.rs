//! The DHT record that advertises a manifest: its key, its JSON value, and the
//! checks a reader runs before trusting it.
//!
//! This module owns the wire format of `ManifestRecord` (see `CONVENTIONS.md`):
//! encoding with a hard size bound, decoding untrusted bytes into bounded
//! types (`serde-json-core` + `heapless`, so a hostile record can neither
//! allocate without limit nor panic the parser), and validation of a decoded
//! record against the key it was found under, including its ed25519
//! signature (see [`ManifestRecord::signing_bytes`] for the canonical form).
//! It does not talk to the network (that is `dht`) and does not decide when
//! to publish (that is the provider's `publisher`).

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::channel::NameError;
use crate::time::{parse_rfc3339, rfc3339, Now, CLOCK_SKEW_SECS};

mod key;
pub use key::{
    holder_key, manifest_dht_key, manifest_key, parse_key, provider_key, release_key,
    release_shard_key, shard_of, ParsedKey, RELEASE_SHARDS,
};

/// Largest record value we write or accept, from the conventions.
pub const MAX_RECORD_BYTES: usize = 2048;

/// Bounds on individual fields. They sum to well under `MAX_RECORD_BYTES`
/// and keep a decoded record at a fixed, small size.
const MAX_URL: usize = 1024;
const MAX_PEER_ID: usize = 128;
const MAX_PROVIDER_NAME: usize = 128;
const MAX_TIMESTAMP: usize = 40;
const MAX_VERSION: usize = 128;
/// Hex of an ed25519 signature (64 bytes).
const SIG_HEX: usize = 128;
/// Hex of a sha256 (32 bytes).
const SHA256_HEX: usize = 64;
/// Hex of a minisign key id (8 bytes).
const KEY_ID_HEX: usize = 16;

/// The longest a record may claim to live (7 days, also the largest
/// `--record-ttl`): an `expires_at` further ahead is refused, so a record
/// cannot squat on a key for years.
pub const MAX_RECORD_TTL_SECS: u64 = 7 * 24 * 3600;

/// First line of the signed byte string; bump it if the form changes.
const SIGNING_CONTEXT: &str = "plasmd-record-v1";

/// Everything that can be wrong with a record or a record key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record value is {0} bytes, more than the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("record value is not a valid ManifestRecord JSON object: {0}")]
    Json(String),
    #[error("record field `{0}` is invalid: {1}")]
    Field(&'static str, String),
    #[error("record key is not of the form /phase/<channel>/<arch>/manifest")]
    BadKey,
    #[error("record belongs to /phase/{0}/{1}/manifest but was found under another key")]
    KeyMismatch(String, String),
    #[error("invalid {0} name {1:?}: use 1-32 characters from a-z, 0-9, '.', '_', '-', starting with a letter or digit")]
    BadName(&'static str, String),
    #[error("record is not signed (missing `{0}`)")]
    Unsigned(&'static str),
    #[error("record signature does not verify against its peer_id")]
    BadSignature,
    #[error("record expired at {0}")]
    Expired(String),
    #[error("record seq {0} is lower than seq {1} already held from the same publisher")]
    Replayed(u64, u64),
    #[error("record is dated in the future: {0}")]
    Future(String),
    #[error("record of {0} is older than the record of {1} held on the shared key")]
    Older(String, String),
    #[error("record publisher {0} is not a trusted publisher (--trust)")]
    Untrusted(String),
}

/// Why a record was refused, for the counters storage nodes report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefusalKind {
    Oversized,
    Malformed,
    Rekeyed,
    Unsigned,
    Forged,
    Expired,
    Replayed,
    /// Dated ahead of the reader's clock, or claiming to live too long.
    Future,
    /// Valid, but older than the record held on the shared spec key.
    Older,
    /// Valid, but its publisher is not in the node's `--trust` list.
    Untrusted,
    /// Valid, but the store is full and its sender already holds the most
    /// records (see `dht::hygiene`).
    Quota,
}

impl From<NameError> for RecordError {
    fn from(e: NameError) -> Self {
        RecordError::BadName(e.what, e.name)
    }
}

impl RecordError {
    /// The kind of refusal this error stands for.
    pub fn kind(&self) -> RefusalKind {
        match self {
            RecordError::TooLarge(_) => RefusalKind::Oversized,
            RecordError::Json(_) | RecordError::Field(..) | RecordError::BadName(..) => {
                RefusalKind::Malformed
            }
            RecordError::BadKey | RecordError::KeyMismatch(..) => RefusalKind::Rekeyed,
            RecordError::Unsigned(_) => RefusalKind::Unsigned,
            RecordError::BadSignature => RefusalKind::Forged,
            RecordError::Expired(_) => RefusalKind::Expired,
            RecordError::Replayed(..) => RefusalKind::Replayed,
            RecordError::Future(_) => RefusalKind::Future,
            RecordError::Older(..) => RefusalKind::Older,
            RecordError::Untrusted(_) => RefusalKind::Untrusted,
        }
    }
}

impl RefusalKind {
    /// The kind's one-word name (as in logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Oversized => "oversized",
            RefusalKind::Malformed => "malformed",
            RefusalKind::Rekeyed => "rekeyed",
            RefusalKind::Unsigned => "unsigned",
            RefusalKind::Forged => "forged",
            RefusalKind::Expired => "expired",
            RefusalKind::Replayed => "replayed",
            RefusalKind::Future => "future",
            RefusalKind::Older => "older",
            RefusalKind::Untrusted => "untrusted",
            RefusalKind::Quota => "quota",
        }
    }
}

impl fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The DHT record value that advertises one channel/arch manifest.
///
/// Field names and meanings are fixed by the conventions: other
/// implementations read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestRecord {
    /// Full URL of the manifest.json this record advertises.
    pub url: String,
    /// The publisher's libp2p peer id (base58).
    pub peer_id: String,
    /// Human-readable provider name; left out of the JSON when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
    /// RFC 3339 UTC time of this put; readers prefer the newest.
    pub last_updated: String,
    /// Version of the advertised manifest.
    pub version: String,
    /// Strictly increasing per publisher (milliseconds since the epoch,
    /// never lower than the last one used): the highest wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// RFC 3339 UTC time after which the record is void.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Hex sha256 of the exact manifest bytes served at `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// The `release_seq` of the signed release the manifest is, if it is
    /// one: a hint (boards verify the manifest itself), so a reader can
    /// tell a signed release from a bare manifest before downloading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_seq: Option<u64>,
    /// Id of the minisign key that signed the release (16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_key: Option<String>,
    /// Hex ed25519 signature over [`ManifestRecord::signing_bytes`], by the
    /// key `peer_id` embeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// The bounded shape untrusted bytes are decoded into. Unknown fields are
/// ignored (writers may add fields), missing required ones are an error.
#[derive(Deserialize)]
struct WireRecord {
    url: heapless::String<MAX_URL>,
    peer_id: heapless::String<MAX_PEER_ID>,
    #[serde(default)]
    provider_name: Option<heapless::String<MAX_PROVIDER_NAME>>,
    last_updated: heapless::String<MAX_TIMESTAMP>,
    version: heapless::String<MAX_VERSION>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    expires_at: Option<heapless::String<MAX_TIMESTAMP>>,
    #[serde(default)]
    manifest_sha256: Option<heapless::String<SHA256_HEX>>,
    #[serde(default)]
    release_seq: Option<u64>,
    #[serde(default)]
    release_key: Option<heapless::String<KEY_ID_HEX>>,
    #[serde(default)]
    sig: Option<heapless::String<SIG_HEX>>,
}

impl ManifestRecord {
    /// An unsigned record for `url` published now by `peer_id`.
    pub fn new(url: &str, peer_id: &str, provider_name: Option<&str>, version: &str) -> Self {
        ManifestRecord {
            url: url.to_string(),
            peer_id: peer_id.to_string(),
            provider_name: provider_name.map(str::to_string),
            last_updated: rfc3339(SystemTime::now()),
            version: version.to_string(),
            seq: None,
            expires_at: None,
            manifest_sha256: None,
            release_seq: None,
            release_key: None,
            sig: None,
        }
    }

    /// The byte string the signature covers: the record key and every other
    /// field, one `name=value` line each in a fixed order, `provider_name`
    /// left out when unset. No field may contain a control character (see
    /// `validate`), so the form is unambiguous.
    pub fn signing_bytes(&self, key: &str) -> Vec<u8> {
        let mut out = format!(
            "{SIGNING_CONTEXT}\nkey={key}\nurl={}\npeer_id={}\n",
            self.url, self.peer_id
        );
        if let Some(name) = &self.provider_name {
            out.push_str(&format!("provider_name={name}\n"));
        }
        out.push_str(&format!(
            "last_updated={}\nversion={}\nseq={}\nexpires_at={}\nmanifest_sha256={}\n",
            self.last_updated,
            self.version,
            self.seq.unwrap_or(0),
            self.expires_at.as_deref().unwrap_or(""),
            self.manifest_sha256.as_deref().unwrap_or("")
        ));
        // Added after v1 and only when present, so a record without a
        // release signs exactly as before and older readers still verify it.
        if let Some(seq) = self.release_seq {
            out.push_str(&format!("release_seq={seq}\n"));
        }
        if let Some(key) = &self.release_key {
            out.push_str(&format!("release_key={key}\n"));
        }
        out.into_bytes()
    }

    /// Fills in the signed fields and signs the record for `key` with
    /// `keypair`, which must be the key behind `peer_id`.
    pub fn sign(
        mut self,
        key: &str,
        keypair: &libp2p::identity::Keypair,
        seq: u64,
        expires_at: SystemTime,
        manifest_sha256: &str,
    ) -> Result<Self, RecordError> {
        self.seq = Some(seq);
        self.expires_at = Some(rfc3339(expires_at));
        self.manifest_sha256 = Some(manifest_sha256.to_string());
        self.sig = None;
        let sig = keypair
            .sign(&self.signing_bytes(key))
            .map_err(|e| RecordError::Field("sig", e.to_string()))?;
        self.sig = Some(hex::encode(&sig));
        Ok(self)
    }

    /// Checks the signed fields at time `now` (seconds since the epoch):
    /// all present and well-formed, not expired (allowing
    /// [`CLOCK_SKEW_SECS`]), and the signature made by the key embedded in
    /// `peer_id` over this record under `key`.
    pub fn verify_signature(&self, key: &str, now: u64) -> Result<(), RecordError> {
        self.verify_signature_at(key, Now::At(now))
    }

    /// [`ManifestRecord::verify_signature`] for a reader whose clock may be
    /// wrong: with [`Now::NotBefore`] only expiry is judged (against the
    /// lower bound); "dated ahead" cannot be told without a clock.
    pub fn verify_signature_at(&self, key: &str, now: Now) -> Result<(), RecordError> {
        let (earliest, latest) = match now {
            Now::At(t) => (t, t),
            Now::NotBefore(t) => (t, u64::MAX),
        };
        self.seq.ok_or(RecordError::Unsigned("seq"))?;
        let expires_at = self
            .expires_at
            .as_deref()
            .ok_or(RecordError::Unsigned("expires_at"))?;
        let sha = self
            .manifest_sha256
            .as_deref()
            .ok_or(RecordError::Unsigned("manifest_sha256"))?;
        let sig = self.sig.as_deref().ok_or(RecordError::Unsigned("sig"))?;
        if !crate::text::is_sha256_hex(sha) {
            return Err(RecordError::Field(
                "manifest_sha256",
                "not 64 lower-case hex digits".into(),
            ));
        }
        let expires = parse_rfc3339(expires_at)
            .ok_or_else(|| RecordError::Field("expires_at", "not an RFC 3339 UTC time".into()))?;
        if expires.saturating_add(CLOCK_SKEW_SECS) < earliest {
            return Err(RecordError::Expired(expires_at.to_string()));
        }
        // Time bounds: a record dated ahead of every honest clock would win
        // "newest" forever, and one claiming to live for years would squat
        // on its key.
        let updated = parse_rfc3339(&self.last_updated)
            .ok_or_else(|| RecordError::Field("last_updated", "not an RFC 3339 UTC time".into()))?;
        if updated > latest.saturating_add(CLOCK_SKEW_SECS) {
            return Err(RecordError::Future(format!(
                "last_updated {} is more than {CLOCK_SKEW_SECS} s ahead of this clock",
                self.last_updated
            )));
        }
        if expires > latest.saturating_add(MAX_RECORD_TTL_SECS + CLOCK_SKEW_SECS) {
            return Err(RecordError::Future(format!(
                "expires_at {expires_at} is more than {MAX_RECORD_TTL_SECS} s ahead"
            )));
        }
        if expires < updated {
            return Err(RecordError::Future(format!(
                "expires_at {expires_at} is before last_updated {}",
                self.last_updated
            )));
        }
        let sig = unhex(sig).ok_or_else(|| RecordError::Field("sig", "not hex".into()))?;
        let peer: libp2p::PeerId =
            self.peer_id
                .parse()
                .map_err(|e: libp2p::identity::ParseError| {
                    RecordError::Field("peer_id", e.to_string())
                })?;
        let public = public_key_of(&peer).ok_or(RecordError::BadSignature)?;
        if public.verify(&self.signing_bytes(key), &sig) {
            Ok(())
        } else {
            Err(RecordError::BadSignature)
        }
    }

    /// The JSON value, refusing to produce anything larger than a reader
    /// would accept.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecordError> {
        let mut buf = [0u8; MAX_RECORD_BYTES];
        let n = serde_json_core::to_slice(self, &mut buf)
            .map_err(|_| RecordError::TooLarge(self.approx_len()))?;
        Ok(buf[..n].to_vec())
    }

    fn approx_len(&self) -> usize {
        self.url.len()
            + self.peer_id.len()
            + self.provider_name.as_ref().map_or(0, String::len)
            + self.last_updated.len()
            + self.version.len()
            + 80
    }

    /// Decodes untrusted bytes. Checks shape and sizes only; use
    /// [`ManifestRecord::validate`] for the meaning of the fields.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        // Strings are unescaped into this buffer; no field can be longer
        // than the whole record.
        let mut unescape = [0u8; MAX_RECORD_BYTES];
        let (wire, used): (WireRecord, usize) =
            serde_json_core::from_slice_escaped(bytes, &mut unescape)
                .map_err(|e| RecordError::Json(e.to_string()))?;
        if bytes[used..].iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(RecordError::Json("trailing bytes after the object".into()));
        }
        Ok(ManifestRecord {
            url: wire.url.as_str().to_string(),
            peer_id: wire.peer_id.as_str().to_string(),
            provider_name: wire.provider_name.map(|s| s.as_str().to_string()),
            last_updated: wire.last_updated.as_str().to_string(),
            version: wire.version.as_str().to_string(),
            seq: wire.seq,
            expires_at: wire.expires_at.map(|s| s.as_str().to_string()),
            manifest_sha256: wire.manifest_sha256.map(|s| s.as_str().to_string()),
            release_seq: wire.release_seq,
            release_key: wire.release_key.map(|s| s.as_str().to_string()),
            sig: wire.sig.map(|s| s.as_str().to_string()),
        })
    }

    /// Checks that the record means something and belongs to
    /// `channel`/`arch`: an http(s) URL ending in that channel/arch's
    /// manifest path, a parseable peer id, an RFC 3339 UTC timestamp, and a
    /// non-empty printable version.
    pub fn validate(&self, channel: &str, arch: &str) -> Result<(), RecordError> {
        let path = format!("/{channel}/{arch}/manifest.json");
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .ok_or_else(|| RecordError::Field("url", "not an http:// or https:// URL".into()))?;
        if !printable(&self.url) || rest.starts_with('/') {
            return Err(RecordError::Field("url", "malformed URL".into()));
        }
        if !rest.ends_with(&path) {
            return Err(RecordError::KeyMismatch(
                url_channel_arch(rest).0,
                url_channel_arch(rest).1,
            ));
        }
        self.peer_id
            .parse::<libp2p::PeerId>()
            .map_err(|e| RecordError::Field("peer_id", e.to_string()))?;
        parse_rfc3339(&self.last_updated)
            .ok_or_else(|| RecordError::Field("last_updated", "not an RFC 3339 UTC time".into()))?;
        if self.version.is_empty() || !printable(&self.version) {
            return Err(RecordError::Field(
                "version",
                "empty or not printable".into(),
            ));
        }
        if let Some(name) = &self.provider_name {
            if !printable(name) {
                return Err(RecordError::Field("provider_name", "not printable".into()));
            }
        }
        if let Some(key) = &self.release_key {
            if key.len() != KEY_ID_HEX || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RecordError::Field(
                    "release_key",
                    "not 16 hex digits".into(),
                ));
            }
        }
        Ok(())
    }

    /// Seconds since the epoch of `last_updated`, for picking the newest of
    /// several valid records. Invalid timestamps sort oldest.
    pub fn updated_at(&self) -> u64 {
        parse_rfc3339(&self.last_updated).unwrap_or(0)
    }

    /// Whether the record's `expires_at` (with the clock skew allowed) has
    /// passed at `now`; a record without a readable one counts as expired.
    /// For records already checked when they were stored: the signature is
    /// not checked again.
    pub fn expired_at(&self, now: u64) -> bool {
        self.expires_at
            .as_deref()
            .and_then(parse_rfc3339)
            .is_none_or(|t| t.saturating_add(CLOCK_SKEW_SECS) < now)
    }

    /// The record as a JSON object for `phase-discover --json`.
    pub fn to_json(&self) -> String {
        // `to_bytes` only fails for records larger than the wire limit,
        // which a decoded or validated record never is.
        let bytes = self.to_bytes().unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }
}

/// The ed25519 public key a peer id embeds (identity multihash); `None`
/// for peer ids that only hash their key.
fn public_key_of(peer: &libp2p::PeerId) -> Option<libp2p::identity::PublicKey> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()
}

/// Lower-case hex (as we write it) decoded by the `hex` crate.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(s).ok()
}

/// Best-effort channel/arch from a URL path, for error messages only.
fn url_channel_arch(rest: &str) -> (String, String) {
    let parts: Vec<&str> = rest.rsplitn(4, '/').collect();
    match parts.as_slice() {
        [_, arch, channel, _] => (channel.to_string(), arch.to_string()),
        _ => ("?".into(), "?".into()),
    }
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control())
}

/// Decodes and validates a record value found under `key` (the spec key or
/// a per-provider key), signature and expiry included: the one check every
/// reader (lookup client and storage node alike) runs.
pub fn decode_for_key(key: &[u8], value: &[u8], now: Now) -> Result<ManifestRecord, RecordError> {
    let parsed = parse_key(key)?;
    let record = ManifestRecord::from_bytes(value)?;
    record.validate(&parsed.channel, &parsed.arch)?;
    if let Some(release) = &parsed.release {
        // A release key holds announcements only; a holder's record names
        // the release its key does.
        if parsed.provider.is_none() || record.manifest_sha256.as_ref() != Some(release) {
            return Err(RecordError::BadKey);
        }
    }
    if let Some(p) = &parsed.provider {
        if *p != record.peer_id {
            return Err(RecordError::KeyMismatch(parsed.channel, parsed.arch));
        }
    }
    // parse_key accepted it, so the key is UTF-8.
    let key = std::str::from_utf8(key).map_err(|_| RecordError::BadKey)?;
    record.verify_signature_at(key, now)?;
    Ok(record)
}

impl fmt::Display for ManifestRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (version {}, by {}",
            self.url, self.version, self.peer_id
        )?;
        if let Some(name) = &self.provider_name {
            write!(f, " \"{name}\"")?;
        }
        write!(
            f,
            ", updated {}, seq {})",
            self.last_updated,
            self.seq.unwrap_or(0)
        )
    }
}

#[cfg(test)]
mod tests;
