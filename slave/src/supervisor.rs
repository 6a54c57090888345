//! The daemon's side of a build: start its runner as a process group of its own, watch it, stop
//! it when the master says so, upload what it produced, and record the outcome — and, after a
//! restart of the daemon, re-adopt every build left in the work dir and carry on.

use crate::outbox::Outbox;
use crate::process::Log;
use crate::settings::Settings;
use crate::store::{self, BuildDir, DaemonRecord, RunnerInput, RunnerResult};
use crate::upload;
use kiln_shared::frames::{Job, Outcome};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Env {
    pub settings: Settings,
    pub outbox: Outbox,
    pub http: reqwest::Client,
    pub mirror: Option<String>,
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
const POLL: Duration = Duration::from_millis(100);

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

/// The build's environment: the allowed variables of the daemon's, nothing else.
pub fn build_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| BUILD_ENV_ALLOWED.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect()
}

fn spawn_runner(env: &Env, dir: &BuildDir) -> std::io::Result<tokio::process::Child> {
    let out = std::fs::File::create(dir.path.join("runner.out"))?;
    let mut c = tokio::process::Command::new(&env.exe);
    c.env_clear()
        .envs(build_env())
        .arg("run-build")
        .arg("--dir")
        .arg(&dir.path)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn()
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
    let prepared = std::fs::create_dir_all(&dir.path).and_then(|_| {
        dir.write_input(&RunnerInput {
            job: job.clone(),
            arch: env.settings.arch.clone(),
            slave: env.settings.name.clone(),
            mirror: env.mirror.clone(),
            apt_options: env.apt_options.clone(),
        })
    });
    env.outbox.add(dir.clone(), DaemonRecord::default(), None);
    env.outbox.progress(build, "fetching", None);
    let spawned = prepared.and_then(|_| spawn_runner(env, &dir));
    match spawned {
        Ok(child) => {
            let pid = child.id().map(|p| p as i32);
            if let Some(p) = pid {
                if let Err(e) = dir.write_pid(p) {
                    tracing::error!(%build, "cannot record the runner's pid: {e}");
                }
            }
            tracing::info!(%build, project = %job.project, ?pid, "build started");
            tokio::spawn(watch(env.clone(), dir, pid, Some(child)));
        }
        Err(e) => {
            let reason = format!(
                "the slave cannot start the build in {}: {e}",
                dir.path.display()
            );
            if let Ok(log) = Log::open(&dir.log()) {
                log.note(&reason);
            }
            env.outbox.finished(build, Outcome::Failed { reason });
        }
    }
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
        if !ended {
            tokio::spawn(watch(env.clone(), dir, pid, None));
        }
    }
}

