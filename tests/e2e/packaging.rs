//! Debian packages (issue 20): `scripts/package.sh` builds `kiln-master` and `kiln-slave` .debs
//! that lintian passes; they install with `dpkg -i` into a clean bookworm root made with
//! mmdebstrap (the system user, the data dir, the units, the config); the units' own `ExecStart`
//! lines, run by hand in that root (there is no systemd here), make a master that serves and a
//! slave that enrols and runs a build whose artifact downloads; `dpkg -r` keeps the data and
//! `dpkg -P` removes it.

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

/// A bookworm root in a temp dir with the host's /proc, /dev and /sys mounted in it; unmounted
/// on drop, and removed only when nothing is mounted under it any more (never the host's /dev).
struct Root {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    mounts: Vec<PathBuf>,
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

    /// `chroot ROOT args…` (as root), its output; panics unless it succeeds.
    fn chroot(&self, args: &[&str]) -> String {
        run(
            Command::new("chroot")
                .arg(&self.path)
                .args(args)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("LC_ALL", "C.UTF-8"),
            &format!("chroot {args:?}"),
        )
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

    // 2. A clean bookworm root with what the packages depend on (and the master's recommended
    // PostgreSQL, for its embedded cluster). Nothing of it is cached.
    let dir = kiln_tests::tempdir("kiln-deb-root-");
    let mut root = Root {
        path: dir.path().join("root"),
        dir: Some(dir),
        mounts: vec![],
    };
    let t1 = Instant::now();
    run(
        Command::new("mmdebstrap")
            .args([
                "--variant=minbase",
                "--include=adduser,git,ca-certificates,postgresql",
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
    root.mount(&["-t", "proc", "proc"], "/proc");
    root.mount(&["--rbind", "/dev"], "/dev");
    root.mount(&["--rbind", "/sys"], "/sys");

    // 3. dpkg -i, with no systemd running (the maintainer scripts must cope).
    for d in [&master_deb, &slave_deb] {
        std::fs::copy(d, root.path("/tmp").join(d.file_name().unwrap())).unwrap();
    }
    let in_tmp = |d: &Path| format!("/tmp/{}", d.file_name().unwrap().to_str().unwrap());
    root.chroot(&["dpkg", "-i", &in_tmp(&master_deb), &in_tmp(&slave_deb)]);

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
        .chroot(&["kiln-master", "--version"])
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
    // A chrooted process may not make a user namespace (the kernel refuses it), so the default
    // sandbox cannot run here; host-root (mount, PID, IPC and UTS namespaces) can.
    edit(
        &root,
        "/etc/kiln/slave.toml",
        "# sandbox = \"user-namespace\"",
        "sandbox = \"host-root\"",
    );

    // 5. The master from its unit, as kiln, with its embedded PostgreSQL cluster.
    let logs_dir = kiln_tests::tempdir("kiln-deb-logs-");
    let master_log = logs_dir.path().join("master.log");
    let mut master = start_unit(&root, "kiln-master.service", &master_log);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(r) = http.get(format!("{url}/api/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(status)) = master.0.try_wait() {
            panic!("the master exited: {status}\n{}", logs(&master_log));
        }
        assert!(
            Instant::now() < deadline,
            "the installed master never answered /api/health:\n{}",
            logs(&master_log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        root.processes().contains(&master.pid()),
        "the master runs inside the root"
    );
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
    let mut register = Command::new("chroot")
        .arg(&root.path)
        .args([
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
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
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
    let slave = start_unit(&root, "kiln-slave.service", &slave_log);
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
            logs(&slave_log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 7. One build through the installed master and slave, and its artifact.
    let git = GitServer::start();
    let repo = git.repo("packaged");
    repo.script_branch(
        "main",
        "echo building on $(uname -m)\necho packaged > \"$KILN_OUTPUT_DIR/hello.txt\"",
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
            logs(&slave_log)
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
        logs(&slave_log),
        logs(&master_log)
    );
    assert_eq!(
        build.slave.as_deref(),
        Some("deb-slave"),
        "built by the packaged slave"
    );
    assert!(build_log.contains("building on"), "{build_log}");
    let art = get(&format!("/api/builds/{id}/artifacts/hello.txt")).await;
    assert!(art.status().is_success(), "download: {}", art.status());
    assert_eq!(art.bytes().await.unwrap().as_ref(), b"packaged\n");
    assert!(
        std::fs::read_dir(root.path("/var/lib/kiln/storage")).is_ok_and(|mut d| d.next().is_some()),
        "logs and artifacts are stored in /var/lib/kiln/storage"
    );

    // 8. Stop both (SIGTERM, as systemctl stop does): the master stops its cluster too.
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

    // 9. remove keeps the data and the config; purge removes them.
    root.chroot(&["dpkg", "-r", "kiln-master", "kiln-slave"]);
    assert!(!root.path("/usr/bin/kiln-master").exists());
    assert!(!root.path("/usr/bin/kiln-slave").exists());
    assert!(root.path("/var/lib/kiln/postgres/PG_VERSION").is_file());
    assert!(root.path("/var/lib/kiln-slave/slave.token").is_file());
    assert!(root.path("/etc/kiln/kiln.toml").is_file());
    root.chroot(&["dpkg", "-P", "kiln-master", "kiln-slave"]);
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
}
