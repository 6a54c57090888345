//! Artifacts to the master: `PUT {upload_path}/{name}` with the file streamed as the body, read
//! once: the slave hashes what it sends as it sends it, the master hashes what it stores and
//! answers with that sha256 and size, and the two must agree (else the upload is sent again, and
//! after [`CORRUPT_TRIES`] disagreements the build fails naming both sums). The agreed sum is the
//! one in SHA256SUMS. Network errors and 5xx are retried (the master may be restarting); a 4xx is
//! final and its message becomes the build's failure reason.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the master refused artifact '{name}': {message}")]
    Rejected { name: String, message: String },
    #[error("cannot upload artifact '{name}': {message}")]
    Gave { name: String, message: String },
    #[error("artifact '{name}' arrived corrupted {CORRUPT_TRIES} times: the slave sent sha256 {sent} ({sent_bytes} bytes), the master stored sha256 {stored} ({stored_bytes} bytes)")]
    Corrupted {
        name: String,
        sent: String,
        sent_bytes: u64,
        stored: String,
        stored_bytes: u64,
    },
    #[error("cannot read artifact '{name}': {source}")]
    Local {
        name: String,
        source: std::io::Error,
    },
}

/// The output dir, opened once without following a link: every artifact is opened relative to
/// this descriptor, so nothing outside the directory the build was given is read, whatever the
/// build left in its place.
pub struct OutputDir {
    fd: std::os::fd::OwnedFd,
}

/// One artifact, opened once: checked, then streamed (and hashed as it goes) from the same
/// descriptor.
pub struct Artifact {
    pub name: String,
    file: std::fs::File,
    pub size: u64,
}

/// How many times an upload that the master stored with another sum than the slave sent is sent
/// again before the build fails.
pub const CORRUPT_TRIES: u32 = 3;

/// What an entry of the output dir is.
pub enum Entry {
    File(String),
    Dir(String),
    /// A link, device, FIFO or socket: never an artifact.
    Other(String, &'static str),
}

impl OutputDir {
    pub fn open(path: &Path) -> std::io::Result<OutputDir> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        Ok(OutputDir { fd: f.into() })
    }

    /// The entries, sorted by name (types as they are: a link is not followed).
    pub fn entries(&self) -> std::io::Result<Vec<Entry>> {
        use std::os::fd::AsRawFd;
        let mut out = vec![];
        for e in std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let t = e.file_type()?;
            out.push(if t.is_file() {
                Entry::File(name)
            } else if t.is_dir() {
                Entry::Dir(name)
            } else if t.is_symlink() {
                Entry::Other(name, "a symbolic link")
            } else {
                Entry::Other(name, "a device, FIFO or socket")
            });
        }
        out.sort_by(|a, b| entry_name(a).cmp(entry_name(b)));
        Ok(out)
    }

    /// Opens `name` in the dir without following a link, only if it is a regular file with no
    /// other name (a hard link could point outside the output directory). Nothing is read yet.
    pub fn artifact(&self, name: &str) -> std::io::Result<Artifact> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::fs::MetadataExt;
        let cname = std::ffi::CString::new(name)
            .map_err(|_| std::io::Error::other("a name with a NUL byte"))?;
        // SAFETY: a valid dir fd and C string; the returned fd is owned by the File at once.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nobody else.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        let m = file.metadata()?;
        if !m.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        if m.nlink() != 1 {
            return Err(std::io::Error::other(
                "a hard link (it has another name, possibly outside the output directory)",
            ));
        }
        Ok(Artifact {
            name: name.to_string(),
            size: m.len(),
            file,
        })
    }
}

fn entry_name(e: &Entry) -> &str {
    match e {
        Entry::File(n) | Entry::Dir(n) | Entry::Other(n, _) => n,
    }
}

