//! The daemon's side of a build: start its runner as a process group of its own, watch it, stop
//! it when the master says so, upload what it produced, and record the outcome — and, after a
//! restart of the daemon, re-adopt every build left in the work dir and carry on.

use crate::cgroup;
use crate::outbox::Outbox;
use crate::process::Log;
use crate::sandbox::{self, Record};
use crate::settings::Settings;
use crate::store::{self, BuildDir, DaemonRecord, RunnerInput, RunnerResult};
use crate::upload;
use kiln_shared::frames::{Job, Outcome};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Env {
    pub settings: Settings,
    pub outbox: Outbox,
    pub http: reqwest::Client,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
    pub apt_options: Vec<String>,
    /// This program, started again as `run-build` for each build.
    pub exe: PathBuf,
    /// Taking no new builds; exit once the held ones are reported.
    pub draining: AtomicBool,
    /// The master's lost time-out from its last welcome (0: not connected yet); reconnecting
    /// never waits more than a quarter of it, so a slave is back well before its builds count as
    /// lost.
    pub lost_timeout_secs: std::sync::atomic::AtomicU32,
    /// The TLS context for the master (WebSocket and uploads share it).
    pub tls: Arc<rustls::ClientConfig>,
    /// The slave's token (replaced when the master rotates it).
    pub token: std::sync::Mutex<String>,
    /// The daemon's own cgroup (v2), under which each build gets one; none: PID namespaces only.
    pub cgroups: Option<PathBuf>,
    /// The git cache (`slave.git_cache_bytes` > 0): the daemon fetches and exports each build's
    /// commit; without it, the runner fetches inside the sandbox.
    pub git_cache: Option<crate::git_cache::GitCache>,
    /// The package cache its builds' apt goes through (`slave.apt_cache_bytes` > 0).
    pub apt_cache: Option<crate::apt_cache::AptCache>,
    /// Per project, the last mmdebstrap root file system (`slave.rootfs_cache_bytes` > 0).
    pub rootfs_cache: Option<crate::rootfs_cache::RootfsCache>,
    /// The daemon's inotify instance (none: build files are looked at once a second).
    pub events: Option<Arc<crate::events::Events>>,
}

impl Env {
    pub fn token(&self) -> String {
        self.token.lock().expect("token poisoned").clone()
    }

    /// Takes a rotated token: used from the next connection on, and kept where the old one was
    /// (or in `slave.token` in the work dir).
    pub fn rotate_token(&self, token: String) {
        let path = self
            .settings
            .token_file
            .clone()
            .unwrap_or_else(|| self.settings.work_dir.join(crate::settings::TOKEN_FILE));
        match crate::register::write_private(&path, &format!("{token}\n")) {
            Ok(()) => tracing::info!(
                "the master rotated this slave's token; kept in {}",
                path.display()
            ),
            Err(e) => tracing::error!(
                "the master rotated this slave's token but it cannot be kept: {e:#}"
            ),
        }
        *self.token.lock().expect("token poisoned") = token;
    }
}

/// How long a cancelled build gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// How often a watcher looks at its build even when no event came: a safety net only (events
/// wake it: the runner's exit, its state file replaced, a cancel request).
const SAFETY_NET: Duration = crate::events::FALLBACK_POLL;

/// The only variables of the daemon's environment a build inherits: what tools need to run
/// (paths, locale, time zone, temp dir, proxies). Never the daemon's own (`KILN_SLAVE_TOKEN`,
/// `KILN_CONFIG`, …); the job's own `KILN_*` variables are set by the backend.
pub const BUILD_ENV_ALLOWED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "TZ",
    "TERM",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// The build's environment: the allowed variables of the daemon's, nothing else; `HOME` is the
/// build's own and temp files go to its private `/tmp`.
pub fn build_env(dir: &BuildDir) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| BUILD_ENV_ALLOWED.contains(&k.as_str()) || k.starts_with("LC_"))
        .filter(|(k, _)| k != "HOME" && k != "TMPDIR")
        .collect();
    env.push(("HOME".into(), dir.home().to_string_lossy().into_owned()));
    env.push(("TMPDIR".into(), "/tmp".into()));
    env
}

