//! Artifacts to the master: `PUT {upload_path}/{name}` with the file streamed as the body and its
//! sha256 in `x-kiln-sha256`. Network errors and 5xx are retried (the master may be restarting);
//! a 4xx is final and its message becomes the build's failure reason.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the master refused artifact '{name}': {message}")]
    Rejected { name: String, message: String },
    #[error("cannot upload artifact '{name}': {message}")]
    Gave { name: String, message: String },
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

/// One artifact, opened once: checked, hashed and streamed from the same descriptor.
pub struct Artifact {
    pub name: String,
    file: std::fs::File,
    pub size: u64,
    pub sha256: String,
}

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
    /// other name (a hard link could point outside the output directory), and hashes it.
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
        Artifact::hashed(name, file)
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
        Artifact::hashed(name, std::fs::File::open(path)?)
    }

    /// An artifact from a file already open and checked: hashed once, here.
    fn hashed(name: &str, mut file: std::fs::File) -> std::io::Result<Artifact> {
        let (sha256, size) = sha256_of(&mut file)?;
        Ok(Artifact {
            name: name.to_string(),
            file,
            size,
            sha256,
        })
    }
}

pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    artifact: &Artifact,
) -> Result<(), UploadError> {
    let name = &artifact.name;
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    for _ in 0..20 {
        let file = artifact.reader().map_err(|source| UploadError::Local {
            name: name.into(),
            source,
        })?;
        let len = artifact.size;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let resp = client
            .put(url)
            .bearer_auth(token)
            .header("x-kiln-sha256", &artifact.sha256)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => return Ok(()),
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
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tracing::warn!("upload of {name} failed ({last}); retrying in {delay:?}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(15));
    }
    Err(UploadError::Gave {
        name: name.into(),
        message: last,
    })
}

/// The message of the master's JSON error body (`{"error": "..."}`).
fn serde_json_message(body: &str) -> Option<String> {
    serde_json::from_str::<kiln_shared::api::ErrorBody>(body)
        .ok()
        .map(|e| e.error)
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_extraction() {
        assert_eq!(
            super::serde_json_message(r#"{"error":"bad \"sha\"","code":"unprocessable"}"#)
                .as_deref(),
            Some("bad \"sha\"")
        );
        assert_eq!(super::serde_json_message("nope"), None);
    }
}
