//! The embedded PostgreSQL is the master's alone: its socket directory is closed to other local
//! users, and even whoever reaches the socket (root, the cluster's own OS user) needs the
//! password the master keeps in `postgres.password`. A cluster made the old way (`--auth=trust`)
//! is secured when the master starts, idempotently.

use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::json;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const ONLY_RULE: &str = "local all kiln scram-sha-256";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The OS user the embedded cluster runs as: `postgres` when the tests run as root (the
/// master's default `database.embedded_user`), else nobody else.
fn cluster_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    // SAFETY: getpwnam's result is copied out at once.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "running as root needs a 'postgres' user");
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, b): &(u32, PathBuf)| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("/usr/lib/postgresql/*/bin/initdb").1
}

/// A PostgreSQL tool run as the cluster's user.
fn pg_tool(tool: &str) -> Command {
    let mut c = Command::new(pg_bin().join(tool));
    if let Some((u, g)) = cluster_user() {
        c.uid(u).gid(g);
    }
    c.env_remove("PGDATA").env("LC_ALL", "C");
    c
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `psql` over the farm's socket as `kiln` on database `db`, as the test's user (`os_user`
/// `None`) or another local user, with the given password (`None`: none at all, never a prompt).
fn psql(farm: &Farm, os_user: Option<&str>, password: Option<&str>, db: &str, sql: &str) -> Output {
    let mut c = match os_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "psql"]);
            c
        }
        None => Command::new("psql"),
    };
    c.args(["-X", "-w", "-At", "-h"])
        .arg(farm.dir.path().join("run"))
        .args(["-U", "kiln", "-d", db, "-c", sql])
        .env("PGPASSFILE", "/dev/null")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE");
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    c.output().expect("psql")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

fn password(farm: &Farm) -> String {
    std::fs::read_to_string(farm.dir.path().join("postgres.password"))
        .unwrap()
        .trim()
        .to_string()
}

