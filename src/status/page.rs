//! The status page served at `GET /`: one self-contained HTML document (its
//! style inline, no scripts, no external assets) written from a [`Status`],
//! readable on a phone and in a text browser. `/?refresh=N` adds a
//! `<meta http-equiv="refresh">` so a wall screen keeps it current without
//! JavaScript.
//!
//! Every string from the catalog (channel, version, file names, key ids) is
//! escaped: artifacts trees are the operator's, but a name must never turn
//! into markup on someone's screen.

use std::fmt::Write;

use super::{ChannelStatus, Status};

/// Shortest and longest auto-refresh period a page may ask for, in seconds.
pub const REFRESH_RANGE: std::ops::RangeInclusive<u32> = 2..=3600;

const STYLE: &str = "\
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:0 .8rem 2rem;color:#1b1b1b;background:#fafafa}\
h1{font-size:1.4rem;margin:.8rem 0 .2rem}h2{font-size:1.15rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ccc}\
.health{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;font-weight:600}\
.ok{background:#d7f5dd;color:#0c5a1c}.bad{background:#fde0dc;color:#8a1606}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .9rem;margin:.4rem 0}dt{font-weight:600}dd{margin:0;min-width:0}\
code,.hash{font-family:ui-monospace,monospace;font-size:.85em;overflow-wrap:anywhere}\
table{border-collapse:collapse;width:100%;margin:.4rem 0}th,td{text-align:left;padding:.25rem .4rem;border-bottom:1px solid #e2e2e2;vertical-align:top}\
td.num,th.num{text-align:right;white-space:nowrap}ul{margin:.2rem 0;padding-left:1.2rem}\
footer{margin-top:2rem;color:#555;font-size:.9em}\
@media (max-width:40rem){dl{grid-template-columns:1fr}dd{margin-bottom:.4rem}table,tbody,tr,td{display:block}thead{display:none}td{border:0;padding:.1rem 0}tr{border-bottom:1px solid #e2e2e2;padding:.3rem 0}td.num{text-align:left}}";

/// The footer's words for a page that does not refresh itself; see
/// [`with_refresh`].
const NO_REFRESH: &str = "off (<a href=\"/?refresh=10\">every 10 s</a>)";

/// The whole page.
pub fn render(s: &Status, refresh: Option<u32>) -> String {
    with_refresh(&render_plain(s), refresh)
}

/// `page`, a page rendered without auto-refresh, made into one that
/// refreshes every `refresh` seconds, without rendering it again: the HTTP
/// loop renders the page once a second and serves every `?refresh=N` from
/// that one copy. Catalog text is escaped (no `<title>` of its own) and the
/// footer comes last, so the two places are found unambiguously.
pub fn with_refresh(page: &str, refresh: Option<u32>) -> String {
    let Some(n) = refresh else {
        return page.to_string();
    };
    let mut out = String::with_capacity(page.len() + 96);
    match (page.find("<title>"), page.rfind(NO_REFRESH)) {
        (Some(title), Some(footer)) if title < footer => {
            out.push_str(&page[..title]);
            let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{n}\">");
            out.push_str(&page[title..footer]);
            let _ = write!(out, "every {n} s (<a href=\"/\">stop</a>)");
            out.push_str(&page[footer + NO_REFRESH.len()..]);
        }
        _ => out.push_str(page),
    }
    out
}

/// The page without auto-refresh.
fn render_plain(s: &Status) -> String {
    let mut h = String::with_capacity(4096);
    let (word, class) = if s.healthy() {
        ("Healthy", "ok")
    } else {
        ("Unhealthy", "bad")
    };
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
    );
    let _ = write!(
        h,
        "<title>plasmd: {word}</title><style>{STYLE}</style></head><body>\n\
         <header><h1>plasmd {}</h1><p class=\"health {class}\" id=\"health\">{word}</p>",
        env!("CARGO_PKG_VERSION")
    );
    if !s.problems.is_empty() {
        h.push_str("<ul id=\"problems\">");
        for p in &s.problems {
            let _ = write!(h, "<li>{}</li>", esc(p));
        }
        h.push_str("</ul>");
    }
    h.push_str("</header>\n<section><h2>This provider</h2><dl>");
    item(
        &mut h,
        "Peer ID",
        &format!("<code>{}</code>", esc(&s.peer_id)),
    );
    let addrs = if s.addrs.is_empty() {
        "none".to_string()
    } else {
        list(s.addrs.iter().map(|a| format!("<code>{}</code>", esc(a))))
    };
    item(&mut h, "Addresses", &addrs);
    item(
        &mut h,
        "DHT",
        &format!(
            "{} in the routing table, {} stored",
            plural(s.routing_table_peers, "peer"),
            plural(s.records_stored, "record")
        ),
    );
    item(
        &mut h,
        "HTTP",
        &format!(
            "{} open, {} in progress",
            plural(s.open_connections, "connection"),
            plural(s.downloads, "download")
        ),
    );
    let c = &s.chunks;
    if c.from_peers_bytes + c.from_origin_bytes + c.served_requests > 0 {
        item(&mut h, "Release chunks", &esc(&super::chunk_line(c)));
    }
    if let Some(n) = &s.netboot {
        item(&mut h, "Netboot", &esc(&super::netboot_line(n)));
    }
    item(&mut h, "As of", &utc(s.now));
    h.push_str("</dl></section>\n");
    if s.channels.is_empty() {
        h.push_str("<section><h2>Advertised</h2><p>Nothing: no channel/arch directory with files.</p></section>\n");
    }
    for c in &s.channels {
        channel(&mut h, c, s.now);
    }
    let _ = write!(
        h,
        "<footer>Auto-refresh: {NO_REFRESH} · <a href=\"/status.json\">JSON</a> · \
         <a href=\"/metrics\">metrics</a></footer>\n</body></html>\n"
    );
    h
}

