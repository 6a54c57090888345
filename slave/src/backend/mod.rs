//! Image backends, one file each, behind the [`Backend`] trait. A backend turns a checked-out
//! branch into files in the output directory; `job.rs` uploads whatever it leaves there.

pub mod debos;
pub mod exec;
pub mod images;
pub mod in_memory;
pub mod layout;
pub mod live_build;
pub mod mmdebstrap;
pub mod script;
pub mod vmdb2;

use crate::process::{self, Log};
use crate::recipe;
use crate::store::BuildDir;
use kiln_shared::record::BuildRecord;
use kiln_shared::BuildId;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use tokio::process::Command;

/// What a backend gets to work with.
pub struct Context {
    pub build: BuildId,
    pub project: String,
    pub commit: String,
    pub release: Option<String>,
    /// The slave's own architecture.
    pub arch: String,
    /// The checked-out branch.
    pub src: PathBuf,
    /// Files left here become the build's artifacts.
    pub output: PathBuf,
    /// Scratch space, removed after the build.
    pub scratch: PathBuf,
    pub log: Log,
    /// The slave's configured or apt-derived mirror.
    pub mirror: Option<String>,
    /// Its security archive, likewise.
    pub security_mirror: Option<String>,
    /// apt options the host's apt uses that builds must share.
    pub apt_options: Vec<String>,
    /// The slave's package cache, an http proxy (`apt_cache.rs`).
    pub apt_proxy: Option<String>,
    /// Architectures the host runs through binfmt (read by the daemon: the sandbox's own /proc
    /// has no binfmt_misc to look at).
    pub emulates: Vec<String>,
    /// What the image carries, as far as the backend and the runner have read it.
    pub record: Mutex<BuildRecord>,
    /// Where the backend says what it is doing, for the master's live views.
    pub progress: Progress,
    /// The project's entry of the slave's root file system cache, as the daemon offered it,
    /// and where a build leaves its new key (`rootfs_cache.rs`).
    pub rootfs_cache: PathBuf,
    /// How many builds the slave runs at once (`slave.capacity`).
    pub builds_at_once: u32,
}

/// A backend's progress (a step, a percentage), written to `sandbox/state.json`; the daemon's
/// watcher sends it to the master as `Progress` when it changes. Only changes are written.
#[derive(Default)]
pub struct Progress {
    dir: Option<BuildDir>,
    last: Mutex<Option<(String, Option<u8>)>>,
}

impl Progress {
    /// Progress written to the state file of the build `dir`.
    pub fn to(dir: BuildDir) -> Progress {
        Progress {
            dir: Some(dir),
            last: Mutex::default(),
        }
    }

    pub fn report(&self, step: &str, percent: Option<u8>) {
        let now = crate::store::clean_progress((step.to_string(), percent));
        let mut last = self.last.lock().expect("progress lock");
        if last.as_ref() == Some(&now) {
            return;
        }
        *last = Some(now.clone());
        let Some(dir) = &self.dir else {
            return;
        };
        let written = dir.read_state().and_then(|state| match state {
            Some(mut state) => {
                state.progress = Some(now);
                dir.write_state(&state)
            }
            None => Ok(()),
        });
        if let Err(e) = written {
            tracing::debug!("cannot record the build's progress: {e}");
        }
    }
}

#[cfg(test)]
impl Context {
    /// A context for a backend's unit test: build 1 of project `board` on amd64, its
    /// directories and log as given, no mirrors, no progress reporting.
    pub fn for_test(src: &Path, output: &Path, scratch: &Path, log: Log) -> Context {
        Context {
            build: BuildId(1),
            project: "board".into(),
            commit: "0".repeat(40),
            release: None,
            arch: "amd64".into(),
            src: src.to_path_buf(),
            output: output.to_path_buf(),
            scratch: scratch.to_path_buf(),
            log,
            mirror: None,
            security_mirror: None,
            apt_options: vec![],
            apt_proxy: None,
            emulates: vec![],
            record: Default::default(),
            progress: Default::default(),
            rootfs_cache: scratch.join("rootfs-cache"),
            builds_at_once: 1,
        }
    }
}

