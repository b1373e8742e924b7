//! Writing a manifest: the canonical bytes of a generated manifest
//! ([`render`]: the same inputs always give the same bytes), its content
//! version, and hashing the files it lists.

use std::collections::BTreeMap;
use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::{Artifact, BootSpec, Manifest, CHUNK_SIZE, MANIFEST_NAME};
use crate::channel::ChannelArch;
use crate::text::{json_string, sha256_hex};
use crate::time::rfc3339_secs;

/// Hashing reads this much at a time.
const HASH_CHUNK: usize = 64 * 1024;

/// Hex sha256 of everything `file` yields, and the sha256 of each
/// [`CHUNK_SIZE`] piece of it, in one pass.
pub fn hash_reader(file: &mut impl Read) -> io::Result<(String, Vec<[u8; 32]>)> {
    let mut whole = Sha256::new();
    let mut piece = Sha256::new();
    let mut in_piece = 0u64;
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let take = rest
                .len()
                .min(usize::try_from(CHUNK_SIZE - in_piece).unwrap_or(usize::MAX));
            piece.update(&rest[..take]);
            in_piece += take as u64;
            rest = &rest[take..];
            if in_piece == CHUNK_SIZE {
                chunks.push(piece.finalize_reset().into());
                in_piece = 0;
            }
        }
    }
    if in_piece > 0 {
        chunks.push(piece.finalize().into());
    }
    Ok((hex::encode(whole.finalize()), chunks))
}

/// The version of a generated manifest: derived from names, sizes and
/// hashes only, so the same files always give the same version.
pub fn content_version(artifacts: &BTreeMap<String, Artifact>) -> String {
    let mut h = Sha256::new();
    for a in artifacts.values() {
        h.update(a.name.as_bytes());
        h.update([0]);
        h.update(a.size.to_string().as_bytes());
        h.update([0]);
        h.update(a.sha256.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..8])
}

/// Writes the canonical manifest of `artifacts`: `version` (default: the
/// content version) and, for a release, `release_seq` and `created`
/// (seconds since the epoch). The same inputs always give the same bytes.
pub fn render(
    ca: &ChannelArch,
    version: Option<&str>,
    release: Option<(u64, u64)>,
    boot: Option<&BootSpec>,
    artifacts: BTreeMap<String, Artifact>,
) -> Manifest {
    let version = version.map_or_else(|| content_version(&artifacts), str::to_string);
    let mut json = format!(
        "{{\n  \"channel\": \"{}\",\n  \"arch\": \"{}\",\n  \"version\": {},\n",
        ca.channel,
        ca.arch,
        json_string(&version)
    );
    if let Some((seq, created)) = release {
        json.push_str(&format!(
            "  \"release_seq\": {seq},\n  \"created\": \"{}\",\n",
            rfc3339_secs(created)
        ));
    }
    if let Some(b) = boot {
        let mut fields = vec![format!("\"kernel\": {}", json_string(&b.kernel))];
        for (name, value) in [
            ("initrd", &b.initrd),
            ("dtb", &b.dtb),
            ("cmdline", &b.cmdline),
        ] {
            if let Some(v) = value {
                fields.push(format!("\"{name}\": {}", json_string(v)));
            }
        }
        json.push_str(&format!("  \"boot\": {{{}}},\n", fields.join(", ")));
    }
    // Chunk hashes only when every artifact has them (a manifest lists all
    // or none), with the size they cover.
    let chunked = !artifacts.is_empty()
        && artifacts
            .values()
            .all(|a| !a.chunks.is_empty() || a.size == 0);
    if chunked {
        json.push_str(&format!("  \"chunk_size\": {CHUNK_SIZE},\n"));
    }
    json.push_str("  \"artifacts\": [");
    for (i, a) in artifacts.values().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "\n    {{\"name\": {}, \"size\": {}, \"sha256\": \"{}\"",
            json_string(&a.name),
            a.size,
            a.sha256
        ));
        if chunked {
            let hashes: Vec<String> = a
                .chunks
                .iter()
                .map(|c| format!("\"{}\"", hex::encode(c)))
                .collect();
            json.push_str(&format!(", \"chunks\": [{}]", hashes.join(", ")));
        }
        json.push('}');
    }
    json.push_str("\n  ]\n}\n");
    Manifest {
        version,
        sha256: sha256_hex(json.as_bytes()),
        json: json.into_bytes(),
        artifacts,
        signature: None,
        release: None,
    }
}

/// The trusted comment of a release signature, in minisign's own style,
/// naming the sha256 of the manifest it signs: the signature is written
/// after the manifest, and a server that reads the two in between can tell
/// they do not belong together (see `read::signed_sha256`).
pub fn trusted_comment(created: u64, manifest: &[u8]) -> String {
    format!(
        "timestamp:{created}\tfile:{MANIFEST_NAME}\thashed\tsha256:{}",
        sha256_hex(manifest)
    )
}
