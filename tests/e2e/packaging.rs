//! Debian packages (issue 20): `scripts/package.sh` builds `kiln-master` and `kiln-slave` .debs
//! that lintian passes; `apt-get install ./kiln-master_*.deb` (with its recommended PostgreSQL)
//! and `apt-get install --no-install-recommends ./kiln-slave_*.deb` install them into a clean
//! bookworm root made with mmdebstrap, apt fetching what they depend on (git, ca-certificates,
//! PostgreSQL are not in the root before); they make the system user, the data dir, the units,
//! the config. The root is then booted with `systemd-nspawn --boot`, and the units, enabled and
//! started by its systemd, make a master that serves and a slave that enrols and runs a build
//! whose artifact downloads; `dpkg -r` keeps the data and `dpkg -P` removes it.
//!
//! `systemd-nspawn --boot` works on this farm's test machines, although their PID 1 is not
//! systemd and they have no udev: the host's cgroup hierarchy (v1 with a `name=systemd` one, and
//! a v2 one at /sys/fs/cgroup/unified) is enough for the container's systemd, which reaches
//! `running` within a second or two with no failed unit, and runs the master's hardened unit
//! (ProtectSystem=strict, PrivateDevices=, ...) and the slave's default user-namespace sandbox;
//! nspawn only warns on exit that it will not remove its /run/systemd/nspawn/propagate/MACHINE
//! dir from a /run that is not a tmpfs (the test removes it). The container shares the host's
//! network (no `--private-network`), so the test reaches the master on 127.0.0.1 and the slave
//! reaches the test's git server.
//!
//! Where the root does not boot (no systemd-nspawn, a kernel or cgroup setup that refuses it,
//! or `KILN_DEB_TEST_BOOT=no`), the test says why and falls back to the units' own `ExecStart`
//! lines, run by hand in a chroot of the root as their `User=`, with `slave.sandbox =
//! "host-root"` (a chrooted process may not make a user namespace).

use kiln_shared::api::Build;
use kiln_shared::BuildState;
use kiln_tests::proc::{die_with_parent, Killed};
use kiln_tests::GitServer;
use serde_json::{json, Value};
use sha2::Digest;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Runs `cmd`, panics with its output unless it succeeds; its stdout and stderr together.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed: {}\n{text}",
        out.status
    );
    text
}

/// A bookworm root in a temp dir, with the host's /proc, /dev and /sys mounted in it while it is
/// not booted; unmounted on drop (once its booted systemd, if any, is shut down), and removed only
/// when nothing is mounted under it any more (never the host's /dev).
struct Root {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    mounts: Vec<PathBuf>,
    /// Its systemd, once booted with `systemd-nspawn --boot`.
    boot: Option<Boot>,
}

impl Root {
    fn path(&self, p: &str) -> PathBuf {
        self.path.join(p.trim_start_matches('/'))
    }

    fn mount(&mut self, args: &[&str], at: &str) {
        let target = self.path(at);
        std::fs::create_dir_all(&target).unwrap();
        run(
            Command::new("mount").args(args).arg(&target),
            &format!("mount {at}"),
        );
        self.mounts.push(target);
    }

    /// The host's /proc, /dev and /sys, for a chroot of the root.
    fn mount_api(&mut self) {
        self.mount(&["-t", "proc", "proc"], "/proc");
        self.mount(&["--rbind", "/dev"], "/dev");
        self.mount(&["--rbind", "/sys"], "/sys");
    }

    /// Undoes `mount_api` (systemd-nspawn mounts its own).
    fn unmount_api(&mut self) {
        for at in ["/sys", "/dev", "/proc"] {
            let target = self.path(at);
            run(
                Command::new("umount").arg("-l").arg(&target),
                &format!("umount {at}"),
            );
            self.mounts.retain(|m| *m != target);
        }
    }