fn hba_rules(farm: &Farm) -> Vec<String> {
    std::fs::read_to_string(farm.dir.path().join("postgres/pg_hba.conf"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(String::from)
        .collect()
}

/// Everything that says the cluster is locked: file modes and owners, the one rule, and who
/// gets in with what.
fn assert_locked(farm: &Farm) {
    let dir = farm.dir.path();
    let pw_file = dir.join("postgres.password");
    assert_eq!(mode(&pw_file), 0o600, "the password file is private");
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert_eq!(
        std::fs::metadata(&pw_file).unwrap().uid(),
        me,
        "owned by the master's user"
    );
    let run = dir.join("run");
    assert_eq!(mode(&run), 0o700, "the socket dir is closed to others");
    assert_eq!(mode(&dir.join("postgres")), 0o700);
    let cluster_uid = cluster_user().map_or(me, |(u, _)| u);
    assert_eq!(std::fs::metadata(&run).unwrap().uid(), cluster_uid);
    assert!(
        !run.join(".initdb-pwfile").exists(),
        "initdb's copy of the password is gone"
    );
    assert_eq!(hba_rules(farm), [ONLY_RULE]);
    let password = password(farm);
    assert_eq!(password.len(), 64);

    // Without the password, even the master's own user is refused: it is not trust.
    let out = psql(farm, None, None, "postgres", "SELECT 1");
    assert!(!out.status.success(), "connected without a password");
    assert!(stderr(&out).contains("password"), "{}", stderr(&out));
    let out = psql(farm, None, Some("not-the-password"), "postgres", "SELECT 1");
    assert!(!out.status.success(), "connected with a wrong password");
    assert!(
        stderr(&out).contains("password authentication failed"),
        "{}",
        stderr(&out)
    );
    // With it, it answers.
    let out = psql(farm, None, Some(&password), "kiln", "SELECT 1");
    ok(&out, "psql with the password");

    if is_root() {
        // Another local user cannot even reach the socket.
        let out = psql(farm, Some("nobody"), None, "postgres", "SELECT 1");
        assert!(
            !out.status.success(),
            "nobody reached the embedded database"
        );
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
        // The cluster's own OS user reaches it, and still needs the password.
        let out = psql(farm, Some("postgres"), None, "postgres", "SELECT 1");
        assert!(
            !out.status.success(),
            "the cluster's OS user got in without a password"
        );
        assert!(stderr(&out).contains("password"), "{}", stderr(&out));
    }

    // The password is in no process's command line or environment, nor in the master's log.
    let postmaster: i32 = std::fs::read_to_string(dir.join("postgres/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut pids = vec![postmaster];
    pids.extend(farm.master_pid());
    for pid in pids {
        for what in ["cmdline", "environ"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&password),
                "the password is in /proc/{pid}/{what}"
            );
        }
    }
    assert!(
        !farm.master_log().contains(&password),
        "the password was logged"
    );
}

/// A farm on the embedded database whose master is stopped, and its cluster too, however the
/// test ends (a cluster left running would outlive the test).
struct EmbeddedFarm(Farm);

impl EmbeddedFarm {
    async fn start() -> EmbeddedFarm {
        EmbeddedFarm(
            Farm::with(FarmOptions {
                embedded_db: true,
                ..Default::default()
            })
            .await,
        )
    }

    async fn stop(&mut self) {
        let status = self.0.stop_master(Duration::from_secs(60)).await;
        assert!(status.is_some(), "the master did not stop on SIGTERM");
        assert!(
            !pg_ctl_status(&self.0.dir.path().join("postgres")),
            "the master stopped its cluster"
        );
    }
}

fn pg_ctl_status(pgdata: &Path) -> bool {
    pg_tool("pg_ctl")
        .arg("-D")
        .arg(pgdata)
        .arg("status")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl Deref for EmbeddedFarm {
    type Target = Farm;
    fn deref(&self) -> &Farm {
        &self.0
    }
}

impl DerefMut for EmbeddedFarm {
    fn deref_mut(&mut self) -> &mut Farm {
        &mut self.0
    }
}

impl Drop for EmbeddedFarm {
    fn drop(&mut self) {
        self.0.kill_master();
        let pgdata = self.0.dir.path().join("postgres");
        if pg_ctl_status(&pgdata) {
            let _ = pg_tool("pg_ctl")
                .arg("-D")
                .arg(&pgdata)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

async fn health_ok(farm: &Farm) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = farm.http.get(farm.api("/api/health")).send().await {
            if r.status().as_u16() == 200 {
                let h: serde_json::Value = r.json().await.unwrap();
                assert_eq!(h["database"], "up", "{h}");
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never said ok; master log:\n{}",
            farm.master_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every directory under `dir` is 0700 and every file 0600.
fn assert_private_tree(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            assert_private_tree(&p);
        } else {
            assert_eq!(meta.mode() & 0o7777, 0o600, "{}", p.display());
        }
    }
}

#[tokio::test]
async fn the_embedded_database_admits_only_the_master() {
    let git = GitServer::start();
    let repo = git.repo("numbers");
    repo.numbered_branch(20);
    let mut farm = EmbeddedFarm::start().await;
    health_ok(&farm).await;
    assert_locked(&farm);

    // The master itself works through it: a project, a slave, a build that ends with its log
    // kept (how it ends is the slave's business, not the database's).
    let _slave = farm.slave("s1").await;
    farm.project("numbers", &repo.url, "main").await;
    let b = farm.request_build("numbers", json!({})).await;
    let done = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert!(done.state.is_terminal(), "{done:?}");
    assert!(!farm.log(b.id).await.is_empty());
    // What it stores stays the master's alone.
    assert_private_tree(&farm.dir.path().join("storage"));
    farm.stop().await;
}

/// The old way: `initdb --auth=trust`, started as the old master did.
fn make_trust_cluster(data_dir: &Path) {
    let pgdata = data_dir.join("postgres");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::set_permissions(&pgdata, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some((u, g)) = cluster_user() {
        std::os::unix::fs::chown(&pgdata, Some(u), Some(g)).unwrap();
    }
    let out = pg_tool("initdb")
        .arg("-D")
        .arg(&pgdata)
        .args([
            "-U",
            "kiln",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ])
        .output()
        .unwrap();
    ok(&out, "initdb --auth=trust");
    let out = pg_tool("pg_ctl")
        .arg("-D")
        .arg(&pgdata)
        .arg("-l")
        .arg(pgdata.join("server.log"))
        .arg("-o")
        .arg(format!(
            "-c listen_addresses='' -k {} -c unix_socket_permissions=0700",
            data_dir.join("run").display()
        ))
        .args(["-w", "-t", "60", "start"])
        .output()
        .unwrap();
    ok(&out, "pg_ctl start");
}

#[tokio::test]
async fn a_cluster_made_with_trust_is_secured_when_the_master_starts() {
    let mut farm = EmbeddedFarm::start().await;
    health_ok(&farm).await;
    farm.stop().await;

    // Replace the cluster with one an older master made (trust, no password file), left running
    // by that master, with data in it.
    let dir = farm.dir.path().to_path_buf();
    std::fs::remove_dir_all(dir.join("postgres")).unwrap();
    std::fs::remove_file(dir.join("postgres.password")).unwrap();
    make_trust_cluster(&dir);
    ok(
        &psql(&farm, None, None, "postgres", "CREATE DATABASE kiln"),
        "trust lets anyone on the socket in",
    );
    ok(
        &psql(
            &farm,
            None,
            None,
            "kiln",
            "CREATE TABLE left_by_the_old_master (x int); INSERT INTO left_by_the_old_master VALUES (42)",
        ),
        "old data",
    );

    farm.restart_master();
    health_ok(&farm).await;
    assert_locked(&farm);
    let log = farm.master_log();
    assert!(
        log.contains("password authentication instead of trust"),
        "{log}"
    );
    let out = psql(
        &farm,
        None,
        Some(&password(&farm)),
        "kiln",
        "SELECT x FROM left_by_the_old_master",
    );
    ok(&out, "the old data is still there");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    let (s, v) = farm.post("/api/slaves", json!({"name": "after"})).await;
    assert_eq!(s, 201, "{v}");

    // Idempotent: a killed master leaves the cluster running; the next one reuses it as it is.
    let first_password = password(&farm);
    farm.kill_master();
    assert!(
        pg_ctl_status(&dir.join("postgres")),
        "the cluster outlives a killed master"
    );
    farm.restart_master();
    health_ok(&farm).await;
    assert_eq!(password(&farm), first_password);
    assert_locked(&farm);
    let log = farm.master_log();
    assert_eq!(
        log.matches("securing the embedded PostgreSQL").count(),
        1,
        "{log}"
    );
    assert!(log.contains("reusing it"), "{log}");

    // A lost password file: the master sets a new password, and the old one stops working.
    farm.stop().await;
    std::fs::remove_file(dir.join("postgres.password")).unwrap();
    farm.restart_master();
    health_ok(&farm).await;
    assert_ne!(password(&farm), first_password);
    assert_locked(&farm);
    let out = psql(&farm, None, Some(&first_password), "kiln", "SELECT 1");
    assert!(!out.status.success(), "the lost password still works");
    assert!(farm.master_log().contains("a new password"));
    let slaves = farm.slaves().await;
    assert!(
        slaves.iter().any(|s| s.name == "after"),
        "the data survived"
    );
    farm.stop().await;
}
