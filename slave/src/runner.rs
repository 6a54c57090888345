//! The build runner: `kiln-slave run-build --dir DIR`, started by the daemon as the leader of a
//! new session and process group, so the build outlives the daemon (a restart, an upgrade, a
//! crash). It fetches the branch (or unpacks the commit the daemon exported from its git cache),
//! reads `kiln.toml` and runs the backend, writing the log to its stdout (the daemon's `DIR/log`)
//! and its progress and result to `DIR/sandbox/state.json`.
//! It starts inside the build's sandbox (`sandbox.rs`): it sees only `DIR/sandbox/`. Uploading and reporting are the
//! daemon's job (`supervisor.rs`), so a runner never needs the master or its token.

use crate::backend::{self, BackendError, Context};
use crate::process::Log;
use crate::recipe::Recipe;
use crate::store::{BuildDir, Phase, RunnerResult, RunnerState};
use anyhow::{Context as _, Result};
use std::path::Path;

pub fn main(dir: &Path) -> Result<()> {
    if !told_to_start() {
        // The daemon that spawned this runner ended before it told it to start: the next
        // daemon finds the build without a state and prepares it again. Nothing of it has been
        // touched here.
        return Ok(());
    }
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .map(kiln_shared::BuildId)
        .context("--dir must be a build directory (…/builds/<id>)")?;
    let bd = BuildDir {
        id,
        path: dir.to_path_buf(),
    };
    let input = bd
        .read_runner_input()?
        .context("sandbox/input.json is missing")?;
    // The daemon hands the log over as stdout: the file itself is out of the build's reach.
    let log = Log::from_file(std::fs::File::from(
        std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?,
    ));
    // One thread: a build's steps run one after the other, its output pumped while it waits
    // (heavy work goes to the blocking pool). Worker threads only added wake-ups between them:
    // 34.3 → 31.8 ms of the machine's CPU per no-op build in a burst (docs/benchmarks.md).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&bd, &input, &log));
    let result = match result {
        Ok(()) => RunnerResult::BackendSucceeded,
        Err(BackendError::Failed(reason)) => RunnerResult::Failed { reason },
    };
    let mut state = bd.read_state()?.unwrap_or(RunnerState {
        phase: Phase::Fetching,
        commit: None,
        result: None,
        progress: None,
    });
    state.phase = Phase::Done;
    state.result = Some(result);
    bd.write_state(&state)?;
    Ok(())
}

/// Waits for the daemon's word (one byte on stdin) that it recorded this runner's pid in
/// `runner.json`; false if the daemon ended first (the end of the file). So a daemon that dies
/// between the spawn and the record never leaves a build running that the next daemon cannot
/// find: that one finds either no record and no state (it prepares the build again) or the
/// runner on record. Afterwards the build's processes read nothing from stdin (`/dev/null`).
///
/// Only a pipe is waited on: a daemon of an older version, still running while its package is
/// upgraded, starts the new runner with `/dev/null` and never says a word; that runner starts
/// at once, as runners did then.
fn told_to_start() -> bool {
    // SAFETY: fstat into a zeroed local.
    let piped = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(0, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
    };
    if !piped {
        return true;
    }
    let mut byte = 0u8;
    let told = loop {
        // SAFETY: reads one byte into a local.
        let n = unsafe { libc::read(0, (&mut byte as *mut u8).cast(), 1) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break n == 1;
        }
    };
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto stdin of a descriptor owned here; the original is closed after.
        unsafe {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0);
        }
    }
    told
}

