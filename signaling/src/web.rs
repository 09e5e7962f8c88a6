//! The browser client (`web/`), built into the server and served at `/` on
//! its own port: plain ES modules, no build step. Invite links carry the
//! join in the URL fragment (PROTOCOL.md §10), which browsers never send,
//! so serving the page needs no state.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use axum::response::{IntoResponse, Response};

/// Every file of the page: its path under `/`, its media type and its bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
    ("src/app.js", JS, include_str!("../../web/src/app.js")),
    ("src/call.js", JS, include_str!("../../web/src/call.js")),
    (
        "src/media-worker.js",
        JS,
        include_str!("../../web/src/media-worker.js"),
    ),
    (
        "src/session.js",
        JS,
        include_str!("../../web/src/session.js"),
    ),
    ("src/group.js", JS, include_str!("../../web/src/group.js")),
    (
        "src/protocol.js",
        JS,
        include_str!("../../web/src/protocol.js"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// What the page may load and talk to: only this origin (its WebSocket
/// included), media from `getUserMedia` and WebRTC; nothing inline.
const CSP: &str = "default-src 'self'; connect-src 'self'; script-src 'self'; \
    worker-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// `GET /`: the call page.
pub(crate) async fn index() -> Response {
    file("index.html")
}

/// `GET /*path`: one of the page's files, or 404.
pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    file(&path)
}

fn file(path: &str) -> Response {
    let Some(&(_, media_type, body)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    (
        [
            (CONTENT_TYPE, media_type),
            (CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("content-security-policy"), CSP),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
            // getUserMedia for this page only; nothing for embedders.
            (
                HeaderName::from_static("permissions-policy"),
                "camera=(self), microphone=(self)",
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_file_is_served_with_its_type_and_unknown_paths_are_404() {
        for (path, media_type, body) in FILES {
            let r = file(path);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[CONTENT_TYPE], *media_type);
            assert!(r.headers().contains_key("content-security-policy"));
            assert!(!body.is_empty());
        }
        for path in ["../Cargo.toml", "src/../index.html", "nope.js", ""] {
            assert_eq!(file(path).status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn the_page_imports_only_files_the_server_has() {
        // Every relative module import of a served script names a served file.
        for (path, _, body) in FILES.iter().filter(|(p, _, _)| p.ends_with(".js")) {
            for line in body.lines() {
                let Some(rest) = line.split(" from '").nth(1) else {
                    continue;
                };
                let Some(target) = rest.split('\'').next() else {
                    continue;
                };
                let Some(name) = target.strip_prefix("./") else {
                    continue;
                };
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let full = if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                };
                assert!(
                    FILES.iter().any(|(p, _, _)| *p == full),
                    "{path} imports {target}, which is not served"
                );
            }
        }
    }
}