    /// `args` run in the root (as root) with a service's bare environment: inside the booted
    /// container (all its namespaces) once booted, else in a chroot.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.boot {
            Some(boot) => boot.command(args),
            None => {
                let mut c = Command::new("chroot");
                c.arg(&self.path).args(args);
                c
            }
        };
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// `args` run in the root (see `command`), its output; panics unless it succeeds.
    fn run_in(&self, args: &[&str]) -> String {
        run(&mut self.command(args), &format!("in the root: {args:?}"))
    }

    /// A property of a unit of the booted root (`systemctl show -p NAME --value`).
    fn unit_property(&self, unit: &str, property: &str) -> String {
        self.run_in(&["systemctl", "show", "-p", property, "--value", unit])
            .trim()
            .to_string()
    }

    /// The processes whose root is this root (what the test started in it, and their children).
    fn processes(&self) -> Vec<i32> {
        let me = std::fs::canonicalize(&self.path).unwrap();
        kiln_tests::pids()
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|r| r == me))
            .collect()
    }

    fn mounted_under(&self) -> bool {
        let me = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| Path::new(m).starts_with(&me))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        drop(self.boot.take());
        for pid in self.processes() {
            // SAFETY: a process the test started inside its own root (or a child of one).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if self.mounted_under() {
            // Never delete through a mount (the host's /dev): leave the dir behind instead.
            eprintln!("{} still has mounts: left in place", self.path.display());
            std::mem::forget(self.dir.take());
        }
    }
}

/// The root booted by `systemd-nspawn --boot`: a container whose PID 1 is the root's systemd,
/// sharing the host's network. Dropped, it is halted (SIGTERM to nspawn), and killed if it does
/// not stop within 30 s.
struct Boot {
    nspawn: Option<std::process::Child>,
    /// The container's PID 1 (its systemd), as the host numbers it; 0 until it is found.
    init: i32,
    machine: String,
    log: PathBuf,
}

impl Boot {
    /// How long the container's systemd may take to reach `running` (under a second here).
    const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

