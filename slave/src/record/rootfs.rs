//! Reading files inside a root file system a build made, without ever following a symlink:
//! the build controls the tree, so `etc/apt -> /root/.ssh` must not make us read the host.
//! Every directory on the way is opened with `O_NOFOLLOW | O_DIRECTORY` relative to the one
//! before it, and the file itself with `O_NOFOLLOW`; only regular files are read.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Why a file in the root file system was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    Missing,
    /// A symlink (the file or a directory on the way), a device, a FIFO, a directory, ...
    NotRegular,
    TooLarge(u64),
    Io(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Missing => write!(f, "not found"),
            Skip::NotRegular => write!(f, "not a regular file (or reached through a symlink)"),
            Skip::TooLarge(n) => write!(f, "too large ({n} bytes)"),
            Skip::Io(e) => write!(f, "{e}"),
        }
    }
}

fn open_at(dir: Option<&OwnedFd>, name: &[u8], flags: libc::c_int) -> Result<OwnedFd, Skip> {
    let c = CString::new(name).map_err(|_| Skip::Missing)?;
    let base = dir.map_or(libc::AT_FDCWD, std::os::fd::AsRawFd::as_raw_fd);
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid C string and `base` an open directory or AT_FDCWD.
    let fd = unsafe { libc::openat(base, c.as_ptr(), flags) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOENT) => Skip::Missing,
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => Skip::NotRegular,
            _ => Skip::Io(e.to_string()),
        });
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `rel` (relative, `/`-separated) under `root` as a regular file.
fn open_file(root: &Path, rel: &str) -> Result<File, Skip> {
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let mut dir = open_at(None, root.as_os_str().as_bytes(), dir_flags)?;
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(Skip::NotRegular);
    };
    for d in dirs {
        if *d == ".." {
            return Err(Skip::NotRegular);
        }
        dir = open_at(Some(&dir), d.as_bytes(), dir_flags)?;
    }
    // O_NONBLOCK: opening a FIFO must not hang.
    let fd = open_at(
        Some(&dir),
        last.as_bytes(),
        libc::O_RDONLY | libc::O_NONBLOCK,
    )?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| Skip::Io(e.to_string()))?;
    if !meta.is_file() {
        return Err(Skip::NotRegular);
    }
    Ok(file)
}

/// The bytes of `rel` under `root`, at most `max` of them.
pub fn read(root: &Path, rel: &str, max: u64) -> Result<Vec<u8>, Skip> {
    let file = open_file(root, rel)?;
    let len = file.metadata().map_err(|e| Skip::Io(e.to_string()))?.len();
    if len > max {
        return Err(Skip::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Skip::Io(e.to_string()))?;
    if buf.len() as u64 > max {
        return Err(Skip::TooLarge(buf.len() as u64));
    }
    Ok(buf)
}

/// The names in directory `rel` under `root`, sorted; empty when it is missing or is (or is
/// reached through) a symlink. Entries are only listed: read them with [`read`].
pub fn list_dir(root: &Path, rel: &str) -> Vec<String> {
    let mut path = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        path.push(part);
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            _ => return Vec::new(),
        }
    }
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-rootfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_regular_files_and_refuses_symlinks() {
        let d = tmp("read");
        let root = d.join("root");
        std::fs::create_dir_all(root.join("etc/apt")).unwrap();
        std::fs::write(d.join("secret"), "host secret").unwrap();
        std::fs::write(root.join("etc/apt/ok"), "fine").unwrap();
        std::os::unix::fs::symlink(d.join("secret"), root.join("etc/apt/link")).unwrap();
        std::os::unix::fs::symlink(&d, root.join("up")).unwrap();
        std::fs::write(root.join("etc/big"), vec![b'x'; 100]).unwrap();
        assert_eq!(read(&root, "etc/apt/ok", 10).unwrap(), b"fine");
        assert_eq!(read(&root, "etc/apt/link", 10), Err(Skip::NotRegular));
        assert_eq!(read(&root, "up/secret", 100), Err(Skip::NotRegular));
        assert_eq!(read(&root, "etc/../../secret", 100), Err(Skip::NotRegular));
        assert_eq!(read(&root, "etc/apt", 100), Err(Skip::NotRegular));
        assert_eq!(read(&root, "etc/none", 100), Err(Skip::Missing));
        assert_eq!(read(&root, "etc/big", 99), Err(Skip::TooLarge(100)));
        assert!(list_dir(&root, "up").is_empty());
        assert_eq!(list_dir(&root, "etc/apt"), vec!["link", "ok"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