impl Context {
    /// Records the apt sources and packages of a Debian root file system the build made. A
    /// part that cannot be read is said in the log; it does not fail the build.
    pub fn record_rootfs(&self, root: &Path) {
        let work: [&Path; 3] = [&self.src, &self.scratch, &self.output];
        let sources = crate::record::apt::sources_in_rootfs(root, &work);
        let packages = match crate::record::dpkg::packages(root) {
            Ok(p) => p,
            Err(e) => {
                self.log
                    .note(&format!("cannot list the image's packages: {e}"));
                vec![]
            }
        };
        self.log.note(&format!(
            "recorded {} apt sources and {} packages of the root file system",
            sources.len(),
            packages.len()
        ));
        let mut r = self.record.lock().expect("record lock");
        // The image's own copy of what the tool was given is listed once, as the tool's.
        let same = |a: &kiln_shared::record::AptSource, b: &kiln_shared::record::AptSource| {
            (&a.types, &a.uris, &a.suites, &a.components, &a.options)
                == (&b.types, &b.uris, &b.suites, &b.components, &b.options)
        };
        for s in sources {
            if !r.sources.iter().any(|have| same(have, &s)) {
                r.sources.push(s);
            }
        }
        r.packages = packages;
    }

    /// The archives the recorded apt sources reach that are not the slave's (`mirror`,
    /// `security_mirror`), each once: what a build meant to use the slave's mirrors still reaches.
    pub fn foreign_archives(&self) -> Vec<String> {
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        let ours: Vec<String> = [&self.mirror, &self.security_mirror]
            .into_iter()
            .flatten()
            .map(|m| norm(m))
            .collect();
        let r = self.record.lock().expect("record lock");
        let mut out: Vec<String> = vec![];
        for s in &r.sources {
            for u in &s.uris {
                let u = norm(u);
                if !ours.contains(&u) && !out.contains(&u) {
                    out.push(u);
                }
            }
        }
        out
    }

    /// Records a source the image tool was given (before those the image itself lists).
    pub fn record_tool_source(&self, s: kiln_shared::record::AptSource) {
        self.record
            .lock()
            .expect("record lock")
            .sources
            .insert(0, s);
    }

    /// Records the layout of the raw disk image `raw`, uploaded as `artifact`, and writes its
    /// `.bmap` (bmaptool's format, named after the raw image) to the output dir.
    pub fn record_image(&self, raw: &Path, artifact: &str) {
        if self.has_layout(artifact) {
            return;
        }
        let mut layout = match crate::record::layout::image_layout(raw, artifact) {
            Ok(l) => l,
            Err(e) => {
                self.log
                    .note(&format!("cannot read the layout of {artifact}: {e}"));
                return;
            }
        };
        let raw_name = raw
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| artifact.to_string());
        let bmap = format!("{raw_name}.bmap");
        match crate::record::bmap::write_bmap(raw, &self.output.join(&bmap)) {
            Ok(()) => {
                self.name_in_builds_sums(&bmap);
                layout.bmap = Some(bmap);
            }
            Err(e) => self.log.note(&format!("cannot write {bmap}: {e}")),
        }
        self.log.note(&format!(
            "recorded the layout of {artifact}: {} partition(s){}",
            layout.partitions.len(),
            layout
                .bmap
                .as_deref()
                .map(|b| format!(", block map {b}"))
                .unwrap_or_default()
        ));
        self.record.lock().expect("record lock").images.push(layout);
    }

    /// A file Kiln added to the output (a `.bmap`, the SBOM) is named in the build's own
    /// `SHA256SUMS`, if the build made one: the master signs a `SHA256SUMS` only when it names
    /// every artifact. Only a plain file (not a link) that does not name it yet is appended to.
    pub fn name_in_builds_sums(&self, name: &str) {
        use sha2::Digest;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let sums = self.output.join("SHA256SUMS");
        let Ok(meta) = std::fs::symlink_metadata(&sums) else {
            return;
        };
        if !meta.file_type().is_file() {
            return;
        }
        let Ok(text) = std::fs::read(&sums) else {
            return;
        };
        let named = String::from_utf8_lossy(&text)
            .lines()
            .any(|l| kiln_shared::record::sums_line(l).is_some_and(|(_, n)| n == name));
        if named {
            return;
        }
        let line = std::fs::File::open(self.output.join(name)).and_then(|mut f| {
            let mut hasher = sha2::Sha256::new();
            std::io::copy(&mut f, &mut hasher)?;
            Ok(format!(
                "{}{}  {name}\n",
                if text.is_empty() || text.ends_with(b"\n") {
                    ""
                } else {
                    "\n"
                },
                hex::encode(hasher.finalize())
            ))
        });
        let appended = line.and_then(|line| {
            std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&sums)?
                .write_all(line.as_bytes())
        });
        match appended {
            Ok(()) => self
                .log
                .note(&format!("named {name} in the build's SHA256SUMS")),
            Err(e) => self.log.note(&format!(
                "cannot name {name} in the build's SHA256SUMS ({e}): it will not be signed"
            )),
        }
    }

    pub fn has_layout(&self, artifact: &str) -> bool {
        self.record
            .lock()
            .expect("record lock")
            .images
            .iter()
            .any(|i| i.artifact == artifact)
    }

    pub fn has_packages(&self) -> bool {
        !self.record.lock().expect("record lock").packages.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The build failed; the text says why, for the person reading the build page.
    #[error("{0}")]
    Failed(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>>;
}

pub fn for_recipe(r: &recipe::Backend) -> Box<dyn Backend> {
    match r {
        recipe::Backend::Script(o) => Box::new(script::Script(o.clone())),
        recipe::Backend::Mmdebstrap(o) => Box::new(mmdebstrap::Mmdebstrap((**o).clone())),
        recipe::Backend::LiveBuild(o) => Box::new(live_build::LiveBuild(o.clone())),
        recipe::Backend::Exec(o) => Box::new(exec::Exec(o.clone())),
        recipe::Backend::Debos(o) => Box::new(debos::Debos(o.clone())),
        recipe::Backend::Vmdb2(o) => Box::new(vmdb2::Vmdb2(o.clone())),
    }
}

/// An executable of the branch that a backend runs (`key` is its option, for the message), found
/// by [`recipe::branch_file`]: links only within the checkout.
pub fn branch_program(ctx: &Context, key: &str, rel: &str) -> Result<PathBuf, BackendError> {
    use std::os::unix::fs::PermissionsExt;
    let path = recipe::branch_file(&ctx.src, rel)
        .map_err(|e| BackendError::Failed(format!("kiln.toml: {key} \"{rel}\" {e}")))?;
    let meta = std::fs::metadata(&path)
        .map_err(|e| BackendError::Failed(format!("kiln.toml: {key}: {e}")))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(BackendError::Failed(format!(
            "kiln.toml: {key} \"{rel}\" is not an executable file (chmod +x it and commit)"
        )));
    }
    Ok(path)
}

