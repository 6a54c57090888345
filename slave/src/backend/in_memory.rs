//! A tmpfs for a tree whose size is known before it is written: the cached root file system a
//! build unpacks (`mmdebstrap.rs`). On many hosts the build's disk is slow at making files
//! (here: a minbase root file system of 8,800 files unpacks in 4–9 s on ext4, 0.6 s on tmpfs),
//! and `mkfs.ext4 -d` reads the tree back at once. Fedora's mock does the same with its tmpfs
//! plugin.
//!
//! - Only in the build's own mount namespace (the runner is PID 1 of its sandbox, `sandbox.rs`):
//!   the tmpfs goes with the build, whatever way it ends, and nothing is left on the host.
//! - Only when the tree takes at most a quarter of this build's share of the memory available:
//!   `MemAvailable`, or less when the slave's cgroup is limited (`memory.max`), divided by the
//!   builds the slave runs at once (`slave.capacity`), since tmpfs pages cannot be reclaimed.
//!   The tmpfs is capped a little above the tree's size. Otherwise the tree goes on disk as
//!   before; a tree bigger than its size says (the unpack fails) is unpacked on disk by
//!   mmdebstrap instead.
//! - The directory holds the tree (`rootfs/`) and a work dir beside it on the same file system
//!   (`layout.rs` moves subtrees aside with `rename`, which cannot cross file systems; its vfat
//!   images are made on the scratch disk).

use super::Context;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The mount point, under the build's scratch dir.
pub const DIR: &str = "memory";
/// The tree, in the mount.
pub const ROOTFS: &str = "rootfs";

/// Where to unpack `tarball` (zstd-compressed tar): a tmpfs mounted for it when it fits, else
/// `None` (unpack on disk). Says which in the log.
pub async fn for_tarball(ctx: &Context, tarball: &Path) -> Option<PathBuf> {
    if std::process::id() != 1 {
        // Not in a sandbox of its own: a mount would stay on the host.
        return None;
    }
    let t = tarball.to_path_buf();
    let size = match tokio::task::spawn_blocking(move || unpacked_size(&t)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ctx.log.note(&format!(
                "rootfs cache: cannot size the cached root file system ({e}); unpacking on disk"
            ));
            return None;
        }
        Err(_) => return None,
    };
    let available = available_memory()?.min(crate::cgroup::memory_headroom().unwrap_or(u64::MAX));
    let share = available / u64::from(ctx.builds_at_once.max(1));
    let mib = |b: u64| b >> 20;
    if size > share / 4 {
        ctx.log.note(&format!(
            "rootfs cache: unpacking on disk ({} MiB is more than a quarter of this build's share of memory, {} MiB of {} MiB available)",
            mib(size),
            mib(share),
            mib(available)
        ));
        return None;
    }
    let dir = ctx.scratch.join(DIR);
    match mount_tmpfs(&dir, size + size / 8 + (64 << 20)) {
        Ok(()) => {
            ctx.log.note(&format!(
                "rootfs cache: unpacking into memory (tmpfs, {} MiB; this build's share {} MiB of {} MiB available)",
                mib(size),
                mib(share),
                mib(available)
            ));
            Some(dir.join(ROOTFS))
        }
        Err(e) => {
            ctx.log.note(&format!(
                "rootfs cache: cannot mount a tmpfs ({e}); unpacking on disk"
            ));
            None
        }
    }
}

/// The memory a tar's files take once unpacked on a tmpfs: each regular file in whole pages.
pub fn unpacked_size(tarball: &Path) -> io::Result<u64> {
    let mut child = std::process::Command::new("zstd")
        .args(["-dcq", "--"])
        .arg(tarball)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let out = child.stdout.take().expect("piped");
    let sum = sum_pages(out);
    let status = child.wait()?;
    let sum = sum?;
    if !status.success() {
        return Err(io::Error::other(format!("zstd -d ended with {status}")));
    }
    Ok(sum)
}

fn sum_pages(r: impl Read) -> io::Result<u64> {
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, r));
    let mut sum = 0u64;
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            sum = sum.saturating_add(entry.size().div_ceil(4096) * 4096);
        }
    }
    // The padding after the end-of-archive blocks, so that the writer ends cleanly.
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(sum)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_available(&info)
}

fn parse_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mount_tmpfs(dir: &Path, cap: u64) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(dir)?;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let opts = std::ffi::CString::new(format!("mode=0755,size={}k", (cap >> 10).max(1024)))?;
    // SAFETY: mount(2) on NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    std::fs::create_dir(dir.join(ROOTFS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_counts_whole_pages_of_regular_files_only() {
        let mut b = tar::Builder::new(vec![]);
        let mut add = |name: &str, len: usize| {
            let mut h = tar::Header::new_gnu();
            h.set_size(len as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &vec![7u8; len][..]).unwrap();
        };
        add("a", 1);
        add("b", 4096);
        add("c", 4097);
        add("empty", 0);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "l", "a").unwrap();
        let bytes = b.into_inner().unwrap();
        assert_eq!(sum_pages(&bytes[..]).unwrap(), 4096 + 4096 + 8192);

        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("t.tar");
        std::fs::write(&raw, &bytes).unwrap();
        let st = std::process::Command::new("zstd")
            .args(["-q", "--rm"])
            .arg(&raw)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(unpacked_size(&dir.path().join("t.tar.zst")).unwrap(), 16384);
        std::fs::write(dir.path().join("bad.zst"), b"not zstd").unwrap();
        assert!(unpacked_size(&dir.path().join("bad.zst")).is_err());
    }

    #[test]
    fn available_memory_is_read_from_meminfo() {
        let info = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_available(info), Some(20_000_000 * 1024));
        assert_eq!(parse_available("MemTotal: 1 kB\n"), None);
    }
}
