//! Artifacts to the master: `PUT {upload_path}/{name}` with the file streamed as the body and its
//! sha256 in `x-kiln-sha256`. Network errors and 5xx are retried (the master may be restarting);
//! a 4xx is final and its message becomes the build's failure reason.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

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

/// Opens an artifact without following a symlink, and only if it is a regular file with no other
/// name (a hard link could point outside the output directory): nothing outside it is read.
pub async fn open_artifact(path: &Path) -> std::io::Result<tokio::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if m.nlink() != 1 {
        return Err(std::io::Error::other(
            "a hard link (it has another name, possibly outside the output directory)",
        ));
    }
    Ok(tokio::fs::File::from_std(f))
}

pub async fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = open_artifact(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    path: &Path,
    sha256: &str,
) -> Result<(), UploadError> {
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    for _ in 0..20 {
        let file = open_artifact(path)
            .await
            .map_err(|source| UploadError::Local {
                name: name.into(),
                source,
            })?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let resp = client
            .put(url)
            .bearer_auth(token)
            .header("x-kiln-sha256", sha256)
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
