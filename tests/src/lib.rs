//! Test kit for Kiln's end-to-end tests: real parts only.
//!
//! - [`Postgres`]: one private cluster per test run (initdb + postgres on a unix socket in a temp
//!   dir, as an unprivileged user when run as root), one fresh database per farm.
//! - [`GitServer`]: `git daemon` on loopback serving repositories the test writes.
//! - [`GitHttp`]: the same repositories over git's smart HTTP (`git http-backend` as CGI).
//! - [`Farm`]: the real `kiln-master` binary on port 0 (readiness read from its stdout) with
//!   real `kiln-slave` processes, driven over HTTP like a user would.
//! - [`Proxy`]: a TCP proxy that can partition a slave from the master without closing anything.

pub mod farm;
pub mod garage;
pub mod git;
pub mod git_http;
pub mod haproxy;
pub mod host_apt;
pub mod measure;
pub mod pg;
pub mod proc;
pub mod proxy;
pub mod raw_slave;
pub mod session;

pub use farm::{Farm, FarmOptions, SlaveProc};
pub use git::{GitServer, Repo};
pub use git_http::GitHttp;
pub use pg::Postgres;
pub use proxy::Proxy;
pub use raw_slave::RawSlave;
pub use session::Session;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether `tool --version` runs (the tool is installed).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Directory holding the built `kiln-master` and `kiln-slave` (the test's own target dir, or
/// `KILN_BIN_DIR`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/e2e-xxxx -> target/<profile>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    for b in ["kiln-master", "kiln-slave"] {
        assert!(
            dir.join(b).exists(),
            "{} is missing: build the binaries first (cargo build --bins), or set KILN_BIN_DIR",
            dir.join(b).display()
        );
    }
    dir
}

/// A fresh temp dir that an unprivileged database user can enter.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(
            std::env::var_os("KILN_TEST_TMP")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        )
        .expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Waits until a process is gone; fails the test naming `what` after 30 s.
pub async fn wait_dead(pid: i32, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until a path no longer exists; fails the test naming `what` after 30 s.
pub async fn wait_gone(p: &std::path::Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while p.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} ({}) is still there",
            p.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits (blocking) until a process we signalled is gone, at most 10 s.
pub fn wait_dead_blocking(pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A small tmpfs of its own (root only), to fill a disk on purpose; unmounted on drop.
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when not root (mounting needs it): the caller skips, saying so.
    pub fn mount(size: &str) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("\n!!!!!!!! SKIPPED: mounting a small tmpfs needs root !!!!!!!!\n");
            return None;
        }
        let dir = tempdir("kiln-small-");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs");
        Some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The pids of every process the host sees now.
pub fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// Pids of the live processes whose command line contains `needle` (as the host sees them).
pub fn processes_with(needle: &str) -> Vec<i32> {
    pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Waits until a process whose command line contains `needle` runs; returns its pid.
pub async fn wait_process(needle: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(p) = processes_with(needle).first() {
            return *p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no process with '{needle}' in its command line after 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until no process has `needle` in its command line.
pub async fn wait_no_process(needle: &str, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = processes_with(needle);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes with '{needle}' still run after {timeout:?}: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A directory every build may write to (1777), outside the temp dirs (a build's `/tmp` and
/// `/var/tmp` are its own) and outside any slave's work dir: builds run as unprivileged host users
/// in sandboxes of their own, and tests use it to leave marks across attempts. Removed on drop.
pub fn drop_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::var_os("KILN_TEST_DROP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/kiln-tests"));
    std::fs::create_dir_all(&base).expect("drop base");
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let d = tempfile::Builder::new()
        .prefix("drop-")
        .tempdir_in(&base)
        .expect("drop dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    d
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a service whose URL must be known
/// before it starts). Chosen below the kernel's ephemeral range: a port from that range (what
/// binding port 0 gives) can be taken as the local port of any outgoing connection on the
/// machine before the service binds it, and a parallel test suite makes thousands.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|l| *l > 11_000)
        .unwrap_or(32_768);
    let mut seed = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut seed);
    }
    let mut x = u64::from_ne_bytes(seed) | 1;
    for _ in 0..200 {
        // xorshift: a fresh random start for each caller, then a walk.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 10_000 + (x % u64::from(low - 10_000)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs one of the tests' idempotent installers (`tests/launchpad/install.sh`,
/// `tests/support/install-spdx-tools.sh`: they install from PyPI into the target dir, locked, and
/// print what they made as their last line) with `env` naming `target/<dir>`; that last line.
/// `hint` says what provides the installer's own prerequisites.
pub fn install_into_target(script: &str, env: &str, dir: &str, hint: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/e2e-xxxx -> target
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the target dir")
        .to_path_buf();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new("bash")
        .arg(&path)
        .env(env, target.join(dir))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running tests/{script}: {e}"));
    assert!(
        out.status.success(),
        "tests/{script} failed ({hint}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the installer's last line")
            .trim(),
    )
}
