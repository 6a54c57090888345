//! Running commands with their output in the build log.
//!
//! A build runs in a runner process that is the leader of its own session and process group
//! (see `supervisor.rs`); the commands it starts stay in that group, so stopping a build is one
//! signal to the group, grandchildren included.

use std::io::Write;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// Longest piece a single stored log line may be; longer output is split, never cut.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

/// The build log: a file with one line per log line, appended to by whoever runs the build.
#[derive(Clone)]
pub struct Log {
    file: Arc<Mutex<std::fs::File>>,
    first_error: Arc<Mutex<Option<String>>>,
}

/// Splits `line` into pieces of at most [`MAX_LINE`] bytes, on character boundaries.
pub fn split_long(line: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut rest = line;
    loop {
        let mut cut = rest.len().min(MAX_LINE);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
        if rest.is_empty() {
            return out;
        }
    }
}

impl Log {
    /// Opens (or creates) the log file; a symbolic link there is refused.
    pub fn open(path: &Path) -> std::io::Result<Log> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Log::from_file(file))
    }

    /// A log written to a file already open (the runner's stdout).
    pub fn from_file(file: std::fs::File) -> Log {
        Log {
            file: Arc::new(Mutex::new(file)),
            first_error: Default::default(),
        }
    }

    pub fn line(&self, s: &str) {
        // A `\r` inside a line stays (a progress bar overwrites itself, as in a terminal; the
        // console renders it so); only a line break would split the line.
        let s = s.trim_end_matches(['\n', '\r']).replace('\n', " ");
        if kiln_shared::log_rules::looks_like_error(&s) {
            let mut fe = self.first_error.lock().expect("poisoned");
            if fe.is_none() {
                *fe = Some(s.trim().chars().take(300).collect());
            }
        }
        let mut buf = String::with_capacity(s.len() + 2);
        for piece in split_long(&s) {
            buf.push_str(piece);
            buf.push('\n');
        }
        let mut f = self.file.lock().expect("poisoned");
        if let Err(e) = f.write_all(buf.as_bytes()) {
            tracing::error!("cannot write the build log: {e}");
        }
    }

    /// A line written by Kiln itself rather than by a tool.
    pub fn note(&self, s: &str) {
        self.line(&format!("[kiln] {s}"));
    }

    /// The first line of the log that looked like an error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("poisoned").clone()
    }

    /// Forgets the error lines so far: what failed before was dealt with (a tool tried another
    /// way), and a later failure quotes its own.
    pub fn forget_errors(&self) {
        *self.first_error.lock().expect("poisoned") = None;
    }
}

/// Writes what `reader` gives to the log, line by line, until its end.
pub async fn pump(reader: impl AsyncRead + Unpin, log: Log) {
    pump_watching(reader, log, None, Arc::default()).await
}

/// [`pump`], noting in `seen` whether a line contained `needle`.
async fn pump_watching(
    reader: impl AsyncRead + Unpin,
    log: Log,
    needle: Option<&'static str>,
    seen: Arc<AtomicBool>,
) {
    let mut r = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                if needle.is_some_and(|n| line.contains(n)) {
                    seen.store(true, Ordering::Relaxed);
                }
                log.line(&line)
            }
        }
    }
}

/// Runs `cmd` to its end, logging its output; returns its exit status.
pub async fn run(cmd: Command, log: &Log) -> Result<ExitStatus, RunError> {
    run_watching(cmd, log, None).await.map(|(status, _)| status)
}

/// [`run`], and whether a line of the output contained `needle` (a tool's message that decides
/// what to do next, e.g. debos's fakemachine saying its guest would not start).
pub async fn run_watching(
    mut cmd: Command,
    log: &Log,
    needle: Option<&'static str>,
) -> Result<(ExitStatus, bool), RunError> {
    let program = format!("{:?}", cmd.as_std().get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let seen = Arc::new(AtomicBool::new(false));
    let out = tokio::spawn(pump_watching(
        child.stdout.take().expect("piped"),
        log.clone(),
        needle,
        seen.clone(),
    ));
    let err = tokio::spawn(pump_watching(
        child.stderr.take().expect("piped"),
        log.clone(),
        needle,
        seen.clone(),
    ));
    let status = child
        .wait()
        .await
        .map_err(|source| RunError::Wait { program, source })?;
    // A background child still holding the pipes must not hold the build up forever.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = out.await;
        let _ = err.await;
    })
    .await;
    Ok((status, seen.load(Ordering::Relaxed)))
}

/// Describes an exit status for a person: "exit status 3" or "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watched_run_logs_both_streams_and_finds_the_needle_in_either() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = Log::open(&path).unwrap();
        let cmd = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        };
        let (status, seen) = run_watching(
            cmd("echo out; echo 'error starting kvm backend' >&2; exit 3"),
            &log,
            Some("starting kvm"),
        )
        .await
        .unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(seen);
        let (_, seen) = run_watching(cmd("echo other"), &log, Some("starting kvm"))
            .await
            .unwrap();
        assert!(!seen);
        let text = std::fs::read_to_string(&path).unwrap();
        for line in ["out", "error starting kvm backend", "other"] {
            assert!(text.lines().any(|l| l == line), "{text}");
        }
    }

    #[test]
    fn long_lines_are_split_not_cut() {
        let s = "é".repeat(MAX_LINE);
        let parts = split_long(&s);
        assert_eq!(parts.concat(), s);
        assert!(parts.iter().all(|p| p.len() <= MAX_LINE));
        assert_eq!(split_long("short"), vec!["short"]);
    }
}
