//! Reading requests: finding the end of a head, parsing it strictly, and
//! mapping the target to a route without touching the filesystem.
//!
//! Heads are parsed by `httparse` (token header names, no obs-fold, no
//! space before the colon, one space between request-line parts), with our
//! own rules on top: CRLF only (a bare LF is refused as soon as it arrives),
//! `Host` required on HTTP/1.1 and never repeated, and no request body at
//! all (any `Transfer-Encoding`, or a `Content-Length` other than one `0`).
//! Each of these is a way to make a proxy in front of us and this server
//! disagree on where a request ends (request smuggling), so each is a `400`
//! and the end of the connection. This module does no I/O.

use crate::channel::check_name;
use crate::channel::{is_safe_file_name, ChannelArch};

/// The request line and headers together, like common servers' 8 KiB.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers per request.
pub const MAX_HEADERS: usize = 64;
/// Longest request path we look at; anything longer is refused unread.
pub const MAX_PATH: usize = 1024;

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    pub target: String,
    /// The client wants the connection kept open after this response.
    pub keep_alive: bool,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_none_match: Option<String>,
}

/// The methods we tell apart.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Method {
    Get,
    Head,
    /// Anything else: `405`.
    Other,
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers: `431`.
    TooLarge,
    /// Not a request we accept: `400`.
    Malformed(&'static str),
}

/// Where the buffered bytes stand.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head ends (after its blank line) at this offset.
    Complete(usize),
    Incomplete,
    /// A line ended in a bare LF: refuse it now, not at the deadline.
    BareLf,
}

/// Looks for the end of the head in `buf`, checking only from `from` on
/// (what arrived since the last look), so a trickling client costs no
/// rescans of its whole buffer.
pub fn scan(buf: &[u8], from: usize) -> Scan {
    let start = from.min(buf.len());
    for i in start..buf.len() {
        if buf[i] == b'\n' {
            if i == 0 || buf[i - 1] != b'\r' {
                return Scan::BareLf;
            }
            if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" {
                return Scan::Complete(i + 1);
            }
        }
    }
    Scan::Incomplete
}

