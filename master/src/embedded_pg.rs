//! The embedded PostgreSQL cluster: when no `database.url` is configured the master runs its own
//! cluster from the system's binaries inside `data_dir/postgres`, listening only on a unix socket
//! in `data_dir/run`, and stops it when the master stops.
//!
//! PostgreSQL refuses to run as root; when the master is root the cluster runs as
//! `database.embedded_user` (default `postgres`), which must be able to reach the data dir.
//!
//! The cluster is the master's alone, twice over: the socket directory is `0700` (owned by the
//! cluster's user), so no other local account reaches the socket, and the one rule in
//! `pg_hba.conf` is `local all kiln scram-sha-256`: even a process that reaches the socket (the
//! cluster's own OS user, say) must know the password. The password is random, made on first
//! start, and kept in `data_dir/postgres.password` (`0600`, the master's user); the master hands
//! it to sqlx in its connect options, never in a URL, a command line or an environment.
//!
//! Securing is idempotent and runs on every start: when `pg_hba.conf` is not exactly ours (a
//! cluster made by an older master with `--auth=trust`, or a start interrupted half-way) or the
//! password file is new (lost or never made), the cluster is stopped, the password is set in
//! single-user mode (as a SCRAM verifier computed here, so the password itself never reaches the
//! server), and then `pg_hba.conf` is rewritten. Deleting `postgres.password` and restarting the
//! master therefore sets a new password.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cluster's superuser, the role the master connects as.
pub const SUPERUSER: &str = "kiln";
/// The password of [`SUPERUSER`], in the data dir (mode 0600, the master's user).
pub const PASSWORD_FILE: &str = "postgres.password";
/// initdb's copy of the password, in the socket dir while initdb runs, removed at once.
const INITDB_PWFILE: &str = ".initdb-pwfile";
/// Iterations of the SCRAM verifier (PostgreSQL's default, `scram_iterations`).
const SCRAM_ITERATIONS: u32 = 4096;

/// The whole `pg_hba.conf` of the embedded cluster: the superuser, over the unix socket, with
/// its password. Nothing else (the cluster listens on no TCP port, so no `host` lines).
pub fn hba_conf() -> String {
    format!(
        "# Written by kiln-master on every start; edits are replaced. The embedded cluster is the\n\
         # master's alone: only {SUPERUSER}, over the unix socket, with the password in the master's\n\
         # data dir ({PASSWORD_FILE}). The cluster listens on no TCP port.\n\
         local all {SUPERUSER} scram-sha-256\n"
    )
}

