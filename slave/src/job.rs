//! The life of one build on this slave: fresh work dir → fetch → `kiln.toml` → backend →
//! output rules → upload → result → clean up. Every failure ends as an `Outcome::Failed` with a
//! reason a person can act on; nothing here panics on outside input.

use crate::backend::{self, BackendError, Context};
use crate::outbox::Outbox;
use crate::process::Log;
use crate::recipe::Recipe;
use crate::settings::Settings;
use crate::upload;
use kiln_shared::frames::{HeldPhase, Job, Outcome};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub settings: Settings,
    pub outbox: Outbox,
    pub http: reqwest::Client,
    pub mirror: Option<String>,
    pub apt_options: Vec<String>,
}

/// Runs the job to its end and records the outcome in the outbox.
pub async fn run(env: Arc<Env>, job: Job, cancel: CancellationToken) {
    let build = job.build;
    let dir = env.settings.work_dir.join("builds").join(build.to_string());
    let log = Log::new(env.outbox.clone(), build);
    log.note(&format!(
        "build {build} of project '{}' on slave '{}' ({})",
        job.project, env.settings.name, env.settings.arch
    ));
    let outcome = match execute(&env, &job, &dir, &log, &cancel).await {
        Ok(()) => Outcome::Succeeded,
        Err(BackendError::Cancelled) => Outcome::Cancelled {
            reason: env
                .outbox
                .cancel_reason(build)
                .unwrap_or_else(|| "cancelled".into()),
        },
        Err(BackendError::Failed(reason)) => {
            log.note(&format!("build failed: {reason}"));
            Outcome::Failed { reason }
        }
    };
    if let Outcome::Succeeded = outcome {
        log.note("build succeeded");
    }
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cleaning {}: {e}", dir.display());
        }
    }
    env.outbox.finished(build, outcome);
}

fn fail(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

async fn execute(
    env: &Env,
    job: &Job,
    dir: &Path,
    log: &Log,
    cancel: &CancellationToken,
) -> Result<(), BackendError> {
    let _ = tokio::fs::remove_dir_all(dir).await;
    let (src, output, scratch) = (dir.join("src"), dir.join("output"), dir.join("scratch"));
    for d in [&src, &output, &scratch] {
        tokio::fs::create_dir_all(d).await.map_err(|e| {
            fail(format!(
                "slave cannot create its work dir {}: {e}",
                d.display()
            ))
        })?;
    }
    env.outbox.set_phase(job.build, HeldPhase::Fetching);
    env.outbox.progress(job.build, "fetching", None);
    let commit = crate::fetch::fetch(
        &job.branch_url,
        &job.branch,
        job.commit.as_deref(),
        job.allow_file_urls,
        &src,
        log,
        cancel,
    )
    .await
    .map_err(|e| match e {
        crate::fetch::FetchError::Cancelled => BackendError::Cancelled,
        other => fail(other.to_string()),
    })?;
    env.outbox.started(job.build, commit.clone());

    let recipe = Recipe::load(&src).map_err(fail)?;
    let backend = backend::for_recipe(&recipe.backend);
    log.note(&format!("backend: {}", backend.name()));
    env.outbox.progress(job.build, backend.name(), None);
    let ctx = Context {
        build: job.build,
        project: job.project.clone(),
        commit,
        release: job.release.clone(),
        arch: env.settings.arch.clone(),
        src,
        output: output.clone(),
        scratch,
        log: log.clone(),
        cancel: cancel.clone(),
        mirror: env.mirror.clone(),
        apt_options: env.apt_options.clone(),
    };
    backend.run(&ctx).await?;

    // Collect, check and upload what the backend produced.
    let mut files = vec![];
    let mut entries = tokio::fs::read_dir(&output)
        .await
        .map_err(|e| fail(format!("reading the output dir: {e}")))?;
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        match e.file_type().await {
            Ok(t) if t.is_file() => {
                kiln_shared::api::validate_artifact_name(&name).map_err(fail)?;
                files.push(name);
            }
            _ => log.note(&format!(
                "ignoring '{name}' in the output dir: only plain files become artifacts"
            )),
        }
    }
    files.sort();
    for want in &recipe.outputs {
        if !files.contains(want) {
            return Err(fail(format!(
                "required output '{want}' was not produced (produced: {})",
                if files.is_empty() {
                    "nothing".into()
                } else {
                    files.join(", ")
                }
            )));
        }
    }
    if files.is_empty() {
        return Err(fail(format!(
            "the {} backend finished but left no files in the output dir",
            backend.name()
        )));
    }
    env.outbox.set_phase(job.build, HeldPhase::Uploading);
    let mut sums = String::new();
    for (n, name) in files.iter().enumerate() {
        env.outbox.progress(
            job.build,
            &format!("uploading {name}"),
            Some((n * 100 / files.len()) as u8),
        );
        if cancel.is_cancelled() {
            return Err(BackendError::Cancelled);
        }
        let path = output.join(name);
        let (sha, size) = upload::sha256_file(&path)
            .await
            .map_err(|e| fail(format!("reading artifact '{name}': {e}")))?;
        log.note(&format!("uploading {name} ({size} bytes, sha256 {sha})"));
        sums.push_str(&format!("{sha}  {name}\n"));
        let url = env
            .settings
            .http_url(&format!("{}/{}", job.upload_path, name));
        let began = std::time::Instant::now();
        upload::upload(&env.http, &url, &env.settings.token, name, &path, &sha)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let secs = began.elapsed().as_secs_f64();
        log.note(&format!(
            "uploaded {name} in {secs:.3} s ({:.1} MB/s)",
            size as f64 / 1e6 / secs.max(1e-6)
        ));
    }
    if !files.iter().any(|f| f == "SHA256SUMS") {
        let path = output.join("SHA256SUMS");
        tokio::fs::write(&path, &sums)
            .await
            .map_err(|e| fail(format!("writing SHA256SUMS: {e}")))?;
        let (sha, _) = upload::sha256_file(&path)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let url = env
            .settings
            .http_url(&format!("{}/SHA256SUMS", job.upload_path));
        upload::upload(
            &env.http,
            &url,
            &env.settings.token,
            "SHA256SUMS",
            &path,
            &sha,
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}