/// Parses a complete head (including its final blank line).
pub fn parse_head(raw: &[u8]) -> Result<Head, HeadError> {
    if raw.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    if scan(raw, 0) == Scan::BareLf {
        return Err(HeadError::Malformed("bare LF"));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
        Ok(_) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(parse_error(e))),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("bad request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed("bad method"));
    }
    let http11 = version == 1;
    let mut head = Head {
        method: match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            _ => Method::Other,
        },
        target: target.to_string(),
        keep_alive: http11,
        range: None,
        if_range: None,
        if_none_match: None,
    };
    let mut hosts = 0;
    let mut lengths = 0;
    for h in req.headers.iter() {
        let text = || {
            std::str::from_utf8(h.value)
                .map(|v| v.trim().to_string())
                .map_err(|_| HeadError::Malformed("header value not UTF-8"))
        };
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in text()?.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if h.value != b"0" || lengths > 1 {
                return Err(HeadError::Malformed("request bodies are not accepted"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Malformed("request bodies are not accepted"));
        } else if name.eq_ignore_ascii_case("range") {
            head.range = Some(text()?);
        } else if name.eq_ignore_ascii_case("if-range") {
            head.if_range = Some(text()?);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(text()?);
        }
    }
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if http11 && hosts == 0 {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    Ok(head)
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in the request line",
        httparse::Error::Version => "unsupported HTTP version",
        _ => "malformed head",
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, for log lines.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What a request asks for, once its path is understood.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Health,
    /// `GET /metrics`: the Prometheus text format.
    Metrics,
    /// `GET /status.json`: see `status`.
    Status,
    /// `GET /`: the status page, auto-refreshed every so many seconds when
    /// the query asks (`/?refresh=N`).
    Page(Option<u32>),
    File(ChannelArch, String),
    /// `GET /{channel}/{arch}/{file}?have`: which of the file's chunks
    /// this server holds (see `manifest::held`).
    Have(ChannelArch, String),
    /// `/_release/{manifest_sha256}/{channel}/{arch}/{file}[?have]`: a file
    /// of the release with that manifest (see `manifest::holding`).
    Release {
        sha256: String,
        ca: ChannelArch,
        name: String,
        have: bool,
    },
    /// A path that tries to leave the tree or is malformed: 400, logged.
    Refused(&'static str),
    NotFound,
}

/// Maps a request target to a route without touching the filesystem.
/// Takes the origin form (`/stable/arm64/vmlinuz`) and the absolute form
/// (`http://host:8080/stable/arm64/vmlinuz`), which RFC 9112 3.2.2 says a
/// server must accept; its authority is ignored (one site is served).
pub fn route(url: &str) -> Route {
    if url.len() > MAX_PATH {
        return Route::Refused("path too long");
    }
    let url = origin_form(url);
    let url = url.as_ref();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = path.split('#').next().unwrap_or("");
    if path == "/" {
        let query = query.split('#').next().unwrap_or("");
        return Route::Page(crate::status::refresh_from_query(query));
    }
    if path == "/healthz" {
        return Route::Health;
    }
    if path == "/metrics" {
        return Route::Metrics;
    }
    if path == "/status.json" {
        return Route::Status;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Route::Refused("not an absolute path");
    };
    let mut segments = Vec::with_capacity(3);
    for raw in rest.split('/') {
        let Some(seg) = percent_decode(raw) else {
            return Route::Refused("bad percent-encoding");
        };
        if seg == ".." || seg == "." || seg.contains(['/', '\\', '\0']) {
            return Route::Refused("path traversal attempt");
        }
        if seg.chars().any(char::is_control) {
            return Route::Refused("control characters in path");
        }
        segments.push(seg);
    }
    let have = query.split('#').next() == Some("have");
    if let [first, sha, rest @ ..] = segments.as_slice() {
        if first == "_release" {
            let hex =
                sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            return match (hex, file_route(rest, have)) {
                (true, Route::File(ca, name) | Route::Have(ca, name)) => Route::Release {
                    sha256: sha.clone(),
                    ca,
                    name,
                    have,
                },
                _ => Route::NotFound,
            };
        }
    }
    file_route(&segments, have)
}

/// `{channel}/{arch}/{file}` as a route.
fn file_route(segments: &[String], have: bool) -> Route {
    match segments {
        [channel, arch, file] => {
            if check_name("channel", channel).is_err()
                || check_name("arch", arch).is_err()
                || !is_safe_file_name(file)
                || file.starts_with('.')
            {
                return Route::NotFound;
            }
            let ca = ChannelArch {
                channel: channel.clone(),
                arch: arch.clone(),
            };
            if have {
                Route::Have(ca, file.clone())
            } else {
                Route::File(ca, file.clone())
            }
        }
        _ => Route::NotFound,
    }
}

/// The origin form of an absolute-form target (`http://host/p?q` →
/// `/p?q`, `http://host` → `/`); any other target as it is.
fn origin_form(url: &str) -> std::borrow::Cow<'_, str> {
    let scheme = ["http://", "https://"].into_iter().find(|p| {
        url.get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    });
    let Some(scheme) = scheme else {
        return url.into();
    };
    let rest = &url[scheme.len()..];
    let tail = &rest[rest.find(['/', '?', '#']).unwrap_or(rest.len())..];
    if tail.starts_with('/') {
        tail.into()
    } else {
        format!("/{tail}").into()
    }
}

/// Decodes `%XX` escapes (by the `percent-encoding` crate); `None` for a
/// malformed escape, which the crate would pass through as it is, or for
/// invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// Inclusive byte positions.
    Bytes(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we serve (several ranges, other units,
    /// garbage): answer with the whole file, as RFC 9110 allows.
    Ignore,
}

/// Parses a `Range` value against a file of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(size.saturating_sub(n), size - 1),
            None => RangeSpec::Ignore,
        },
        // bytes=A- or bytes=A-B
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeSpec::Ignore;
            };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                match num(b) {
                    Some(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeSpec::Ignore,
                }
            };
            if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes(start, end)
            }
        }
        (true, true) => RangeSpec::Ignore,
    }
}

