//! Each build in a sandbox of its own, set up by the daemon as it starts the build's runner
//! (`kiln-slave run-build`):
//!
//! - **its own processes**: a cgroup of its own (`cgroup.rs`) and a PID namespace whose first
//!   process is the runner, so nothing the build starts (`setsid`, double forks) outlives it:
//!   when the runner ends, the kernel ends the rest, and the daemon kills the cgroup besides;
//! - **its own files**: a mount namespace where the slave's work dir is an empty tmpfs except
//!   for this build's `sandbox/` directory (0700), the token file and config file are covered,
//!   `/tmp`, `/var/tmp` and `/dev/shm` are the build's own, and `/proc` shows only its
//!   processes;
//! - **its own user** (`slave.sandbox = "user-namespace"`, the default): a user namespace where
//!   the build is root, mapped to 65536 unprivileged host ids of its own when the daemon is root
//!   (`slave.sandbox_uid_base`), or to the daemon's own id otherwise; `host-root` keeps the host's
//!   root (for live-build) and is documented as no boundary against the branch's author;
//! - no new privileges (setuid binaries do not raise them), its own hostname and IPC.
//!
//! The daemon's side (`confine`) forks the runner with a `pre_exec` that makes the build's mounts,
//! then creates one more child with `clone3` in new namespaces and directly in the build's cgroup
//! (moving a running process into a cgroup would wait for an RCU grace period, 8–13 ms here);
//! the daemon writes that child's id maps. The first child stays outside as the runner's parent
//! and passes its exit status on (so the daemon still watches one pid and signals one process
//! group); the second is PID 1 of the build, and execs the runner.

use kiln_shared::config::SandboxMode;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Host user and group ids a sandbox gets when the daemon is root: one range per running build.
pub const IDS_PER_BUILD: u32 = 65536;

/// How inside ids map to host ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ids {
    /// Inside 0..65536 are host `base..base+65536` (the daemon is root and writes the maps).
    Range { base: u32 },
    /// Inside 0 is the daemon's own user and group (an unprivileged daemon).
    Own { uid: u32, gid: u32 },
    /// No user namespace: the host's root (`slave.sandbox = "host-root"`).
    Host,
}

/// What the daemon keeps about a build's sandbox (`sandbox.json` in the build dir), so that it
/// can still end the build after a restart.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub ids: Ids,
    /// The range's number among the slave's running builds (`Ids::Range`).
    pub slot: Option<u32>,
    pub cgroup: Option<PathBuf>,
}

impl Record {
    /// The host user that owns the build's files.
    pub fn owner(&self) -> Option<(u32, u32)> {
        match self.ids {
            Ids::Range { base } => Some((base, base)),
            Ids::Own { .. } | Ids::Host => None,
        }
    }
}

/// Chooses the ids of a new sandbox: the lowest range no other build of this slave uses.
pub fn choose_ids(mode: SandboxMode, uid_base: u32, taken: &[u32]) -> (Ids, Option<u32>) {
    if mode == SandboxMode::HostRoot {
        return (Ids::Host, None);
    }
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid != 0 {
        return (Ids::Own { uid, gid }, None);
    }
    let slot = (0..64).find(|s| !taken.contains(s)).unwrap_or(0);
    (
        Ids::Range {
            base: uid_base + slot * IDS_PER_BUILD,
        },
        Some(slot),
    )
}

