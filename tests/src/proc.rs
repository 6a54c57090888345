//! Child processes that die with the test: killed on drop, and (via PDEATHSIG) if the test
//! process itself dies.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

pub fn die_with_parent(cmd: &mut Command, sig: i32) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong);
            Ok(())
        });
    }
}

/// A child that is SIGKILLed when dropped.
pub struct Killed(pub Child);

impl Killed {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn kill_and_wait(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

/// A helper service a test starts (a provider, a mail server): a script that prints a line on
/// its standard output once it serves, and logs to a file.
pub struct Service<'a> {
    /// Named in failures ("the test OpenID provider").
    pub name: &'a str,
    /// Where its standard error goes (appended to across attempts).
    pub log: &'a Path,
    /// How long one attempt may take to print its ready line.
    pub timeout: Duration,
    /// How many times it is started before the test gives up.
    pub attempts: u32,
}

impl Service<'_> {
    /// Starts `command()` until one run prints a line that `ready` accepts, and returns that run
    /// with what `ready` made of the line. An attempt that prints nothing acceptable within the
    /// timeout is killed and started again (a loaded machine can stall one start; it is not the
    /// script's fault); a run that ends before it is ready fails at once, since another would
    /// end the same way. Every failure shows the log.
    ///
    /// The command's standard input stays open (piped, held by the returned child) so that a
    /// script may treat its end as the test's end.
    pub fn start<T: Send + 'static>(
        &self,
        command: impl Fn() -> Command,
        ready: impl Fn(&str) -> Option<T> + Send + Copy + 'static,
    ) -> (Killed, T) {
        let log_text = || std::fs::read_to_string(self.log).unwrap_or_default();
        for attempt in 1..=self.attempts {
            let stderr = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log)
                .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
            let mut c = command();
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(stderr);
            die_with_parent(&mut c, libc::SIGKILL);
            let mut child = c
                .spawn()
                .unwrap_or_else(|e| panic!("starting {} ({c:?}): {e}", self.name));
            let stdout = child.stdout.take().expect("piped");
            let child = Killed(child);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                // Reads to the end, so that what the script prints later never meets a closed
                // pipe; the script ending before it is ready drops the sender, which says so.
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(v) = tx.as_ref().and_then(|_| ready(&line)) {
                        let _ = tx.take().expect("not yet sent").send(v);
                    }
                }
            });
            match rx.recv_timeout(self.timeout) {
                Ok(v) => return (child, v),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{} ended before it was ready; its log:\n{}",
                    self.name,
                    log_text()
                ),
                Err(RecvTimeoutError::Timeout) => {
                    drop(child);
                    eprintln!(
                        "{} was not ready after {:?} (attempt {attempt} of {}); starting it again",
                        self.name, self.timeout, self.attempts
                    );
                }
            }
        }
        panic!(
            "{} did not start in {} attempts of {:?}; its log:\n{}",
            self.name,
            self.attempts,
            self.timeout,
            log_text()
        )
    }
}
