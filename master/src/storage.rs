//! Files on disk: build logs and artifacts, under `master.storage_dir`.
//!
//! Layout: `builds/{id}/log` (one line per log line, `\n`-terminated) and
//! `builds/{id}/artifacts/{name}`. The database holds only the index (line count, artifact
//! names/sizes/hashes). A log file is the truth for "which lines do we have": its line count is the
//! next sequence number expected, so a master restarted mid-build resumes exactly where the file
//! ends and stores every line once.

use kiln_shared::BuildId;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

pub struct Storage {
    root: PathBuf,
    open_logs: Mutex<HashMap<BuildId, Arc<tokio::sync::Mutex<LogFile>>>>,
}

struct LogFile {
    file: tokio::fs::File,
    next_seq: u64,
    bytes: u64,
    /// When the database's index row was last brought up to date.
    indexed_at: Option<std::time::Instant>,
}

/// How often, at most, a running build's `log_lines` row follows its log file.
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Result of appending a chunk of log lines.
pub struct Appended {
    /// The next sequence number the master expects.
    pub next_seq: u64,
    /// Size of the stored log.
    pub bytes: u64,
    /// New lines were written and the index row was last updated over `INDEX_EVERY` ago (the
    /// caller updates it now).
    pub index_due: bool,
    /// Sequence number of the first line actually written (lines already stored are skipped).
    pub first_new: u64,
    pub new_lines: Vec<String>,
}

impl Storage {
    pub fn new(root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("builds"))?;
        for d in [root.clone(), root.join("builds")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Storage {
            root,
            open_logs: Mutex::new(HashMap::new()),
        })
    }

    pub fn build_dir(&self, id: BuildId) -> PathBuf {
        self.root.join("builds").join(id.0.to_string())
    }

    pub fn log_path(&self, id: BuildId) -> PathBuf {
        self.build_dir(id).join("log")
    }

    pub fn artifact_dir(&self, id: BuildId) -> PathBuf {
        self.build_dir(id).join("artifacts")
    }

    /// Caller has validated `name` with `validate_artifact_name`.
    pub fn artifact_path(&self, id: BuildId, name: &str) -> PathBuf {
        self.artifact_dir(id).join(name)
    }

    async fn open_log(&self, id: BuildId) -> io::Result<Arc<tokio::sync::Mutex<LogFile>>> {
        if let Some(f) = self.open_logs.lock().expect("log table poisoned").get(&id) {
            return Ok(f.clone());
        }
        let path = self.log_path(id);
        private_dir(path.parent().unwrap_or(Path::new("."))).await?;
        let (next_seq, bytes) = recover_line_count(&path).await?;
        let file = tokio::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let entry = Arc::new(tokio::sync::Mutex::new(LogFile {
            file,
            next_seq,
            bytes,
            indexed_at: None,
        }));
        let mut table = self.open_logs.lock().expect("log table poisoned");
        Ok(table.entry(id).or_insert(entry).clone())
    }

    /// Appends the lines numbered `first_seq..` that are not stored yet. A chunk that starts past
    /// the end (a gap) writes nothing; the returned `next_seq` tells the slave where to resend from.
    pub async fn append_log(
        &self,
        id: BuildId,
        first_seq: u64,
        lines: &[String],
    ) -> io::Result<Appended> {
        let log = self.open_log(id).await?;
        let mut log = log.lock().await;
        let next = log.next_seq;
        if first_seq > next {
            return Ok(Appended {
                bytes: log.bytes,
                index_due: false,
                next_seq: next,
                first_new: next,
                new_lines: vec![],
            });
        }
        let skip = (next - first_seq) as usize;
        let new_lines: Vec<String> = lines
            .iter()
            .skip(skip)
            .map(|l| l.replace(['\n', '\r'], " "))
            .collect();
        if new_lines.is_empty() {
            return Ok(Appended {
                bytes: log.bytes,
                index_due: false,
                next_seq: next,
                first_new: next,
                new_lines,
            });
        }
        let mut buf = String::with_capacity(new_lines.iter().map(|l| l.len() + 1).sum());
        for l in &new_lines {
            buf.push_str(l);
            buf.push('\n');
        }
        let written = async {
            log.file.write_all(buf.as_bytes()).await?;
            log.file.flush().await
        }
        .await;
        if let Err(e) = written {
            // A write that failed part-way (a full disk) must not leave half a line behind: the
            // next write would tear it. Cut back to the last whole line, then report.
            let _ = log.file.set_len(log.bytes).await;
            return Err(e);
        }
        log.next_seq = next + new_lines.len() as u64;
        log.bytes += buf.len() as u64;
        let now = std::time::Instant::now();
        let index_due = log
            .indexed_at
            .is_none_or(|t| now.duration_since(t) >= INDEX_EVERY);
        if index_due {
            log.indexed_at = Some(now);
        }
        Ok(Appended {
            bytes: log.bytes,
            index_due,
            next_seq: log.next_seq,
            first_new: next,
            new_lines,
        })
    }

    /// Appends a line written by the master itself (e.g. why a build failed before it started).
    pub async fn append_master_note(&self, id: BuildId, note: &str) -> io::Result<u64> {
        let next = self.next_seq(id).await?;
        let a = self
            .append_log(id, next, &[format!("[kiln-master] {note}")])
            .await?;
        Ok(a.next_seq)
    }

    pub async fn next_seq(&self, id: BuildId) -> io::Result<u64> {
        Ok(self.log_size(id).await?.0)
    }

    /// (lines, bytes) of the stored log.
    pub async fn log_size(&self, id: BuildId) -> io::Result<(u64, u64)> {
        let log = self.open_log(id).await?;
        let l = log.lock().await;
        Ok((l.next_seq, l.bytes))
    }

    /// Bytes free for the master's storage (what a full disk is reported with).
    pub fn free_bytes(&self) -> Option<u64> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a struct of the right type to fill.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// Forgets the open file handle of a finished build.
    pub fn close_log(&self, id: BuildId) {
        self.open_logs
            .lock()
            .expect("log table poisoned")
            .remove(&id);
    }
}

