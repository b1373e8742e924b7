//! Answers under `/_release/{manifest_sha256}/{channel}/{arch}/…`: the files
//! of one release, by the hash of its signed manifest. A release held while
//! it downloads (`manifest::holding`) offers only the chunks that verified:
//! `?have` says which, a `Range` within them is answered `206`, one that
//! reaches a chunk not held yet `416` with `Phase-Held: HELD/ALL` (so a
//! client tells "not yet" from a fault). A release of the served tree with
//! that manifest hash is answered like the tree. This module does not
//! touch sockets.

use super::files::{self, Body, Reply};
use super::parse::{parse_range, Head, RangeSpec};
use crate::channel::ChannelArch;
use crate::manifest::holding::HeldFile;
use crate::manifest::{Catalog, CHUNK_SIZE, MANIFEST_NAME, SIGNATURE_NAME};

/// The answer for `name` (`have`: its chunk list) of the release of `ca`
/// whose manifest hashes to `sha256`.
pub fn release_reply(
    catalog: &Catalog,
    sha256: &str,
    ca: &ChannelArch,
    name: &str,
    have: bool,
    head: &Head,
) -> Reply {
    let Some(holding) = catalog.holdings().get(sha256).filter(|h| h.ca == *ca) else {
        // Not held: the tree's release, if it is that one.
        return match catalog.manifest(ca) {
            Some(m) if m.sha256 == sha256 => match name {
                MANIFEST_NAME => files::manifest_reply(catalog, ca, head),
                SIGNATURE_NAME => files::signature_reply(catalog, ca, head),
                _ if have => files::have_reply(catalog, ca, name),
                _ => files::artifact_reply(catalog, ca, name, head),
            },
            _ => not_found(),
        };
    };
    let manifest = &holding.manifest;
    match name {
        MANIFEST_NAME => files::memory_reply(
            head,
            format!("\"{}\"", manifest.sha256),
            "application/json",
            Body::Manifest(manifest.clone()),
        ),
        SIGNATURE_NAME => match &manifest.signature {
            Some(sig) => files::memory_reply(
                head,
                format!("\"{}\"", crate::text::sha256_hex(sig)),
                "text/plain; charset=utf-8",
                Body::Signature(manifest.clone()),
            ),
            None => not_found(),
        },
        _ => match holding.file(name) {
            Some(f) if have => files::owned_reply("application/octet-stream", f.held.to_wire()),
            Some(f) => {
                holding.asked();
                chunks_reply(&f, head)
            }
            None => not_found(),
        },
    }
}

fn not_found() -> Reply {
    Reply::text(404, "not found\n")
}

/// Bytes of a file being downloaded: only from chunks that verified.
fn chunks_reply(f: &HeldFile, head: &Head) -> Reply {
    let size = f.size;
    let spec = head.range.as_deref().map(|r| parse_range(r, size));
    let partial = matches!(spec, Some(RangeSpec::Bytes(..)));
    let range = match spec {
        Some(RangeSpec::Bytes(start, end)) => Some((start, end)),
        Some(RangeSpec::Unsatisfiable) => None,
        // No (usable) range: the whole file, once it is all here.
        Some(RangeSpec::Ignore) | None => (size > 0).then(|| (0, size - 1)),
    };
    let held = range.filter(|(start, end)| {
        f.held
            .has_all((start / CHUNK_SIZE) as usize, (end / CHUNK_SIZE) as usize)
    });
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        // What is held changes by the second.
        ("Cache-Control", "no-store".to_string()),
    ];
    let Some((start, end)) = held else {
        headers.push(("Content-Range", format!("bytes */{size}")));
        headers.push((
            "Phase-Held",
            format!("{}/{}", f.held.count(), f.held.chunks()),
        ));
        return Reply {
            status: 416,
            headers,
            body: Body::Empty,
        };
    };
    let Ok(file) = f.file.try_clone() else {
        return Reply::busy();
    };
    if partial {
        headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
    }
    Reply {
        status: if partial { 206 } else { 200 },
        headers,
        body: Body::File {
            file,
            start,
            len: end - start + 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::held::Held;
    use crate::manifest::holding::Holding;
    use crate::testdir::TempDir;
    use std::sync::Arc;

    fn head(range: Option<&str>) -> Head {
        Head {
            method: super::super::parse::Method::Get,
            target: String::new(),
            keep_alive: false,
            range: range.map(str::to_string),
            if_range: None,
            if_none_match: None,
            if_match: None,
        }
    }

    #[test]
    fn a_release_being_downloaded_offers_only_the_chunks_that_verified() {
        let dir = TempDir::new("holding");
        let path = dir.path().join("rootfs");
        let size = 2 * CHUNK_SIZE + 10;
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        let ca = ChannelArch {
            channel: "stable".into(),
            arch: "arm64".into(),
        };
        let json = br#"{"version": "v1", "artifacts": []}"#.to_vec();
        let holding = Arc::new(Holding::new(ca.clone(), json, None).unwrap());
        let held = Arc::new(Held::empty(3));
        held.set(1);
        held.set_coming(2, true);
        holding.add(
            "rootfs",
            HeldFile {
                file: Arc::new(std::fs::File::open(&path).unwrap()),
                size,
                held: held.clone(),
            },
        );
        let catalog = Catalog::new(None, vec![], vec![]);
        catalog.holdings().add(holding.clone());
        let sha = holding.manifest.sha256.clone();
        let ask = |name: &str, have: bool, range: Option<&str>| {
            release_reply(&catalog, &sha, &ca, name, have, &head(range))
        };
        // Its list: chunk 1 held, chunk 2 coming.
        let r = ask("rootfs", true, None);
        assert_eq!((r.status, r.memory_body()), (200, &[0x40, 0x20][..]));
        // Inside chunk 1: served; touching chunk 0 or 2: not yet (416).
        let inside = format!("bytes={}-{}", CHUNK_SIZE, 2 * CHUNK_SIZE - 1);
        assert_eq!(ask("rootfs", false, Some(&inside)).status, 206);
        let across = format!("bytes={}-{}", CHUNK_SIZE, 2 * CHUNK_SIZE);
        let r = ask("rootfs", false, Some(&across));
        assert_eq!(r.status, 416);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "Phase-Held" && v == "1/3"));
        assert_eq!(ask("rootfs", false, None).status, 416, "not whole yet");
        // The manifest as it came; other releases and names are unknown.
        assert_eq!(ask(MANIFEST_NAME, false, None).status, 200);
        assert_eq!(ask(SIGNATURE_NAME, false, None).status, 404);
        assert_eq!(ask("other", false, None).status, 404);
        let other = "00".repeat(32);
        let r = release_reply(&catalog, &other, &ca, "rootfs", false, &head(None));
        assert_eq!(r.status, 404);
        // Once all is here, the whole file.
        held.set(0);
        held.set(2);
        assert_eq!(ask("rootfs", false, None).status, 200);
    }
}