/// Sets up the build's sandbox (ids, cgroup, its own dir) and records it for later restarts.
fn prepare_sandbox(env: &Env, dir: &BuildDir, input: &RunnerInput) -> std::io::Result<Record> {
    let taken: Vec<u32> = BuildDir::all(&env.settings.work_dir)
        .iter()
        .filter(|d| d.id != dir.id)
        .filter_map(|d| d.read_sandbox().ok().flatten()?.slot)
        .collect();
    let (ids, slot) =
        sandbox::choose_ids(env.settings.sandbox, env.settings.sandbox_uid_base, &taken);
    let cgroup = env.cgroups.as_ref().and_then(|parent| {
        // Unique per work dir: two daemons on one machine (or two farms' build 1) never share.
        let name = format!("kiln-build-{}-{:016x}", dir.id, fnv1a(dir.path.as_os_str().as_encoded_bytes()));
        cgroup::create(parent, &name)
            .map_err(|e| tracing::warn!(build = %dir.id, "no cgroup for the build ({e}); its PID namespace still ends it"))
            .ok()
    });
    let record = Record { ids, slot, cgroup };
    dir.write_sandbox(&record)?;
    sandbox::prepare_dir(&dir.sandbox())?;
    // The runner's copy of the input, without what only the daemon needs.
    let mut theirs = input.clone();
    theirs.job.upload_token = String::new();
    dir.write_runner_input(&theirs)?;
    sandbox::hand_over(&dir.sandbox(), record.owner())?;
    Ok(record)
}

/// A stable 64-bit hash (FNV-1a) for names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Starts the build's runner in its sandbox. The runner waits on its stdin for the word to
/// start: [`tell_to_start`] once its pid is recorded.
fn spawn_runner(
    env: &Env,
    dir: &BuildDir,
    record: &Record,
) -> std::io::Result<(tokio::process::Child, std::io::PipeWriter)> {
    use std::os::unix::fs::OpenOptionsExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.log())?;
    // This program, opened now: in the sandbox its path may be hidden (a work dir or an install
    // below /tmp), so the runner is started from the open file.
    let exe = std::fs::File::open(&env.exe)?;
    let (start_r, start_w) = std::io::pipe()?;
    let mut c = tokio::process::Command::new(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&exe)
    ));
    c.env_clear()
        .envs(build_env(dir))
        .arg("run-build")
        .arg("--dir")
        .arg(&dir.path)
        .stdin(start_r)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    let mut hide = vec![];
    if let Some(t) = &env.settings.token_file {
        hide.push(t.clone());
    }
    if let Some(c) = &env.settings.config_file {
        hide.push(c.clone());
    }
    let layout = sandbox::Layout {
        work_dir: env.settings.work_dir.clone(),
        sandbox_dir: dir.sandbox(),
        hide,
    };
    let confined = sandbox::confine(&mut c, record, &layout)?;
    let spawned = c.spawn();
    // The command holds the child's ends of the id-map handshake: drop it before waiting on it.
    drop(c);
    drop(exe);
    let handshake = confined.finish();
    let child = spawned?;
    handshake?;
    Ok((child, start_w))
}

/// Tells a runner whose pid is on record to start (`runner::told_to_start`).
fn tell_to_start(build: kiln_shared::BuildId, mut start: std::io::PipeWriter) {
    if let Err(e) = std::io::Write::write_all(&mut start, b"1") {
        // It has ended already: the watch sees it go and settles the build.
        tracing::warn!(%build, "cannot tell the runner to start: {e}");
    }
}

