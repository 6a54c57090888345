//! The head of a branch as a git server advertises it, read in-process: for `git://` one round
//! trip on one connection, for `http(s)://` one `GET …/info/refs?service=git-upload-pack` (git's
//! smart HTTP protocol, certificates checked against the system's roots); no git process on this
//! side. The git cache asks it before fetching an unpinned build's branch, and skips the fetch
//! when its mirror already holds that commit (the usual case: a branch built again without a new
//! push).
//!
//! Only an optimisation: `ssh://`, a URL with credentials, a server that wants a login, a slow or
//! unexpected answer give `None`, and the cache fetches as it always did (and reports what went
//! wrong then).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the whole exchange may take before the cache falls back to fetching.
const PATIENCE: Duration = Duration::from_secs(5);
/// The most the advertisement may hold (a repository with very many refs is fetched instead).
const MAX_BYTES: usize = 4 << 20;

/// The commit the server at `url` advertises as `refs/heads/<branch>`.
pub async fn advertised_head(url: &str, branch: &str) -> Option<String> {
    let want = format!("refs/heads/{branch}");
    let asked = async {
        if let Some((authority, path)) = split_git_url(url) {
            ask(authority, path, &want).await
        } else if is_plain_http_url(url) {
            ask_http(url, &want).await
        } else {
            None
        }
    };
    tokio::time::timeout(PATIENCE, asked).await.ok().flatten()
}

/// `http://` or `https://` without credentials in it.
fn is_plain_http_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    !authority.is_empty() && !authority.contains('@') && !url.contains(['?', '#'])
}

/// One HTTP client for every build (system roots, as git uses).
fn http_client() -> Option<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let tls = crate::tls::client_config(&crate::tls::Trust::System).ok()?;
            reqwest::Client::builder()
                .use_preconfigured_tls((*tls).clone())
                // A redirect (elsewhere, or to plain http) is git's to follow: fetch then.
                .redirect(reqwest::redirect::Policy::none())
                // Smart HTTP servers answer git clients only ("git/…").
                .user_agent(concat!("git/kiln-slave-", env!("CARGO_PKG_VERSION")))
                .build()
                .ok()
        })
        .as_ref()
}

/// Git's smart HTTP: `GET URL/info/refs?service=git-upload-pack` answers a service line, a
/// flush, then the same advertisement as `git://`.
async fn ask_http(url: &str, want: &str) -> Option<String> {
    let u = format!(
        "{}/info/refs?service=git-upload-pack",
        url.trim_end_matches('/')
    );
    let mut resp = http_client()?.get(u).send().await.ok()?;
    let smart = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        == Some("application/x-git-upload-pack-advertisement");
    if !resp.status().is_success() || !smart {
        return None;
    }
    let mut got = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        got.extend_from_slice(&chunk);
        if got.len() > MAX_BYTES {
            return None;
        }
    }
    match parse(after_service_line(&got)?, want) {
        Parsed::Head(h) => h,
        _ => None,
    }
}

/// What follows `# service=git-upload-pack` and its flush.
fn after_service_line(buf: &[u8]) -> Option<&[u8]> {
    let len = usize::from_str_radix(std::str::from_utf8(buf.get(..4)?).ok()?, 16).ok()?;
    let line = buf.get(4..len)?;
    if line.strip_suffix(b"\n").unwrap_or(line) != b"# service=git-upload-pack" {
        return None;
    }
    buf.get(len..)?.strip_prefix(b"0000")
}

/// `git://host[:port]/path` → (`host[:port]`, `/path`); `None` for anything else.
fn split_git_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("git://")?;
    let slash = rest.find('/')?;
    let (authority, path) = rest.split_at(slash);
    if authority.is_empty() || authority.contains('@') || path.len() < 2 {
        return None;
    }
    Some((authority, path))
}

async fn ask(authority: &str, path: &str, want: &str) -> Option<String> {
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => authority.contains(':'),
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:9418")
    };
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.set_nodelay(true).ok()?;
    conn.write_all(&pkt_line(&format!(
        "git-upload-pack {path}\0host={authority}\0"
    )))
    .await
    .ok()?;
    let mut got = Vec::new();
    let head = loop {
        match parse(&got, want) {
            Parsed::Head(h) => break h,
            Parsed::Absent => break None,
            Parsed::More => {}
        }
        if got.len() > MAX_BYTES {
            return None;
        }
        let mut buf = [0u8; 16 * 1024];
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    };
    // A flush: the client wants nothing; the server's upload-pack ends.
    let _ = conn.write_all(b"0000").await;
    head
}

fn pkt_line(s: &str) -> Vec<u8> {
    let mut v = format!("{:04x}", s.len() + 4).into_bytes();
    v.extend_from_slice(s.as_bytes());
    v
}

