//! The slave's package cache (issue 19, warm package caches): an HTTP proxy on loopback that the
//! daemon runs for its builds (mmdebstrap gets `Acquire::http::Proxy`). Package files
//! (`…/pool/…/*.deb`, `*.udeb`) are immutable by name, so they are kept in `apt-cache/` in the
//! work dir and served from there the next time, by any build of any project; everything else
//! (indices, `InRelease`) passes through, so a build always sees the archive as it is now and apt
//! checks every package against the signed indices as usual. The cache stays under
//! `slave.apt_cache_bytes`: the least recently used files go first.
//!
//! The daemon, outside the builds' sandboxes, is the only writer: a build can only ask for URLs,
//! and a file is kept under the host and path it came from, so a build's own mirror can never
//! stand in for another's.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Response, StatusCode, Uri};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;

/// Counters, for the log and the tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub passed: AtomicU64,
    seq: AtomicU64,
}

struct Inner {
    dir: PathBuf,
    limit: u64,
    http: reqwest::Client,
    /// Kept file → (size, last use).
    files: Mutex<HashMap<PathBuf, (u64, SystemTime)>>,
    stats: Arc<Stats>,
    /// `access.log` in the cache dir: `HIT|MISS|PASS URL` per request (started afresh past
    /// [`MAX_LOG_BYTES`]).
    log: Mutex<Option<std::fs::File>>,
}

const MAX_LOG_BYTES: u64 = 8 << 20;

/// A running cache: its proxy URL for apt (`http://127.0.0.1:PORT`).
pub struct AptCache {
    pub proxy: String,
    pub stats: Arc<Stats>,
}

impl AptCache {
    /// Starts the proxy on a free loopback port, with the files already in `dir`.
    pub async fn start(dir: PathBuf, limit: u64) -> std::io::Result<AptCache> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let mut files = HashMap::new();
        scan(&dir, &dir.join("tmp"), &mut files);
        let stats = Arc::new(Stats::default());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("access.log"))
            .ok();
        let inner = Arc::new(Inner {
            log: Mutex::new(log),
            dir,
            limit,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(5))
                .build()
                .map_err(std::io::Error::other)?,
            files: Mutex::new(files),
            stats: stats.clone(),
        });
        inner.evict();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(handle).with_state(inner);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("the package cache stopped: {e}");
            }
        });
        Ok(AptCache { proxy, stats })
    }
}

fn scan(dir: &Path, skip: &Path, out: &mut HashMap<PathBuf, (u64, SystemTime)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "access.log") {
            continue;
        }
        if p == skip {
            let _ = std::fs::remove_dir_all(&p);
            let _ = std::fs::create_dir_all(&p);
            continue;
        }
        match e.metadata() {
            Ok(m) if m.is_dir() => scan(&p, skip, out),
            Ok(m) if m.is_file() => {
                let used = m
                    .accessed()
                    .or_else(|_| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.insert(p, (m.len(), used));
            }
            _ => {}
        }
    }
}

impl Inner {
    /// Removes the least recently used files until the cache is within its limit.
    fn evict(&self) {
        let mut files = self.files.lock().expect("cache index");
        let mut total: u64 = files.values().map(|(s, _)| s).sum();
        if total <= self.limit {
            return;
        }
        let mut by_age: Vec<(PathBuf, u64, SystemTime)> = files
            .iter()
            .map(|(p, (s, t))| (p.clone(), *s, *t))
            .collect();
        by_age.sort_by_key(|(_, _, t)| *t);
        for (p, size, _) in by_age {
            if total <= self.limit {
                break;
            }
            if std::fs::remove_file(&p).is_ok() || !p.exists() {
                files.remove(&p);
                total -= size;
            }
        }
    }

    fn note(&self, what: &str, uri: &Uri) {
        use std::io::Write;
        let mut log = self.log.lock().expect("cache log");
        if let Some(f) = log.as_mut() {
            if f.metadata().is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
                let _ = f.set_len(0);
            }
            // Without credentials or a query: the host and path only.
            let host = uri.authority().map(|a| a.host()).unwrap_or("");
            let _ = writeln!(f, "{what} http://{host}{}", uri.path());
        }
    }

    fn touch(&self, p: &Path) {
        if let Some(e) = self.files.lock().expect("cache index").get_mut(p) {
            e.1 = SystemTime::now();
        }
    }
}

