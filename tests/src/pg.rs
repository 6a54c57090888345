//! One private PostgreSQL cluster per test process, started from the system's binaries on a
//! unix socket in a temp dir; each farm gets a database of its own.

use crate::proc::die_with_parent;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Postgres {
    pub socket_dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    next_db: AtomicU32,
    _dir: tempfile::TempDir,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries (/usr/lib/postgresql) are needed for the tests")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, b): &(u32, PathBuf)| b.join("postgres").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/postgres")
        .1
}

fn unprivileged() -> Option<(u32, u32)> {
    // SAFETY: plain libc lookups, copied out at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root needs a 'postgres' user for the test cluster"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

static CLUSTER_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_cluster_dir() {
    if let Some(d) = CLUSTER_DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Removes the clusters of test processes that are gone (a killed run cannot clean up after
/// itself; each cluster is about a gigabyte).
fn sweep_stale_clusters() {
    let tmp = std::env::var_os("KILN_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("kiln-pg-") {
            continue;
        }
        let pid_file = e.path().join("data/postmaster.pid");
        let alive = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .is_some_and(crate::alive);
        // A cluster being set up has no pid file yet: only dirs older than a minute go.
        let data = e.path().join("data");
        let old = std::fs::metadata(if data.exists() { data } else { e.path() })
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        if !alive && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Postgres {
    /// The cluster of this test process, started on first use.
    pub fn shared() -> &'static Postgres {
        static PG: OnceLock<Postgres> = OnceLock::new();
        PG.get_or_init(Postgres::start)
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        if let Some((u, g)) = self.run_as {
            c.uid(u).gid(g);
        }
        c
    }

    fn start() -> Postgres {
        sweep_stale_clusters();
        let dir = crate::tempdir("kiln-pg-");
        // The cluster lives in a static, which is never dropped: its dir goes when the process
        // exits (the server itself gets SIGINT then, see below).
        let _ = CLUSTER_DIR.set(dir.path().to_path_buf());
        // SAFETY: registers a plain function without captures.
        unsafe { libc::atexit(remove_cluster_dir) };
        let pg = Postgres {
            socket_dir: dir.path().join("sock"),
            bin: pg_bin(),
            run_as: unprivileged(),
            next_db: AtomicU32::new(1),
            _dir: dir,
        };
        let data = pg._dir.path().join("data");
        for d in [&pg.socket_dir, &data] {
            std::fs::create_dir_all(d).unwrap();
            if let Some((u, g)) = pg.run_as {
                std::os::unix::fs::chown(d, Some(u), Some(g)).unwrap();
            }
        }
        let out = pg
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "kiln",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
                "--no-sync",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Started from a thread that lives as long as the process, so PDEATHSIG fires only when
        // the whole test process ends.
        let mut c = pg.cmd("postgres");
        c.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&pg.socket_dir)
            .args([
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
            ])
            // For the benches' statement counts (`measure::Statements`).
            .args(if std::env::var_os("KILN_PG_STATS").is_some() {
                vec![
                    "-c",
                    "shared_preload_libraries=pg_stat_statements",
                    "-c",
                    "pg_stat_statements.track=all",
                ]
            } else {
                vec![]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut c, libc::SIGINT);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let child = c.spawn();
            let ok = child.is_ok();
            tx.send(child.map(|_| ()).map_err(|e| e.to_string()))
                .unwrap();
            if ok {
                loop {
                    std::thread::park();
                }
            }
        });
        rx.recv().unwrap().expect("starting postgres");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pg.socket_dir.join(".s.PGSQL.5432").exists() {
            assert!(Instant::now() < deadline, "postgres did not start in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The socket file appears slightly before connections are accepted.
        while !pg.psql("postgres", "SELECT 1") {
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    /// Runs `sql` in database `db` as the superuser; true if it succeeded.
    pub fn psql(&self, db: &str, sql: &str) -> bool {
        Command::new("psql")
            .args(["-X", "-q", "-U", "kiln", "-h"])
            .arg(&self.socket_dir)
            .args(["-d", db, "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// A new empty database; returns its URL.
    pub fn new_database(&self) -> String {
        let name = format!(
            "kiln_test_{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::SeqCst)
        );
        assert!(
            self.psql("postgres", &format!("CREATE DATABASE {name}")),
            "CREATE DATABASE {name}"
        );
        url_for(&self.socket_dir, &name)
    }
}

pub fn url_for(socket: &Path, db: &str) -> String {
    format!("postgres://kiln@localhost/{db}?host={}", socket.display())
}
