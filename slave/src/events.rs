//! The daemon's wake-ups come from the kernel, not from ticks: one inotify instance for the files
//! of every build it holds (the runner's `log` growing, its `sandbox/state.json` replaced) and a
//! pidfd per adopted runner for its exit.
//!
//! A [`Watch`] wakes a [`Notify`] when a named file in a directory is written (the directory is
//! watched, not the file, so the file may be created or replaced later); dropping it ends the
//! watch. Notify permits coalesce: a burst of writes is one wake-up, and whoever wakes reads
//! everything there is. A lost event (the kernel's queue overflowed) wakes every watch.
//!
//! Without inotify (a kernel without it, `max_user_watches` reached) or pidfd (before Linux 5.3)
//! the daemon falls back to looking once a second; that is logged.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// How often the daemon looks when the kernel cannot tell it (no inotify, no pidfd), and the
/// period of its safety-net checks.
pub const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// A file was written (appended to, closed after writing, or renamed into place).
pub const WRITTEN: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;
/// A file was replaced or written whole (atomic JSON files: written aside, renamed into place).
pub const REPLACED: u32 = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO;

pub struct Events {
    fd: AsyncFd<OwnedFd>,
    watches: Mutex<Watches>,
}

#[derive(Default)]
struct Watches {
    by_wd: HashMap<i32, Vec<Target>>,
    next_id: u64,
}

struct Target {
    id: u64,
    name: OsString,
    mask: u32,
    wake: Arc<Notify>,
}

/// A watch on one file of a directory; ends when dropped.
pub struct Watch {
    events: Weak<Events>,
    wd: i32,
    id: u64,
}

impl Events {
    /// Opens the daemon's inotify instance and starts reading it (needs the tokio runtime).
    pub fn start() -> io::Result<Arc<Events>> {
        // SAFETY: inotify_init1 takes no pointers; the descriptor is owned from here on.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd keeps this one descriptor open for as long as the AsyncFd lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        let events = Arc::new(Events {
            fd,
            watches: Mutex::default(),
        });
        tokio::spawn(read_loop(Arc::downgrade(&events)));
        Ok(events)
    }

    /// Wakes `wake` whenever the file `name` in `dir` sees one of `mask`'s events.
    pub fn watch(
        self: &Arc<Self>,
        dir: &Path,
        name: &str,
        mask: u32,
        wake: Arc<Notify>,
    ) -> io::Result<Watch> {
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        let mut w = self.watches.lock().expect("watches poisoned");
        // Under the lock: a watch of the same directory (same wd) is added to, never replaced.
        // SAFETY: `path` is a valid C string for the call's duration.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.fd.as_raw_fd(),
                path.as_ptr(),
                mask | libc::IN_MASK_ADD | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW,
            )
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        w.next_id += 1;
        let id = w.next_id;
        w.by_wd.entry(wd).or_default().push(Target {
            id,
            name: name.into(),
            mask,
            wake,
        });
        Ok(Watch {
            events: Arc::downgrade(self),
            wd,
            id,
        })
    }

    /// Wakes the targets an event is for (all of them if events were lost).
    fn dispatch(&self, wd: i32, mask: u32, name: &[u8]) {
        let mut wake = vec![];
        {
            let mut w = self.watches.lock().expect("watches poisoned");
            if mask & libc::IN_Q_OVERFLOW != 0 {
                tracing::warn!("inotify lost events (queue overflow); reading every build again");
                wake.extend(w.by_wd.values().flatten().map(|t| t.wake.clone()));
            } else if mask & libc::IN_IGNORED != 0 {
                // The directory is gone (or the watch removed): nothing more will come.
                w.by_wd.remove(&wd);
            } else if let Some(targets) = w.by_wd.get(&wd) {
                wake.extend(
                    targets
                        .iter()
                        .filter(|t| t.mask & mask != 0 && t.name.as_bytes() == name)
                        .map(|t| t.wake.clone()),
                );
            }
        }
        for n in wake {
            n.notify_one();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(events) = self.events.upgrade() else {
            return;
        };
        let mut w = events.watches.lock().expect("watches poisoned");
        let Some(targets) = w.by_wd.get_mut(&self.wd) else {
            return;
        };
        let before = targets.len();
        targets.retain(|t| t.id != self.id);
        if targets.len() < before && targets.is_empty() {
            w.by_wd.remove(&self.wd);
            // SAFETY: removing a watch of our own instance; an unknown wd is only EINVAL.
            unsafe { libc::inotify_rm_watch(events.fd.as_raw_fd(), self.wd) };
        }
    }
}