    /// Boots the root with `systemd-nspawn --boot` and waits until its systemd is up
    /// (`systemctl is-system-running`: running, or degraded with its failed units logged); why
    /// not, if it cannot (nspawn is missing or exits, or the boot does not finish in time).
    fn start(root: &Path, machine: &str, log: &Path) -> Result<Boot, String> {
        if std::env::var("KILN_DEB_TEST_BOOT").is_ok_and(|v| v == "no") {
            return Err("KILN_DEB_TEST_BOOT=no".into());
        }
        let out = std::fs::File::create(log).unwrap();
        let mut c = Command::new("systemd-nspawn");
        c.args([
            "--boot",
            // No systemd-machined or host systemd to register with or to make a scope in.
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "--settings=no",
        ])
        .arg(format!("--machine={machine}"))
        .arg("--directory")
        .arg(root)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
        // The test's death halts the container (nspawn turns SIGTERM into a halt).
        die_with_parent(&mut c, libc::SIGTERM);
        let child = c
            .spawn()
            .map_err(|e| format!("cannot run systemd-nspawn: {e}"))?;
        let mut boot = Boot {
            nspawn: Some(child),
            init: 0,
            machine: machine.to_string(),
            log: log.to_path_buf(),
        };
        let t0 = Instant::now();
        let mut state = String::from("(no systemd in the container yet)");
        loop {
            let nspawn = boot.nspawn.as_mut().unwrap();
            if let Ok(Some(status)) = nspawn.try_wait() {
                return Err(format!(
                    "systemd-nspawn --boot exited ({status}):\n{}",
                    boot.log_text()
                ));
            }
            if boot.init == 0 {
                boot.init = children(nspawn.id() as i32)
                    .into_iter()
                    .find(|p| {
                        std::fs::read_to_string(format!("/proc/{p}/comm"))
                            .is_ok_and(|c| c.trim() == "systemd")
                    })
                    .unwrap_or(0);
            }
            if boot.init != 0 {
                if let Ok(out) = boot
                    .command(&["systemctl", "is-system-running"])
                    .stdin(Stdio::null())
                    .output()
                {
                    state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                }
                if state == "running" || state == "degraded" {
                    break;
                }
            }
            if t0.elapsed() > Self::BOOT_TIMEOUT {
                return Err(format!(
                    "the container did not boot within {:?} (systemctl is-system-running: \
                     {state}):\n{}",
                    Self::BOOT_TIMEOUT,
                    boot.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("the root booted in {:?} ({state})", t0.elapsed());
        if state == "degraded" {
            let failed = run(
                &mut boot.command(&["systemctl", "--failed", "--no-pager"]),
                "systemctl --failed",
            );
            eprintln!("failed units in the booted root:\n{failed}");
        }
        Ok(boot)
    }

    /// `args` run inside the container: every namespace of its PID 1, so its root and its
    /// systemd (`systemctl`, `journalctl` reach it).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.init))
            .arg("--all")
            .arg("--")
            .args(args);
        c
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `systemctl poweroff`; panics unless the container stops and nspawn exits 0 in time.
    fn poweroff(mut self) {
        let mut c = self.command(&["systemctl", "poweroff"]);
        run(
            c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "systemctl poweroff",
        );
        let nspawn = self.nspawn.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = nspawn.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the booted root did not power off:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        self.nspawn = None;
        assert!(
            status.success(),
            "systemd-nspawn: {status}\n{}",
            self.log_text()
        );
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            // SAFETY: our own child.
            unsafe {
                libc::kill(nspawn.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while nspawn.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if nspawn.try_wait().is_ok_and(|s| s.is_none()) {
                // Killing nspawn alone would leave the container running: kill its PID 1 (and
                // with it its whole PID namespace) first.
                if self.init != 0 {
                    // SAFETY: the container's init, which this test booted.
                    unsafe {
                        libc::kill(self.init, libc::SIGKILL);
                    }
                }
                let _ = nspawn.kill();
            }
            let _ = nspawn.wait();
        }
        // nspawn leaves this behind when /run is not a tmpfs.
        let _ =
            std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.machine));
    }
}

/// The children of a process (of all its threads).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// A unit of the root, running: under the booted root's systemd, or its `ExecStart` run by hand
/// (`start_unit`) with its stdout in a log file.
enum Running {
    Systemd(&'static str),
    ByHand(Killed, PathBuf),
}

impl Running {
    /// Started as an admin would: `systemctl enable --now` in the booted root, else by hand.
    fn start(root: &Root, unit: &'static str, log: &Path) -> Running {
        if root.boot.is_some() {
            root.run_in(&["systemctl", "enable", "--now", unit]);
            Running::Systemd(unit)
        } else {
            Running::ByHand(start_unit(root, unit, log), log.to_path_buf())
        }
    }

    /// Its log: the journal's, or the file's.
    fn logs(&self, root: &Root) -> String {
        match self {
            Running::Systemd(unit) => root
                .command(&["journalctl", "--no-pager", "-u", unit])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default(),
            Running::ByHand(_, log) => logs(log),
        }
    }

    /// How it ended, if it did (for systemd: failed, or restarting after a failure).
    fn ended(&mut self, root: &Root) -> Option<String> {
        match self {
            Running::Systemd(unit) => {
                let state = format!(
                    "{}/{}",
                    root.unit_property(unit, "ActiveState"),
                    root.unit_property(unit, "SubState")
                );
                (state.starts_with("failed") || state.ends_with("auto-restart")).then_some(state)
            }
            Running::ByHand(p, _) => p.0.try_wait().ok().flatten().map(|s| s.to_string()),
        }
    }

    /// Whether it runs inside the root: its main process under the root's systemd, or the
    /// process started by hand chrooted in it.
    fn runs_in(&self, root: &Root) -> bool {
        match self {
            Running::Systemd(unit) => {
                root.unit_property(unit, "ActiveState") == "active"
                    && root.unit_property(unit, "MainPID") != "0"
            }
            Running::ByHand(p, _) => root.processes().contains(&p.pid()),
        }
    }
}

/// `User=` and the `ExecStart=` words of an installed unit file.
fn unit_exec(unit: &str) -> (Option<String>, Vec<String>) {
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let exec = value("ExecStart=").expect("the unit has an ExecStart= line");
    (
        value("User="),
        exec.split_whitespace().map(str::to_string).collect(),
    )
}

/// Starts a unit's `ExecStart` inside the root, as its `User=` (root without one), with a
/// service's bare environment; stdout and stderr go to `log` (the journal, under systemd).
fn start_unit(root: &Root, unit: &str, log: &Path) -> Killed {
    let text = std::fs::read_to_string(root.path(&format!("/lib/systemd/system/{unit}")))
        .unwrap_or_else(|e| panic!("{unit} is installed: {e}"));
    let (user, exec) = unit_exec(&text);
    let mut c = Command::new("chroot");
    if let Some(u) = &user {
        c.arg(format!("--userspec={u}:{u}"));
    }
    c.arg(&root.path)
        .args(&exec)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", "/")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
    die_with_parent(&mut c, libc::SIGTERM);
    Killed(c.spawn().unwrap_or_else(|e| panic!("start {unit}: {e}")))
}

fn logs(log: &Path) -> String {
    format!(
        "{}{}",
        std::fs::read_to_string(log).unwrap_or_default(),
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    )
}

/// Replaces `from` by `to` in a file of the root (an admin editing a conffile); `from` must be
/// there.
fn edit(root: &Root, file: &str, from: &str, to: &str) {
    let p = root.path(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{file} has {from:?}:\n{text}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

fn owner_of(root: &Root, name: &str) -> (u32, u32, String) {
    let passwd = std::fs::read_to_string(root.path("/etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no user {name} in the root's /etc/passwd:\n{passwd}"))
        .to_string();
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap(), line)
}

#[tokio::test]
#[ignore = "slow tier: builds the .debs and installs them into a fresh bookworm root (scripts/test.sh runs it)"]
async fn debian_packages_install_serve_build_and_purge() {
    // 1. The packages, from the dev-profile binaries the tests already built; lintian clean.
    let t0 = Instant::now();
    let out = run(
        Command::new("bash")
            .arg(workspace().join("scripts/package.sh"))
            .arg("--dev"),
        "scripts/package.sh --dev",
    );
    eprintln!("package.sh --dev took {:?}", t0.elapsed());
    // package.sh fails on a lintian error (--fail-on error); this is the check that it ran.
    assert!(out.contains("package: lintian "), "lintian ran:\n{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors: {errors:#?}\n{out}");
    let debs = workspace().join("target/debian");
    let deb = |name: &str| -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&debs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
            })
            .collect();
        assert_eq!(found.len(), 1, "one {name} package in {debs:?}: {found:?}");
        found.pop().unwrap()
    };
    let (master_deb, slave_deb) = (deb("kiln-master"), deb("kiln-slave"));
    let field = |deb: &Path, f: &str| run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(f), f);
    assert!(field(&master_deb, "Recommends").contains("postgresql"));
    assert!(field(&slave_deb, "Depends").contains("git"));
    assert!(field(&slave_deb, "Recommends").contains("mmdebstrap"));

    // 2. A clean bookworm root: minbase with systemd and D-Bus, to boot it; none of what the
    // packages depend on or recommend. Nothing of it is cached.
    let dir = kiln_tests::tempdir("kiln-deb-root-");
    let mut root = Root {
        path: dir.path().join("root"),
        dir: Some(dir),
        mounts: vec![],
        boot: None,
    };
    let t1 = Instant::now();
    run(
        Command::new("mmdebstrap")
            .args([
                "--variant=minbase",
                "--include=systemd-sysv,dbus",
                // Kept in the root's /etc/apt/apt.conf.d, for the apt-get below too.
                "--aptopt=Acquire::Check-Valid-Until \"false\"",
                "bookworm",
            ])
            .arg(&root.path)
            .arg(format!(
                "deb {} bookworm main",
                kiln_tests::host_apt::mirror()
            )),
        "mmdebstrap",
    );
    eprintln!("mmdebstrap took {:?}", t1.elapsed());
    // The root is a mount point of its own (a build's sandbox pivots its root, which a bare
    // chroot's "/" refuses), with the host's /proc, /dev and /sys.
    let me = root.path.to_str().unwrap().to_string();
    root.mount(&["--bind", &me], "/");
    root.mount_api();
    let dpkg_has = |root: &Root, package: &str| {
        root.command(&["dpkg-query", "-W", "-f=${Status}", package])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "install ok installed")
    };
    for p in ["git", "ca-certificates", "postgresql", "kiln-master"] {
        assert!(!dpkg_has(&root, p), "{p} is not in the clean root");
    }