/// Creates a directory (and its parents) readable by the master only: logs and images are
/// served through the API, never straight from the disk to other local users.
pub async fn private_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
}

/// A new file readable by the master only.
pub async fn private_file(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
}

/// Counts complete lines (and their bytes), cutting off a partial last line left by a crash
/// mid-write.
async fn recover_line_count(path: &Path) -> io::Result<(u64, u64)> {
    let data = match tokio::fs::read(path).await {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    if complete != data.len() {
        let f = tokio::fs::OpenOptions::new().write(true).open(path).await?;
        f.set_len(complete as u64).await?;
    }
    Ok((
        data[..complete].iter().filter(|&&b| b == b'\n').count() as u64,
        complete as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: std::ops::Range<u64>) -> Vec<String> {
        r.map(|i| format!("line {i}")).collect()
    }

    #[tokio::test]
    async fn duplicates_and_gaps_are_handled() {
        let dir = std::env::temp_dir().join(format!("kiln-storage-{}", std::process::id()));
        let s = Storage::new(dir.clone()).unwrap();
        let id = BuildId(1);
        assert_eq!(s.append_log(id, 0, &lines(0..3)).await.unwrap().next_seq, 3);
        // resend overlapping 1..5: only 3 and 4 are new
        let a = s.append_log(id, 1, &lines(1..5)).await.unwrap();
        assert_eq!((a.next_seq, a.first_new, a.new_lines.len()), (5, 3, 2));
        // a gap writes nothing
        assert_eq!(
            s.append_log(id, 9, &lines(9..10)).await.unwrap().next_seq,
            5
        );
        s.close_log(id);
        // partial last line (crash mid-write) is cut on reopen
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.log_path(id))
            .unwrap();
        std::io::Write::write_all(&mut f, b"partial").unwrap();
        assert_eq!(s.next_seq(id).await.unwrap(), 5);
        let text = std::fs::read_to_string(s.log_path(id)).unwrap();
        assert_eq!(text, lines(0..5).join("\n") + "\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
