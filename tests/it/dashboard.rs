//! The dashboard against a running simulator: `GET /` and its assets answer 200 with their
//! content types, cache and safety headers (and 304 for a copy the browser already has), the
//! access token reaches the asset URLs, and every path the page's script and the page itself
//! use is a route of the router, so the page cannot call a route that does not exist.
//!
//! The page's behaviour in a browser is checked by interop/dashboard_test.mjs (Chromium
//! driven by playwright-core, run by .ci/run).

use std::net::SocketAddr;

use apns_sim::server::control::{self, dashboard};
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use crate::common;

/// GETs `path` from the control API at `addr` with `headers`: status, headers, body text.
async fn fetch(
    addr: SocketAddr,
    path: &str,
    headers: &[(hyper::header::HeaderName, HeaderValue)],
) -> (u16, HeaderMap, String) {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().expect("a text header")))
        .collect();
    let (status, headers, body) = common::control_request(addr, "GET", path, &headers, "").await;
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    (status, headers, text)
}

/// True when `path` (without its query) is `route` with each `{name}` segment filled in by
/// any one non-empty segment.
fn matches_route(path: &str, route: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (got, want): (Vec<&str>, Vec<&str>) =
        (path.split('/').collect(), route.split('/').collect());
    got.len() == want.len()
        && got
            .iter()
            .zip(&want)
            .all(|(g, w)| g == w || (w.starts_with('{') && w.ends_with('}') && !g.is_empty()))
}

/// Every single-quoted string of `js` that starts with `/v1/` (each `'/v1/` up to the next
/// quote).
fn quoted_api_paths(js: &str) -> Vec<&str> {
    js.match_indices("'/v1/")
        .map(|(at, _)| {
            let rest = &js[at + 1..];
            &rest[..rest.find('\'').unwrap_or(rest.len())]
        })
        .collect()
}

/// Every `href="/…"` and `src="/…"` of `html`, up to the query.
fn page_paths(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for attr in ["href=\"/", "src=\"/"] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len() - 1..];
            let end = rest.find(['"', '?', '{']).unwrap_or(rest.len());
            out.push(&rest[..end]);
        }
    }
    out
}

#[test]
fn the_route_matcher_takes_placeholders_for_one_segment() {
    assert!(matches_route("/v1/devices", "/v1/devices"));
    assert!(matches_route(
        "/v1/devices/{serial}",
        "/v1/devices/{serial}"
    ));
    assert!(matches_route(
        "/v1/devices/D1/apps/x",
        "/v1/devices/{serial}/apps/{app}"
    ));
    assert!(matches_route("/v1/feedback?topic=x", "/v1/feedback"));
    assert!(!matches_route("/v1/devices/D1", "/v1/devices"));
    assert!(!matches_route("/v1/devices/", "/v1/devices/{serial}"));
    assert_eq!(
        quoted_api_paths("const A = { a: '/v1/x', b: 'y', c: '/v1/y/{id}' };"),
        ["/v1/x", "/v1/y/{id}"]
    );
    assert_eq!(
        page_paths(r#"<a href="/x">x</a><script src="/y.js{{q}}"></script>"#),
        ["/x", "/y.js"]
    );
}

#[test]
fn every_path_the_page_uses_is_a_route() {
    let routes = control::routes();
    let js_paths = quoted_api_paths(dashboard::APP_JS);
    assert!(
        js_paths.len() >= 10,
        "the script's API table is missing? found {js_paths:?}"
    );
    // Every mention of the API in the script is one of those literals (its API table), so
    // no path is built elsewhere out of sight of this test.
    assert_eq!(
        dashboard::APP_JS.matches("/v1/").count(),
        js_paths.len(),
        "app.js names an API path outside a plain '…' literal (keep them all in API)"
    );
    let page = page_paths(dashboard::INDEX_HTML);
    assert!(page.contains(&dashboard::APP_JS_PATH) && page.contains(&dashboard::STYLE_CSS_PATH));
    let missing: Vec<&str> = js_paths
        .iter()
        .chain(&page)
        .copied()
        .filter(|path| !routes.iter().any(|route| matches_route(path, route)))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses paths that are not routes of the control API: {missing:?}; the \
         routes are {routes:?}"
    );
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_types_and_cache_headers() {
    let t = common::start().await;
    let addr = t.sim.addrs().control;
    for (path, content_type, body) in [
        ("/", "text/html; charset=utf-8", None),
        (
            dashboard::APP_JS_PATH,
            "text/javascript; charset=utf-8",
            Some(dashboard::APP_JS),
        ),
        (
            dashboard::STYLE_CSS_PATH,
            "text/css; charset=utf-8",
            Some(dashboard::STYLE_CSS),
        ),
    ] {
        let (status, headers, text) = fetch(addr, path, &[]).await;
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
        assert_eq!(headers[CACHE_CONTROL], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .expect("ASCII")
                .contains("default-src 'self'"),
            "{path}"
        );
        if let Some(body) = body {
            assert_eq!(text, body, "{path} is the embedded text");
        }
        // The browser's copy is current: 304, no body.
        let etag = headers[ETAG].clone();
        let (status, _, text) = fetch(addr, path, &[(IF_NONE_MATCH, etag)]).await;
        assert_eq!((status, text.as_str()), (304, ""), "{path}");
        let stale = HeaderValue::from_static("\"0000000000000000\"");
        let (status, _, _) = fetch(addr, path, &[(IF_NONE_MATCH, stale)]).await;
        assert_eq!(status, 200, "{path} with a stale ETag");
    }

    // The page loads its assets from where they are served, with no placeholder left.
    let (_, _, page) = fetch(addr, "/", &[]).await;
    assert!(page.contains(&format!("src=\"{}\"", dashboard::APP_JS_PATH)));
    assert!(page.contains(&format!("href=\"{}\"", dashboard::STYLE_CSS_PATH)));
    assert!(!page.contains("{{"), "a placeholder is left in the page");

    // With an access token, the page's asset URLs carry it (percent-encoded).
    let (status, _, page) = fetch(addr, "/?access_token=s3cret%2Fx", &[]).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "src=\"{}?access_token=s3cret%2Fx\"",
            dashboard::APP_JS_PATH
        )),
        "{page}"
    );
    t.stop().await;
}