/// Ends every process of a build: its cgroup if it has one, else its process group (the PID
/// namespace takes the rest with its first process). Waits until they are gone.
fn end_processes(dir: &BuildDir, pid: Option<i32>) {
    if let Some(p) = pid {
        store::kill_group(p, libc::SIGKILL);
    }
    if let Some(cg) = dir.read_sandbox().ok().flatten().and_then(|r| r.cgroup) {
        if !cgroup::kill_all(&cg, Duration::from_secs(30)) {
            tracing::error!(build = %dir.id, "processes of the build are still in {} after 30 s", cg.display());
        }
    } else if let Some(p) = pid {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_millis(1);
        while store::group_alive(p) && Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// Takes a new job from the master.
pub fn start(env: &Arc<Env>, job: Job) {
    let build = job.build;
    if env.outbox.holds(build) {
        tracing::warn!(%build, "assigned a build it already holds");
        return;
    }
    let dir = BuildDir::new(&env.settings.work_dir, build);
    let _ = dir.remove();
    let input = RunnerInput {
        job: job.clone(),
        arch: env.settings.arch.clone(),
        slave: env.settings.name.clone(),
        mirror: env.mirror.clone(),
        security_mirror: env.security_mirror.clone(),
        apt_options: env.apt_options.clone(),
        emulates: crate::machine::emulated_arches(),
        checkout: None,
        apt_proxy: env.apt_cache.as_ref().map(|c| c.proxy.clone()),
        builds_at_once: env.settings.capacity,
    };
    let prepared = private_dir(&dir.path)
        .and_then(|_| dir.write_input(&input))
        .and_then(|_| prepare_sandbox(env, &dir, &input));
    env.outbox.add(dir.clone(), DaemonRecord::default(), None);
    env.outbox.progress(build, "fetching", None);
    match prepared {
        Ok(record) => {
            if let Ok(log) = Log::open(&dir.log()) {
                log.note(&format!("sandbox: {}", sandbox::describe(&record.ids)));
            }
            tokio::spawn(launch(env.clone(), dir, record, job));
        }
        Err(e) => not_started(env, &dir, e),
    }
}

/// Fetches the build's commit into the git cache and exports it (when the slave has a cache),
/// then starts the runner and watches it.
async fn launch(env: Arc<Env>, dir: BuildDir, record: Record, job: Job) {
    let build = dir.id;
    offer_rootfs(&env, &dir, &record, &job).await;
    if let Some(cache) = &env.git_cache {
        // A cancel does not wait for the fetch (nor for another build's): git is killed, and a
        // mirror left half-fetched is fetched afresh by the next build.
        let exported = tokio::select! {
            r = export(cache, &dir, &record, &job) => r,
            _ = cancelled(&env.outbox, build) => return watch(env, dir, None, None).await,
        };
        match exported {
            Ok(commit) => {
                env.outbox.started(build, commit);
                env.outbox.progress(build, "building", None);
            }
            Err(reason) => {
                // Settled like a runner that failed to fetch: the reason, the log, the outcome.
                let state = store::RunnerState {
                    phase: store::Phase::Done,
                    commit: None,
                    result: Some(RunnerResult::Failed { reason }),
                    progress: None,
                };
                if let Err(e) = dir.write_state(&state) {
                    tracing::error!(%build, "cannot record the build's state: {e}");
                }
                return watch(env, dir, None, None).await;
            }
        }
        if env.outbox.cancel_requested(build) {
            return watch(env, dir, None, None).await;
        }
    }
    match spawn_runner(&env, &dir, &record) {
        Ok((mut child, start)) => {
            let pid = child.id().map(|p| p as i32);
            if let Some(p) = pid {
                if let Err(e) = dir.write_pid(p) {
                    // A runner not on record could not be found again after a restart: it is
                    // not told to start, so it ends without touching the build.
                    tracing::error!(%build, "cannot record the runner's pid: {e}");
                    drop(start);
                    let _ = child.wait().await;
                    let e =
                        std::io::Error::new(e.kind(), format!("recording the runner's pid: {e}"));
                    return not_started(&env, &dir, e);
                }
            }
            tell_to_start(build, start);
            tracing::info!(%build, project = %job.project, ?pid, "build started");
            watch(env.clone(), dir, pid, Some(child)).await
        }
        Err(e) => not_started(&env, &dir, e),
    }
}

/// Puts the project's entry of the root file system cache, if it has one, in the build's
/// sandbox (`rootfs_cache.rs`); the build decides whether it fits.
async fn offer_rootfs(env: &Arc<Env>, dir: &BuildDir, record: &Record, job: &Job) {
    if env.rootfs_cache.is_none() {
        return;
    }
    let (env2, sandbox, project, owner) = (
        env.clone(),
        dir.sandbox(),
        job.project.clone(),
        record.owner(),
    );
    let offered = tokio::task::spawn_blocking(move || {
        let cache = env2.rootfs_cache.as_ref().expect("checked");
        let offered = cache.offer(&project, &sandbox)?;
        if offered {
            sandbox::hand_over(&sandbox.join(crate::rootfs_cache::SANDBOX_DIR), owner)?;
        }
        Ok::<_, std::io::Error>(offered)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match offered {
        Ok(true) => {
            tracing::debug!(build = %dir.id, "offered the project's cached root file system")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(build = %dir.id, "cannot offer the cached root file system: {e}"),
    }
}

/// After a successful build: its root file system kept for the project's next builds, when it
/// computed a new cache key.
async fn keep_rootfs(env: &Arc<Env>, dir: &BuildDir, log: &Log) {
    if env.rootfs_cache.is_none() {
        return;
    }
    let Ok(Some(input)) = dir.read_input() else {
        return;
    };
    let (env2, d) = (env.clone(), dir.clone());
    let kept = tokio::task::spawn_blocking(move || {
        let cache = env2.rootfs_cache.as_ref().expect("checked");
        cache.keep(&input.job.project, &d.sandbox(), &d.output())
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match kept {
        Ok(Some((size, removed))) => {
            log.note(&format!(
                "rootfs cache: kept this root file system ({size} bytes) for the project's next builds{}",
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; removed {} least recently used entr{} past slave.rootfs_cache_bytes",
                        removed.len(),
                        if removed.len() == 1 { "y" } else { "ies" }
                    )
                }
            ));
        }
        Ok(None) => {}
        Err(e) => log.note(&format!(
            "rootfs cache: could not keep this root file system: {e}"
        )),
    }
}

/// Returns once the master asked to stop the build (or the build is no longer held).
async fn cancelled(o: &Outbox, build: kiln_shared::BuildId) {
    if let Some(mut rx) = o.cancel_watch(build) {
        let _ = rx.wait_for(|asked| *asked).await;
    }
}

/// The daemon's part of a fetch with the git cache: the mirror brought up to the commit, the
/// commit exported into the sandbox, and the runner told to unpack it. Returns the commit id.
async fn export(
    cache: &crate::git_cache::GitCache,
    dir: &BuildDir,
    record: &Record,
    job: &Job,
) -> Result<String, String> {
    let log =
        Log::open(&dir.log()).map_err(|e| format!("the slave cannot write the build log: {e}"))?;
    let commit = cache
        .export(
            &job.branch_url,
            &job.branch,
            job.commit.as_deref(),
            job.allow_file_urls,
            &dir.checkout_archive(),
            &log,
        )
        .await
        .map_err(|e| e.to_string())?;
    let local = |e: std::io::Error| format!("the slave cannot prepare the build's checkout: {e}");
    let mut theirs = dir
        .read_runner_input()
        .map_err(local)?
        .ok_or_else(|| "the build's sandbox/input.json vanished".to_string())?;
    theirs.checkout = Some(commit.clone());
    dir.write_runner_input(&theirs).map_err(local)?;
    sandbox::hand_over(&dir.sandbox(), record.owner()).map_err(local)?;
    Ok(commit)
}

/// The build's sandbox or runner could not be started: the build fails saying so.
fn not_started(env: &Arc<Env>, dir: &BuildDir, e: std::io::Error) {
    let reason = format!(
        "the slave cannot start the build's sandbox in {}: {e} (see slave.sandbox in docs/security.md)",
        dir.path.display()
    );
    if let Ok(log) = Log::open(&dir.log()) {
        log.note(&reason);
    }
    if let Some(cg) = dir.read_sandbox().ok().flatten().and_then(|r| r.cgroup) {
        cgroup::kill_all(&cg, Duration::from_secs(5));
    }
    env.outbox.finished(dir.id, Outcome::Failed { reason });
}

/// The daemon's own directories: 0700, whoever else is on the machine.
fn private_dir(p: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
}

/// Re-adopts the builds a previous daemon left in the work dir.
pub fn adopt_all(env: &Arc<Env>) {
    for dir in BuildDir::all(&env.settings.work_dir) {
        let input = match dir.read_input() {
            Ok(Some(i)) => i,
            other => {
                tracing::warn!(build = %dir.id, "dropping an unreadable build dir ({other:?})");
                let _ = dir.remove();
                continue;
            }
        };
        let record = dir.read_record().unwrap_or_default();
        let commit = dir.read_state().ok().flatten().and_then(|s| s.commit);
        let ended = record.outcome.is_some();
        env.outbox.add(dir.clone(), record, commit);
        let pid = dir.read_pid().ok().flatten();
        tracing::info!(build = %dir.id, project = %input.job.project, ?pid, ended, "re-adopted build");
        if ended {
            continue;
        }
        // Stopped before its runner started: while its sandbox was being prepared (the previous
        // daemon may have exited half-way through `start`), during the fetch into the git
        // cache, or between spawning the runner and telling it to start (such a runner writes
        // nothing and ends by itself: `runner::told_to_start`). Prepared again from the start
        // and launched afresh; whatever is left in the build's cgroup is ended first.
        let never_started = pid.is_none() && matches!(dir.read_state(), Ok(None));
        if never_started {
            tracing::info!(build = %dir.id, "its runner never started; preparing it again");
            end_processes(&dir, None);
            launch_again(env, dir, input);
        } else {
            tokio::spawn(watch(env.clone(), dir, pid, None));
        }
    }
}

/// Prepares a build whose runner never started from the start again, and launches it.
fn launch_again(env: &Arc<Env>, dir: BuildDir, mut input: RunnerInput) {
    if let Ok(log) = Log::open(&dir.log()) {
        log.note("the slave restarted before the build's runner started; starting it again");
    }
    // A commit already exported (and reported as started) is the one built: the branch may
    // have moved since.
    if let Some(c) = dir
        .read_runner_input()
        .ok()
        .flatten()
        .and_then(|i| i.checkout)
    {
        input.job.commit = Some(c);
    }
    match prepare_sandbox(env, &dir, &input) {
        Ok(record) => {
            tokio::spawn(launch(env.clone(), dir, record, input.job));
        }
        Err(e) => not_started(env, &dir, e),
    }
}

/// Follows a runner until it ends (stopping it if asked), then settles the build's outcome.
///
/// Woken by events only: the runner's exit (the child's wait, or for an adopted runner, which is
/// not the daemon's child, its pidfd), its `state.json` replaced (inotify: the commit it fetched,
/// the backend's progress), a cancel request; plus a slow safety-net look.
async fn watch(
    env: Arc<Env>,
    dir: BuildDir,
    pid: Option<i32>,
    child: Option<tokio::process::Child>,
) {
    let build = dir.id;
    let o = &env.outbox;
    // A runner this daemon did not spawn: the previous daemon's.
    let adopted = child.is_none() && pid.is_some();
    let state_written = Arc::new(tokio::sync::Notify::new());
    let _state_watch = env.events.as_ref().and_then(|e| {
        e.watch(
            &dir.sandbox(),
            "state.json",
            crate::events::REPLACED,
            state_written.clone(),
        )
        .map_err(|err| tracing::debug!(%build, "cannot watch the build's state file: {err}"))
        .ok()
    });
    let exit = async move {
        match (child, pid) {
            (Some(mut c), _) => {
                let _ = c.wait().await;
            }
            (None, Some(p)) => crate::events::exited(p).await,
            (None, None) => {}
        }
    };
    tokio::pin!(exit);
    let mut cancel = o.cancel_watch(build);
    let mut term_sent = false;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut exited = pid.is_none();
    let mut progress_sent = None;
    loop {
        let state = dir.read_state().ok().flatten();
        if !o.has_commit(build) {
            if let Some(c) = state.as_ref().and_then(|s| s.commit.clone()) {
                o.started(build, c);
                o.progress(build, "building", None);
            }
        }
        // What the backend says it is doing (`exec`'s steps), sent when it changed.
        if let Some(p) = state.and_then(|s| s.progress).map(store::clean_progress) {
            if progress_sent.as_ref() != Some(&p) {
                o.progress(build, &p.0, p.1);
                progress_sent = Some(p);
            }
        }
        if exited {
            break;
        }
        let asked = cancel.as_ref().is_some_and(|rx| *rx.borrow()) || o.cancel_requested(build);
        if asked && !term_sent {
            let p = pid.unwrap_or(0);
            tracing::info!(%build, "stopping the build's process group {p}");
            store::kill_group(p, libc::SIGTERM);
            term_sent = true;
            kill_at = Some(tokio::time::Instant::now() + GRACE);
        }
        tokio::select! {
            _ = &mut exit => exited = true,
            _ = state_written.notified() => {}
            r = async { cancel.as_mut().expect("guarded").changed().await }, if cancel.is_some() && !term_sent => {
                if r.is_err() {
                    // No longer held: no request can come any more.
                    cancel = None;
                }
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)), if kill_at.is_some() => {
                // Past the grace: SIGKILL, again now and then until the runner is gone.
                store::kill_group(pid.unwrap_or(0), libc::SIGKILL);
                kill_at = Some(tokio::time::Instant::now() + SAFETY_NET);
            }
            _ = tokio::time::sleep(SAFETY_NET) => {
                if !pid.is_some_and(store::alive) {
                    exited = true;
                }
            }
        }
    }
    let asked = term_sent || o.cancel_requested(build);
    if adopted && !asked && matches!(dir.read_state(), Ok(None)) {
        // It ended without a word: the previous daemon recorded its pid but ended before it
        // told it to start (`runner::told_to_start`). Nothing of the build ran.
        if let Ok(Some(input)) = dir.read_input() {
            tracing::info!(%build, "its runner was never told to start; preparing it again");
            let d = dir.clone();
            let _ = tokio::task::spawn_blocking(move || end_processes(&d, pid)).await;
            return launch_again(&env, dir, input);
        }
    }
    // Whatever the build left running goes with it, before anything of it is read.
    // Then what it left attached to the machine (loop devices, mounts) is released.
    let d = dir.clone();
    let released = tokio::task::spawn_blocking(move || {
        end_processes(&d, pid);
        let released = crate::leftovers::release(&d.path);
        // Only the outputs are still needed: free the space of sources and scratch now.
        let _ = std::fs::remove_dir_all(d.src());
        let _ = std::fs::remove_dir_all(d.scratch());
        released
    })
    .await
    .unwrap_or_default();
    note_released(&dir, &released);
    o.changed.notify_one();
    settle(&env, &dir, pid).await;
}

/// Says in the build's log what [`crate::leftovers::release`] freed or could not free.
fn note_released(dir: &BuildDir, r: &crate::leftovers::Released) {
    if r.is_empty() {
        return;
    }
    let mut parts = vec![];
    if !r.loop_devices.is_empty() {
        parts.push(format!(
            "detached loop devices {}",
            r.loop_devices.join(", ")
        ));
    }
    if !r.mounts.is_empty() {
        let m: Vec<String> = r.mounts.iter().map(|p| p.display().to_string()).collect();
        parts.push(format!("unmounted {}", m.join(", ")));
    }
    if !r.failures.is_empty() {
        parts.push(format!("could not release: {}", r.failures.join("; ")));
        tracing::error!(build = %dir.id, failures = ?r.failures, "a build left something attached");
    }
    let text = format!("the build left these attached; {}", parts.join("; "));
    match Log::open(&dir.log()) {
        Ok(log) => log.note(&text),
        Err(_) => tracing::warn!(build = %dir.id, "{text}"),
    }
}

async fn settle(env: &Arc<Env>, dir: &BuildDir, pid: Option<i32>) {
    let build = dir.id;
    let o = &env.outbox;
    if o.is_forgotten(build) {
        tracing::info!(%build, "forgotten by the master; dropping it");
        o.remove(build);
        return;
    }
    let log = match Log::open(&dir.log()) {
        Ok(l) => l,
        Err(e) => {
            o.finished(
                build,
                Outcome::Failed {
                    reason: format!("the slave cannot write the build log: {e}"),
                },
            );
            return;
        }
    };
    let result = dir.read_state().ok().flatten().and_then(|s| s.result);
    let outcome = match (o.cancel_reason(build), result) {
        (Some(reason), _) => Outcome::Cancelled { reason },
        (None, Some(RunnerResult::BackendSucceeded)) => match upload_outputs(env, dir, &log, true)
            .await
        {
            Ok(()) => {
                keep_rootfs(env, dir, &log).await;
                Outcome::Succeeded
            }
            Err(reason) if o.cancel_requested(build) => Outcome::Cancelled {
                reason: o.cancel_reason(build).unwrap_or(reason),
            },
            Err(reason) => Outcome::Failed { reason },
        },
        (None, Some(RunnerResult::Failed { reason })) => {
            // What was recorded before the failure (a failed boot test's outcome, the image's
            // packages) still helps to find out why.
            if let Ok(Some(input)) = dir.read_input() {
                // So are the files the build left (a tool's own log, a boot test's serial
                // console): kept as the failed build's artifacts, without SHA256SUMS.
                let left = std::fs::read_dir(dir.output()).is_ok_and(|mut d| d.next().is_some());
                if left {
                    if let Err(e) = upload_outputs(env, dir, &log, false).await {
                        log.note(&format!("the failed build's files were not all kept: {e}"));
                    }
                }
                send_image_record(env, dir, &log, &input.job).await;
            }
            Outcome::Failed { reason }
        }
        (None, None) => Outcome::Failed {
            reason: format!(
                "the build process{} ended without a result: it was killed or crashed (see the end of the log)",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
        },
    };
    if o.is_forgotten(build) {
        o.remove(build);
        return;
    }
    match &outcome {
        Outcome::Succeeded => log.note("build succeeded"),
        Outcome::Failed { reason } => log.note(&format!("build failed: {reason}")),
        Outcome::Cancelled { reason } => log.note(&format!("build cancelled: {reason}")),
    }
    let _ = std::fs::remove_dir_all(dir.src());
    let _ = std::fs::remove_dir_all(dir.scratch());
    o.finished(build, outcome);
}

/// Uploads every file the backend left in `output/` that is not uploaded yet, then (for a
/// succeeded build, `succeeded`) SHA256SUMS and the image record. Runs only once every process
/// of the build has ended; each file is opened once, relative to the output dir opened without
/// following links, checked and streamed from there, hashed as it is sent (one read per file).
/// A failed build's files are uploaded as they are: none is required, none is summed or signed.
async fn upload_outputs(
    env: &Arc<Env>,
    dir: &BuildDir,
    log: &Log,
    succeeded: bool,
) -> Result<(), String> {
    let build = dir.id;
    let o = &env.outbox;
    let job = dir
        .read_input()
        .ok()
        .flatten()
        .ok_or("the build's input.json vanished")?
        .job;
    let out = upload::OutputDir::open(&dir.output())
        .map_err(|e| format!("the output dir cannot be opened as a directory: {e}"))?;
    let mut artifacts = vec![];
    for e in out
        .entries()
        .map_err(|e| format!("reading the output dir: {e}"))?
    {
        match e {
            upload::Entry::File(name) => {
                kiln_shared::api::validate_artifact_name(&name)?;
                let a = out
                    .artifact(&name)
                    .map_err(|e| format!("artifact '{name}' cannot be read: {e}"))?;
                artifacts.push(a);
            }
            upload::Entry::Dir(name) => log.note(&format!(
                "ignoring the directory '{name}' in the output dir: only plain files become artifacts"
            )),
            upload::Entry::Other(name, what) => {
                return Err(format!(
                    "'{name}' in the output dir is {what}: only regular files can be artifacts, and nothing outside the output dir is read"
                ));
            }
        }
    }
    if artifacts.is_empty() && succeeded {
        return Err("the backend finished but left no files in the output dir".into());
    }
    // A build's own SHA256SUMS goes last: the master signs it only once every file it names is
    // stored, and the output dir lists it before lower-case names.
    artifacts.sort_by_key(|a| a.name == "SHA256SUMS");
    // Each file is read once: hashed as it is sent. SHA256SUMS (unless the build made one) is
    // written from those sums, and goes last.
    let make_sums = succeeded && !artifacts.iter().any(|a| a.name == "SHA256SUMS");
    let done = o.uploaded(build);
    let mut sums = o.uploaded_sha256(build);
    let count = artifacts.len() + usize::from(make_sums);
    for (n, a) in artifacts.iter().enumerate() {
        let sha = if done.contains(&a.name) {
            match sums.get(&a.name) {
                Some(s) => s.clone(),
                // Uploaded by a daemon that did not record the sum.
                None => a
                    .sha256()
                    .map_err(|e| format!("artifact '{}' cannot be read: {e}", a.name))?,
            }
        } else {
            upload_one(env, dir, log, &job, a, n * 100 / count).await?
        };
        sums.insert(a.name.clone(), sha);
    }
    if make_sums {
        let mut text = String::new();
        for a in &artifacts {
            text.push_str(&format!("{}  {}\n", sums[&a.name], a.name));
        }
        // Kept in the daemon's own part of the build dir, not in the build's output dir.
        let path = dir.path.join("SHA256SUMS");
        std::fs::write(&path, text).map_err(|e| format!("writing SHA256SUMS: {e}"))?;
        let a = upload::Artifact::from_own_file("SHA256SUMS", &path)
            .map_err(|e| format!("reading SHA256SUMS: {e}"))?;
        if !done.contains(&a.name) {
            upload_one(env, dir, log, &job, &a, (count - 1) * 100 / count).await?;
        }
    }
    if succeeded {
        send_image_record(env, dir, log, &job).await;
    }
    Ok(())
}

/// Sends what the runner recorded about the image (`sandbox/image-record.json`, the build's
/// word: read bounded, credentials removed again here, checked again by the master) beside the
/// artifacts. A record that cannot be read or is refused is said in the log; the image itself
/// is delivered all the same.
async fn send_image_record(env: &Arc<Env>, dir: &BuildDir, log: &Log, job: &Job) {
    let mut record = match dir.read_image_record() {
        Ok(Some(r)) if r != Default::default() => r,
        // Nothing found (no root file system, no disk image): the master says so when asked.
        Ok(_) => return,
        Err(e) => {
            log.note(&format!("the image record cannot be read: {e}"));
            return;
        }
    };
    kiln_shared::record::sources::clean(&mut record.sources);
    let body = match serde_json::to_vec(&record) {
        Ok(b) => b,
        Err(e) => {
            log.note(&format!("the image record cannot be written: {e}"));
            return;
        }
    };
    // Beside the artifacts: `/api/slave/builds/{id}/artifacts` → `/api/slave/builds/{id}/record`.
    let base = job
        .upload_path
        .strip_suffix("/artifacts")
        .unwrap_or(&job.upload_path);
    let url = env.settings.http_url(&format!("{base}/record"));
    let o = &env.outbox;
    let wanted = || !o.cancel_requested(dir.id) && !o.is_forgotten(dir.id);
    match upload::put_record(&env.http, &url, &job.upload_token, body, wanted).await {
        Ok(()) => log.note(&format!(
            "sent the image record: {} apt sources, {} packages, {} disk image layout(s)",
            record.sources.len(),
            record.packages.len(),
            record.images.len()
        )),
        Err(e) => log.note(&format!("the master did not take the image record: {e}")),
    }
}

/// Uploads one artifact (unless cancelled), logging it; returns its sha256.
async fn upload_one(
    env: &Arc<Env>,
    dir: &BuildDir,
    log: &Log,
    job: &Job,
    a: &upload::Artifact,
    percent: usize,
) -> Result<String, String> {
    let (build, o) = (dir.id, &env.outbox);
    if o.cancel_requested(build) {
        return Err("cancelled during upload".into());
    }
    let (name, size) = (&a.name, a.size);
    o.progress(build, &format!("uploading {name}"), Some(percent as u8));
    log.note(&format!("uploading {name} ({size} bytes)"));
    let url = env.settings.http_url(&format!(
        "{}/{}",
        job.upload_path,
        kiln_shared::api::percent_encode(name)
    ));
    let began = Instant::now();
    let wanted = || !o.cancel_requested(build) && !o.is_forgotten(build);
    let sha = upload::upload(&env.http, &url, &job.upload_token, a, wanted, |m| {
        log.note(m)
    })
    .await
    .map_err(|e| e.to_string())?;
    let secs = began.elapsed().as_secs_f64();
    log.note(&format!(
        "uploaded {name} in {secs:.3} s ({:.1} MB/s), sha256 {sha}",
        size as f64 / 1e6 / secs.max(1e-6)
    ));
    o.mark_uploaded(build, name, &sha);
    Ok(sha)
}