pub struct EmbeddedPostgres {
    bin: PathBuf,
    pgdata: PathBuf,
    pub socket_dir: PathBuf,
    password_file: PathBuf,
    /// Read (or made) by `start`.
    password: Option<String>,
    run_as: Option<(u32, u32)>,
    started_here: bool,
    /// It was already running when [`EmbeddedPostgres::start`] came (a running master's, or
    /// one left by a killed master).
    reused: bool,
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

/// Whether a password is one we can hand to initdb (one line) and to SCRAM unchanged (SASLprep
/// leaves printable ASCII alone).
fn usable_password(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads the password file, or makes one (random, mode 0600); true if it was made now. A file
/// others could read is closed to them first.
fn load_or_create_password(path: &Path) -> Result<(String, bool)> {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(mut f) => {
            let meta = f.metadata()?;
            if !meta.is_file() {
                bail!("{} is not a regular file", path.display());
            }
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} could be read by others (mode {:o}); made it 0600",
                    path.display(),
                    meta.mode() & 0o7777
                );
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            let mut s = String::new();
            f.read_to_string(&mut s)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let p = s.trim_end_matches(['\n', '\r']).to_string();
            if !usable_password(&p) {
                bail!(
                    "{} must hold one line of printable ASCII without spaces (delete it and restart to make a new password)",
                    path.display()
                );
            }
            Ok((p, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            let mut b = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let p = hex::encode(b);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            f.write_all(format!("{p}\n").as_bytes())?;
            f.sync_all()?;
            Ok((p, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA256 with a 32-byte result (one block).
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac_sha256(password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for a password (RFC 5802/7677, PostgreSQL's
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`).
fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let salted = pbkdf2_sha256(password.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64(salt),
        b64(&stored_key),
        b64(&server_key)
    )
}

/// Removes initdb's copy of the password however initdb ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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
            password_file: data_dir.join(PASSWORD_FILE),
            password: None,
            run_as,
            started_here: false,
            reused: false,
        })
    }

    /// How the master connects to `database` (after `start`): the socket, the superuser and its
    /// password, all in the options (the password appears in no URL, so in no log line).
    pub fn connect_options(&self, database: &str) -> Result<PgConnectOptions> {
        let Some(password) = &self.password else {
            bail!("the embedded PostgreSQL is not started");
        };
        Ok(PgConnectOptions::new()
            .socket(&self.socket_dir)
            .username(SUPERUSER)
            .password(password)
            .database(database))
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.env_remove("PGDATA")
            .env_remove("PGPASSWORD")
            .env("LC_ALL", "C");
        c
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot hand {} to the database user", path.display()))?;
        }
        Ok(())
    }

    /// A directory of the cluster's user that nobody else may enter: made 0700 from the start.
    fn private_dir(&self, dir: &Path) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        self.chown(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
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

    /// initdb on first use, secures the cluster (see the module's notes), then starts it (or
    /// reuses a cluster left running by a killed master).
    pub fn start(&mut self) -> Result<()> {
        // The socket is the master's alone: no other local user may even reach it.
        self.private_dir(&self.socket_dir)?;
        let (password, fresh) = load_or_create_password(&self.password_file)?;
        self.password = Some(password);
        let initialised = if self.pgdata.join("PG_VERSION").exists() {
            false
        } else {
            self.initdb()?;
            true
        };
        let hba_ours = std::fs::read_to_string(self.pgdata.join("pg_hba.conf"))
            .map(|s| s == hba_conf())
            .unwrap_or(false);
        if initialised {
            // initdb set the password; its pg_hba.conf also has host lines.
            self.write_hba()?;
        } else if fresh || !hba_ours {
            tracing::info!(
                "securing the embedded PostgreSQL: {}",
                if !hba_ours {
                    "password authentication instead of trust"
                } else {
                    "a new password (there was no password file)"
                }
            );
            if self.is_running() {
                let mut c = self.cmd("pg_ctl");
                c.arg("-D")
                    .arg(&self.pgdata)
                    .args(["-m", "fast", "-w", "stop"]);
                self.run(c, "pg_ctl stop")?;
            }
            self.set_password()?;
            self.write_hba()?;
        }
        if self.is_running() {
            // Left running by a master that was killed: it is ours (it lives in our data dir).
            // It re-reads pg_hba.conf, whatever it had loaded.
            tracing::info!("embedded PostgreSQL already running; reusing it");
            let mut c = self.cmd("pg_ctl");
            c.arg("-D").arg(&self.pgdata).arg("reload");
            self.run(c, "pg_ctl reload")?;
            self.started_here = true;
            self.reused = true;
            return Ok(());
        }
        self.start_server()
    }

    /// A new cluster whose superuser has the password. initdb reads it from a copy in the socket
    /// dir (the cluster's user's, 0700), readable by that user only, removed when initdb ends.
    fn initdb(&self) -> Result<()> {
        self.private_dir(&self.pgdata)?;
        let pwfile = self.socket_dir.join(INITDB_PWFILE);
        let _ = std::fs::remove_file(&pwfile);
        let remove = RemoveOnDrop(pwfile.clone());
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pwfile)
                .with_context(|| format!("cannot write {}", pwfile.display()))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            }
            let password = self.password.as_deref().expect("read before initdb");
            f.write_all(format!("{password}\n").as_bytes())?;
        }
        let mut c = self.cmd("initdb");
        c.arg("-D")
            .arg(&self.pgdata)
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--pwfile"])
            .arg(&pwfile)
            .args(["-E", "UTF8", "--no-instructions"]);
        let done = self.run(c, "initdb");
        drop(remove);
        done
    }

    /// Sets the superuser's password with the cluster stopped, in single-user mode: the
    /// statement goes through a pipe and carries only the SCRAM verifier.
    fn set_password(&self) -> Result<()> {
        use rand::RngCore;
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let password = self.password.as_deref().expect("read before set_password");
        let verifier = scram_verifier(password, &salt, SCRAM_ITERATIONS);
        let mut c = self.cmd("postgres");
        c.arg("--single")
            .arg("-D")
            .arg(&self.pgdata)
            .args([
                "-c",
                "exit_on_error=on",
                "-c",
                "listen_addresses=",
                "postgres",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .context("cannot run postgres --single to set the password")?;
        let mut stdin = child.stdin.take().expect("piped");
        let sql = format!("ALTER ROLE {SUPERUSER} PASSWORD '{verifier}';\n");
        let written = stdin.write_all(sql.as_bytes());
        drop(stdin);
        let out = child.wait_with_output()?;
        written.context("postgres --single did not take the statement")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("ERROR") || stderr.contains("FATAL") {
            bail!(
                "setting the embedded PostgreSQL's password failed ({}): {}",
                out.status,
                stderr.trim()
            );
        }
        Ok(())
    }

    /// Replaces `pg_hba.conf` (written beside it, then renamed over it).
    fn write_hba(&self) -> Result<()> {
        let path = self.pgdata.join("pg_hba.conf");
        let tmp = self.pgdata.join("pg_hba.conf.kiln-new");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.write_all(hba_conf().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }

    /// Whether the cluster's postmaster runs. `pg_ctl status` only asks whether some process has
    /// the pid in `postmaster.pid`, and a postmaster that was killed (the OOM killer, a crash)
    /// leaves that file behind: on a busy machine its pid soon belongs to another process, which
    /// `pg_ctl reload` and `stop` would then signal, and the cluster would never be started
    /// again. So the pid must also name a process working in this data dir, as a postmaster
    /// does; a lock file that names any other is removed (PostgreSQL would refuse to start
    /// beside it). Only when that cannot be read does `pg_ctl status` decide.
    fn is_running(&self) -> bool {
        match postmaster_here(&self.pgdata) {
            Postmaster::Here => true,
            Postmaster::None => false,
            Postmaster::Stale(pid) => {
                // Unless another start of the cluster (a one-off `kiln-master migrate`, say)
                // wrote a new one meanwhile.
                if postmaster_here(&self.pgdata) == Postmaster::Stale(pid) {
                    tracing::warn!(
                        "the embedded PostgreSQL's postmaster.pid names pid {pid}, which is not \
                         its postmaster (it was killed); removing the stale lock file"
                    );
                    let _ = std::fs::remove_file(self.pgdata.join("postmaster.pid"));
                }
                false
            }
            Postmaster::Unknown => {
                let mut status = self.cmd("pg_ctl");
                status.arg("-D").arg(&self.pgdata).arg("status");
                status.output().map(|o| o.status.success()).unwrap_or(false)
            }
        }
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
        if !self.is_running() {
            // Gone already (killed): nothing to stop, and no pid to signal.
            self.started_here = false;
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

/// What `postmaster.pid` in a data dir says, checked against the process it names.
#[derive(Debug, PartialEq, Eq)]
enum Postmaster {
    /// No lock file (or no pid in it): nothing runs.
    None,
    /// The pid's process works in this data dir: the cluster's postmaster.
    Here,
    /// The pid names no process, or one working elsewhere: left by a killed postmaster.
    Stale(i32),
    /// The process's directory cannot be read (another user's, a locked-down /proc).
    Unknown,
}

fn postmaster_here(pgdata: &Path) -> Postmaster {
    let text = match std::fs::read_to_string(pgdata.join("postmaster.pid")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Postmaster::None,
        Err(_) => return Postmaster::Unknown,
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        return Postmaster::None;
    };
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => {
            let here = std::fs::canonicalize(pgdata).ok();
            if here.is_some_and(|h| h == cwd) {
                Postmaster::Here
            } else {
                Postmaster::Stale(pid)
            }
        }
        // No such entry: gone, unless /proc hides other users' processes (hidepid), which only
        // signal 0 can tell apart.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // SAFETY: signal 0 only checks for existence.
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                Postmaster::Stale(pid)
            } else {
                Postmaster::Unknown
            }
        }
        Err(_) => Postmaster::Unknown,
    }
}

impl EmbeddedPostgres {
    /// For a one-off command (`kiln-master user add`, `migrate`) next to a running master: a
    /// cluster that was already running is left running when this handle goes.
    pub fn leave_running_if_reused(&mut self) {
        if self.reused {
            self.started_here = false;
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postmaster_pid_is_believed_only_for_a_process_working_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("kiln-pgpid-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("postmaster.pid");
        let _ = std::fs::remove_file(&lock);
        assert_eq!(postmaster_here(&dir), Postmaster::None);
        // A process working in the data dir, as a postmaster does.
        let mut inside = Command::new("sleep")
            .arg("30")
            .current_dir(&dir)
            .spawn()
            .unwrap();
        std::fs::write(&lock, format!("{}\n{}\n", inside.id(), dir.display())).unwrap();
        assert_eq!(postmaster_here(&dir), Postmaster::Here);
        // The pid taken by another process (this one works elsewhere).
        let me = std::process::id() as i32;
        std::fs::write(&lock, format!("{me}\n")).unwrap();
        assert_eq!(postmaster_here(&dir), Postmaster::Stale(me));
        // The pid of a process that has ended.
        let gone = inside.id() as i32;
        inside.kill().unwrap();
        inside.wait().unwrap();
        std::fs::write(&lock, format!("{gone}\n")).unwrap();
        assert_eq!(postmaster_here(&dir), Postmaster::Stale(gone));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (RFC 4231 case 6).
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn pbkdf2_sha256_matches_rfc_7914() {
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        assert_eq!(
            hex::encode(pbkdf2_sha256(b"Password", b"NaCl", 80000)),
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
        );
    }

    #[test]
    fn the_scram_verifier_is_what_postgresql_stores() {
        // Cross-checked with Python's hashlib.pbkdf2_hmac and hmac (RFC 5802's recipe).
        assert_eq!(
            scram_verifier("pencil", b"0123456789abcdef", 4096),
            "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
        );
    }

    #[test]
    fn pg_hba_admits_only_the_superuser_over_the_socket_with_a_password() {
        let hba = hba_conf();
        let rules: Vec<&str> = hba
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(rules, ["local all kiln scram-sha-256"]);
        assert!(!hba.contains("trust"));
    }

    #[test]
    fn the_password_file_is_made_once_private_and_then_kept() {
        let dir = std::env::temp_dir().join(format!("kiln-pgpass-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(PASSWORD_FILE);
        let _ = std::fs::remove_file(&path);
        let (p, fresh) = load_or_create_password(&path).unwrap();
        assert!(fresh);
        assert_eq!(p.len(), 64);
        assert!(usable_password(&p));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Opened up by someone: closed again, and the same password.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (again, fresh) = load_or_create_password(&path).unwrap();
        assert!(!fresh);
        assert_eq!(again, p);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&path, "two words\n").unwrap();
        assert!(load_or_create_password(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