#[derive(Debug, PartialEq)]
enum Parsed {
    /// The whole advertisement was read: the branch's commit, if it was there.
    Head(Option<String>),
    /// The server said something that is not an advertisement.
    Absent,
    /// Not complete yet.
    More,
}

/// Reads a protocol-v0 ref advertisement (pkt-lines up to a flush): `<id> <ref>\0<caps>` first,
/// then `<id> <ref>` per line.
fn parse(buf: &[u8], want: &str) -> Parsed {
    let mut at = 0;
    let mut head = None;
    loop {
        let Some(len) = buf.get(at..at + 4) else {
            return Parsed::More;
        };
        let Some(len) = std::str::from_utf8(len)
            .ok()
            .and_then(|l| usize::from_str_radix(l, 16).ok())
        else {
            return Parsed::Absent;
        };
        if len == 0 {
            return Parsed::Head(head);
        }
        if len < 4 {
            return Parsed::Absent;
        }
        let Some(line) = buf.get(at + 4..at + len) else {
            return Parsed::More;
        };
        at += len;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.split(|b| *b == 0).next().unwrap_or_default();
        let Ok(line) = std::str::from_utf8(line) else {
            return Parsed::Absent;
        };
        if line.starts_with("ERR ") {
            return Parsed::Absent;
        }
        let Some((id, name)) = line.split_once(' ') else {
            return Parsed::Absent;
        };
        let hex = id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex || !(id.len() == 40 || id.len() == 64) {
            return Parsed::Absent;
        }
        if name == want {
            head = Some(id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `git daemon` sends for a repository with two branches and a tag (protocol v0).
    fn advertisement() -> Vec<u8> {
        let a = "1111111111111111111111111111111111111111";
        let b = "2222222222222222222222222222222222222222";
        let mut v = pkt_line(&format!(
            "{a} HEAD\0multi_ack thin-pack side-band side-band-64k ofs-delta shallow symref=HEAD:refs/heads/main agent=git/2.39.5\n"
        ));
        v.extend(pkt_line(&format!("{a} refs/heads/main\n")));
        v.extend(pkt_line(&format!("{b} refs/heads/release\n")));
        v.extend(pkt_line(&format!("{b} refs/tags/v1\n")));
        v.extend(b"0000");
        v
    }

    #[test]
    fn finds_the_branch_in_a_whole_advertisement() {
        let ad = advertisement();
        assert_eq!(
            parse(&ad, "refs/heads/release"),
            Parsed::Head(Some("2".repeat(40)))
        );
        assert_eq!(
            parse(&ad, "refs/heads/main"),
            Parsed::Head(Some("1".repeat(40)))
        );
        assert_eq!(parse(&ad, "refs/heads/gone"), Parsed::Head(None));
    }

    #[test]
    fn waits_for_the_flush_and_refuses_what_is_not_an_advertisement() {
        let ad = advertisement();
        for cut in [0, 3, 10, ad.len() - 4, ad.len() - 1] {
            assert_eq!(parse(&ad[..cut], "refs/heads/main"), Parsed::More, "{cut}");
        }
        let err = pkt_line("ERR access denied or repository not exported: /x.git");
        assert_eq!(parse(&err, "refs/heads/main"), Parsed::Absent);
        assert_eq!(parse(b"HTTP/1.1 400", "refs/heads/main"), Parsed::Absent);
        let bad = pkt_line("not-an-id refs/heads/main\n");
        assert_eq!(parse(&bad, "refs/heads/main"), Parsed::Absent);
    }

    #[test]
    fn a_smart_http_answer_starts_with_its_service_line() {
        let mut body = pkt_line("# service=git-upload-pack\n");
        body.extend(b"0000");
        body.extend(advertisement());
        assert_eq!(
            parse(after_service_line(&body).unwrap(), "refs/heads/main"),
            Parsed::Head(Some("1".repeat(40)))
        );
        assert_eq!(after_service_line(&advertisement()), None);
        assert!(is_plain_http_url("https://example.org/board.git"));
        assert!(is_plain_http_url("http://127.0.0.1:8080/board.git"));
        assert!(!is_plain_http_url("https://user:pw@example.org/board.git"));
        assert!(!is_plain_http_url("ssh://example.org/board.git"));
        assert!(!is_plain_http_url("https:///board.git"));
    }

    #[test]
    fn only_plain_git_urls_are_asked() {
        assert_eq!(
            split_git_url("git://127.0.0.1:9000/board.git"),
            Some(("127.0.0.1:9000", "/board.git"))
        );
        assert_eq!(
            split_git_url("git://[::1]/board.git"),
            Some(("[::1]", "/board.git"))
        );
        for url in [
            "https://example.org/board.git",
            "ssh://git@example.org/board.git",
            "git://user@example.org/board.git",
            "git://example.org/",
            "git://example.org",
        ] {
            assert_eq!(split_git_url(url), None, "{url}");
        }
    }
}