/// Where a package URL is kept: `host/path`, or `None` for what is not a package file (or not a
/// plain path: no `..`, nothing odd).
pub fn cache_path(uri: &Uri) -> Option<PathBuf> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.authority()?.as_str();
    let path = uri.path();
    if !(path.contains("/pool/") && (path.ends_with(".deb") || path.ends_with(".udeb")))
        || uri.query().is_some()
    {
        return None;
    }
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._+~:%".contains(c))
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if !ok(&host.replace(':', "_")) || !parts.iter().all(|s| ok(s)) {
        return None;
    }
    let mut p = PathBuf::from(host.replace(':', "_"));
    for s in parts {
        p.push(s);
    }
    Some(p)
}

fn status(code: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(format!("{msg}\n")))
        .expect("a response")
}

async fn handle(
    State(c): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
    }
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return status(
            StatusCode::BAD_REQUEST,
            "the package cache is an http proxy: ask for http://host/path",
        );
    }
    // What needs credentials is never kept: another project's build could read it.
    let private = headers.contains_key(header::AUTHORIZATION);
    let Some(rel) = cache_path(&uri).filter(|_| !private) else {
        c.stats.passed.fetch_add(1, Ordering::Relaxed);
        c.note("PASS", &uri);
        return pass(&c, method, &uri, &headers).await;
    };
    let path = c.dir.join(&rel);
    if let Ok(f) = tokio::fs::File::open(&path).await {
        if let Ok(m) = f.metadata().await {
            c.stats.hits.fetch_add(1, Ordering::Relaxed);
            c.note("HIT", &uri);
            c.touch(&path);
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from_stream(tokio_util::io::ReaderStream::new(f))
            };
            return Response::builder()
                .header("content-length", m.len())
                .header("content-type", "application/vnd.debian.binary-package")
                .body(body)
                .expect("a response");
        }
    }
    c.stats.misses.fetch_add(1, Ordering::Relaxed);
    c.note("MISS", &uri);
    if method == Method::HEAD {
        return pass(&c, method, &uri, &headers).await;
    }
    match fetch_and_keep(&c, &uri, &path).await {
        Ok(()) => match tokio::fs::File::open(&path).await {
            Ok(f) => {
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                Response::builder()
                    .header("content-length", len)
                    .header("content-type", "application/vnd.debian.binary-package")
                    .body(Body::from_stream(tokio_util::io::ReaderStream::new(f)))
                    .expect("a response")
            }
            Err(e) => status(StatusCode::BAD_GATEWAY, &format!("package cache: {e}")),
        },
        Err(resp) => resp,
    }
}

