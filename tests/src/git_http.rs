//! Git's smart HTTP protocol on loopback: the real `git http-backend` (git's own CGI program)
//! behind a minimal HTTP/1.1 gateway, serving the repositories of a [`GitServer`] as
//! `http://127.0.0.1:PORT/NAME.git`. One thread per connection, one request per connection
//! (`Connection: close`), request bodies by `Content-Length` (git sends small ones that way).

use crate::GitServer;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct GitHttp {
    pub port: u16,
    /// Requests answered so far (to tell a fetch from none).
    pub requests: Arc<AtomicUsize>,
}

impl GitHttp {
    /// Serves the repositories of `git` over HTTP until the process ends.
    pub fn start(git: &GitServer) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let root = git.root().to_path_buf();
        let backend = PathBuf::from(
            String::from_utf8(
                Command::new("git")
                    .arg("--exec-path")
                    .output()
                    .expect("git --exec-path")
                    .stdout,
            )
            .unwrap()
            .trim(),
        )
        .join("git-http-backend");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, backend, counted) = (root.clone(), backend.clone(), counted.clone());
                std::thread::spawn(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = serve(conn, &root, &backend);
                });
            }
        });
        GitHttp { port, requests }
    }

    /// The HTTP URL of the repository `name` of the [`GitServer`].
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }
}

/// One request: parsed, handed to `git http-backend` as CGI, its answer sent back.
fn serve(conn: TcpStream, root: &Path, backend: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = vec![];
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut body = vec![0u8; header("content-length").parse().unwrap_or(0)];
    reader.read_exact(&mut body)?;
    let mut cgi = Command::new(backend)
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    cgi.stdin.take().expect("piped").write_all(&body)?;
    let out = cgi.wait_with_output()?;
    // CGI output: headers (one may be `Status: 404 Not Found`), a blank line, the body.
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .unwrap_or((out.stdout.len(), 0));
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let body = &out.stdout[(split.0 + split.1).min(out.stdout.len())..];
    let mut status = "200 OK".to_string();
    let mut response = String::new();
    for h in head.lines().filter(|l| !l.trim().is_empty()) {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            _ => {
                response.push_str(h.trim_end());
                response.push_str("\r\n");
            }
        }
    }
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}