async fn read_loop(events: Weak<Events>) {
    // Aligned for `inotify_event`; room for many events (each at most 16 + NAME_MAX + 1 bytes).
    let mut buf = vec![0u64; 4096];
    loop {
        let Some(ev) = events.upgrade() else { return };
        let n = {
            let mut guard = match ev.fd.readable().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!("inotify: {e}; build files are read every second");
                    return;
                }
            };
            let read = guard.try_io(|fd| {
                // SAFETY: reading into our own buffer of the given length.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len() * std::mem::size_of::<u64>(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    tracing::error!("reading inotify: {e}; build files are read every second");
                    return;
                }
                Err(_would_block) => continue,
            }
        };
        // SAFETY: the buffer is plain bytes, `n` of them written by the kernel.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        for (wd, mask, name) in parse(bytes) {
            ev.dispatch(wd, mask, name);
        }
    }
}

/// The events in a buffer read from inotify: (wd, mask, name without its NUL padding).
fn parse(mut bytes: &[u8]) -> Vec<(i32, u32, &[u8])> {
    const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
    let mut out = vec![];
    while bytes.len() >= HEAD {
        // SAFETY: at least HEAD bytes; read unaligned, as the struct is plain integers.
        let e: libc::inotify_event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let end = (HEAD + e.len as usize).min(bytes.len());
        let name = &bytes[HEAD..end];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        out.push((e.wd, e.mask, name));
        bytes = &bytes[end..];
    }
    out
}

/// Returns once process `pid` has ended: a pidfd says so the moment it does (the process need
/// not be the daemon's child: an adopted runner is not). Without pidfd, looks every second.
pub async fn exited(pid: i32) {
    // SAFETY: pidfd_open takes no pointers; a descriptor it returns is ours.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw >= 0 {
        // SAFETY: a fresh descriptor (close-on-exec) nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        // SAFETY: the OwnedFd keeps this one descriptor open for as long as the AsyncFd lives.
        match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
            // A pidfd becomes readable when the process ends.
            Ok(fd) => {
                let _ = fd.readable().await;
                return;
            }
            Err(e) => no_pidfd(&e.into()),
        }
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return;
        }
        no_pidfd(&e);
    }
    while crate::store::alive(pid) {
        tokio::time::sleep(FALLBACK_POLL).await;
    }
}

fn no_pidfd(e: &io::Error) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "pidfd_open: {e} (Linux before 5.3?): the end of an adopted build is noticed within {FALLBACK_POLL:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_write_to_the_watched_file_wakes_and_others_do_not() {
        let root = std::env::temp_dir().join(format!("kiln-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let ev = Events::start().unwrap();
        let (log, state) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let w1 = ev.watch(&root, "log", WRITTEN, log.clone()).unwrap();
        let _w2 = ev
            .watch(&root, "state.json", REPLACED, state.clone())
            .unwrap();
        std::fs::write(root.join("other"), "x").unwrap();
        std::fs::write(root.join("log"), "line\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), log.notified())
            .await
            .expect("the log's write wakes its watch");
        std::fs::write(root.join("state.json.tmp"), "{}").unwrap();
        std::fs::rename(root.join("state.json.tmp"), root.join("state.json")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), state.notified())
            .await
            .expect("the state's replacement wakes its watch");
        // Once its watch is dropped, a write wakes nothing (and the other watch stays).
        drop(w1);
        let _ = log.notified().now_or_never();
        std::fs::write(root.join("log"), "more\n").unwrap();
        std::fs::write(root.join("state.json"), "{}").unwrap();
        tokio::time::timeout(Duration::from_secs(5), state.notified())
            .await
            .expect("the state's watch still works");
        assert!(log.notified().now_or_never().is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn exited_returns_when_a_process_that_is_not_a_child_ends() {
        let mut c = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = c.id() as i32;
        let waiter = tokio::spawn(exited(pid));
        // Reaped elsewhere, as an adopted runner is reaped by init.
        tokio::task::spawn_blocking(move || c.wait())
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the end is noticed")
            .unwrap();
        // A process long gone: at once.
        tokio::time::timeout(Duration::from_secs(1), exited(pid))
            .await
            .expect("at once");
    }
}