/// One channel/arch: what is advertised, how publishing goes, the files.
fn channel(h: &mut String, c: &ChannelStatus, now: i64) {
    let _ = write!(
        h,
        "<section class=\"channel\"><h2>{}/{}</h2><dl>",
        esc(&c.channel),
        esc(&c.arch)
    );
    item(h, "Version", &esc(&c.version));
    let release = match (&c.release, c.signed) {
        (Some((seq, key)), _) => format!(
            "signed release, release_seq {seq}, key <code>{}</code>",
            esc(key)
        ),
        (None, true) => "signed, without a release_seq".to_string(),
        (None, false) => "unsigned".to_string(),
    };
    item(h, "Release", &release);
    let url = esc(&c.url);
    item(
        h,
        "URL",
        &format!("<a href=\"{url}\"><code>{url}</code></a>"),
    );
    let published = match c.last_publish {
        Some(t) => format!("{} ({})", ago(now - t), utc(t)),
        None => "not yet".to_string(),
    };
    item(h, "Last published", &published);
    let put = match c.last_put {
        Some((t, true)) => format!("worked, {}", ago(now - t)),
        Some((t, false)) => format!("<strong>failed</strong>, {}", ago(now - t)),
        None => "none yet".to_string(),
    };
    item(h, "Last put", &put);
    h.push_str("</dl><table><thead><tr><th>File</th><th class=\"num\">Size</th><th>SHA-256</th></tr></thead><tbody>");
    for (name, size, sha256) in &c.files {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"hash\">{}</td></tr>",
            esc(name),
            bytes(*size),
            esc(sha256)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn item(h: &mut String, term: &str, html: &str) {
    let _ = write!(h, "<dt>{term}</dt><dd>{html}</dd>");
}

fn list(items: impl Iterator<Item = String>) -> String {
    let mut out = String::from("<ul>");
    for i in items {
        let _ = write!(out, "<li>{i}</li>");
    }
    out.push_str("</ul>");
    out
}

fn plural(n: i64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn ago(secs: i64) -> String {
    match secs {
        ..=0 => "just now".to_string(),
        1..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

fn utc(unix: i64) -> String {
    crate::time::rfc3339_secs(unix.max(0) as u64)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// Bytes as a person reads them, with the exact count alongside.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Escapes text for an HTML element or a quoted attribute.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The auto-refresh period a query string (`refresh=N`) asks for, if it
/// asks for a sane one.
pub fn refresh_from_query(query: &str) -> Option<u32> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("refresh="))
        .and_then(|v| v.parse().ok())
        .filter(|n| REFRESH_RANGE.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            peer_id: "12D3KooWPeer".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            now: 1_800_000_000,
            problems: vec![],
            routing_table_peers: 1,
            records_stored: 3,
            open_connections: 2,
            downloads: 0,
            chunks: Default::default(),
            netboot: None,
            channels: vec![ChannelStatus {
                channel: "stable".into(),
                arch: "arm64".into(),
                version: "<script>alert(1)</script>".into(),
                release: Some((42, "ABCDEF0123456789".into())),
                signed: true,
                url: "http://127.0.0.1:8080/stable/arm64/manifest.json".into(),
                last_publish: Some(1_800_000_000 - 30),
                last_put: Some((1_800_000_000 - 30, true)),
                files: vec![("vmlinuz".into(), 3 * 1024 * 1024, "ab".repeat(32))],
            }],
        }
    }

    #[test]
    fn the_page_shows_what_is_advertised_and_escapes_names() {
        let page = render(&status(), None);
        for needle in [
            "Healthy",
            "12D3KooWPeer",
            "/ip4/127.0.0.1/tcp/4001",
            "stable/arm64",
            "release_seq 42",
            "ABCDEF0123456789",
            "30 s ago",
            "3.0 MiB",
            "1 peer in the routing table, 3 records stored",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ] {
            assert!(page.contains(needle), "{needle} missing in:\n{page}");
        }
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("http-equiv=\"refresh\""));
        let refreshing = render(&status(), Some(10));
        assert!(refreshing.contains("<meta http-equiv=\"refresh\" content=\"10\"><title>"));
        assert!(refreshing.contains("Auto-refresh: every 10 s (<a href=\"/\">stop</a>)"));
        assert!(!refreshing.contains(NO_REFRESH));
        // Made from the plain page, it differs from it in those two places only.
        assert_eq!(refreshing, with_refresh(&page, Some(10)));
        assert_eq!(
            refreshing.len(),
            page.len()
                + "<meta http-equiv=\"refresh\" content=\"10\">".len()
                + "every 10 s (<a href=\"/\">stop</a>)".len()
                - NO_REFRESH.len()
        );
    }

    #[test]
    fn an_unhealthy_provider_says_why() {
        let mut s = status();
        s.problems
            .push("stable/arm64: not published in the DHT yet".into());
        s.channels[0].last_put = Some((s.now - 5, false));
        let page = render(&s, None);
        assert!(page.contains("Unhealthy"));
        assert!(page.contains("not published in the DHT yet"));
        assert!(page.contains("<strong>failed</strong>, 5 s ago"));
    }

    #[test]
    fn refresh_periods_are_bounded() {
        assert_eq!(refresh_from_query("refresh=10"), Some(10));
        assert_eq!(refresh_from_query("a=b&refresh=60"), Some(60));
        assert_eq!(refresh_from_query("refresh=0"), None);
        assert_eq!(refresh_from_query("refresh=1"), None);
        assert_eq!(refresh_from_query("refresh=99999999999"), None);
        assert_eq!(refresh_from_query("refresh=x"), None);
        assert_eq!(refresh_from_query(""), None);
    }
}
