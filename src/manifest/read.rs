//! Reading a manifest: untrusted bytes (from a provider, a disk, a
//! command line) into its release fields, its artifact list and its boot
//! object. Strings are bounded (`heapless`), the list is read one element
//! at a time, nesting is bounded before parsing: a hostile manifest can
//! neither allocate without limit nor panic the parser.

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{
    chunk_count, Artifact, BootSpec, CHUNK_SIZE, MAX_BOOT_CMDLINE, MAX_FILES, UNESCAPE_BUFFER,
};

/// The release fields of a manifest, as far as they are there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseFields {
    pub channel: Option<String>,
    pub arch: Option<String>,
    pub version: String,
    pub release_seq: Option<u64>,
    pub created: Option<String>,
}

/// Reads the top-level release fields of a manifest (untrusted bytes:
/// bounded strings, no panics). Unknown fields are ignored.
pub fn read_fields(json: &[u8]) -> Result<ReleaseFields, String> {
    #[derive(Deserialize)]
    struct Head {
        version: heapless::String<128>,
        #[serde(default)]
        channel: Option<heapless::String<64>>,
        #[serde(default)]
        arch: Option<heapless::String<64>>,
        #[serde(default)]
        release_seq: Option<u64>,
        #[serde(default)]
        created: Option<heapless::String<40>>,
    }
    check_depth(json)?;
    let mut unescape = vec![0u8; UNESCAPE_BUFFER];
    let (head, _): (Head, usize) = serde_json_core::from_slice_escaped(json, &mut unescape)
        .map_err(|e| {
            format!("{e} (it must be a JSON object with a string \"version\" of at most 128 bytes)")
        })?;
    let version = head.version.as_str();
    if version.is_empty() || version.chars().any(char::is_control) {
        return Err("\"version\" is empty or not printable".into());
    }
    Ok(ReleaseFields {
        channel: head.channel.map(|s| s.as_str().to_string()),
        arch: head.arch.map(|s| s.as_str().to_string()),
        version: version.to_string(),
        release_seq: head.release_seq,
        created: head.created.map(|s| s.as_str().to_string()),
    })
}

/// Deepest nesting accepted in a shipped manifest. The parser recurses per
/// level, so unbounded nesting would be a stack overflow waiting to happen.
const MAX_JSON_DEPTH: usize = 32;

/// The top-level `"version"` string of a shipped manifest.
pub fn shipped_version(json: &[u8]) -> Result<String, String> {
    read_fields(json).map(|f| f.version)
}