    // 3. apt-get install ./….deb, as the issue's user does, in the chroot (systemd is not
    // running yet: the maintainer scripts enable the units, and must cope). apt fetches the
    // packages' dependencies, and the master's recommended PostgreSQL (its embedded cluster's
    // binaries); the slave's recommends are image tools this test's script build does not use.
    for d in [&master_deb, &slave_deb] {
        std::fs::copy(d, root.path("/tmp").join(d.file_name().unwrap())).unwrap();
    }
    let in_tmp = |d: &Path| format!("/tmp/{}", d.file_name().unwrap().to_str().unwrap());
    let t2 = Instant::now();
    // No service starts in the chroot (Debian's policy-rc.d convention): the distribution's
    // PostgreSQL would take the host's port 5432. Removed before the boot.
    let policy = root.path("/usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
    std::fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // mmdebstrap emptied the root's package lists.
    root.run_in(&["apt-get", "update", "-q"]);
    root.run_in(&["apt-get", "install", "-y", "-q", &in_tmp(&master_deb)]);
    root.run_in(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        &in_tmp(&slave_deb),
    ]);
    eprintln!("apt-get install took {:?}", t2.elapsed());
    for p in [
        "kiln-master",
        "kiln-slave",
        "git",
        "ca-certificates",
        "postgresql",
    ] {
        assert!(dpkg_has(&root, p), "apt-get installed {p}");
    }

