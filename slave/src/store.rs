//! The slave's local store: one directory per build under `<work dir>/builds/{id}/`, so a build
//! outlives the daemon that started it.
//!
//! | file | written by | holds |
//! |---|---|---|
//! | `input.json` | daemon, before the runner starts | the job and what the runner needs (arch, mirror, apt options) |
//! | `runner.json` | daemon, after spawning and before telling the runner to start | the runner's pid (= its process group and session), the boot and its start time |
//! | `sandbox.json` | daemon, before spawning | the build's sandbox: its host ids and cgroup |
//! | `daemon.json` | daemon | log lines acknowledged by the master (and the byte offset), the cancel reason, artifacts uploaded, the final outcome |
//! | `acked` | daemon's ack writer, in place | the master's latest log acknowledgement (24 bytes, checked), newer than `daemon.json`'s when larger |
//! | `log` | runner (an inherited descriptor), then daemon | the build log, one line per line, `\n`-terminated |
//! | `sandbox/` | the build (0700, its own host user) | the only part of the work dir a build sees |
//! | `sandbox/input.json` | daemon | the runner's copy of the input, without the upload token |
//! | `sandbox/checkout.tar` | daemon, from its git cache | the build's commit, unpacked into `src/` (then removed) by the runner |
//! | `sandbox/state.json` | runner | phase, commit, the backend's progress, and at the end its result |
//! | `sandbox/src/`, `output/`, `scratch/`, `home/`, `tmp/` | runner | the branch, the artifacts, scratch space, `$HOME`, `/tmp` |
//!
//! The build dir itself is the daemon's (0700): what the daemon trusts (its record, the log it
//! ships) is out of the build's reach; what is in `sandbox/` is the build's word and is read
//! without following links. JSON files are replaced atomically (write to a temp file, then
//! rename). `acked` is overwritten in place instead: it changes with every log frame the master
//! stores, and a new file each time costs an inode (slow on some file systems); a torn or
//! missing `acked` only means lines sent again after a restart, which the master skips.