/// Fetches a package file whole into the cache (a temporary file renamed at the end, so a
/// half-fetched file is never served).
async fn fetch_and_keep(c: &Arc<Inner>, uri: &Uri, path: &Path) -> Result<(), Response<Body>> {
    let r = c
        .http
        .get(uri.to_string())
        .send()
        .await
        .map_err(|e| status(StatusCode::BAD_GATEWAY, &format!("package cache: {e}")))?;
    if !r.status().is_success() {
        return Err(status(
            StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            "upstream refused",
        ));
    }
    let tmp = c.dir.join("tmp").join(format!(
        "{}-{}",
        std::process::id(),
        c.stats.seq.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |e: std::io::Error| status(StatusCode::BAD_GATEWAY, &format!("package cache: {e}"));
    let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut stream = r.bytes_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| status(StatusCode::BAD_GATEWAY, &format!("package cache: {e}")))?
    {
        size += chunk.len() as u64;
        f.write_all(&chunk).await.map_err(io)?;
    }
    f.flush().await.map_err(io)?;
    drop(f);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    tokio::fs::rename(&tmp, path).await.map_err(io)?;
    c.files
        .lock()
        .expect("cache index")
        .insert(path.to_path_buf(), (size, SystemTime::now()));
    c.evict();
    Ok(())
}

/// Anything but a package file goes to the archive as asked (with apt's credentials and
/// conditions), streamed back.
async fn pass(c: &Arc<Inner>, method: Method, uri: &Uri, headers: &HeaderMap) -> Response<Body> {
    let mut req = if method == Method::HEAD {
        c.http.head(uri.to_string())
    } else {
        c.http.get(uri.to_string())
    };
    for k in [
        header::AUTHORIZATION,
        header::IF_MODIFIED_SINCE,
        header::IF_NONE_MATCH,
        header::RANGE,
        header::IF_RANGE,
        header::USER_AGENT,
    ] {
        if let Some(v) = headers.get(&k) {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    match req.send().await {
        Ok(r) => {
            let mut b = Response::builder().status(r.status().as_u16());
            for (k, v) in r.headers() {
                if !matches!(
                    k.as_str(),
                    "connection" | "transfer-encoding" | "keep-alive" | "content-encoding"
                ) {
                    b = b.header(k.as_str(), v.as_bytes());
                }
            }
            b.body(Body::from_stream(r.bytes_stream()))
                .unwrap_or_else(|e| status(StatusCode::BAD_GATEWAY, &e.to_string()))
        }
        Err(e) => status(StatusCode::BAD_GATEWAY, &format!("package cache: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_package_files_are_kept_under_their_host_and_path() {
        let p = |s: &str| cache_path(&s.parse::<Uri>().unwrap());
        assert_eq!(
            p("http://deb.debian.org/debian/pool/main/a/apt/apt_2.6.1_amd64.deb"),
            Some(PathBuf::from(
                "deb.debian.org/debian/pool/main/a/apt/apt_2.6.1_amd64.deb"
            ))
        );
        assert_eq!(
            p("http://127.0.0.1:8080/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"),
            Some(PathBuf::from(
                "127.0.0.1_8080/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"
            ))
        );
        for not in [
            "http://deb.debian.org/debian/dists/bookworm/InRelease",
            "http://deb.debian.org/debian/pool/main/a/apt/apt_2.6.1_amd64.deb?x=1",
            "http://deb.debian.org/debian/pool/../../etc/x.deb",
            "https://deb.debian.org/debian/pool/main/a/apt/apt_2.6.1_amd64.deb",
            "/debian/pool/main/a/apt/apt_2.6.1_amd64.deb",
        ] {
            assert_eq!(p(not), None, "{not}");
        }
    }

    /// A real archive on loopback (one package file, one index) behind the cache: the package
    /// is fetched once and then served from the cache, the index every time, a file asked for
    /// with credentials is never kept, and the cache stays within its limit.
    #[tokio::test]
    async fn a_package_is_fetched_once_and_the_cache_keeps_its_limit() {
        use std::sync::atomic::AtomicUsize;
        let asked = Arc::new(AtomicUsize::new(0));
        let n = asked.clone();
        let archive = axum::Router::new().fallback(move |uri: Uri| {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                format!("contents of {}", uri.path())
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, archive).await });
        let dir = tempfile::tempdir().unwrap();
        let cache = AptCache::start(dir.path().join("c"), 100).await.unwrap();
        let client = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(&cache.proxy).unwrap())
            .build()
            .unwrap();
        let get = |path: &str| {
            let (client, url) = (client.clone(), format!("{upstream}{path}"));
            async move { client.get(url).send().await.unwrap().text().await.unwrap() }
        };
        let deb = "/debian/pool/main/h/hello/hello_2.10-3_amd64.deb";
        for _ in 0..3 {
            assert_eq!(get(deb).await, format!("contents of {deb}"));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "fetched once");
        assert_eq!(cache.stats.hits.load(Ordering::SeqCst), 2);
        get("/debian/dists/bookworm/InRelease").await;
        get("/debian/dists/bookworm/InRelease").await;
        assert_eq!(asked.load(Ordering::SeqCst), 3, "indices pass through");
        let private = client
            .get(format!(
                "{upstream}/debian/pool/main/s/secret/secret_1_all.deb"
            ))
            .basic_auth("kiln", Some("pw"))
            .send()
            .await
            .unwrap();
        assert!(private.status().is_success());
        assert!(!dir.path().join("c").to_string_lossy().is_empty());
        let kept = |name: &str| {
            walk(&dir.path().join("c"))
                .iter()
                .any(|p| p.ends_with(name))
        };
        assert!(kept("hello_2.10-3_amd64.deb"));
        assert!(
            !kept("secret_1_all.deb"),
            "what needs credentials is not kept"
        );
        // Two more packages of ~60 bytes each: past the 100-byte limit the oldest go.
        get("/debian/pool/main/a/a/a_1_all.deb").await;
        get("/debian/pool/main/b/b/b_1_all.deb").await;
        assert!(kept("b_1_all.deb"));
        assert!(
            !kept("hello_2.10-3_amd64.deb"),
            "the least recently used went first"
        );
    }

    fn walk(d: &Path) -> Vec<PathBuf> {
        let mut out = vec![];
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
