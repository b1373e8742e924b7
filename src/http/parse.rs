//! Reading requests: finding the end of a head and parsing it strictly
//! (what the target asks for is `route`'s).
//!
//! Heads are parsed by `httparse` (token header names, no obs-fold, no
//! space before the colon, one space between request-line parts), with our
//! own rules on top: CRLF only (a bare LF is refused as soon as it arrives),
//! `Host` required on HTTP/1.1 and never repeated, and no request body at
//! all (any `Transfer-Encoding`, or a `Content-Length` other than one `0`).
//! Each of these is a way to make a proxy in front of us and this server
//! disagree on where a request ends (request smuggling), so each is a `400`
//! and the end of the connection. This module does no I/O.

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
    /// `If-Match`: a download of one release asks for bytes of that file
    /// only (a mirror may have switched releases since).
    pub if_match: Option<String>,
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
        if_match: None,
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
        } else if name.eq_ignore_ascii_case("if-match") {
            head.if_match = Some(text()?);
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
        let _ = super::route::route(&head.target);
        let _ = clip(&head.target, 200);
        if let Some(r) = &head.range {
            for size in [0, 1, 100, u64::MAX] {
                if let RangeSpec::Bytes(a, b) = parse_range(r, size) {
                    assert!(a <= b && b < size, "range {a}-{b} outside 0..{size}");
                }
            }
        }
    }
    let _ = super::route::route(&String::from_utf8_lossy(data));
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