    let (uid, gid, line) = owner_of(&root, "kiln");
    assert!(uid < 1000, "kiln is a system user: {line}");
    assert!(line.contains(":/var/lib/kiln:"), "kiln's home: {line}");
    assert!(
        line.ends_with("/usr/sbin/nologin"),
        "kiln cannot log in: {line}"
    );
    let data = std::fs::metadata(root.path("/var/lib/kiln")).expect("/var/lib/kiln");
    assert_eq!(
        (data.uid(), data.gid()),
        (uid, gid),
        "/var/lib/kiln is kiln's"
    );
    assert_eq!(data.mode() & 0o7777, 0o750);
    let slave_data = std::fs::metadata(root.path("/var/lib/kiln-slave")).unwrap();
    assert_eq!((slave_data.uid(), slave_data.mode() & 0o777), (0, 0o700));
    for unit in ["kiln-master.service", "kiln-slave.service"] {
        assert!(
            root.path(&format!("/lib/systemd/system/{unit}")).is_file(),
            "{unit} installed"
        );
        // An absolute symlink into the root's /lib (read, not followed from the host).
        let link = std::fs::read_link(root.path(&format!(
            "/etc/systemd/system/multi-user.target.wants/{unit}"
        )));
        assert!(
            link.is_ok_and(|l| l.ends_with(format!("systemd/system/{unit}"))),
            "{unit} enabled"
        );
    }
    let master_unit =
        std::fs::read_to_string(root.path("/lib/systemd/system/kiln-master.service")).unwrap();
    for line in [
        "User=kiln",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/kiln",
        "NoNewPrivileges=yes",
    ] {
        assert!(master_unit.contains(line), "kiln-master.service: {line}");
    }
    let conffiles =
        std::fs::read_to_string(root.path("/var/lib/dpkg/info/kiln-master.conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l.trim() == "/etc/kiln/kiln.toml"));
    assert!(root.path("/etc/kiln/slave.toml").is_file());
    assert!(root.path("/usr/share/kiln/console/index.html").is_file());
    assert!(root
        .run_in(&["kiln-master", "--version"])
        .contains("kiln-master"));

    // 4. The admin's edits: a free port, an admin token for this test's API calls.
    let port = kiln_tests::free_port();
    let token = format!("kiln_a_packaging_{port}_{}", std::process::id());
    let hash = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    edit(
        &root,
        "/etc/kiln/kiln.toml",
        "listen = \"127.0.0.1:8080\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    edit(
        &root,
        "/etc/kiln/kiln.toml",
        "# admin_token_sha256 = \"\"",
        &format!("admin_token_sha256 = \"{hash}\""),
    );
    let url = format!("http://127.0.0.1:{port}");
    edit(
        &root,
        "/etc/kiln/slave.toml",
        "master = \"http://127.0.0.1:8080\"",
        &format!("master = \"{url}\""),
    );

    // 5. Boot the root (its systemd starts the enabled master), else run the units by hand.
    let logs_dir = kiln_tests::tempdir("kiln-deb-logs-");
    let machine = format!("kiln-deb-{}", std::process::id());
    // The distribution's own cluster (postgresql.service) would listen on the host's port
    // 5432, the container sharing the host's network; the master runs a cluster of its own.
    root.run_in(&["systemctl", "mask", "postgresql.service"]);
    std::fs::remove_file(&policy).unwrap();
    root.unmount_api();
    match Boot::start(&root.path, &machine, &logs_dir.path().join("nspawn.log")) {
        Ok(boot) => root.boot = Some(boot),
        Err(why) => {
            // Where nspawn is installed (scripts/install-deps.sh installs it) the boot must
            // work: a silent fallback would hide a broken unit.
            assert!(
                !kiln_tests::have("systemd-nspawn") || why == "KILN_DEB_TEST_BOOT=no",
                "systemd-nspawn is installed but the root did not boot: {why}"
            );
            eprintln!("NOT BOOTED: the units' ExecStart lines run by hand instead: {why}");
            root.mount_api();
            // A chrooted process may not make a user namespace (the kernel refuses it), so
            // the default sandbox cannot run here; host-root (mount, PID, IPC and UTS
            // namespaces) can. Booted, the default one runs.
            edit(
                &root,
                "/etc/kiln/slave.toml",
                "# sandbox = \"user-namespace\"",
                "sandbox = \"host-root\"",
            );
        }
    }
    let booted = root.boot.is_some();

    // The master from its unit, as kiln, with its embedded PostgreSQL cluster.
    let master_log = logs_dir.path().join("master.log");
    if booted {
        assert_eq!(
            root.run_in(&["systemctl", "is-enabled", "kiln-master.service"])
                .trim(),
            "enabled"
        );
    }
    let mut master = Running::start(&root, "kiln-master.service", &master_log);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(r) = http.get(format!("{url}/api/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Some(how) = master.ended(&root) {
            panic!("the master exited: {how}\n{}", master.logs(&root));
        }
        assert!(
            Instant::now() < deadline,
            "the installed master never answered /api/health:\n{}",
            master.logs(&root)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(master.runs_in(&root), "the master runs inside the root");
    assert!(root.path("/var/lib/kiln/postgres/PG_VERSION").is_file());
    let pg = std::fs::metadata(root.path("/var/lib/kiln/postgres")).unwrap();
    assert_eq!(pg.uid(), uid, "the embedded cluster is kiln's");
    let console = http.get(&url).send().await.unwrap();
    assert!(console.status().is_success());
    let page = console.text().await.unwrap();
    assert!(
        page.contains("kiln-frontend"),
        "the packaged console is served: {page}"
    );

    let post = |path: &str, body: Value| {
        let req = http
            .post(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let r = req.send().await.expect("POST");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let get = |path: &str| {
        let req = http.get(format!("{url}{path}")).bearer_auth(&token);
        async move { req.send().await.expect("GET") }
    };

    // 6. The slave: enrolled as the docs say, then started from its unit, as root.
    let (s, v) = post(
        "/api/slaves/registration-tokens",
        json!({"name": "deb-slave", "expires_in_s": 600, "uses": 1}),
    )
    .await;
    assert_eq!(s, 201, "registration token: {v}");
    let reg = v["token"].as_str().expect("the registration token");
    let mut register = root
        .command(&[
            "kiln-slave",
            "register",
            "--master",
            &url,
            "--registration-token",
            "-",
            "--name",
            "deb-slave",
            "--work-dir",
            "/var/lib/kiln-slave",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(register.stdin.take().unwrap(), "{reg}").unwrap();
    }
    let out = register.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kiln-slave register: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The unit's ConditionPathExists= is now met.
    assert!(root.path("/var/lib/kiln-slave/slave.token").is_file());
    let slave_log = logs_dir.path().join("slave.log");
    let mut slave = Running::start(&root, "kiln-slave.service", &slave_log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let slaves: Value = get("/api/slaves").await.json().await.unwrap();
        if slaves.as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["name"] == "deb-slave" && s["online"] == true)
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the installed slave never came online: {slaves}\n{}",
            slave.logs(&root)
        );
        if let Some(how) = slave.ended(&root) {
            panic!("the slave exited: {how}\n{}", slave.logs(&root));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 7. One build through the installed master and slave, and its artifact.
    let git = GitServer::start();
    let repo = git.repo("packaged");
    repo.script_branch(
        "main",
        "echo building on $(uname -m)\necho \"in cgroup $(grep '^0::' /proc/self/cgroup)\"\necho packaged > \"$KILN_OUTPUT_DIR/hello.txt\"",
    );
    let (s, v) = post(
        "/api/projects",
        json!({"name": "packaged", "branch_url": repo.url, "branch": "main"}),
    )
    .await;
    assert_eq!(s, 201, "create project: {v}");
    let (s, v) = post("/api/projects/packaged/builds", json!({})).await;
    assert_eq!(s, 201, "request build: {v}");
    let id = v["id"].as_i64().expect("the build's id");
    let deadline = Instant::now() + Duration::from_secs(180);
    let build: Build = loop {
        let b: Build = get(&format!("/api/builds/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if b.state.is_terminal() {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "build {id} never ended: {b:?}\n--- slave:\n{}",
            slave.logs(&root)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let build_log = get(&format!("/api/builds/{id}/log"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        build.state,
        BuildState::Succeeded,
        "{:?}\n--- build log:\n{build_log}\n--- slave:\n{}\n--- master:\n{}",
        build.reason,
        slave.logs(&root),
        master.logs(&root)
    );
    assert_eq!(
        build.slave.as_deref(),
        Some("deb-slave"),
        "built by the packaged slave"
    );
    assert!(build_log.contains("building on"), "{build_log}");
    if let Running::Systemd(_) = &slave {
        // The unit delegates its cgroup subtree: the build gets a cgroup of its own below it.
        assert!(
            build_log.lines().any(|l| l.starts_with("in cgroup 0::")
                && l.contains("kiln-slave.service/kiln-build-")),
            "the build did not run in a cgroup of its own below the service's:\n{build_log}\n--- slave:\n{}",
            slave.logs(&root)
        );
    }
    let art = get(&format!("/api/builds/{id}/artifacts/hello.txt")).await;
    assert!(art.status().is_success(), "download: {}", art.status());
    assert_eq!(art.bytes().await.unwrap().as_ref(), b"packaged\n");
    assert!(
        std::fs::read_dir(root.path("/var/lib/kiln/storage")).is_ok_and(|mut d| d.next().is_some()),
        "logs and artifacts are stored in /var/lib/kiln/storage"
    );

    // 8. Stop both (systemctl stop; by hand, SIGTERM as it sends): the master stops its
    // cluster too.
    match (slave, &mut master) {
        (Running::ByHand(slave, _), Running::ByHand(master, _)) => {
            drop(slave);
            master.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while master.0.try_wait().unwrap().is_none() || !root.processes().is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "processes left in the root after SIGTERM: {:?}\n{}",
                    root.processes(),
                    logs(&master_log)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        _ => {
            root.run_in(&[
                "systemctl",
                "stop",
                "kiln-slave.service",
                "kiln-master.service",
            ]);
            for unit in ["kiln-slave.service", "kiln-master.service"] {
                let state = (
                    root.unit_property(unit, "ActiveState"),
                    root.unit_property(unit, "Result"),
                );
                assert_eq!(
                    (state.0.as_str(), state.1.as_str()),
                    ("inactive", "success"),
                    "{unit} stopped cleanly"
                );
            }
            assert!(
                !root.path("/var/lib/kiln/postgres/postmaster.pid").exists(),
                "the embedded cluster was shut down:\n{}",
                master.logs(&root)
            );
        }
    }

    // 9. remove keeps the data and the config; purge removes them.
    root.run_in(&["dpkg", "-r", "kiln-master", "kiln-slave"]);
    assert!(!root.path("/usr/bin/kiln-master").exists());
    assert!(!root.path("/usr/bin/kiln-slave").exists());
    assert!(root.path("/var/lib/kiln/postgres/PG_VERSION").is_file());
    assert!(root.path("/var/lib/kiln-slave/slave.token").is_file());
    assert!(root.path("/etc/kiln/kiln.toml").is_file());
    root.run_in(&["dpkg", "-P", "kiln-master", "kiln-slave"]);
    for gone in [
        "/var/lib/kiln",
        "/var/lib/kiln-slave",
        "/etc/kiln/kiln.toml",
        "/etc/kiln/slave.toml",
        "/etc/systemd/system/multi-user.target.wants/kiln-master.service",
    ] {
        assert!(
            std::fs::symlink_metadata(root.path(gone)).is_err(),
            "{gone} is gone after purge"
        );
    }
    assert!(!root.path("/var/lib/dpkg/info/kiln-master.list").exists());
    assert!(!root
        .path("/var/lib/dpkg/info/kiln-slave.conffiles")
        .exists());

    // 10. The booted root powers off cleanly.
    if let Some(boot) = root.boot.take() {
        boot.poweroff();
    }
}
