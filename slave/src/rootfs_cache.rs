//! The slave's root file system cache (`rootfs-cache/` in the work dir, `slave.rootfs_cache_bytes`):
//! per project, the last root file system an mmdebstrap build with `rootfs_cache = true` made
//! (`rootfs.tar.zst`) and the key of everything it was made from (`key`: the options, the hooks'
//! contents, the archive's `InRelease`; computed by the runner, `backend/mmdebstrap.rs`).
//!
//! The daemon offers a project's entry to each of its builds (a copy in the build's sandbox,
//! `sandbox/rootfs-cache/`); a build whose key is the same unpacks it instead of running
//! mmdebstrap. After a successful build that computed a new key (`sandbox/rootfs-cache/new-key`)
//! the daemon keeps its `rootfs.tar.zst` as the project's entry. Entries are per project, so a
//! build can only ever reach its own project's; past the size limit the least recently used
//! projects' entries go.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Where a build finds its project's entry, and leaves its new key (in its sandbox dir).
pub const SANDBOX_DIR: &str = "rootfs-cache";
pub const TARBALL: &str = "rootfs.tar.zst";
pub const KEY: &str = "key";
pub const NEW_KEY: &str = "new-key";

pub struct RootfsCache {
    root: PathBuf,
    limit: u64,
}

impl RootfsCache {
    pub fn new(work_dir: &Path, limit: u64) -> Option<RootfsCache> {
        (limit > 0).then(|| RootfsCache {
            root: work_dir.join("rootfs-cache"),
            limit,
        })
    }

    fn entry(&self, project: &str) -> PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(project.as_bytes());
        self.root.join(hex::encode(&h[..16]))
    }

    /// Copies the project's entry, if it has one, into the build's sandbox dir. Returns whether
    /// it did.
    pub fn offer(&self, project: &str, sandbox: &Path) -> io::Result<bool> {
        let entry = self.entry(project);
        let (tarball, key) = (entry.join(TARBALL), entry.join(KEY));
        if !tarball.is_file() || !key.is_file() {
            return Ok(false);
        }
        // The key and the tarball it names are read together: no `keep` in between.
        let _lock = lock(&entry)?;
        if !tarball.is_file() || !key.is_file() {
            return Ok(false);
        }
        // A fresh directory of the daemon's own: whatever stood there (a link a runner killed
        // before its pid was recorded left) goes, unfollowed.
        let to = sandbox.join(SANDBOX_DIR);
        let _ = std::fs::remove_dir_all(&to);
        let _ = std::fs::remove_file(&to);
        std::fs::create_dir(&to)?;
        std::fs::copy(&key, to.join(KEY))?;
        std::fs::copy(&tarball, to.join(TARBALL))?;
        // Its last use, for the eviction order.
        let _ = std::fs::File::open(&entry).and_then(|d| d.set_modified(SystemTime::now()));
        Ok(true)
    }

    /// After a successful build (its processes all ended): keeps its root file system as the
    /// project's entry when it computed a new key. Everything read here is the build's: no link
    /// is followed, so a build cannot have the daemon read (and keep for its project) a file it
    /// could not read itself. Returns the size kept, and what eviction removed.
    pub fn keep(
        &self,
        project: &str,
        sandbox: &Path,
        output: &Path,
    ) -> io::Result<Option<(u64, Vec<u64>)>> {
        let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        let theirs = sandbox.join(SANDBOX_DIR);
        if !real_dir(&theirs) || !real_dir(output) {
            return Ok(None);
        }
        let Some(key) = crate::store::read_no_follow(&theirs.join(NEW_KEY))
            .ok()
            .and_then(|b| parse_key(&b))
        else {
            return Ok(None);
        };
        let mut built = match open_no_follow(&output.join(TARBALL)) {
            Ok(f) => f,
            Err(_) => return Ok(None),
        };
        let meta = built.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        let entry = self.entry(project);
        std::fs::create_dir_all(&entry)?;
        let _lock = lock(&entry)?;
        let tmp = entry.join(format!("{TARBALL}.partial"));
        io::copy(&mut built, &mut std::fs::File::create(&tmp)?)?;
        // The key goes with the tarball it names: first the key is removed, last written again.
        let _ = std::fs::remove_file(entry.join(KEY));
        std::fs::rename(&tmp, entry.join(TARBALL))?;
        std::fs::write(entry.join(KEY), &key)?;
        let removed = self.evict(&entry)?;
        Ok(Some((meta.len(), removed)))
    }

    /// Removes the least recently used entries (never `keep`) until the cache fits its limit.
    fn evict(&self, keep: &Path) -> io::Result<Vec<u64>> {
        let mut entries = vec![];
        for e in std::fs::read_dir(&self.root)? {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            let used = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let size: u64 = std::fs::read_dir(e.path())?
                .flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum();
            entries.push((used, e.path(), size));
        }
        let mut total: u64 = entries.iter().map(|e| e.2).sum();
        entries.sort();
        let mut removed = vec![];
        for (_, path, size) in entries {
            if total <= self.limit {
                break;
            }
            if path == keep {
                continue;
            }
            std::fs::remove_dir_all(&path)?;
            total -= size;
            removed.push(size);
        }
        Ok(removed)
    }
}

