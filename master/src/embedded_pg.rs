//! The embedded PostgreSQL cluster: when no `database.url` is configured the master runs its own
//! cluster from the system's binaries inside `data_dir/postgres`, listening only on a unix socket
//! in `data_dir/run`, and stops it when the master stops.
//!
//! PostgreSQL refuses to run as root; when the master is root the cluster runs as
//! `database.embedded_user` (default `postgres`), which must be able to reach the data dir.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct EmbeddedPostgres {
    bin: PathBuf,
    pgdata: PathBuf,
    pub socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    started_here: bool,
}

/// Finds `initdb`/`pg_ctl`: the configured dir, else the newest `/usr/lib/postgresql/*/bin`,
/// else `$PATH`.
fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = configured {
        if dir.join("pg_ctl").exists() {
            return Ok(dir.to_path_buf());
        }
        bail!(
            "config key database.pg_bin_dir: {} has no pg_ctl",
            dir.display()
        );
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("pg_ctl").exists() && dir.join("initdb").exists() {
                return Ok(dir);
            }
        }
    }
    bail!("no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and PATH); install postgresql or set database.url")
}

fn lookup_user(name: &str) -> Result<(u32, u32)> {
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy out at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        bail!("config key database.embedded_user: no such user '{name}' (PostgreSQL cannot run as root; create the user or name another)");
    }
    // SAFETY: checked non-null above.
    unsafe { Ok(((*pw).pw_uid, (*pw).pw_gid)) }
}

impl EmbeddedPostgres {
    pub fn new(data_dir: &Path, bin_dir: Option<&Path>, user: &str) -> Result<Self> {
        let bin = find_bin_dir(bin_dir)?;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(lookup_user(user)?)
        } else {
            None
        };
        Ok(EmbeddedPostgres {
            bin,
            pgdata: data_dir.join("postgres"),
            socket_dir: data_dir.join("run"),
            run_as,
            started_here: false,
        })
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.env_remove("PGDATA").env("LC_ALL", "C");
        c
    }

    fn chown(&self, dir: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to the database user", dir.display()))?;
        }
        Ok(())
    }

    fn run(&self, mut c: Command, what: &str) -> Result<()> {
        let out = c.output().with_context(|| format!("cannot run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                if self.run_as.is_some() {
                    "\n(the cluster runs as database.embedded_user; that user must be able to enter every directory above the data dir)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    }

    /// initdb on first use, then start (or reuse a cluster left running by a killed master).
    pub fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.socket_dir)?;
        self.chown(&self.socket_dir)?;
        // The socket is the master's alone: no other local user may even reach it (the cluster
        // trusts whoever connects through it).
        std::fs::set_permissions(&self.socket_dir, std::fs::Permissions::from_mode(0o700))?;
        if !self.pgdata.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&self.pgdata)?;
            std::fs::set_permissions(&self.pgdata, std::fs::Permissions::from_mode(0o700))?;
            self.chown(&self.pgdata)?;
            let mut c = self.cmd("initdb");
            c.arg("-D").arg(&self.pgdata).args([
                "-U",
                "kiln",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]);
            self.run(c, "initdb")?;
        }
        if self.is_running() {
            // Left running by a master that was killed: it is ours (it lives in our data dir).
            tracing::info!("embedded PostgreSQL already running; reusing it");
            self.started_here = true;
            return Ok(());
        }
        self.start_server()
    }

    fn is_running(&self) -> bool {
        let mut status = self.cmd("pg_ctl");
        status.arg("-D").arg(&self.pgdata).arg("status");
        status.output().map(|o| o.status.success()).unwrap_or(false)
    }

    /// Starts the cluster again if it is not running (it exited or was killed); true if it had
    /// to. The master's database watchdog calls this.
    pub fn ensure_running(&mut self) -> Result<bool> {
        if self.is_running() {
            return Ok(false);
        }
        self.start_server()?;
        Ok(true)
    }

    fn start_server(&mut self) -> Result<()> {
        let mut c = self.cmd("pg_ctl");
        c.arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(self.pgdata.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses='' -k {} -c unix_socket_permissions=0700 -c max_connections=100",
                self.socket_dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        self.run(c, "pg_ctl start")
            .with_context(|| format!("see {}", self.pgdata.join("server.log").display()))?;
        self.started_here = true;
        Ok(())
    }

    pub fn stop(&mut self) {
        if !self.started_here {
            return;
        }
        let mut c = self.cmd("pg_ctl");
        c.arg("-D")
            .arg(&self.pgdata)
            .args(["-m", "fast", "-w", "stop"]);
        if let Err(e) = self.run(c, "pg_ctl stop") {
            tracing::warn!("stopping the embedded PostgreSQL: {e:#}");
        }
        self.started_here = false;
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
