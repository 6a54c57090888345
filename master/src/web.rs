//! Serves the web console: the built single-page app from `master.console_dir` when configured
//! (any unknown path gets `index.html`, hashed assets are cached for long), else a small page that
//! says where the API is. `scripts/build-console.sh` writes each asset's precompressed siblings
//! (`X.br`, `X.gz`): a browser that accepts them gets those, with `Content-Encoding` (brotli
//! first), and every answer says `Vary: Accept-Encoding`.

use crate::state::AppState;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{Html, Response};
use axum::routing::get;
use axum::Router;
use kiln_shared::config::Config;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};

/// Trunk names assets `name-<16 hex digits>.ext`: those never change and are cached for a year;
/// everything else (index.html, client routes) is revalidated on every load.
pub fn is_hashed_asset(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or("");
    let stem = file.split('.').next().unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-')
        .is_some_and(|(_, h)| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

async fn cache_headers(req: Request, next: Next) -> Response {
    let hashed = is_hashed_asset(req.uri().path());
    let mut resp = next.run(req).await;
    let value = if hashed {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    // The same path is sent compressed or not, by `Accept-Encoding`: caches must keep both.
    h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    resp
}

const PLACEHOLDER: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Kiln</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>Kiln master</h1>
<p>The master is running. The web console is not built into this installation yet;
use the REST API under <code>/api</code> with the admin token (see <code>docs/api.md</code>).</p>
<p><a href="/api/health">/api/health</a></p>
</body></html>"#;

pub fn router(cfg: &Config) -> Router<Arc<AppState>> {
    match cfg.master.console_dir.as_ref().map(|d| cfg.path(d)) {
        Some(dir) if dir.join("index.html").exists() => {
            let index = ServeFile::new(dir.join("index.html"))
                .precompressed_br()
                .precompressed_gzip();
            let assets = ServeDir::new(&dir)
                .precompressed_br()
                .precompressed_gzip()
                .fallback(index);
            Router::new()
                .fallback_service(assets)
                .layer(axum::middleware::from_fn(cache_headers))
        }
        _ => Router::new().fallback(get(|| async { Html(PLACEHOLDER) })),
    }
}

/// The Content-Security-Policy of the console's pages: everything from this origin only; the
/// one inline module Trunk writes into `index.html` allowed by its sha256; WebAssembly allowed
/// to compile; inline style attributes (the virtual log positions its lines with them); never
/// framed.
pub fn console_csp(index_html: Option<&str>) -> String {
    use base64::Engine;
    let inline: Vec<String> = index_html
        .into_iter()
        .flat_map(|html| html.split("<script type=\"module\">").skip(1))
        .filter_map(|rest| rest.split_once("</script>").map(|(body, _)| body))
        .map(|body| {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(body.as_bytes());
            format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    format!(
        "default-src 'self'; script-src 'self'{} 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        inline.concat()
    )
}

/// Security headers on every response: a CSP (the console's, or none at all for the API),
/// `nosniff`, no framing, no referrer.
pub async fn security_headers(csp: Arc<String>, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api") || req.uri().path().starts_with("/ws");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let policy = if api {
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
    } else {
        HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'self'"))
    };
    h.insert(header::CONTENT_SECURITY_POLICY, policy);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashed_assets() {
        assert!(super::is_hashed_asset(
            "/kiln-frontend-d8dabb914c1ef460_bg.wasm"
        ));
        assert!(super::is_hashed_asset("/kiln-frontend-d8dabb914c1ef460.js"));
        assert!(super::is_hashed_asset("/style-d50b0ef294bdf694.css"));
        assert!(!super::is_hashed_asset("/index.html"));
        assert!(!super::is_hashed_asset("/builds/12"));
    }
}