/// A key as the runner wrote it: 64 hex digits (read bounded; anything else is no key).
pub fn read_key(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut buf = vec![];
    std::fs::File::open(path)
        .ok()?
        .take(128)
        .read_to_end(&mut buf)
        .ok()?;
    parse_key(&buf)
}

fn parse_key(bytes: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(bytes).ok()?.trim();
    (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.to_string())
}

/// The entry's lock (two builds of one project may end, or start, at once).
fn lock(entry: &Path) -> io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(entry.join("lock"))?;
    f.lock()?;
    Ok(f)
}

fn open_no_follow(p: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_offered_to_its_project_only_and_evicted_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RootfsCache::new(dir.path(), 400).unwrap();
        let key = "a".repeat(64);
        // A build's sandbox dir, which the daemon made before offering anything.
        let fresh_sandbox = |n: &str| {
            let p = dir.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let build = |project: &str, size: usize| {
            let sandbox = dir.path().join(format!("sandbox-{project}"));
            let out = sandbox.join("output");
            std::fs::create_dir_all(sandbox.join(SANDBOX_DIR)).unwrap();
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(sandbox.join(SANDBOX_DIR).join(NEW_KEY), &key).unwrap();
            std::fs::write(out.join(TARBALL), vec![1u8; size]).unwrap();
            cache.keep(project, &sandbox, &out).unwrap()
        };
        assert_eq!(build("a", 100).unwrap().0, 100);
        let fresh = fresh_sandbox("fresh");
        assert!(cache.offer("a", &fresh).unwrap());
        assert_eq!(
            read_key(&fresh.join(SANDBOX_DIR).join(KEY)),
            Some(key.clone())
        );
        assert!(!cache.offer("b", &fresh_sandbox("other")).unwrap());
        // b and c push the cache past 400 bytes: a, the least recently used, goes.
        build("b", 100);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_, removed) = build("c", 100).unwrap();
        assert_eq!(removed, [164]);
        assert!(!cache.offer("a", &fresh_sandbox("again")).unwrap());
        assert!(cache.offer("c", &fresh_sandbox("again")).unwrap());
        // No new key, or one that is not a key: nothing kept.
        let sandbox = dir.path().join("sandbox-d");
        std::fs::create_dir_all(sandbox.join(SANDBOX_DIR)).unwrap();
        std::fs::write(sandbox.join(SANDBOX_DIR).join(NEW_KEY), "../../etc").unwrap();
        assert!(cache.keep("d", &sandbox, &sandbox).unwrap().is_none());
        // A key, or a root file system, that is a link to a file of the daemon's: not followed.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "b".repeat(64)).unwrap();
        let new_key = sandbox.join(SANDBOX_DIR).join(NEW_KEY);
        std::fs::remove_file(&new_key).unwrap();
        std::os::unix::fs::symlink(&secret, &new_key).unwrap();
        std::fs::create_dir_all(sandbox.join("output")).unwrap();
        std::fs::write(sandbox.join("output").join(TARBALL), b"x").unwrap();
        assert!(cache
            .keep("d", &sandbox, &sandbox.join("output"))
            .unwrap()
            .is_none());
        std::fs::remove_file(&new_key).unwrap();
        std::fs::write(&new_key, &key).unwrap();
        std::fs::remove_file(sandbox.join("output").join(TARBALL)).unwrap();
        std::os::unix::fs::symlink(&secret, sandbox.join("output").join(TARBALL)).unwrap();
        assert!(cache
            .keep("d", &sandbox, &sandbox.join("output"))
            .unwrap()
            .is_none());
        assert!(!cache.offer("d", &fresh_sandbox("d-next")).unwrap());
    }
}
