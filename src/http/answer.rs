//! What to answer a request: its route (see `parse::route`), then the
//! reply: health, metrics, the status documents, or a file of the catalog
//! (`files`). Returns the route class the request is counted under.

use std::net::SocketAddr;

use super::files::{self, Reply};
use super::parse::{clip, Head, Method};
use super::route::{self, Route};
use super::{Ctx, Generated};
use crate::manifest::{MANIFEST_NAME, SIGNATURE_NAME};

/// What to answer: routing, then the file or manifest reply; with the
/// route class the request is counted under.
pub(super) fn answer(head: &Head, ctx: &Ctx, peer: SocketAddr) -> (Reply, &'static str) {
    if head.method == Method::Other {
        let mut r = Reply::text(405, "method not allowed\n");
        r.headers.push(("Allow", "GET, HEAD".into()));
        return (r, "other");
    }
    let route = route::route(&head.target);
    log::debug!(
        "{:?} {} from {peer}: {route:?}",
        head.method,
        clip(&head.target, 200)
    );
    match route {
        Route::Health => (Reply::text(200, "ok\n"), "healthz"),
        Route::Metrics => (
            files::owned_reply(
                "text/plain; version=0.0.4; charset=utf-8",
                ctx.generated(Generated::Metrics, || ctx.metrics.encode()),
            ),
            "metrics",
        ),
        Route::Status | Route::Page(_) => {
            let Some(s) = ctx.status.get() else {
                return (Reply::text(503, "starting\n"), "status");
            };
            let reply = match route {
                // Rendered once a second whatever the query; each
                // `?refresh=N` is a copy with two words changed.
                Route::Page(refresh) => files::owned_reply(
                    "text/html; charset=utf-8",
                    crate::status::page_with_refresh(
                        &ctx.generated(Generated::Page, || s.status().html(None)),
                        refresh,
                    ),
                ),
                _ => files::owned_reply(
                    "application/json",
                    ctx.generated(Generated::StatusJson, || s.status().json()),
                ),
            };
            (reply, "status")
        }
        Route::Refused(why) => {
            log::info!(
                "refused request {:?} from {peer}: {why}",
                clip(&head.target, 200)
            );
            (Reply::text(400, "bad request path\n"), "other")
        }
        Route::NotFound => (Reply::text(404, "not found\n"), "other"),
        Route::Netboot(rel) => match &ctx.netboot {
            Some(root) => (files::netboot_reply(root, &rel, head), "netboot"),
            None => (Reply::text(404, "not found\n"), "other"),
        },
        Route::File(ca, name) if name == MANIFEST_NAME => {
            (files::manifest_reply(&ctx.catalog, &ca, head), "manifest")
        }
        Route::File(ca, name) if name == SIGNATURE_NAME => {
            (files::signature_reply(&ctx.catalog, &ca, head), "signature")
        }
        Route::File(ca, name) => (
            files::artifact_reply(&ctx.catalog, &ca, &name, head),
            // The chunk engine names the file it wants (`If-Match`): a
            // board fetching chunks of a release, counted as such.
            if head.if_match.is_some() && head.range.is_some() {
                "chunks"
            } else {
                "artifact"
            },
        ),
        Route::Have(ca, name) => (files::have_reply(&ctx.catalog, &ca, &name), "have"),
        Route::Release {
            sha256,
            ca,
            name,
            have,
        } => (
            super::holding::release_reply(&ctx.catalog, &sha256, &ca, &name, have, head),
            match name.as_str() {
                _ if have => "have",
                MANIFEST_NAME | SIGNATURE_NAME => "release",
                _ => "chunks",
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn generated_documents_are_made_once_a_second_at_most() {
        let ctx = Ctx::for_tests();
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            format!("document {}", made.get())
        };
        // Two asks within one second (retried if a second ticks between).
        loop {
            made.set(0);
            let start = std::time::SystemTime::now();
            let a = ctx.generated(Generated::StatusJson, make);
            let b = ctx.generated(Generated::StatusJson, make);
            let page = ctx.generated(Generated::Page, make);
            if start.elapsed().unwrap().as_millis() < 200 && made.get() == 2 {
                assert_eq!(a, b);
                assert_eq!(page, b"document 2");
                break;
            }
        }
        // Another second: made again.
        std::thread::sleep(Duration::from_millis(1100));
        let c = ctx.generated(Generated::StatusJson, make);
        assert_eq!(c, format!("document {}", made.get()).into_bytes());
    }
}