/// Rejects JSON nested deeper than `MAX_JSON_DEPTH`, without parsing it.
pub fn check_depth(json: &[u8]) -> Result<(), String> {
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!("nested deeper than {MAX_JSON_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct WireArtifact {
    name: heapless::String<255>,
    size: u64,
    sha256: heapless::String<64>,
    #[serde(default)]
    chunks: Option<ChunkList>,
}

/// Chunk hashes one artifact may list: 64 GiB at 1 MiB chunks. (The
/// manifest's own size cap bounds the total far below this anyway.)
const MAX_CHUNKS: usize = 65_536;

/// An artifact's chunk hashes, read one at a time into 32 bytes each.
struct ChunkList(Vec<[u8; 32]>);

impl<'de> Deserialize<'de> for ChunkList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ChunkList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of hex sha256 strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ChunkList, A::Error> {
                let mut out = Vec::new();
                while let Some(h) = seq.next_element::<heapless::String<64>>()? {
                    if out.len() == MAX_CHUNKS {
                        return Err(serde::de::Error::custom("too many chunk hashes"));
                    }
                    let mut bytes = [0u8; 32];
                    hex::decode_to_slice(h.as_str(), &mut bytes).map_err(|_| {
                        serde::de::Error::custom("a chunk hash is not 64 hex digits")
                    })?;
                    out.push(bytes);
                }
                Ok(ChunkList(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// The artifact list, read one element at a time so memory stays bounded
/// by `MAX_FILES` small entries whatever the manifest holds.
struct ArtifactList(Vec<Artifact>);

impl<'de> Deserialize<'de> for ArtifactList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ArtifactList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of {name, size, sha256}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArtifactList, A::Error> {
                let mut out = Vec::new();
                while let Some(a) = seq.next_element::<WireArtifact>()? {
                    if out.len() == MAX_FILES {
                        return Err(serde::de::Error::custom("too many artifacts"));
                    }
                    out.push(Artifact {
                        name: a.name.as_str().to_string(),
                        size: a.size,
                        sha256: a.sha256.as_str().to_string(),
                        chunks: a.chunks.map(|c| c.0).unwrap_or_default(),
                    });
                }
                Ok(ArtifactList(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct WireManifest {
    #[serde(default)]
    chunk_size: Option<u64>,
    artifacts: ArtifactList,
    #[serde(default)]
    boot: Option<WireBoot>,
}

#[derive(Deserialize)]
struct WireBoot {
    kernel: heapless::String<255>,
    #[serde(default)]
    initrd: Option<heapless::String<255>>,
    #[serde(default)]
    dtb: Option<heapless::String<255>>,
    #[serde(default)]
    cmdline: Option<heapless::String<MAX_BOOT_CMDLINE>>,
}

/// The artifacts a plasmd manifest lists (extra fields ignored).
pub fn parse_manifest(json: &[u8]) -> Result<Vec<Artifact>, String> {
    parse_manifest_and_boot(json).map(|(list, _)| list)
}

/// The artifacts and the `boot` object of a manifest. Boot file names must
/// be artifacts it lists; the command line must be printable.
pub fn parse_manifest_and_boot(json: &[u8]) -> Result<(Vec<Artifact>, Option<BootSpec>), String> {
    shipped_version(json)?;
    let mut unescape = vec![0u8; UNESCAPE_BUFFER];
    let (m, _): (WireManifest, usize) = serde_json_core::from_slice_escaped(json, &mut unescape)
        .map_err(|e| {
            format!("{e} (expected \"artifacts\": [{{\"name\", \"size\", \"sha256\"}}, ...])")
        })?;
    let mut list = m.artifacts.0;
    check_chunks(m.chunk_size, &mut list)?;
    let boot = match m.boot {
        None => None,
        Some(b) => {
            let named = |n: &str| -> Result<String, String> {
                if list.iter().any(|a| a.name == n) {
                    Ok(n.to_string())
                } else {
                    Err(format!(
                        "boot file {n:?} is not one of the manifest's artifacts"
                    ))
                }
            };
            let cmdline = b.cmdline.map(|c| c.as_str().to_string());
            if cmdline
                .as_deref()
                .is_some_and(|c| c.chars().any(char::is_control))
            {
                return Err("boot.cmdline has control characters".into());
            }
            Some(BootSpec {
                kernel: named(&b.kernel)?,
                initrd: b.initrd.as_deref().map(named).transpose()?,
                dtb: b.dtb.as_deref().map(named).transpose()?,
                cmdline,
            })
        }
    };
    Ok((list, boot))
}

/// Chunk hashes count only at the `chunk_size` this build uses
/// ([`CHUNK_SIZE`]); at another (a newer writer's choice) or none, they are
/// dropped and the files are checked whole, as before chunk hashes. At
/// ours, every artifact must list exactly one hash per chunk: a signed
/// manifest that does not is refused, not half trusted.
fn check_chunks(chunk_size: Option<u64>, list: &mut [Artifact]) -> Result<(), String> {
    if chunk_size != Some(CHUNK_SIZE) {
        for a in list.iter_mut() {
            a.chunks = Vec::new();
        }
        return Ok(());
    }
    for a in list.iter() {
        let want = chunk_count(a.size, CHUNK_SIZE);
        if a.chunks.len() as u64 != want {
            return Err(format!(
                "{}: {} chunk hashes for {} bytes (want {want} of {CHUNK_SIZE} bytes)",
                a.name,
                a.chunks.len(),
                a.size
            ));
        }
    }
    Ok(())
}

/// The manifest sha256 a signature's trusted comment names (`sha256:HEX`,
/// as `release sign` writes it), if it names one; signatures made with
/// the minisign CLI do not.
pub fn signed_sha256(trusted_comment: &str) -> Option<&str> {
    trusted_comment
        .split('\t')
        .find_map(|field| field.strip_prefix("sha256:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_quoted_boot_cmdline_is_read_whole() {
        // `dyndbg="..."` and the like: escaped quotes in a command line
        // longer than a small unescape buffer, in a field every reader
        // skips but still unescapes.
        let cmdline = "console=ttyAMA0 dyndbg=\\\"file x +p\\\" ".repeat(12);
        let json = format!(
            "{{\"version\":\"v1\",\"artifacts\":[{{\"name\":\"k\",\"size\":1,\"sha256\":\"ab\"}}],\
             \"boot\":{{\"kernel\":\"k\",\"cmdline\":\"{cmdline}\"}}}}"
        );
        assert!(json.len() > 400, "{json}");
        assert_eq!(read_fields(json.as_bytes()).unwrap().version, "v1");
        let (_, boot) = parse_manifest_and_boot(json.as_bytes()).unwrap();
        let got = boot.unwrap().cmdline.unwrap();
        assert_eq!(got.matches('"').count(), 24, "{got}");
    }

    #[test]
    fn manifests_parse_into_bounded_artifact_lists() {
        let json = br#"{"channel":"stable","version":"v1","artifacts":[{"name":"vmlinuz","size":6,"sha256":"ab"},{"name":"a b","size":0,"sha256":"cd","extra":1}]}"#;
        let list = parse_manifest(json).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].name, "a b");
        for bad in [
            &b"{}"[..],
            b"[]",
            b"{\"version\":\"v\",\"artifacts\":3}",
            b"{\"version\":\"v\",\"artifacts\":[{\"name\":1}]}",
        ] {
            assert!(parse_manifest(bad).is_err());
        }
    }
}