/// Hashes a file from its start (the descriptor is left at its end).
pub fn sha256_of(f: &mut std::fs::File) -> std::io::Result<(String, u64)> {
    use std::io::{Read, Seek};
    f.seek(std::io::SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

impl Artifact {
    /// A handle on the same open file, from its start.
    fn reader(&self) -> std::io::Result<tokio::fs::File> {
        use std::io::Seek;
        let mut f = self.file.try_clone()?;
        f.seek(std::io::SeekFrom::Start(0))?;
        Ok(tokio::fs::File::from_std(f))
    }

    /// An artifact the daemon made itself (SHA256SUMS), from a file of its own.
    pub fn from_own_file(name: &str, path: &Path) -> std::io::Result<Artifact> {
        let file = std::fs::File::open(path)?;
        Ok(Artifact {
            name: name.to_string(),
            size: file.metadata()?.len(),
            file,
        })
    }

    /// Hashes the whole file (only for an artifact uploaded by an earlier daemon that did not
    /// record its sum).
    pub fn sha256(&self) -> std::io::Result<String> {
        Ok(sha256_of(&mut self.file.try_clone()?)?.0)
    }
}

/// What the master answers a stored upload with: the sum and size of what it stored.
#[derive(serde::Deserialize)]
struct Stored {
    sha256: String,
    size: u64,
}

/// Uploads `artifact`, reading it once per attempt and hashing what is sent; returns the sha256
/// the slave sent and the master stored. `wanted` is asked before every retry: once the master
/// has given up on the build (it refused an upload by closing the connection, say, and then
/// cancelled the build), retrying is pointless and only holds the build's dir. `retrying` is told
/// why before each wait (for the build's log: an upload may wait minutes on a store that is away).
pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    artifact: &Artifact,
    wanted: impl Fn() -> bool,
    retrying: impl Fn(&str),
) -> Result<String, UploadError> {
    use futures_util::TryStreamExt;
    let name = &artifact.name;
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    let mut corrupted = 0;
    for _ in 0..20 {
        let file = artifact.reader().map_err(|source| UploadError::Local {
            name: name.into(),
            source,
        })?;
        let len = artifact.size;
        let sent = Arc::new(Mutex::new((Sha256::new(), 0u64)));
        let tap = sent.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect_ok(
            move |chunk| {
                let mut t = tap.lock().expect("hash poisoned");
                t.0.update(chunk);
                t.1 += chunk.len() as u64;
            },
        );
        let resp = client
            .put(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let stored: Stored = match r.json().await {
                    Ok(s) => s,
                    Err(e) => {
                        return Err(UploadError::Gave {
                            name: name.into(),
                            message: format!("the master did not say what it stored: {e}"),
                        })
                    }
                };
                let (hasher, sent_bytes) =
                    std::mem::take(&mut *sent.lock().expect("hash poisoned"));
                let sent = hex::encode(hasher.finalize());
                if stored.sha256.eq_ignore_ascii_case(&sent) && stored.size == sent_bytes {
                    return Ok(sent);
                }
                corrupted += 1;
                if corrupted >= CORRUPT_TRIES {
                    return Err(UploadError::Corrupted {
                        name: name.into(),
                        sent,
                        sent_bytes,
                        stored: stored.sha256,
                        stored_bytes: stored.size,
                    });
                }
                last = format!(
                    "the master stored sha256 {} ({} bytes), the slave sent {sent} ({sent_bytes} bytes)",
                    stored.sha256, stored.size
                );
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let message =
                    serde_json_message(&text).unwrap_or_else(|| format!("HTTP {status}: {text}"));
                return Err(UploadError::Rejected {
                    name: name.into(),
                    message,
                });
            }
            Ok(r) if r.status() == reqwest::StatusCode::INSUFFICIENT_STORAGE => {
                let text = r.text().await.unwrap_or_default();
                return Err(UploadError::Rejected {
                    name: name.into(),
                    message: serde_json_message(&text).unwrap_or(text),
                });
            }
            Ok(r) => last = server_error(r).await,
            Err(e) => last = e.to_string(),
        }
        let given_up = || UploadError::Gave {
            name: name.into(),
            message: format!("{last}; the master no longer expects this build"),
        };
        if !wanted() {
            return Err(given_up());
        }
        tracing::warn!("upload of {name} failed ({last}); retrying in {delay:?}");
        retrying(&format!(
            "upload of {name} failed ({last}); trying again in {:.1} s",
            delay.as_secs_f64()
        ));
        tokio::time::sleep(delay).await;
        if !wanted() {
            return Err(given_up());
        }
        delay = (delay * 2).min(Duration::from_secs(15));
    }
    Err(UploadError::Gave {
        name: name.into(),
        message: last,
    })
}

