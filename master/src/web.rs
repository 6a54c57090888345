//! Serves the web console: the built single-page app from `master.console_dir` when configured
//! (any unknown path gets `index.html`, hashed assets are cached for long), else a small page that
//! says where the API is.

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
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    resp
}

const PLACEHOLDER: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Kiln</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>Kiln master</h1>
<p>The master is running. The web console is not built into this installation yet;
use the REST API under <code>/api</code> with the admin token (see <code>docs/api.md</code>).</p>
<p><a href="/api/health">/api/health</a></p>
</body></html>"#;

pub fn router(cfg: &Config) -> Router<Arc<AppState>> {
    match cfg.master.console_dir.as_ref().map(|d| cfg.path(d)) {
        Some(dir) if dir.join("index.html").exists() => {
            let index = ServeFile::new(dir.join("index.html"));
            let assets = ServeDir::new(&dir).fallback(index);
            Router::new()
                .fallback_service(assets)
                .layer(axum::middleware::from_fn(cache_headers))
        }
        _ => Router::new().fallback(get(|| async { Html(PLACEHOLDER) })),
    }
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