use kiln_shared::frames::{Job, Outcome};
use kiln_shared::BuildId;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunnerInput {
    pub job: Job,
    pub arch: String,
    pub slave: String,
    pub mirror: Option<String>,
    #[serde(default)]
    pub security_mirror: Option<String>,
    pub apt_options: Vec<String>,
    /// What the host runs through binfmt, as the daemon saw it.
    #[serde(default)]
    pub emulates: Vec<String>,
    /// The commit the daemon already exported from its git cache into `sandbox/checkout.tar`
    /// (`git_cache.rs`): the runner unpacks it instead of fetching.
    #[serde(default)]
    pub checkout: Option<String>,
    /// The slave's package cache (`apt_cache.rs`), as an http proxy for apt.
    #[serde(default)]
    pub apt_proxy: Option<String>,
    /// How many builds the slave runs at once (`slave.capacity`): a build takes at most its
    /// share of the host's memory (`backend/in_memory.rs`).
    #[serde(default = "one")]
    pub builds_at_once: u32,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Fetching,
    Running,
    /// The runner has finished; `result` says how.
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerResult {
    /// The backend succeeded; its files are in `output/`, waiting to be uploaded.
    BackendSucceeded,
    Failed {
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunnerState {
    pub phase: Phase,
    pub commit: Option<String>,
    pub result: Option<RunnerResult>,
    /// What the backend says it is doing now (a step, a percentage; `exec`'s protocol): the
    /// daemon's watcher sends it to the master as `Progress` whenever it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<(String, Option<u8>)>,
}

/// Longest step text sent as a build's progress.
pub const MAX_PHASE: usize = 200;

/// A build's progress as the master may be told it (`state.json` is the build's word): the step
/// on one line of at most [`MAX_PHASE`] characters, the percentage at most 100.
pub fn clean_progress((phase, percent): (String, Option<u8>)) -> (String, Option<u8>) {
    let phase: String = phase
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_PHASE)
        .collect();
    (phase.trim().to_string(), percent.map(|p| p.min(100)))
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// The master has stored every line before this sequence number…
    pub acked: u64,
    /// …which ends at this byte offset of `log`.
    pub acked_offset: u64,
    pub cancel_reason: Option<String>,
    /// The master said to forget the build: stop it and report nothing.
    pub forgotten: bool,
    pub uploaded: Vec<String>,
    /// The sha256 of each artifact uploaded (as the slave sent it and the master stored it), for
    /// SHA256SUMS after a restart.
    #[serde(default)]
    pub uploaded_sha256: std::collections::BTreeMap<String, String>,
    /// The outcome, once known (kept until the master acknowledges it).
    pub outcome: Option<Outcome>,
}

#[derive(Clone, Debug)]
pub struct BuildDir {
    pub id: BuildId,
    pub path: PathBuf,
}

fn read_json<T: DeserializeOwned>(p: &Path) -> io::Result<Option<T>> {
    match read_no_follow(p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a file that is not a symbolic link (files in `sandbox/` are the build's to replace).
pub fn read_no_follow(p: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            p.display()
        )));
    }
    let mut v = vec![];
    f.by_ref().take(16 << 20).read_to_end(&mut v)?;
    Ok(v)
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> io::Result<()> {
    let tmp = p.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(v).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, p)
}

impl BuildDir {
    pub fn new(work_dir: &Path, id: BuildId) -> Self {
        BuildDir {
            id,
            path: work_dir.join("builds").join(id.to_string()),
        }
    }

    /// Every build directory under the work dir, oldest id first.
    pub fn all(work_dir: &Path) -> Vec<BuildDir> {
        let mut v: Vec<BuildDir> = std::fs::read_dir(work_dir.join("builds"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let id: i64 = e.file_name().to_str()?.parse().ok()?;
                Some(BuildDir {
                    id: BuildId(id),
                    path: e.path(),
                })
            })
            .collect();
        v.sort_by_key(|b| b.id);
        v
    }

    pub fn log(&self) -> PathBuf {
        self.path.join("log")
    }
    /// The build's own directory, the only part of the work dir it sees.
    pub fn sandbox(&self) -> PathBuf {
        self.path.join("sandbox")
    }
    pub fn src(&self) -> PathBuf {
        self.sandbox().join("src")
    }
    /// The export of the build's commit from the daemon's git cache, until the runner unpacks it.
    pub fn checkout_archive(&self) -> PathBuf {
        self.sandbox().join("checkout.tar")
    }
    pub fn output(&self) -> PathBuf {
        self.sandbox().join("output")
    }
    pub fn scratch(&self) -> PathBuf {
        self.sandbox().join("scratch")
    }
    pub fn home(&self) -> PathBuf {
        self.sandbox().join("home")
    }

    pub fn read_input(&self) -> io::Result<Option<RunnerInput>> {
        read_json(&self.path.join("input.json"))
    }
    pub fn write_input(&self, v: &RunnerInput) -> io::Result<()> {
        write_json(&self.path.join("input.json"), v)
    }
    /// The runner's copy of the input (inside the sandbox; no upload token).
    pub fn read_runner_input(&self) -> io::Result<Option<RunnerInput>> {
        read_json(&self.sandbox().join("input.json"))
    }
    pub fn write_runner_input(&self, v: &RunnerInput) -> io::Result<()> {
        write_json(&self.sandbox().join("input.json"), v)
    }
    pub fn read_sandbox(&self) -> io::Result<Option<crate::sandbox::Record>> {
        read_json(&self.path.join("sandbox.json"))
    }
    pub fn write_sandbox(&self, v: &crate::sandbox::Record) -> io::Result<()> {
        write_json(&self.path.join("sandbox.json"), v)
    }
    /// The runner's pid, if that process is still the one that was started: the record holds
    /// the boot and the process's start time, so a pid from before a reboot, or one the kernel
    /// gave to another process since, is never waited on or signalled. (A bare pid, as daemons
    /// before this one wrote it, is taken as it is.)
    pub fn read_pid(&self) -> io::Result<Option<i32>> {
        Ok(
            match read_json::<RunnerPid>(&self.path.join("runner.json"))? {
                None => None,
                Some(RunnerPid::Bare(pid)) => Some(pid),
                Some(RunnerPid::Started {
                    pid,
                    boot_id,
                    start_time,
                }) => (this_boot().as_deref() == Some(boot_id.as_str())
                    && process_start_time(pid) == Some(start_time))
                .then_some(pid),
            },
        )
    }
    pub fn write_pid(&self, pid: i32) -> io::Result<()> {
        let record = match (this_boot(), process_start_time(pid)) {
            (Some(boot_id), Some(start_time)) => RunnerPid::Started {
                pid,
                boot_id,
                start_time,
            },
            _ => RunnerPid::Bare(pid),
        };
        write_json(&self.path.join("runner.json"), &record)
    }
    pub fn read_state(&self) -> io::Result<Option<RunnerState>> {
        read_json(&self.sandbox().join("state.json"))
    }
    pub fn write_state(&self, v: &RunnerState) -> io::Result<()> {
        write_json(&self.sandbox().join("state.json"), v)
    }
    /// What the image carries, as the runner read it (`sandbox/image-record.json`: the build's
    /// word, read bounded and checked again by the master).
    pub fn read_image_record(&self) -> io::Result<Option<kiln_shared::record::BuildRecord>> {
        read_json(&self.sandbox().join("image-record.json"))
    }
    pub fn write_image_record(&self, v: &kiln_shared::record::BuildRecord) -> io::Result<()> {
        write_json(&self.sandbox().join("image-record.json"), v)
    }
    /// `daemon.json`, with the ack from `acked` when that one is further on.
    pub fn read_record(&self) -> io::Result<DaemonRecord> {
        let mut r: DaemonRecord = read_json(&self.path.join("daemon.json"))?.unwrap_or_default();
        if let Some((acked, offset)) = read_no_follow(&self.path.join(ACK_FILE))
            .ok()
            .and_then(|b| decode_ack(&b))
        {
            if acked > r.acked {
                r.acked = acked;
                r.acked_offset = offset;
            }
        }
        Ok(r)
    }
    /// Records the master's latest log acknowledgement in `acked`, in place.
    pub fn write_ack(&self, acked: u64, offset: u64) -> io::Result<()> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path.join(ACK_FILE))?
            .write_all_at(&encode_ack(acked, offset), 0)
    }
    pub fn write_record(&self, v: &DaemonRecord) -> io::Result<()> {
        write_json(&self.path.join("daemon.json"), v)
    }

    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

