//! Runs a command in a process group of its own, feeding each line of its output into the build
//! log, and kills the whole group when the build is cancelled (or when the command ends, so no
//! stray child outlives its build).

use crate::outbox::Outbox;
use kiln_shared::BuildId;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

/// Where a command's output goes.
#[derive(Clone)]
pub struct Log {
    pub outbox: Outbox,
    pub build: BuildId,
    first_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// Lines that usually say why an image build failed.
fn looks_like_error(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("E: ")
        || l.starts_with("Error: ")
        || l.starts_with("ERROR")
        || l.starts_with("fatal: ")
        || l.contains("No space left on device")
        || l.starts_with("mmdebstrap: error")
}

impl Log {
    pub fn new(outbox: Outbox, build: BuildId) -> Self {
        Log {
            outbox,
            build,
            first_error: Default::default(),
        }
    }

    pub fn line(&self, s: &str) {
        if looks_like_error(s) {
            let mut fe = self.first_error.lock().expect("poisoned");
            if fe.is_none() {
                *fe = Some(s.trim().chars().take(300).collect());
            }
        }
        self.outbox.line(self.build, s);
    }

    /// The first line of the log that looked like an error, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("poisoned").clone()
    }

    /// A line written by Kiln itself rather than by a tool.
    pub fn note(&self, s: &str) {
        self.outbox.line(self.build, &format!("[kiln] {s}"));
    }
}

fn kill_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

async fn pump(reader: impl AsyncRead + Unpin, log: Log) {
    let mut r = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => log.line(&String::from_utf8_lossy(&buf)),
        }
    }
}

/// Runs `cmd` to its end (or until `cancel`), logging its output; returns its exit status.
pub async fn run(
    mut cmd: Command,
    log: &Log,
    cancel: &CancellationToken,
) -> Result<ExitStatus, RunError> {
    let program = format!("{:?}", cmd.as_std().get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let out = tokio::spawn(pump(child.stdout.take().expect("piped"), log.clone()));
    let err = tokio::spawn(pump(child.stderr.take().expect("piped"), log.clone()));
    let status = tokio::select! {
        s = child.wait() => Some(s),
        _ = cancel.cancelled() => None,
    };
    let result = match status {
        Some(s) => s.map_err(|source| RunError::Wait { program, source }),
        None => {
            kill_group(pgid, libc::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                kill_group(pgid, libc::SIGKILL);
                let _ = child.wait().await;
            }
            Err(RunError::Cancelled)
        }
    };
    // Whatever the command left behind in its group goes too.
    kill_group(pgid, libc::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = out.await;
        let _ = err.await;
    })
    .await;
    result
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
