//! File responses: what to answer for a manifest or an artifact (status,
//! headers, which bytes), and how a response head is written.
//!
//! Artifacts get `Accept-Ranges`, one `Range` (`206`/`416`), `ETag` (their
//! sha256) with `If-None-Match` (`304`) and `If-Range` (strong ETag only: a
//! date cannot tell two same-second files apart), `Last-Modified` and
//! `Cache-Control`. The body of a file response is the open handle and a
//! byte range; sending it is the connection's job (`conn`). This module
//! does not touch sockets.

use std::fs::File;

use std::sync::Arc;

use super::parse::{parse_range, Head, RangeSpec};
use crate::channel::ChannelArch;
use crate::manifest::{Catalog, Manifest, OpenArtifact, OpenError};

/// How long clients may cache a manifest: short, it changes with the files.
const MANIFEST_CACHE: &str = "max-age=10";
/// Artifacts whose name carries their hash never change.
const IMMUTABLE_CACHE: &str = "public, max-age=31536000, immutable";
/// Other artifacts may be replaced: revalidate with the ETag.
const MUTABLE_CACHE: &str = "no-cache";

/// A response about to be written.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

/// What follows the head.
pub enum Body {
    Empty,
    /// A short text (errors, `/healthz`).
    Bytes(&'static [u8]),
    /// A manifest's bytes, shared with the catalog (not copied per request).
    Manifest(Arc<Manifest>),
    /// A manifest's release signature, shared the same way.
    Signature(Arc<Manifest>),
    /// Bytes made for this response (`/metrics`).
    Owned(Vec<u8>),
    /// `len` bytes of `file` from offset `start`.
    File {
        file: File,
        start: u64,
        len: u64,
    },
}

impl Body {
    /// The `Content-Length` of this body.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Manifest(m) => m.json.len() as u64,
            Body::Signature(m) => m.signature.as_ref().map_or(0, |s| s.len() as u64),
            Body::Owned(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

impl Reply {
    /// A short plain-text answer (errors, `/healthz`).
    pub fn text(status: u16, body: &'static str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Body::Bytes(body.as_bytes()),
        }
    }

    /// The bytes of an in-memory body (empty for none or a file).
    pub fn memory_body(&self) -> &[u8] {
        match &self.body {
            Body::Bytes(b) => b,
            Body::Manifest(m) => &m.json,
            Body::Signature(m) => m.signature.as_deref().unwrap_or_default(),
            Body::Owned(b) => b,
            Body::Empty | Body::File { .. } => &[],
        }
    }

    /// `503` with `Retry-After`: the server is out of descriptors.
    pub fn busy() -> Reply {
        let mut r = Reply::text(503, "busy, try again\n");
        r.headers.push(("Retry-After", "2".into()));
        r
    }

    /// The response head. An in-memory body ([`Reply::memory_body`]) is
    /// written with it in one vectored write (one segment, nothing for
    /// Nagle or a delayed ACK to hold back, no copy of the body).
    pub fn head_bytes(&self, keep: bool, date: &str) -> Vec<u8> {
        use std::fmt::Write;
        let mut out = String::with_capacity(512);
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nServer: plasmd/{}\r\nDate: {date}\r\n",
            self.status,
            reason(self.status),
            env!("CARGO_PKG_VERSION"),
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if self.status != 304 {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        out.push_str(if keep {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        out.into_bytes()
    }
}

/// The answer for `GET`/`HEAD /{channel}/{arch}/manifest.json`.
pub fn manifest_reply(catalog: &Catalog, ca: &ChannelArch, head: &Head) -> Reply {
    match catalog.manifest(ca) {
        Some(m) => {
            let etag = format!("\"{}\"", m.sha256);
            memory_reply(head, etag, "application/json", Body::Manifest(m))
        }
        None => Reply::text(404, "not found\n"),
    }
}

/// The answer for `GET`/`HEAD /{channel}/{arch}/manifest.json.minisig`.
pub fn signature_reply(catalog: &Catalog, ca: &ChannelArch, head: &Head) -> Reply {
    match catalog.manifest(ca) {
        Some(m) if m.signature.is_some() => {
            // Its own bytes' hash: a release re-signed (another key, same
            // manifest) must not be answered 304 from a cache. At most 4 KiB,
            // asked for once per board boot.
            let sig = m.signature.as_deref().unwrap_or_default();
            let etag = format!("\"{}\"", crate::text::sha256_hex(sig));
            memory_reply(head, etag, "text/plain; charset=utf-8", Body::Signature(m))
        }
        _ => Reply::text(404, "not found\n"),
    }
}

/// A document made for this response (`/status.json`, the status page).
pub fn owned_reply(content_type: &str, body: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("Content-Type", content_type.into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: Body::Owned(body),
    }
}

/// A short-lived in-memory body with an ETag.
pub fn memory_reply(head: &Head, etag: String, content_type: &str, body: Body) -> Reply {
    let mut headers = vec![
        ("Content-Type", content_type.to_string()),
        ("ETag", etag.clone()),
        ("Cache-Control", MANIFEST_CACHE.into()),
    ];
    if etag_matches(head.if_none_match.as_deref(), &etag) {
        return Reply {
            status: 304,
            headers,
            body: Body::Empty,
        };
    }
    headers.push(("Accept-Ranges", "none".into()));
    Reply {
        status: 200,
        headers,
        body,
    }
}

/// The answer for `?have`: every chunk of an artifact this provider serves
/// (it serves only whole files whose hash checked out); `404` when the
/// artifact is not served or its manifest lists no chunk hashes.
pub fn have_reply(catalog: &Catalog, ca: &ChannelArch, name: &str) -> Reply {
    let chunks = catalog
        .manifest(ca)
        .and_then(|m| m.artifacts.get(name).map(|a| a.chunks.len()));
    match chunks {
        Some(n) if n > 0 && catalog.open(ca, name).is_ok() => owned_reply(
            "application/octet-stream",
            crate::manifest::held::Held::full(n).to_bytes(),
        ),
        _ => Reply::text(
            404,
            "not found
",
        ),
    }
}

/// The answer for an artifact: the open file and which of its bytes.
pub fn artifact_reply(catalog: &Catalog, ca: &ChannelArch, name: &str, head: &Head) -> Reply {
    match catalog.open(ca, name) {
        Ok(open) => open_reply(open, name, head),
        Err(OpenError::Exhausted(e)) => {
            log::warn!("HTTP: cannot open {ca}/{name}: {e}; answering 503");
            Reply::busy()
        }
        Err(OpenError::Unavailable(e)) => {
            log::info!("HTTP: not serving {ca}/{name}: {e}");
            Reply::text(404, "not found\n")
        }
        Err(OpenError::NotListed) => Reply::text(404, "not found\n"),
    }
}

/// The answer for a file of the prepared netboot tree (`/_netboot/…`,
/// see `netboot`): opened beneath `root` as artifacts are.
pub fn netboot_reply(root: &std::path::Path, rel: &str, head: &Head) -> Reply {
    match crate::beneath::open_regular(root, std::path::Path::new(rel)) {
        Ok((file, meta)) => open_reply(
            OpenArtifact {
                file,
                size: meta.len(),
                modified: meta.modified().ok(),
                sha256: None,
            },
            rel,
            head,
        ),
        Err(e) if e.is_exhaustion() => Reply::busy(),
        Err(_) => Reply::text(404, "not found\n"),
    }
}

/// The answer for an open file: validators, then the bytes asked for.
fn open_reply(open: OpenArtifact, name: &str, head: &Head) -> Reply {
    let mut headers = vec![
        ("Content-Type", content_type(name).to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    if let Some(t) = open.modified {
        headers.push(("Last-Modified", crate::time::http_date(t)));
    }
    let etag = open.sha256.as_ref().map(|sha| format!("\"{sha}\""));
    // If-Match (RFC 9110 13.1.1) before anything else: a client fetching
    // chunks of one release must not be sent another release's bytes
    // under the same name; `412` tells it this server moved on.
    if let Some(want) = head.if_match.as_deref() {
        let matches = match &etag {
            Some(etag) => etag_matches(Some(want), etag),
            None => want.trim() == "*",
        };
        if !matches {
            return Reply::text(412, "this file is no longer the one asked for\n");
        }
    }
    if let (Some(sha), Some(etag)) = (&open.sha256, &etag) {
        let named_by_content = name.contains(&sha[..16]);
        headers.push(("ETag", etag.clone()));
        headers.push((
            "Cache-Control",
            if named_by_content {
                IMMUTABLE_CACHE
            } else {
                MUTABLE_CACHE
            }
            .into(),
        ));
        if etag_matches(head.if_none_match.as_deref(), etag) {
            return Reply {
                status: 304,
                headers,
                body: Body::Empty,
            };
        }
    } else {
        headers.push(("Cache-Control", MUTABLE_CACHE.into()));
    }
    let size = open.size;
    // If-Range: resume only if the file is still the one the client has
    // part of (RFC 9110 13.1.5), by strong ETag alone: a Last-Modified
    // match cannot tell a same-second replacement from the original, and a
    // resume across the two would be a file made of two artifacts.
    let range_valid = match head.if_range.as_deref() {
        None => true,
        Some(v) => etag.as_deref() == Some(v),
    };
    let range = head.range.as_deref().filter(|_| range_valid);
    match range.map(|r| parse_range(r, size)) {
        Some(RangeSpec::Unsatisfiable) => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            Reply {
                status: 416,
                headers,
                body: Body::Empty,
            }
        }
        Some(RangeSpec::Bytes(start, end)) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            Reply {
                status: 206,
                headers,
                body: Body::File {
                    file: open.file,
                    start,
                    len: end - start + 1,
                },
            }
        }
        Some(RangeSpec::Ignore) | None => Reply {
            status: 200,
            headers,
            body: Body::File {
                file: open.file,
                start: 0,
                len: size,
            },
        },
    }
}

/// Whether an `If-None-Match`/`If-Match` list names `etag` (or is `*`).
fn etag_matches(list: Option<&str>, etag: &str) -> bool {
    list.is_some_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag || t == "*")
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("txt") | Some("cfg") | Some("conf") => "text/plain; charset=utf-8",
        Some("gz") | Some("tgz") => "application/gzip",
        Some("xz") => "application/x-xz",
        Some("zst") => "application/zstd",
        Some("tar") => "application/x-tar",
        // What EDK2's HTTP boot looks for (it also goes by the extension).
        Some("efi") => "application/efi",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert!(etag_matches(Some("W/\"a\", \"b\""), "\"a\""));
        assert!(!etag_matches(Some("\"c\""), "\"a\""));
    }

    #[test]
    fn heads_announce_the_body_length() {
        let r = Reply::text(200, "ok\n");
        let text = String::from_utf8(r.head_bytes(true, "D")).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Date: D\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.ends_with("Connection: keep-alive\r\n\r\n"));
        assert_eq!(r.memory_body(), b"ok\n");
        let close = String::from_utf8(r.head_bytes(false, "D")).unwrap();
        assert!(close.ends_with("Connection: close\r\n\r\n"));
    }
}