/// Follows a runner until it ends (stopping it if asked), then settles the build's outcome.
async fn watch(
    env: Arc<Env>,
    dir: BuildDir,
    pid: Option<i32>,
    child: Option<tokio::process::Child>,
) {
    let build = dir.id;
    let o = &env.outbox;
    let exited = Arc::new(AtomicBool::new(
        child.is_none() && !pid.is_some_and(store::alive),
    ));
    if let Some(mut c) = child {
        let flag = exited.clone();
        tokio::spawn(async move {
            let _ = c.wait().await;
            flag.store(true, Ordering::SeqCst);
        });
    }
    let mut term_sent: Option<Instant> = None;
    loop {
        if !o.has_commit(build) {
            if let Some(c) = dir.read_state().ok().flatten().and_then(|s| s.commit) {
                o.started(build, c);
                o.progress(build, "building", None);
            }
        }
        let running = !exited.load(Ordering::SeqCst) && pid.is_some_and(store::alive);
        if !running {
            break;
        }
        if o.cancel_requested(build) {
            let p = pid.unwrap_or(0);
            match term_sent {
                None => {
                    tracing::info!(%build, "stopping the build's process group {p}");
                    store::kill_group(p, libc::SIGTERM);
                    term_sent = Some(Instant::now());
                }
                Some(t) if t.elapsed() > GRACE => store::kill_group(p, libc::SIGKILL),
                Some(_) => {}
            }
        }
        // New log lines need no wake-up here: the connection reads the files on its own tick.
        tokio::time::sleep(POLL).await;
    }
    // Whatever the build left running in its group goes with it.
    if let Some(p) = pid {
        store::kill_group(p, libc::SIGKILL);
    }
    o.changed.notify_one();
    settle(&env, &dir, pid).await;
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
        (None, Some(RunnerResult::BackendSucceeded)) => match upload_all(env, dir, &log).await {
            Ok(()) => Outcome::Succeeded,
            Err(reason) if o.cancel_requested(build) => Outcome::Cancelled {
                reason: o.cancel_reason(build).unwrap_or(reason),
            },
            Err(reason) => Outcome::Failed { reason },
        },
        (None, Some(RunnerResult::Failed { reason })) => Outcome::Failed { reason },
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

/// Uploads every file the backend left in `output/` that is not uploaded yet, then SHA256SUMS.
async fn upload_all(env: &Arc<Env>, dir: &BuildDir, log: &Log) -> Result<(), String> {
    let build = dir.id;
    let o = &env.outbox;
    let job = dir
        .read_input()
        .ok()
        .flatten()
        .ok_or("the build's input.json vanished")?
        .job;
    let mut files = vec![];
    let mut entries = tokio::fs::read_dir(dir.output())
        .await
        .map_err(|e| format!("reading the output dir: {e}"))?;
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        // The entry's own type (a symlink is not followed).
        match e.file_type().await {
            Ok(t) if t.is_file() => {
                kiln_shared::api::validate_artifact_name(&name)?;
                files.push(name);
            }
            Ok(t) if t.is_dir() => log.note(&format!(
                "ignoring the directory '{name}' in the output dir: only plain files become artifacts"
            )),
            Ok(t) => {
                let what = if t.is_symlink() {
                    "a symbolic link"
                } else {
                    "a device, FIFO or socket"
                };
                return Err(format!(
                    "'{name}' in the output dir is {what}: only regular files can be artifacts, and nothing outside the output dir is read"
                ));
            }
            Err(e) => return Err(format!("cannot look at '{name}' in the output dir: {e}")),
        }
    }
    files.sort();
    if files.is_empty() {
        return Err("the backend finished but left no files in the output dir".into());
    }
    if !files.iter().any(|f| f == "SHA256SUMS") {
        let mut sums = String::new();
        for name in &files {
            let (sha, _) = upload::sha256_file(&dir.output().join(name))
                .await
                .map_err(|e| format!("reading artifact '{name}': {e}"))?;
            sums.push_str(&format!("{sha}  {name}\n"));
        }
        tokio::fs::write(dir.output().join("SHA256SUMS"), sums)
            .await
            .map_err(|e| format!("writing SHA256SUMS: {e}"))?;
        files.push("SHA256SUMS".into());
    }
    let done = o.uploaded(build);
    for (n, name) in files.iter().enumerate() {
        if o.cancel_requested(build) {
            return Err("cancelled during upload".into());
        }
        if done.contains(name) {
            continue;
        }
        o.progress(
            build,
            &format!("uploading {name}"),
            Some((n * 100 / files.len()) as u8),
        );
        let path = dir.output().join(name);
        let (sha, size) = upload::sha256_file(&path)
            .await
            .map_err(|e| format!("reading artifact '{name}': {e}"))?;
        log.note(&format!("uploading {name} ({size} bytes, sha256 {sha})"));
        let url = env.settings.http_url(&format!(
            "{}/{}",
            job.upload_path,
            kiln_shared::api::percent_encode(name)
        ));
        let began = Instant::now();
        upload::upload(&env.http, &url, &job.upload_token, name, &path, &sha)
            .await
            .map_err(|e| e.to_string())?;
        let secs = began.elapsed().as_secs_f64();
        log.note(&format!(
            "uploaded {name} in {secs:.3} s ({:.1} MB/s)",
            size as f64 / 1e6 / secs.max(1e-6)
        ));
        o.mark_uploaded(build, name);
    }
    Ok(())
}
