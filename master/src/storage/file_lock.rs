//! Whole-file advisory locks (`flock`) on logs. Masters serving one farm from one shared
//! storage may append to the same log (the one holding the build's slave writes its lines;
//! another may add a note when it ends the build), so each append, and the repair of a log on
//! opening it, holds the log's lock.

use std::io;
use std::os::fd::RawFd;

/// Held until dropped.
pub struct Flock(RawFd);

fn flock(fd: RawFd, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor the caller keeps open while the lock is held.
    if unsafe { libc::flock(fd, op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Flock {
    /// Waits for the exclusive lock (blocking: on a blocking thread, or after `try_exclusive`).
    /// `fd` must stay open until the lock drops.
    pub fn exclusive(fd: RawFd) -> io::Result<Flock> {
        loop {
            match flock(fd, libc::LOCK_EX) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map(|()| Flock(fd)),
            }
        }
    }

    /// The exclusive lock if nobody holds it; `None` when somebody does.
    pub fn try_exclusive(fd: RawFd) -> io::Result<Option<Flock>> {
        match flock(fd, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(Flock(fd))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The exclusive lock, waiting on a blocking thread only when somebody holds it.
    pub async fn exclusive_async(fd: RawFd) -> io::Result<Flock> {
        if let Some(l) = Flock::try_exclusive(fd)? {
            return Ok(l);
        }
        tokio::task::spawn_blocking(move || Flock::exclusive(fd))
            .await
            .map_err(io::Error::other)?
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        let _ = flock(self.0, libc::LOCK_UN);
    }
}
