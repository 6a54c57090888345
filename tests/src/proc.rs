//! Child processes that die with the test: killed on drop, and (via PDEATHSIG) if the test
//! process itself dies.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

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
