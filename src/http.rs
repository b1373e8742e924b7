//! The HTTP server boards download from (tiny_http, on threads of its own so
//! the tokio runtime stays single-threaded).
//!
//! Routes: `GET`/`HEAD` `/{channel}/{arch}/manifest.json`,
//! `/{channel}/{arch}/{file}` (streamed from disk) and `/healthz`; `404` for
//! anything else, `405` for other methods. Paths are percent-decoded once and
//! checked segment by segment: nothing with `..`, separators, NUL or
//! control characters is ever joined onto a filesystem path, and files are
//! only served if the current manifest lists them and their real path is
//! inside the artifacts root (see `manifest::Catalog::open`). This module
//! does not scan or hash files.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::manifest::{is_safe_file_name, Catalog, ChannelArch, MANIFEST_NAME};
use crate::record::check_name;

/// Threads answering requests. Downloads stream from disk, so a few threads
/// keep several boards busy without much memory.
const WORKERS: usize = 4;

/// How often idle workers look at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// How long `stop` waits for downloads in progress. A board fetching a
/// rootfs over a slow link must not hold the process past the 2 s shutdown
/// promise; it will retry against the next provider.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// Longest request path we look at; anything longer is refused unread.
const MAX_PATH: usize = 1024;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {0}: {1}")]
    Bind(SocketAddr, String),
}

/// A running HTTP server; [`HttpServer::stop`] ends it.
pub struct HttpServer {
    server: Arc<Server>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Closed when every worker has returned (each holds a sender).
    workers_done: mpsc::Receiver<()>,
}

impl HttpServer {
    /// Binds `listen` and starts the worker threads.
    pub fn start(listen: SocketAddr, catalog: Arc<Catalog>) -> Result<Self, HttpError> {
        let server = Server::http(listen).map_err(|e| HttpError::Bind(listen, e.to_string()))?;
        let addr = server.server_addr().to_ip().unwrap_or(listen);
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, workers_done) = mpsc::channel();
        for i in 0..WORKERS {
            let (server, stop, catalog) = (server.clone(), stop.clone(), catalog.clone());
            let done = done_tx.clone();
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    worker(&server, &stop, &catalog);
                    drop(done);
                })
                .map_err(|e| HttpError::Bind(listen, e.to_string()))?;
        }
        Ok(HttpServer {
            server,
            addr,
            stop,
            workers_done,
        })
    }

    /// The address actually bound (the port is real even for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and gives responses being written a short
    /// grace period to finish; downloads still running after it are cut off
    /// when the process exits.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        // `Disconnected` means every worker is done; a timeout means some
        // are still streaming.
        if let Err(mpsc::RecvTimeoutError::Timeout) = self.workers_done.recv_timeout(STOP_GRACE) {
            log::info!("stopping with HTTP downloads still in progress");
        }
    }
}

fn worker(server: &Server, stop: &AtomicBool, catalog: &Catalog) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => handle(request, catalog),
            Ok(None) => {}
            Err(e) => {
                if !stop.load(Ordering::SeqCst) {
                    log::warn!("HTTP accept error: {e}");
                    thread::sleep(POLL);
                }
            }
        }
    }
}

/// What a request asks for, once its path is understood.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    File(ChannelArch, String),
    /// A path that tries to leave the tree or is malformed: 400, logged.
    Refused(&'static str),
    NotFound,
}

fn handle(request: Request, catalog: &Catalog) {
    let method = request.method().clone();
    let peer = request.remote_addr().copied();
    if !matches!(method, Method::Get | Method::Head) {
        let response = text(405, "method not allowed\n").with_header(header("Allow", "GET, HEAD"));
        respond(request, response);
        return;
    }
    let route = route(request.url());
    log::debug!(
        "{method} {} from {peer:?}: {route:?}",
        request.url().get(..200).unwrap_or("(long)")
    );
    match route {
        Route::Health => respond(request, text(200, "ok\n")),
        Route::Refused(why) => {
            log::info!(
                "refused request {:?} from {peer:?}: {why}",
                request.url().get(..200).unwrap_or("(long path)")
            );
            respond(request, text(400, "bad request path\n"));
        }
        Route::NotFound => respond(request, text(404, "not found\n")),
        Route::File(ca, name) if name == MANIFEST_NAME => match catalog.manifest(&ca) {
            Some(m) => {
                let response = Response::from_data(m.json.clone())
                    .with_chunked_threshold(usize::MAX)
                    .with_header(header("Content-Type", "application/json"));
                respond(request, response);
            }
            None => respond(request, text(404, "not found\n")),
        },
        Route::File(ca, name) => match catalog.open(&ca, &name) {
            Some((file, _)) => {
                // Always a Content-Length, never chunked (tiny_http chunks
                // HTTP/1.1 bodies over 32 KiB by default): boards check sizes
                // and resume downloads by byte offset.
                let response = Response::from_file(file)
                    .with_chunked_threshold(usize::MAX)
                    .with_header(header("Content-Type", content_type(&name)));
                respond(request, response);
            }
            None => respond(request, text(404, "not found\n")),
        },
    }
}

fn respond<R: std::io::Read>(request: Request, response: Response<R>) {
    // A client that hangs up mid-download is routine on flaky links.
    if let Err(e) = request.respond(response) {
        log::debug!("HTTP response not completed: {e}");
    }
}

fn text(code: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(StatusCode(code))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn header(name: &str, value: &str) -> Header {
    // Only called with ASCII constants from this file, which always parse.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static ASCII header")
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("txt") | Some("cfg") | Some("conf") => "text/plain; charset=utf-8",
        Some("gz") | Some("tgz") => "application/gzip",
        Some("xz") => "application/x-xz",
        Some("zst") => "application/zstd",
        Some("tar") => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// Maps a request target to a route without touching the filesystem.
fn route(url: &str) -> Route {
    if url.len() > MAX_PATH {
        return Route::Refused("path too long");
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    if path == "/healthz" {
        return Route::Health;
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
    match segments.as_slice() {
        [channel, arch, file] => {
            if check_name("channel", channel).is_err()
                || check_name("arch", arch).is_err()
                || !is_safe_file_name(file)
                || file.starts_with('.')
            {
                return Route::NotFound;
            }
            Route::File(
                ChannelArch {
                    channel: channel.clone(),
                    arch: arch.clone(),
                },
                file.clone(),
            )
        }
        _ => Route::NotFound,
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/stable/arm64"), Route::NotFound);
        assert_eq!(route("/stable/arm64/a/b"), Route::NotFound);
        assert_eq!(route("/Stable/arm64/x"), Route::NotFound);
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
            "stable/arm64/x",
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
