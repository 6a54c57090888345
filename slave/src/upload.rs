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

pub async fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
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
        let file = tokio::fs::File::open(path)
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

/// Pulls `message` out of the master's `{"error":..,"message":..}` body without a JSON crate.
fn serde_json_message(body: &str) -> Option<String> {
    let start = body.find("\"message\":\"")? + "\"message\":\"".len();
    let rest = &body[start..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_extraction() {
        assert_eq!(
            super::serde_json_message(r#"{"error":"x","message":"bad \"sha\""}"#).as_deref(),
            Some("bad \"sha\"")
        );
        assert_eq!(super::serde_json_message("nope"), None);
    }
}
