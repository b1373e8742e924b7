//! What a request target asks for ([`Route`]), without touching the
//! filesystem: the fixed paths, `/{channel}/{arch}/{file}` (`?have` for its
//! chunk list), `/_release/{manifest_sha256}/{channel}/{arch}/{file}` and
//! `/_netboot/{channel}/{arch}/{file}`.
//! Anything that tries to leave the tree is refused; this module does no
//! I/O.

use super::parse::MAX_PATH;
use crate::channel::{check_name, is_safe_file_name, ChannelArch};

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
    /// `/_netboot/{channel}/{arch}/{file}`: a file of the prepared netboot
    /// tree (UEFI HTTP boot's stage-1, see `netboot`), as a relative path.
    Netboot(String),
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
    if let [first, rest @ ..] = segments.as_slice() {
        if first == "_netboot" {
            return match file_route(rest, false) {
                Route::File(ca, name) => {
                    Route::Netboot(format!("{}/{}/{name}", ca.channel, ca.arch))
                }
                _ => Route::NotFound,
            };
        }
    }
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
        assert_eq!(
            route("/_netboot/stable/arm64/stage1.efi"),
            Route::Netboot("stable/arm64/stage1.efi".into())
        );
        for bad in [
            "/_netboot/stage1.efi",
            "/_netboot/stable/arm64/.prepared",
            "/_netboot/../arm64/stage1.efi",
        ] {
            assert_ne!(route(bad), Route::Netboot(bad.into()), "{bad}");
            assert!(!matches!(route(bad), Route::Netboot(_)), "{bad}");
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
