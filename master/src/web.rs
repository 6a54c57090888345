//! Serves the web console: the built single-page app from `master.console_dir` when configured
//! (any unknown path gets `index.html`, hashed assets are cached for long), else a small page that
//! says where the API is.

use crate::AppState;
use axum::http::{header, HeaderValue};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use kiln_shared::config::Config;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

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
            Router::new().fallback_service(
                tower::ServiceBuilder::new()
                    .layer(SetResponseHeaderLayer::if_not_present(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=31536000, immutable"),
                    ))
                    .service(assets),
            )
        }
        _ => Router::new().fallback(get(|| async { Html(PLACEHOLDER) })),
    }
}
