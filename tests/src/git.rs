//! A real git server on loopback (`git daemon`), holding repositories the test writes.

use crate::proc::{die_with_parent, Killed};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct GitServer {
    pub port: u16,
    root: PathBuf,
    _daemon: Killed,
    _dir: tempfile::TempDir,
}

/// The `build.sh` a `Repo::script_branch` commits: `body` after `#!/bin/sh` and `set -e`.
pub fn script_text(body: &str) -> String {
    format!("#!/bin/sh\nset -e\n{body}\n")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Kiln Test",
            "-c",
            "user.email=test@kiln.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl GitServer {
    pub fn start() -> GitServer {
        let dir = crate::tempdir("kiln-git-");
        let root = dir.path().join("repos");
        std::fs::create_dir_all(&root).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // `git-daemon` itself, not `git daemon`: the `git` wrapper runs it as a child, which
        // would outlive the wrapper this test kills (hundreds piled up over a day of runs).
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let mut c = Command::new(PathBuf::from(exec_path).join("git-daemon"));
        c.arg(format!("--base-path={}", root.display()))
            .args([
                "--export-all",
                "--reuseaddr",
                "--informative-errors",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut c, libc::SIGKILL);
        let daemon = Killed(c.spawn().expect("git daemon"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        GitServer {
            port,
            root,
            _daemon: daemon,
            _dir: dir,
        }
    }

    /// Where the bare repositories are (`NAME.git`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new repository `name.git` served as `git://127.0.0.1:PORT/name.git`.
    pub fn repo(&self, name: &str) -> Repo {
        let bare = self.root.join(format!("{name}.git"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare"]);
        git(&bare, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
        let work = self.root.join(format!("{name}.work"));
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo {
            url: format!("git://127.0.0.1:{}/{name}.git", self.port),
            work,
        }
    }
}

pub struct Repo {
    pub url: String,
    work: PathBuf,
}

impl Repo {
    /// Writes a file (executable when `exec`).
    pub fn file(&self, path: &str, content: &str, exec: bool) -> &Self {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        if exec {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        self
    }

    /// Makes `path` a symbolic link to `target` (committed as a link).
    pub fn symlink(&self, path: &str, target: &str) -> &Self {
        let p = self.work.join(path);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).unwrap();
        self
    }

    /// Commits everything to `branch` and pushes it; returns the commit SHA.
    pub fn commit(&self, branch: &str, message: &str) -> String {
        let _ = Command::new("git")
            .current_dir(&self.work)
            .args(["checkout", "-q", "-B", branch])
            .output();
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(
            &self.work,
            &[
                "push",
                "-q",
                "-f",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// A `script` backend branch whose build.sh is `body`.
    /// A branch whose build prints `n=1` … `n=lines`, pausing 0.2 s every 40 lines, then writes
    /// `done` to the artifact `out` (see `Farm::assert_numbered`).
    pub fn numbered_branch(&self, lines: u32) -> String {
        self.script_branch(
            "main",
            &format!(
                "i=1\nwhile [ $i -le {lines} ]; do echo \"n=$i\"; i=$((i+1)); [ $((i % 40)) -eq 0 ] && sleep 0.2; done\necho done > \"$KILN_OUTPUT_DIR/out\""
            ),
        )
    }

    pub fn script_branch(&self, branch: &str, body: &str) -> String {
        self.file(
            "kiln.toml",
            "backend = \"script\"\n[script]\ncommand = \"./build.sh\"\n",
            false,
        )
        .file("build.sh", &script_text(body), true)
        .commit(branch, "script build")
    }
}