fn fail(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

/// The directory of the checkout `top` the build runs in: the project's `path` (as the master
/// sent it, so checked again here), which must be a directory inside the checkout.
fn build_dir(top: &Path, path: Option<&str>) -> Result<std::path::PathBuf, String> {
    let Some(p) = path else {
        return Ok(top.to_path_buf());
    };
    kiln_shared::api::check_branch_dir(p).map_err(|m| format!("the project's {m}"))?;
    let root = top
        .canonicalize()
        .map_err(|e| format!("cannot read the checkout: {e}"))?;
    let Ok(real) = root.join(p).canonicalize() else {
        return Err(format!(
            "the branch has no directory {p} (the project's path)"
        ));
    };
    if !real.starts_with(&root) {
        return Err(format!(
            "{p} (the project's path) leads outside the branch through a symbolic link"
        ));
    }
    if !real.is_dir() {
        return Err(format!(
            "{p} (the project's path) is not a directory in the branch"
        ));
    }
    if !real.join(crate::recipe::FILE).exists() {
        return Err(format!(
            "no {} in {p} (the project's path); add one that names a backend",
            crate::recipe::FILE
        ));
    }
    Ok(real)
}

async fn run(
    bd: &BuildDir,
    input: &crate::store::RunnerInput,
    log: &Log,
) -> Result<(), BackendError> {
    let job = &input.job;
    log.note(&format!(
        "build {} of project '{}' on slave '{}' ({})",
        job.build, job.project, input.slave, input.arch
    ));
    let write_state = |phase, commit: Option<String>| {
        bd.write_state(&RunnerState {
            phase,
            commit,
            result: None,
            progress: None,
        })
        .map_err(|e| fail(format!("slave cannot record the build's state: {e}")))
    };
    write_state(Phase::Fetching, None)?;
    for d in [bd.src(), bd.output(), bd.scratch()] {
        std::fs::create_dir_all(&d).map_err(|e| {
            fail(format!(
                "slave cannot create its work dir {}: {e}",
                d.display()
            ))
        })?;
    }
    let commit = match &input.checkout {
        // The daemon fetched into its git cache and exported the commit for us.
        Some(commit) => {
            crate::fetch::unpack(&bd.checkout_archive(), &bd.src(), commit, log)
                .await
                .map_err(|e| fail(e.to_string()))?;
            commit.clone()
        }
        None => crate::fetch::fetch(
            &job.branch_url,
            &job.branch,
            job.commit.as_deref(),
            job.allow_file_urls,
            &bd.src(),
            log,
        )
        .await
        .map_err(|e| fail(e.to_string()))?,
    };
    write_state(Phase::Running, Some(commit.clone()))?;

    let src = build_dir(&bd.src(), job.path.as_deref()).map_err(fail)?;
    let recipe = Recipe::load(&src).map_err(fail)?;
    let backend = backend::for_recipe(&recipe.backend);
    log.note(&format!("backend: {}", backend.name()));
    let ctx = Context {
        build: job.build,
        project: job.project.clone(),
        commit,
        release: job.release.clone(),
        arch: input.arch.clone(),
        src,
        output: bd.output(),
        scratch: bd.scratch(),
        log: log.clone(),
        mirror: input.mirror.clone(),
        security_mirror: input.security_mirror.clone(),
        apt_options: input.apt_options.clone(),
        apt_proxy: input.apt_proxy.clone(),
        emulates: input.emulates.clone(),
        record: Default::default(),
        progress: backend::Progress::to(bd.clone()),
        rootfs_cache: bd.sandbox().join(crate::rootfs_cache::SANDBOX_DIR),
        builds_at_once: input.builds_at_once.max(1),
    };
    backend.run(&ctx).await?;
    record(&ctx);
    let booted = match &recipe.boot {
        Some(o) => Some(boot_test(&ctx, o, &recipe).await),
        None => None,
    };
    write_record(bd, &ctx, input);
    match booted {
        Some(Err(reason)) => return Err(fail(format!("boot test failed: {reason}"))),
        Some(Ok(t)) if !t.passed => return Err(fail(crate::boot::failure_reason(&t))),
        _ => {}
    }
    // The daemon frees the space of sources and scratch as soon as the build's processes are
    // gone and it has released what the build left attached to those files (`leftovers.rs`).
    let missing: Vec<&String> = recipe
        .outputs
        .iter()
        .filter(|o| !bd.output().join(o).is_file())
        .collect();
    if !missing.is_empty() {
        let produced: Vec<String> = std::fs::read_dir(bd.output())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        return Err(fail(format!(
            "required output '{}' was not produced (produced: {})",
            missing[0],
            if produced.is_empty() {
                "nothing".into()
            } else {
                produced.join(", ")
            }
        )));
    }
    Ok(())
}

/// After a successful backend: what the backend did not record itself, read where the
/// documentation says a build leaves it (a root file system at `scratch/rootfs`, raw `*.img`
/// disk images in the output dir). Nothing here fails the build: what cannot be read is said
/// in the log.
fn record(ctx: &Context) {
    let rootfs = ctx.scratch.join("rootfs");
    if !ctx.has_packages() && rootfs.join("var/lib/dpkg/status").is_file() {
        ctx.record_rootfs(&rootfs);
    }
    for name in crate::backend::images::raw_images(&ctx.output).unwrap_or_default() {
        ctx.record_image(&ctx.output.join(&name), &name);
    }
}

/// The boot test (`[boot]`), its outcome recorded with the image it booted. `Err`: it could
/// not be run.
async fn boot_test(
    ctx: &Context,
    o: &crate::recipe::BootOptions,
    recipe: &Recipe,
) -> Result<kiln_shared::record::BootTest, String> {
    let arch = o
        .architecture
        .as_deref()
        .or(recipe.backend.architecture())
        .unwrap_or(&ctx.arch)
        .to_string();
    let images = ctx.record.lock().expect("record lock").images.clone();
    let (artifact, t) = crate::boot::test(ctx, o, &arch, &images).await?;
    let mut r = ctx.record.lock().expect("record lock");
    match r.images.iter_mut().find(|i| i.artifact == artifact) {
        Some(i) => i.boot = Some(t.clone()),
        None => r.images.push(kiln_shared::record::ImageLayout {
            artifact,
            boot: Some(t.clone()),
            ..Default::default()
        }),
    }
    Ok(t)
}

/// An SPDX SBOM of the packages as an artifact, and the record for the daemon to send.
fn write_record(bd: &BuildDir, ctx: &Context, input: &crate::store::RunnerInput) {
    let record = ctx.record.lock().expect("record lock").clone();
    if !record.packages.is_empty() {
        write_sbom(ctx, input, &record);
    }
    if let Err(e) = bd.write_image_record(&record) {
        ctx.log.note(&format!(
            "cannot keep the record of what the image carries: {e}"
        ));
    }
}

/// The SBOM's file name among the artifacts.
pub const SBOM: &str = "sbom.spdx.json";

fn write_sbom(
    ctx: &Context,
    input: &crate::store::RunnerInput,
    record: &kiln_shared::record::BuildRecord,
) {
    let job = &input.job;
    let created = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let name = format!("{}-build-{}", job.project, job.build);
    // Unique per document, as SPDX asks; no site's host name in it.
    let unique = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(format!(
            "{}\0{}\0{}\0{created}",
            job.project, job.build, ctx.commit
        )))
    };
    let namespace = format!(
        "https://spdx.org/spdxdocs/kiln/{}/{}-{}",
        kiln_shared::api::percent_encode(&job.project),
        job.build,
        &unique[..16]
    );
    let doc = crate::record::spdx::spdx_document(
        record,
        &name,
        &namespace,
        &created,
        Some(&ctx.commit),
        &job.branch_url,
    );
    let path = ctx.output.join(SBOM);
    if path.exists() {
        ctx.log.note(&format!(
            "the build made its own {SBOM}; Kiln's is not written"
        ));
        return;
    }
    let bytes = match serde_json::to_vec_pretty(&doc) {
        Ok(b) => b,
        Err(e) => return ctx.log.note(&format!("cannot write {SBOM}: {e}")),
    };
    if let Err(e) = std::fs::write(&path, &bytes) {
        return ctx.log.note(&format!("cannot write {SBOM}: {e}"));
    }
    ctx.log.note(&format!(
        "wrote {SBOM}: SPDX 2.3, {} packages",
        record.packages.len()
    ));
    ctx.name_in_builds_sums(SBOM);
}