/// Where the build lives and what it must not see.
pub struct Layout {
    /// The slave's work dir: hidden (an empty tmpfs) but for…
    pub work_dir: PathBuf,
    /// …the build's own directory, the only thing of the work dir a build sees.
    pub sandbox_dir: PathBuf,
    /// Files covered with an empty one (the token file, the config file).
    pub hide: Vec<PathBuf>,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("a path with a NUL byte"))
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything the child needs, prepared before the fork (no allocation happens after it).
struct Setup {
    ids: Ids,
    /// The build's cgroup: its directory, which the build's first process is created in
    /// (`clone3` with `CLONE_INTO_CGROUP`), and its `cgroup.procs`, written instead on kernels
    /// before 5.7. Moving a running process into a cgroup waits for an RCU grace period (8–13 ms
    /// here, most of a no-op build's start); being created in it does not.
    cgroup_dir: Option<OwnedFd>,
    cgroup_procs: Option<OwnedFd>,
    /// A descriptor number reserved (on /dev/null) for the build's directory, opened again
    /// inside the new mount namespace (a mount of another namespace cannot be bound) and bound
    /// back through `sandbox_fd_path` once the work dir is covered.
    sandbox_fd: OwnedFd,
    sandbox_fd_path: CString,
    work_dir: CString,
    /// Every directory from the root down to the work dir.
    work_ancestors: Vec<CString>,
    sandbox_dirs: Vec<CString>,
    sandbox_dir: CString,
    /// For /tmp, /var/tmp, /dev/shm: (mount point, source under the sandbox dir, a reserved
    /// descriptor for the source and its /proc path), opened before anything is covered.
    private_tmp: Vec<(CString, CString, OwnedFd, CString)>,
    hide: Vec<CString>,
    dev_null: CString,
    proc_: CString,
    root: CString,
    proc_type: CString,
    tmpfs: CString,
    tmpfs_opts: CString,
    hostname: CString,
    /// `Own`: the maps the child writes itself (its own ids as root)…
    own_maps: Option<[(CString, Vec<u8>); 3]>,
    /// …and those of the nested namespace that locks the mounts (root as root).
    nested_maps: Vec<(CString, Vec<u8>)>,
    /// `Range`: the child sends its pid on the first and waits for a byte on the second while
    /// the daemon writes the maps.
    sync: Option<(OwnedFd, OwnedFd)>,
    /// The daemon's ends of those pipes (raw numbers): the child inherits them across the fork
    /// and closes them at once, so a daemon killed before it wrote the maps ends the child's
    /// wait (end of file) instead of leaving it blocked for ever.
    daemon_fds: Option<(libc::c_int, libc::c_int)>,
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn write_file(path: &CString, data: &[u8]) -> io::Result<()> {
    // SAFETY: path is a valid C string; data a valid buffer; the fd is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens the directory `path` (no link followed) on the reserved descriptor number `at`.
/// Async-signal-safe.
unsafe fn open_at(path: &CString, at: &OwnedFd) -> io::Result<()> {
    let fd = libc::open(
        path.as_ptr(),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
    );
    check(fd)?;
    let r = check(libc::dup3(fd, at.as_raw_fd(), libc::O_CLOEXEC));
    libc::close(fd);
    r
}

/// Makes each directory (0755) that does not exist yet, in order. Async-signal-safe.
unsafe fn make_dirs(dirs: &[CString]) -> io::Result<()> {
    for d in dirs {
        if libc::mkdir(d.as_ptr(), 0o755) < 0 && *libc::__errno_location() != libc::EEXIST {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn null() -> *const libc::c_char {
    std::ptr::null()
}

impl Setup {
    /// Runs in the forked child, before exec: only async-signal-safe calls, no allocation.
    ///
    /// 1. Files: a mount namespace where the work dir is covered and the build's dir bound back,
    ///    made with the privilege of the daemon (its user reaches the work dir; the build's does
    ///    not).
    /// 2. User: a new user namespace (and with it a new mount namespace, so the mounts of step 1
    ///    are locked: the build cannot unmount them), PID, IPC and UTS namespaces.
    /// 3. A fork: the build's PID 1 goes on to exec; this process waits for it outside.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: plain system calls on prepared C strings and owned descriptors.
        unsafe {
            check(libc::setsid())?;
            // 1. Files.
            if let Ids::Own { .. } = self.ids {
                // An unprivileged daemon needs a user namespace to make a mount namespace.
                check(libc::unshare(libc::CLONE_NEWUSER))?;
                if let Some(maps) = &self.own_maps {
                    for (path, data) in maps {
                        write_file(path, data)?;
                    }
                }
                check(libc::setresgid(0, 0, 0))?;
                check(libc::setresuid(0, 0, 0))?;
            }
            check(libc::unshare(libc::CLONE_NEWNS))?;
            self.mount_files()?;
            // 2. User, and 3. the build's PID 1: a child created in new namespaces and in the
            // build's cgroup. This process stays outside, waits for it and passes its exit
            // status on.
            let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
            if self.ids != Ids::Host {
                flags |= libc::CLONE_NEWUSER | libc::CLONE_NEWNS;
            }
            let pid = self.fork_pid1(flags)?;
            if pid > 0 {
                // The daemon's ends of the handshake: a daemon that dies before it wrote the maps
                // must leave the child reading the end of the file.
                if let Some((a, b)) = self.daemon_fds {
                    libc::close(a);
                    libc::close(b);
                }
                if let (Ids::Range { .. }, Some((tell, _))) = (&self.ids, &self.sync) {
                    // The daemon writes the child's id maps once it knows its pid.
                    let n = libc::write(tell.as_raw_fd(), (&pid as *const i32).cast(), 4);
                    if n != 4 {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                wait_and_pass_on(pid);
            }
            match (&self.ids, &self.sync) {
                (Ids::Range { .. }, Some((tell, wait))) => {
                    if let Some((a, b)) = self.daemon_fds {
                        libc::close(a);
                        libc::close(b);
                    }
                    // Only the waiter sends on it: a daemon waiting for the pid sees the end of
                    // the file if the waiter dies first.
                    libc::close(tell.as_raw_fd());
                    let mut b = 0u8;
                    if libc::read(wait.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 1 {
                        return Err(io::Error::other("the daemon did not write the id maps"));
                    }
                    check(libc::setgroups(0, std::ptr::null()))?;
                }
                (Ids::Own { .. }, _) => {
                    for (path, data) in &self.nested_maps {
                        write_file(path, data)?;
                    }
                }
                _ => {}
            }
            if self.ids != Ids::Host {
                check(libc::setresgid(0, 0, 0))?;
                check(libc::setresuid(0, 0, 0))?;
            }
            // PID 1 of the build from here on: a /proc of its own processes (best effort: some
            // containers lock /proc).
            libc::mount(
                self.proc_type.as_ptr(),
                self.proc_.as_ptr(),
                self.proc_type.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            );
            libc::sethostname(self.hostname.as_ptr(), self.hostname.as_bytes().len());
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            check(libc::chdir(self.sandbox_dir.as_ptr()))?;
        }
        Ok(())
    }

    /// Creates the build's PID 1 in new namespaces (`flags`) and in the build's cgroup: returns
    /// its pid here, 0 in the child. `clone3` with `CLONE_INTO_CGROUP` where the kernel has it
    /// (5.7); before, this process joins the cgroup itself (its child follows it there) and
    /// unshares, then forks. Async-signal-safe.
    unsafe fn fork_pid1(&self, flags: libc::c_int) -> io::Result<libc::pid_t> {
        let mut args = CloneArgs {
            flags: flags as u64,
            exit_signal: libc::SIGCHLD as u64,
            ..CloneArgs::default()
        };
        if let Some(dir) = &self.cgroup_dir {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = dir.as_raw_fd() as u64;
        }
        let r = libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        );
        if r >= 0 {
            return Ok(r as libc::pid_t);
        }
        let e = *libc::__errno_location();
        // ENOSYS: no clone3 (before 5.3); E2BIG or EINVAL with a cgroup: no CLONE_INTO_CGROUP;
        // EPERM: a container's seccomp profile that knows unshare but not clone3. The old way
        // makes the same checks and reports what is really refused.
        let older = e == libc::ENOSYS
            || e == libc::EPERM
            || (self.cgroup_dir.is_some() && (e == libc::EINVAL || e == libc::E2BIG));
        if !older {
            return Err(io::Error::from_raw_os_error(e));
        }
        if let Some(fd) = &self.cgroup_procs {
            check(libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) as libc::c_int)?;
        }
        check(libc::unshare(flags))?;
        let pid = libc::fork();
        check(pid)?;
        Ok(pid)
    }

    /// The work dir covered but for the build's dir; temp dirs its own; secrets covered.
    unsafe fn mount_files(&self) -> io::Result<()> {
        check(libc::mount(
            null(),
            self.root.as_ptr(),
            null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // The build's dir and its temp dirs, opened in this namespace (a mount of another
        // namespace cannot be bound) before anything is covered.
        open_at(&self.sandbox_dir, &self.sandbox_fd)?;
        for (_, from, reserved, _) in &self.private_tmp {
            open_at(from, reserved)?;
        }
        // The temp dirs first: the work dir may be below one of them (/var/tmp/kiln).
        for (at, _, _, fd_path) in &self.private_tmp {
            // Only where the mount point exists; a missing /dev/shm is no reason to fail.
            if libc::access(at.as_ptr(), libc::F_OK) == 0 {
                check(libc::mount(
                    fd_path.as_ptr(),
                    at.as_ptr(),
                    null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
        }
        // The way down to the work dir (made again if a temp dir now hides it), the work dir
        // covered, and the way down to the build's dir in the cover.
        make_dirs(&self.work_ancestors)?;
        check(libc::mount(
            self.tmpfs.as_ptr(),
            self.work_dir.as_ptr(),
            self.tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            self.tmpfs_opts.as_ptr().cast(),
        ))?;
        make_dirs(&self.sandbox_dirs)?;
        check(libc::mount(
            self.sandbox_fd_path.as_ptr(),
            self.sandbox_dir.as_ptr(),
            null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        for h in &self.hide {
            if libc::access(h.as_ptr(), libc::F_OK) == 0 {
                check(libc::mount(
                    self.dev_null.as_ptr(),
                    h.as_ptr(),
                    null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
        }
        Ok(())
    }
}

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), a flag of `clone3` only.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The process that made the build's PID 1 waits for it outside, holding nothing (every signal
/// blocked, every descriptor but stdio closed), and ends with its exit status: the daemon
/// watches one pid. Async-signal-safe; never returns.
unsafe fn wait_and_pass_on(pid: libc::pid_t) -> ! {
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    // Every inherited descriptor, the write end of the spawn's exec-error pipe among them (the
    // daemon's spawn returns only once every copy is closed). close_range is Linux 5.9 and may
    // be refused by seccomp: one by one then.
    if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) < 0 {
        let mut limit: libc::rlimit = std::mem::zeroed();
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in 3..top {
            libc::close(fd);
        }
    }
    let mut status = 0;
    loop {
        let r = libc::waitpid(pid, &mut status, 0);
        if r == pid {
            break;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(127);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    libc::_exit(code)
}

/// The directories under the sandbox dir that stand in for the system's shared temp dirs.
pub const PRIVATE_TMP: [(&str, &str); 3] = [
    ("/tmp", "tmp"),
    ("/var/tmp", "var-tmp"),
    ("/dev/shm", "shm"),
];

/// Creates the sandbox dir (0700) and its temp dirs.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for (_, sub) in PRIVATE_TMP.iter().chain(&[("", "home")]) {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Gives the sandbox dir and all in it to the build's host user (if it has one of its own).
pub fn hand_over(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => chown_tree(dir, uid, gid),
        None => Ok(()),
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(p)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Writes the id maps of a child that unshared its user namespace (the daemon is root).
fn write_maps(pid: i32, base: u32) -> io::Result<()> {
    let line = format!("0 {base} {IDS_PER_BUILD}\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &line)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &line)
}

/// Prepares `cmd` (the runner) to start in the build's sandbox. Returns what must live until the
/// spawn has returned (the daemon's end of the id-map handshake).
pub fn confine(
    cmd: &mut tokio::process::Command,
    record: &Record,
    layout: &Layout,
) -> io::Result<Confined> {
    use std::os::unix::fs::OpenOptionsExt;
    let sandbox_fd = OwnedFd::from(std::fs::File::open("/dev/null")?);
    let (cgroup_dir, cgroup_procs) = match &record.cgroup {
        Some(dir) => (
            Some(OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                    .open(dir)?,
            )),
            Some(OwnedFd::from(
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(dir.join("cgroup.procs"))?,
            )),
        ),
        None => (None, None),
    };
    // The directories from the work dir down to the sandbox dir, made again inside the tmpfs.
    let rel = layout
        .sandbox_dir
        .strip_prefix(&layout.work_dir)
        .map_err(|_| io::Error::other("the build's dir is not in the work dir"))?;
    let mut sandbox_dirs = vec![];
    let mut at = layout.work_dir.clone();
    for part in rel.components() {
        at.push(part);
        sandbox_dirs.push(cstr(&at)?);
    }
    let mut private_tmp = vec![];
    for (mount_point, sub) in PRIVATE_TMP {
        let reserved = OwnedFd::from(std::fs::File::open("/dev/null")?);
        let fd_path =
            CString::new(format!("/proc/self/fd/{}", reserved.as_raw_fd())).expect("no NUL");
        private_tmp.push((
            cstr(Path::new(mount_point))?,
            cstr(&layout.sandbox_dir.join(sub))?,
            reserved,
            fd_path,
        ));
    }
    let (own_maps, sync, daemon_end) = match record.ids {
        Ids::Own { uid, gid } => (
            Some([
                (cstr(Path::new("/proc/self/setgroups"))?, b"deny".to_vec()),
                (
                    cstr(Path::new("/proc/self/gid_map"))?,
                    format!("0 {gid} 1\n").into_bytes(),
                ),
                (
                    cstr(Path::new("/proc/self/uid_map"))?,
                    format!("0 {uid} 1\n").into_bytes(),
                ),
            ]),
            None,
            None,
        ),
        Ids::Range { base } => {
            let (pid_r, pid_w) = pipe()?;
            let (go_r, go_w) = pipe()?;
            (None, Some((pid_w, go_r)), Some((pid_r, go_w, base)))
        }
        Ids::Host => (None, None, None),
    };
    let daemon_fds = daemon_end
        .as_ref()
        .map(|(pid_r, go_w, _)| (pid_r.as_raw_fd(), go_w.as_raw_fd()));
    let nested_maps = match record.ids {
        Ids::Own { .. } => vec![
            (cstr(Path::new("/proc/self/setgroups"))?, b"deny".to_vec()),
            (cstr(Path::new("/proc/self/gid_map"))?, b"0 0 1\n".to_vec()),
            (cstr(Path::new("/proc/self/uid_map"))?, b"0 0 1\n".to_vec()),
        ],
        _ => vec![],
    };
    let setup = Setup {
        nested_maps,
        ids: record.ids,
        cgroup_dir,
        cgroup_procs,
        sandbox_fd_path: CString::new(format!("/proc/self/fd/{}", sandbox_fd.as_raw_fd()))
            .expect("no NUL"),
        sandbox_fd,
        work_dir: cstr(&layout.work_dir)?,
        work_ancestors: layout
            .work_dir
            .ancestors()
            .filter(|a| a.parent().is_some())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(cstr)
            .collect::<io::Result<_>>()?,
        sandbox_dirs,
        sandbox_dir: cstr(&layout.sandbox_dir)?,
        private_tmp,
        hide: layout
            .hide
            .iter()
            .map(|p| cstr(p))
            .collect::<io::Result<_>>()?,
        dev_null: cstr(Path::new("/dev/null"))?,
        proc_: cstr(Path::new("/proc"))?,
        root: cstr(Path::new("/"))?,
        proc_type: CString::new("proc").expect("no NUL"),
        tmpfs: CString::new("tmpfs").expect("no NUL"),
        tmpfs_opts: CString::new("mode=0755,size=1m").expect("no NUL"),
        hostname: CString::new("kiln-build").expect("no NUL"),
        own_maps,
        sync,
        daemon_fds,
    };
    // SAFETY: `enter` makes only async-signal-safe system calls on memory prepared here.
    unsafe {
        cmd.pre_exec(move || setup.enter());
    }
    // The daemon's end of the handshake: a thread that writes the maps once the child asks.
    let handshake = daemon_end.map(|(pid_r, go_w, base)| {
        std::thread::spawn(move || -> io::Result<()> {
            let mut buf = [0u8; 4];
            let mut f = std::fs::File::from(pid_r);
            io::Read::read_exact(&mut f, &mut buf)?;
            let pid = i32::from_ne_bytes(buf);
            let r = write_maps(pid, base);
            // Answer either way: on failure the child's setresuid fails and says so.
            let mut go = std::fs::File::from(go_w);
            io::Write::write_all(&mut go, b"1")?;
            r
        })
    });
    Ok(Confined { handshake })
}

/// The daemon's side of a sandbox being set up; `finish` after the spawn returned.
pub struct Confined {
    handshake: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Confined {
    /// Waits for the id-map handshake (if any) and reports how it went.
    pub fn finish(self) -> io::Result<()> {
        match self.handshake {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("the id-map thread panicked"))?,
            None => Ok(()),
        }
    }
}

/// The boundary a build gets, for its log.
pub fn describe(ids: &Ids) -> String {
    match ids {
        Ids::Range { base } => format!(
            "user namespace, host ids {base}..{}",
            u64::from(*base) + u64::from(IDS_PER_BUILD) - 1
        ),
        Ids::Own { uid, .. } => format!("user namespace, host id {uid} (the daemon's)"),
        Ids::Host => "host root (slave.sandbox = \"host-root\")".into(),
    }
}