/// Runs the request parsers on untrusted bytes, as the server does: for the
/// fuzz targets in `fuzz/` only. Must never panic.
pub fn fuzz_request(data: &[u8]) {
    let _ = scan(data, 0);
    if let Ok(head) = parse_head(data) {
        let _ = route(&head.target);
        let _ = clip(&head.target, 200);
        if let Some(r) = &head.range {
            for size in [0, 1, 100, u64::MAX] {
                if let RangeSpec::Bytes(a, b) = parse_range(r, size) {
                    assert!(a <= b && b < size, "range {a}-{b} outside 0..{size}");
                }
            }
        }
    }
    let _ = route(&String::from_utf8_lossy(data));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(c: &str, a: &str, f: &str) -> Route {
        Route::File(
            ChannelArch {
                channel: c.into(),
                arch: a.into(),
            },
            f.into(),
        )
    }

    #[test]
    fn routes() {
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(
            route("/stable/arm64/manifest.json"),
            file("stable", "arm64", "manifest.json")
        );
        assert_eq!(
            route("/stable/arm64/vmlinuz?x=1"),
            file("stable", "arm64", "vmlinuz")
        );
        assert_eq!(
            route("/stable/arm64/my%20file"),
            file("stable", "arm64", "my file")
        );
        assert_eq!(route("/"), Route::Page(None));
        assert_eq!(route("/?refresh=10"), Route::Page(Some(10)));
        let ca = ChannelArch {
            channel: "stable".into(),
            arch: "arm64".into(),
        };
        assert_eq!(
            route("/stable/arm64/vmlinuz?have"),
            Route::Have(ca.clone(), "vmlinuz".into())
        );
        assert_eq!(
            route("/stable/arm64/vmlinuz?v=2"),
            Route::File(ca.clone(), "vmlinuz".into())
        );
        let sha = "0f".repeat(32);
        assert_eq!(
            route(&format!("/_release/{sha}/stable/arm64/vmlinuz?have")),
            Route::Release {
                sha256: sha.clone(),
                ca,
                name: "vmlinuz".into(),
                have: true
            }
        );
        for bad in [
            format!("/_release/{}/stable/arm64/vmlinuz", "0F".repeat(32)),
            format!("/_release/{sha}/stable/vmlinuz"),
            format!("/_release/{sha}/stable/arm64/.hidden"),
        ] {
            assert_eq!(route(&bad), Route::NotFound, "{bad}");
        }
        assert_eq!(route("/?refresh=0"), Route::Page(None));
        assert_eq!(route("/stable/arm64"), Route::NotFound);
        assert_eq!(route("/stable/arm64/a/b"), Route::NotFound);
        assert_eq!(route("/Stable/arm64/x"), Route::NotFound);
        // The absolute form (RFC 9112 3.2.2), whatever its authority.
        assert_eq!(
            route("http://192.0.2.1:8080/stable/arm64/vmlinuz"),
            file("stable", "arm64", "vmlinuz")
        );
        assert_eq!(route("HTTP://h/healthz"), Route::Health);
        assert_eq!(route("http://h"), Route::Page(None));
        assert_eq!(route("http://h?refresh=10"), Route::Page(Some(10)));
        assert!(matches!(
            route("http://h/stable/../../etc/passwd"),
            Route::Refused(_)
        ));
    }

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-9", 100), Bytes(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Bytes(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Bytes(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(parse_range(ignored, 100), Ignore, "{ignored}");
        }
    }

    fn head(s: &str) -> Result<Head, HeadError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn heads() {
        let h = head("GET /x HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(
            (h.method, h.target.as_str(), h.keep_alive),
            (Method::Get, "/x", false)
        );
        assert_eq!(h.range.as_deref(), Some("bytes=0-1"));
        assert!(head("GET /x HTTP/1.0\r\n\r\n").is_ok_and(|h| !h.keep_alive));
        assert!(
            head("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").is_ok_and(|h| h.keep_alive)
        );
        assert!(head("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").is_ok_and(|h| h.keep_alive));
        assert!(head("PUT /x HTTP/1.1\r\nHost: a\r\n\r\n").is_ok_and(|h| h.method == Method::Other));
        assert!(head("GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").is_ok());
        for bad in [
            "GET /x\r\n\r\n",
            "GET  /x HTTP/1.1\r\nHost: a\r\n\r\n",
            "get /x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
            "GET /x HTTP/2.0\r\nHost: a\r\n\r\n",
            "\u{ff}\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
        let too_many = format!(
            "GET /x HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "A: b\r\n".repeat(70)
        );
        assert_eq!(head(&too_many), Err(HeadError::TooLarge));
    }

    #[test]
    fn smuggling_forms_are_refused() {
        for bad in [
            // Space before the colon.
            "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n",
            // obs-fold.
            "GET /x HTTP/1.1\r\nHost: a\r\nX: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            // Duplicate or conflicting lengths, any body at all.
            "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            // Bare LF.
            "GET /x HTTP/1.1\nHost: a\n\n",
            "GET /x HTTP/1.1\r\nHost: a\n\r\n",
            // Host missing or twice.
            "GET /x HTTP/1.1\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad), Err(HeadError::Malformed(_))),
                "{bad:?}: {:?}",
                head(bad)
            );
        }
    }

    #[test]
    fn scanning_finds_the_end_and_bare_lf_early() {
        let h = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        assert_eq!(scan(h, 0), Scan::Complete(h.len() - 4));
        assert_eq!(scan(&h[..10], 0), Scan::Incomplete);
        assert_eq!(scan(b"GET / HTTP/1.1\n", 0), Scan::BareLf);
        assert_eq!(scan(b"\n", 0), Scan::BareLf);
        // Resuming mid-terminator still finds it.
        assert_eq!(scan(h, 26), Scan::Complete(h.len() - 4));
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("short", 200), "short");
        assert_eq!(clip("ééé", 3), "é");
        assert_eq!(clip(&"a".repeat(300), 200).len(), 200);
    }

    #[test]
    fn traversal_is_refused() {
        for bad in [
            "/stable/arm64/..",
            "/stable/../../etc/passwd",
            "/stable/arm64/%2e%2e",
            "/stable/arm64/..%2fetc%2fpasswd",
            "/stable/arm64/%2Fetc%2Fpasswd",
            "/stable/arm64/a%5cb",
            "/stable/arm64/a%00b",
            "/stable/arm64/%zz",
            "/stable/arm64/%ff",
            // A sign is not a hex digit (from_str_radix would take "+a").
            "/stable/arm64/%+a",
            "/stable/arm64/%-1",
            "/stable/arm64/x%",
            "/stable/arm64/x%4",
            "stable/arm64/x",
            "ftp://h/stable/arm64/x",
        ] {
            assert!(matches!(route(bad), Route::Refused(_)), "{bad}");
        }
        assert!(matches!(
            route(&format!("/{}", "a".repeat(2000))),
            Route::Refused(_)
        ));
        assert_eq!(route("/stable/arm64/.hidden"), Route::NotFound);
    }
}