const ACK_FILE: &str = "acked";

/// `acked`'s 24 bytes: the line number, the byte offset, and a check that tells a torn write.
fn encode_ack(acked: u64, offset: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&acked.to_le_bytes());
    b[8..16].copy_from_slice(&offset.to_le_bytes());
    b[16..].copy_from_slice(&ack_check(acked, offset).to_le_bytes());
    b
}

fn decode_ack(b: &[u8]) -> Option<(u64, u64)> {
    let b: &[u8; 24] = b.try_into().ok()?;
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let (acked, offset) = (word(0), word(8));
    (word(16) == ack_check(acked, offset)).then_some((acked, offset))
}

fn ack_check(acked: u64, offset: u64) -> u64 {
    (acked.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ offset.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .rotate_left(29)
        ^ 0x6b69_6c6e_2d61_636b
}

/// `runner.json`: which process runs the build.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RunnerPid {
    Started {
        pid: i32,
        /// `/proc/sys/kernel/random/boot_id` when it was started.
        boot_id: String,
        /// Its start time, in clock ticks after boot (`/proc/PID/stat`, field 22).
        start_time: u64,
    },
    Bare(i32),
}

/// This boot's id.
fn this_boot() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// When the process `pid` started (clock ticks after boot), if it exists.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold anything): field 3 on, so the
    // start time (field 22) is the 20th.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a process exists and has not ended (a zombie has ended).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Signals a whole process group.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Whether any process of the group is still there.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0 && any_member_not_zombie(pgid)
}

fn any_member_not_zombie(pgid: i32) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    let mut f = rest.split_whitespace();
                    let state = f.next()?;
                    let _ppid = f.next()?;
                    let pg: i32 = f.next()?.parse().ok()?;
                    Some(pg == pgid && state != "Z" && state != "X")
                })
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_place_ack_counts_when_further_on_and_whole() {
        let d = tempfile::tempdir().unwrap();
        let dir = BuildDir {
            id: BuildId(7),
            path: d.path().to_path_buf(),
        };
        let record = DaemonRecord {
            acked: 5,
            acked_offset: 50,
            outcome: Some(Outcome::Succeeded),
            ..DaemonRecord::default()
        };
        dir.write_record(&record).unwrap();
        dir.write_ack(9, 90).unwrap();
        let r = dir.read_record().unwrap();
        assert_eq!(
            (r.acked, r.acked_offset, r.outcome),
            (9, 90, Some(Outcome::Succeeded))
        );
        // Overwritten in place: one file, whatever the number of acks.
        dir.write_ack(12, 120).unwrap();
        assert_eq!(std::fs::metadata(d.path().join("acked")).unwrap().len(), 24);
        assert_eq!(dir.read_record().unwrap().acked, 12);
        // An older ack than daemon.json's does not move it back.
        dir.write_ack(3, 30).unwrap();
        assert_eq!(dir.read_record().unwrap().acked, 5);
        // Torn or garbage: not believed (the lines are sent again; the master skips them).
        let mut torn = encode_ack(40, 400);
        torn[3] ^= 1;
        std::fs::write(d.path().join("acked"), torn).unwrap();
        assert_eq!(dir.read_record().unwrap().acked, 5);
        std::fs::write(d.path().join("acked"), &encode_ack(40, 400)[..20]).unwrap();
        assert_eq!(dir.read_record().unwrap().acked, 5);
    }

    #[test]
    fn a_runner_pid_counts_only_for_the_process_that_was_started() {
        let d = tempfile::tempdir().unwrap();
        let dir = BuildDir {
            id: BuildId(7),
            path: d.path().to_path_buf(),
        };
        let me = std::process::id() as i32;
        dir.write_pid(me).unwrap();
        assert_eq!(dir.read_pid().unwrap(), Some(me));
        let written = std::fs::read_to_string(d.path().join("runner.json")).unwrap();
        assert!(written.contains("boot_id"), "{written}");
        // The same pid from another boot, or another process with that pid: not ours.
        let other_boot = RunnerPid::Started {
            pid: me,
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            start_time: process_start_time(me).unwrap(),
        };
        write_json(&d.path().join("runner.json"), &other_boot).unwrap();
        assert_eq!(dir.read_pid().unwrap(), None);
        let reused = RunnerPid::Started {
            pid: me,
            boot_id: this_boot().unwrap(),
            start_time: process_start_time(me).unwrap() + 1,
        };
        write_json(&d.path().join("runner.json"), &reused).unwrap();
        assert_eq!(dir.read_pid().unwrap(), None);
        // A record from an older daemon: a bare pid, taken as it is.
        std::fs::write(d.path().join("runner.json"), format!("{me}")).unwrap();
        assert_eq!(dir.read_pid().unwrap(), Some(me));
    }
}