/// Sends the build's image record (`PUT {record_url}`, JSON) with the same retries as an
/// artifact: network errors and 5xx again with back-off while `wanted`, a 4xx is final.
pub async fn put_record(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
    wanted: impl Fn() -> bool,
) -> Result<(), String> {
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    for _ in 0..20 {
        let resp = client
            .put(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Err(
                    serde_json_message(&text).unwrap_or_else(|| format!("HTTP {status}: {text}"))
                );
            }
            Ok(r) => last = server_error(r).await,
            Err(e) => last = e.to_string(),
        }
        if !wanted() {
            return Err(format!("{last}; the master no longer expects this build"));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
    Err(last)
}

/// A 5xx answer as the master worded it: its status and its JSON error's message.
async fn server_error(r: reqwest::Response) -> String {
    let status = r.status();
    // A proxy may send the status and then stall: the message is not worth waiting for.
    let body = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    match serde_json_message(&body) {
        Some(m) => format!("HTTP {status}: {m}"),
        None => format!("HTTP {status}"),
    }
}

/// The message of the master's JSON error body (`{"error": "..."}`).
fn serde_json_message(body: &str) -> Option<String> {
    serde_json::from_str::<kiln_shared::api::ErrorBody>(body)
        .ok()
        .map(|e| e.error)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};
    use std::sync::{Arc, Mutex};
    #[test]
    fn message_extraction() {
        assert_eq!(
            super::serde_json_message(r#"{"error":"bad \"sha\"","code":"unprocessable"}"#)
                .as_deref(),
            Some("bad \"sha\"")
        );
        assert_eq!(super::serde_json_message("nope"), None);
    }

    /// A master on a socket that stores what it gets and answers with the sum it computed, or
    /// (for the first `lie` uploads) a wrong one, as if the data had been corrupted on the way.
    async fn master(lie: usize) -> (String, Arc<Mutex<usize>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/a", l.local_addr().unwrap());
        let count = Arc::new(Mutex::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                let mut data = vec![];
                let mut buf = [0u8; 65536];
                let (head, len) = loop {
                    let n = c.read(&mut buf).await.unwrap();
                    data.extend_from_slice(&buf[..n]);
                    if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..p]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .unwrap()
                            .trim()
                            .parse()
                            .unwrap();
                        break (p + 4, len);
                    }
                };
                while data.len() < head + len {
                    let n = c.read(&mut buf).await.unwrap();
                    data.extend_from_slice(&buf[..n]);
                }
                let n = {
                    let mut s = seen.lock().unwrap();
                    *s += 1;
                    *s
                };
                let mut sum = hex::encode(Sha256::digest(&data[head..head + len]));
                if n <= lie {
                    sum = "0".repeat(64);
                }
                let body = format!(r#"{{"name":"a","size":{len},"sha256":"{sum}"}}"#);
                let resp = format!(
                    "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                c.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        (url, count)
    }

    fn artifact(name: &str) -> (super::Artifact, String) {
        let path = std::env::temp_dir().join(format!("kiln-upload-{name}-{}", std::process::id()));
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let a = super::Artifact::from_own_file("a", &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (a, hex::encode(Sha256::digest(&data)))
    }

    #[tokio::test]
    async fn the_sum_is_taken_while_sending_and_a_corrupted_upload_is_sent_again() {
        let client = reqwest::Client::new();
        let (a, want) = artifact("retry");
        let (url, count) = master(1).await;
        let got = super::upload(&client, &url, "t", &a, || true, |_| {})
            .await
            .unwrap();
        assert_eq!(got, want);
        assert_eq!(
            *count.lock().unwrap(),
            2,
            "sent again once after the mismatch"
        );
    }

    #[tokio::test]
    async fn an_upload_that_keeps_arriving_corrupted_fails_naming_both_sums() {
        let client = reqwest::Client::new();
        let (a, want) = artifact("corrupt");
        let (url, count) = master(usize::MAX).await;
        let e = super::upload(&client, &url, "t", &a, || true, |_| {})
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, super::UploadError::Corrupted { .. }), "{text}");
        assert!(
            text.contains(&want) && text.contains(&"0".repeat(64)),
            "{text}"
        );
        assert_eq!(*count.lock().unwrap(), super::CORRUPT_TRIES as usize);
    }

    #[tokio::test]
    async fn a_failed_upload_is_not_retried_once_the_build_is_no_longer_wanted() {
        let client = reqwest::Client::new();
        let (a, _) = artifact("unwanted");
        // Nothing listens there: every attempt fails at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/upload", closed.local_addr().unwrap());
        drop(closed);
        let asked = std::cell::Cell::new(0);
        let e = super::upload(
            &client,
            &url,
            "t",
            &a,
            || {
                asked.set(asked.get() + 1);
                false
            },
            |m| panic!("no retry is announced: {m}"),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("the master no longer expects this build"),
            "{e}"
        );
        assert_eq!(
            asked.get(),
            1,
            "asked once, after the first failure: no retry"
        );
    }

    /// A master that answers a 5xx with its JSON error: the build's log is told the message and
    /// the wait before each retry.
    #[tokio::test]
    async fn each_retry_is_announced_with_the_masters_message() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/upload", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    // The whole request first, as a master does.
                    let (mut got, mut buf) = (vec![], vec![0u8; 1 << 16]);
                    loop {
                        let text = String::from_utf8_lossy(&got);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body =
                        r#"{"error":"the object store did not answer","code":"unavailable"}"#;
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        let (a, _) = artifact("announced");
        let asked = std::cell::Cell::new(0);
        let said = std::cell::RefCell::new(vec![]);
        let e = super::upload(
            &reqwest::Client::new(),
            &url,
            "t",
            &a,
            || {
                asked.set(asked.get() + 1);
                asked.get() < 3
            },
            |m| said.borrow_mut().push(m.to_string()),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no longer expects"), "{e}");
        assert_eq!(
            *said.borrow(),
            vec![
                "upload of a failed (HTTP 503 Service Unavailable: the object store did not answer); trying again in 0.5 s",
            ]
        );
    }

    /// `KILN_BENCH_FILE=/path cargo test -p kiln-slave bench_first_byte -- --ignored --nocapture`:
    /// how long an artifact takes from open to its first byte on the wire, now (no pass before
    /// the upload) and with the hashing pass the upload used to make first.
    #[test]
    #[ignore]
    fn bench_first_byte() {
        let path = std::env::var("KILN_BENCH_FILE").expect("KILN_BENCH_FILE");
        let dir = super::OutputDir::open(std::path::Path::new(&path).parent().unwrap()).unwrap();
        let name = std::path::Path::new(&path)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let t = std::time::Instant::now();
        let a = dir.artifact(name).unwrap();
        let open = t.elapsed();
        let t = std::time::Instant::now();
        let (_, size) = super::sha256_of(&mut a.file.try_clone().unwrap()).unwrap();
        eprintln!(
            "{size} bytes: ready to send after {:.3} ms (a pass over the file first took {:.2} s)",
            open.as_secs_f64() * 1000.0,
            t.elapsed().as_secs_f64()
        );
    }
}
