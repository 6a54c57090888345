//! A cgroup v2 directory per build, under the daemon's own cgroup: every process of the build is
//! in it whatever it does (`setsid`, double forks), so the end of a build is one write to
//! `cgroup.kill` and a wait for `populated 0`.
//!
//! Where there is no writable cgroup v2 hierarchy (a container, an old kernel) the slave goes on
//! without: the build's PID namespace (see `sandbox.rs`) still ends every process with the build.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The daemon's own cgroup directory in the cgroup v2 hierarchy, if there is one.
pub fn own_dir() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    dir_from(&mountinfo, own)
}

/// Joins the cgroup2 mount point with the process's cgroup path (relative to the mount's root).
fn dir_from(mountinfo: &str, own: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        let (root, mount_point) = (*f.get(3)?, *f.get(4)?);
        let rel = own
            .strip_prefix(root)
            .unwrap_or(own)
            .trim_start_matches('/');
        let dir = Path::new(mount_point).join(rel);
        return dir.is_dir().then_some(dir);
    }
    None
}

/// The least room left under `memory.max` in this process's cgroup and its ancestors, when any
/// of them is limited (a systemd unit's `MemoryMax=`, a container's limit).
pub fn memory_headroom() -> Option<u64> {
    let mut dir = own_dir()?;
    let mut least: Option<u64> = None;
    // Up to the hierarchy's root, which has no `memory.max`.
    while dir.join("cgroup.controllers").is_file() {
        let read = |f: &str| -> Option<u64> {
            std::fs::read_to_string(dir.join(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        // `max` (no limit) does not parse.
        if let (Some(max), Some(current)) = (read("memory.max"), read("memory.current")) {
            let room = max.saturating_sub(current);
            least = Some(least.map_or(room, |l| l.min(room)));
        }
        if !dir.pop() {
            break;
        }
    }
    least
}

/// Creates the cgroup of one build (empty; processes join it as they start).
pub fn create(parent: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = parent.join(name);
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    Ok(dir)
}

/// Whether any process is still in the cgroup (or below it).
pub fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(s) => s.lines().any(|l| l.trim() == "populated 1"),
        Err(_) => false,
    }
}

/// Kills every process of the cgroup and waits (up to `patience`) until none is left; then
/// removes it. Returns whether it is empty.
pub fn kill_all(dir: &Path, patience: Duration) -> bool {
    if !dir.exists() {
        return true;
    }
    let deadline = Instant::now() + patience;
    // Killed processes are usually gone within a millisecond or two: look again soon, then less
    // often.
    let mut pause = Duration::from_millis(1);
    loop {
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            // Before Linux 5.14: one by one (new ones may appear while we go; hence the loop).
            for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) takes no memory.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !populated(dir) {
            let _ = std::fs::remove_dir(dir);
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_own_dir_below_the_mount() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                  31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        // The mount point exists on any Linux; the joined path need not, so test with "/".
        let mi_root = "30 25 0:26 / / rw - cgroup2 cgroup2 rw\n";
        assert_eq!(dir_from(mi_root, "/"), Some(PathBuf::from("/")));
        assert_eq!(dir_from(mi_root, "/tmp"), Some(PathBuf::from("/tmp")));
        assert_eq!(dir_from(mi, "/no/such/cgroup/anywhere"), None);
        assert_eq!(dir_from("", "/"), None);
    }
}
