//! What the benches read about processes and times (tests/benches/): wall-clock nanoseconds,
//! percentiles, a process's CPU time and resident memory from `/proc`, and (with
//! `KILN_PG_STATS` set) the statements a farm's database ran.

use std::time::{SystemTime, UNIX_EPOCH};

/// The statements run in one database, from PostgreSQL's `pg_stat_statements`: only when the
/// test cluster was started with `KILN_PG_STATS` set (it then loads the module; see `pg.rs`).
pub struct Statements {
    url: String,
}

impl Statements {
    /// Starts counting in the database at `url` (from zero); `None` without `KILN_PG_STATS`.
    pub fn start(url: &str) -> Option<Statements> {
        std::env::var_os("KILN_PG_STATS")?;
        let s = Statements {
            url: url.to_string(),
        };
        s.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .expect("pg_stat_statements (is KILN_PG_STATS set for the whole run?)");
        s.psql("SELECT pg_stat_statements_reset()")
            .expect("resetting pg_stat_statements");
        Some(s)
    }

    /// (statements, of which `BEGIN`) since the start, this database only.
    pub fn count(&self) -> (u64, u64) {
        let out = self
            .psql(
                "SELECT coalesce(sum(calls), 0)::bigint || ' ' || \
                        coalesce(sum(calls) FILTER (WHERE query = 'BEGIN'), 0)::bigint \
                 FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND query NOT LIKE '%pg_stat_statements%'",
            )
            .expect("reading pg_stat_statements");
        let mut n = out.split_whitespace().map(|v| v.parse().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0))
    }

    fn psql(&self, sql: &str) -> Result<String, String> {
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-d", &self.url, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Nanoseconds since the epoch (comparable with a build script's `date +%s%N`).
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// The `p` percentile (0.5, 0.99) of `v`, sorting it.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB; 0 when unreadable.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks ([`ticks_per_second`]); 0 when it is gone.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's ')' comes field 3 (state), so utime (14) and stime (15) are the 12th
    // and 13th there.
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    at(11) + at(12)
}

/// CPU ticks of every process named `comm` (all `postgres` processes, say).
pub fn cpu_ticks_of_all(comm: &str) -> u64 {
    crate::pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(cpu_ticks)
        .sum()
}

pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// CPU time the whole machine spent working (every process and the kernel, all cores), in clock
/// ticks ([`ticks_per_second`]): the first line of `/proc/stat` without `idle`, `iowait` and
/// `steal` (a virtual machine waiting for its host).
pub fn machine_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq (guest time is already in user).
    f.iter()
        .take(7)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum()
}

/// The cores this process may run on (its affinity and cgroup limits counted).
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}
