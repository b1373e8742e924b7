//! The small HTTP/1.1 client downloads use: plain HTTP (every byte is
//! verified instead), one request per connection, a bounded response head
//! parsed by `httparse` (the parser the server uses), timeouts on connect
//! and on every read. It knows nothing of manifests or releases.

use std::io::{self, Cursor, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::FetchError;

/// Largest response head (status line and headers) we read.
const MAX_HEAD: usize = 64 * 1024;
/// At most this many response headers.
const MAX_HEADERS: usize = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A server silent for this long mid-download is given up on (the partial
/// file stays for a resume).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A plain-HTTP URL split into what a request needs.
pub(super) struct Url {
    pub(super) host_port: String,
    pub(super) path: String,
}

/// Splits an `http://` URL; `https://` and anything malformed are errors.
pub(super) fn parse_url(url: &str) -> Result<Url, FetchError> {
    let bad = |m: &str| FetchError::Http(url.to_string(), m.to_string());
    if url.starts_with("https://") {
        return Err(bad(
            "https is not supported: providers serve plain HTTP and every byte is verified instead",
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an http:// URL"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host_port.is_empty() || url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad("malformed URL"));
    }
    let has_port = if host_port.starts_with('[') {
        host_port.contains("]:")
    } else {
        host_port
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    };
    let host_port = if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:80")
    };
    Ok(Url {
        host_port,
        path: path.to_string(),
    })
}

/// A response whose head has been read; the body follows in `reader`.
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) content_length: Option<u64>,
    /// Start offset from `Content-Range: bytes START-END/TOTAL`.
    pub(super) range_start: Option<u64>,
    /// The body: what came with the head, then the rest of the stream.
    pub(super) reader: io::Chain<Cursor<Vec<u8>>, TcpStream>,
}

/// Sends `GET url` (from byte `range_from` on, if given) and reads the
/// response head.
pub(super) fn get(url: &str, range_from: Option<u64>) -> Result<Response, FetchError> {
    let u = parse_url(url)?;
    let err = |m: String| FetchError::Http(url.to_string(), m);
    let addr = u
        .host_port
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address for host".into()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| err(e.to_string()))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| err(e.to_string()))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| err(e.to_string()))?;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: phase-discover/{}\r\n",
        u.path,
        u.host_port,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(from) = range_from {
        req.push_str(&format!("Range: bytes={from}-\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    read_head(stream).map_err(err)
}

/// Reads and parses the response head from `stream`, keeping whatever of
/// the body arrived with it.
fn read_head(mut stream: TcpStream) -> Result<Response, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response head ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, len)) = parse_head(&buf)? {
            let body = buf.split_off(len);
            return Ok(Response {
                status: head.status,
                content_length: head.content_length,
                range_start: head.range_start,
                reader: Cursor::new(body).chain(stream),
            });
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
    }
}

/// What a download needs from a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    range_start: Option<u64>,
}

/// Parses a response head from the start of `buf`: `None` while it is
/// incomplete, else the head and its length in bytes.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(format!("more than {MAX_HEADERS} headers"))
        }
        Err(e) => {
            let first = buf.split(|b| *b == b'\n').next().unwrap_or_default();
            let first = String::from_utf8_lossy(&first[..first.len().min(80)]).into_owned();
            return Err(format!("not an HTTP response ({e}): {first:?}"));
        }
    };
    let status = resp.code.ok_or("response without a status code")?;
    let mut head = Head {
        status,
        content_length: None,
        range_start: None,
    };
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| format!("header {} is not UTF-8", h.name))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| "bad Content-Length".to_string())?;
            if head.content_length.is_some_and(|old| old != n) {
                return Err("conflicting Content-Length headers".into());
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("content-range") {
            head.range_start = value
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            && !value.eq_ignore_ascii_case("identity")
        {
            return Err("chunked responses are not supported".into());
        }
    }
    Ok(Some((head, len)))
}

/// Downloads a small body (a manifest, a signature) whole, at most `max`
/// bytes. `Ok(None)` on 404.
pub(super) fn get_small(url: &str, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
    let mut resp = get(url, None)?;
    match resp.status {
        200 => {}
        404 => return Ok(None),
        status => {
            return Err(FetchError::Http(
                url.to_string(),
                format!("status {status}"),
            ))
        }
    }
    let mut body = Vec::new();
    (&mut resp.reader)
        .take(max + 1)
        .read_to_end(&mut body)
        .map_err(|e| FetchError::Http(url.to_string(), e.to_string()))?;
    if body.len() as u64 > max {
        return Err(FetchError::Mismatch(format!(
            "{url} is larger than the {max} bytes it can be"
        )));
    }
    Ok(Some(body))
}

/// GETs a small text body (e.g. `/status.json`), at most `max` bytes.
pub fn get_text(url: &str, max: u64) -> Result<Vec<u8>, FetchError> {
    get_small(url, max)?.ok_or_else(|| FetchError::Http(url.to_string(), "status 404".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_with_what_a_download_needs() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\
                    Content-Range: bytes 10-14/15\r\n\r\nhello";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 206,
                content_length: Some(5),
                range_start: Some(10)
            }
        );
        assert_eq!(&raw[len..], b"hello");
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            parse_head(many.as_bytes()).unwrap_err(),
            format!("more than {MAX_HEADERS} headers")
        );
    }
}
