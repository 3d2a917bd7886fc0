//! The dashboard: one page (`GET /`), its script and its style sheet, embedded in the binary
//! with `include_str!` so it works offline and needs no build step or CDN. It is plain modern
//! JavaScript with no framework: the page is a handful of lists redrawn from the event stream,
//! which a framework would not make shorter, and every dependency would have to be vendored.
//!
//! Everything the page shows it reads from the control API itself (`GET /v1/devices`,
//! `GET /v1/events`, …); it holds no data of its own, so the three responses are the same for
//! everyone. They carry an `ETag` (a hash of the text, computed at compile time) and
//! `Cache-Control: no-cache`, so a browser revalidates and a new binary's page is never stale,
//! and a strict `Content-Security-Policy` (only this origin: the page can reach nothing else).
//!
//! With `--control-token`, a browser opens `/?access_token=T`; the page sends the token as a
//! bearer token on its requests and as `access_token` on its event stream, and `GET /` writes
//! it into the asset URLs (percent-encoded) so that the script and the style sheet load too.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::RawQuery;

/// The page.
pub const INDEX_HTML: &str = include_str!("dashboard/index.html");

/// The page's script: every API path it uses is in its `API` table at the top (a test checks
/// each is a route of the router).
pub const APP_JS: &str = include_str!("dashboard/app.js");

/// The page's style sheet.
pub const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Where the script is served (the page names it).
pub const APP_JS_PATH: &str = "/dashboard/app.js";

/// Where the style sheet is served (the page names it).
pub const STYLE_CSS_PATH: &str = "/dashboard/style.css";

/// Where, in [`INDEX_HTML`], `GET /` writes the query that carries the access token onto the
/// asset URLs (nothing without a token).
const ASSET_QUERY: &str = "{{asset_query}}";

/// The longest `access_token` `GET /` copies into the asset URLs; a longer one is not copied
/// (the assets then load only if the API lets them through without it). Real tokens are far
/// shorter; the bound keeps the page small whatever the query holds.
pub const MAX_ACCESS_TOKEN_LEN: usize = 512;

/// Only this origin, no inline script, no frames of the page elsewhere; `data:` images for the
/// empty favicon.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// FNV-1a (64 bits) of `text`, at compile time: an asset's `ETag`. Not cryptographic; it only
/// has to change when the text does.
const fn fnv1a(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The hashes of the three assets, computed once at compile time.
const INDEX_HASH: u64 = fnv1a(INDEX_HTML);
/// See [`INDEX_HASH`].
const APP_JS_HASH: u64 = fnv1a(APP_JS);
/// See [`INDEX_HASH`].
const STYLE_CSS_HASH: u64 = fnv1a(STYLE_CSS);

/// One embedded asset, answered with its content type, its `ETag` and the cache and safety
/// headers; 304 when the browser already has this version.
fn asset(request: &HeaderMap, content_type: &'static str, hash: u64, body: String) -> Response {
    let etag = format!("\"{hash:016x}\"");
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, content_type)], body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

/// `?access_token=T` percent-encoded for the asset URLs (`""` without one), so that with
/// `--control-token` the assets load with the same token the page was opened with.
fn asset_query(query: RawQuery) -> String {
    let Ok(axum::extract::Query(pairs)) = query else {
        return String::new();
    };
    let Some((_, token)) = pairs.iter().find(|(name, _)| name == "access_token") else {
        return String::new();
    };
    if token.is_empty() || token.len() > MAX_ACCESS_TOKEN_LEN {
        return String::new();
    }
    let mut out = String::from("?access_token=");
    for byte in token.bytes() {
        // RFC 3986 unreserved characters pass; everything else is %XX, so the result holds
        // nothing HTML or a URL would read specially.
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The dashboard page.
#[utoipa::path(
    get,
    path = "/",
    params(("access_token" = Option<String>, Query,
            description = "With `--control-token`: the token, which the page then sends on \
                           its requests")),
    responses((status = 200, description = "The dashboard page", content_type = "text/html"),
              (status = 304, description = "The browser's copy is current"))
)]
pub(super) async fn index(headers: HeaderMap, query: RawQuery) -> Response {
    let page = INDEX_HTML.replace(ASSET_QUERY, &asset_query(query));
    asset(&headers, "text/html; charset=utf-8", INDEX_HASH, page)
}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    responses((status = 200, description = "The dashboard's script",
               content_type = "text/javascript"),
              (status = 304, description = "The browser's copy is current"))
)]
pub(super) async fn app_js(headers: HeaderMap) -> Response {
    asset(
        &headers,
        "text/javascript; charset=utf-8",
        APP_JS_HASH,
        APP_JS.to_owned(),
    )
}

/// The dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/style.css",
    responses((status = 200, description = "The dashboard's style sheet", content_type = "text/css"),
              (status = 304, description = "The browser's copy is current"))
)]
pub(super) async fn style_css(headers: HeaderMap) -> Response {
    asset(
        &headers,
        "text/css; charset=utf-8",
        STYLE_CSS_HASH,
        STYLE_CSS.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> RawQuery {
        let uri: axum::http::Uri = format!("http://x/{q}").parse().expect("uri");
        axum::extract::Query::try_from_uri(&uri)
    }

    #[test]
    fn the_token_reaches_the_asset_urls_percent_encoded() {
        assert_eq!(asset_query(query("")), "");
        assert_eq!(asset_query(query("?access_token=")), "");
        assert_eq!(
            asset_query(query("?access_token=abc-1.2_~")),
            "?access_token=abc-1.2_~"
        );
        assert_eq!(
            asset_query(query("?access_token=%22%3E%3Cscript%3E")),
            "?access_token=%22%3E%3Cscript%3E",
            "nothing HTML reads specially gets through"
        );
        let long = format!("?access_token={}", "a".repeat(MAX_ACCESS_TOKEN_LEN + 1));
        assert_eq!(asset_query(query(&long)), "");
    }

    #[test]
    fn the_page_names_its_assets_where_they_are_served() {
        for path in [APP_JS_PATH, STYLE_CSS_PATH] {
            let reference = format!("\"{path}{ASSET_QUERY}\"");
            assert!(INDEX_HTML.contains(&reference), "{reference}");
        }
    }

    #[test]
    fn different_texts_hash_differently() {
        assert_ne!(fnv1a("a"), fnv1a("b"));
        assert_ne!(INDEX_HASH, APP_JS_HASH);
        assert_ne!(APP_JS_HASH, STYLE_CSS_HASH);
    }
}