/// A temp dir in the build's scratch space, for a tool's `TMPDIR`: what the tool mounts there
/// (debos, vmdb2) is where the slave's clean-up finds it after a killed build.
pub fn scratch_tmp(ctx: &Context) -> Result<PathBuf, String> {
    let tmp = ctx.scratch.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    Ok(tmp)
}

/// Writes `script` as the executable `program` in `dir` (the build's scratch space) and returns
/// a `PATH` with `dir` first: a stand-in for a host tool a backend's tool calls where the host
/// lacks what that tool needs (udev, device-mapper).
pub fn stand_in(dir: &Path, program: &str, script: &str) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let exe = dir.join(program);
    std::fs::write(&exe, script)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    Ok(format!("{}:{path}", dir.display()))
}

/// A command of the branch's, run in the checkout with the build's `KILN_*` variables
/// (`docs/backends.md`).
pub fn branch_command(ctx: &Context, program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(&ctx.src)
        .env("KILN_OUTPUT_DIR", &ctx.output)
        .env("KILN_BUILD_ID", ctx.build.to_string())
        .env("KILN_PROJECT", &ctx.project)
        .env("KILN_COMMIT", &ctx.commit)
        .env("KILN_ARCH", &ctx.arch)
        .env("KILN_SCRATCH_DIR", &ctx.scratch);
    if let Some(r) = &ctx.release {
        cmd.env("KILN_RELEASE", r);
    }
    cmd
}

/// Runs one step of a backend; a non-zero exit fails the build, naming the step, the status and
/// the first error line of the log.
pub async fn step(ctx: &Context, what: &str, cmd: Command) -> Result<(), BackendError> {
    ctx.log.note(what);
    match process::run(cmd, &ctx.log).await {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(BackendError::Failed(format!(
            "{what} failed with {}{}",
            process::describe(s),
            ctx.log
                .first_error()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ))),
        Err(e) => Err(BackendError::Failed(format!("{what}: {e}"))),
    }
}
