//! Image backends, one file each, behind the [`Backend`] trait. A backend turns a checked-out
//! branch into files in the output directory; `job.rs` uploads whatever it leaves there.

pub mod live_build;
pub mod mmdebstrap;
pub mod script;

use crate::process::{self, Log};
use crate::recipe;
use kiln_shared::BuildId;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
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
    /// apt options the host's apt uses that builds must share.
    pub apt_options: Vec<String>,
    /// Architectures the host runs through binfmt (read by the daemon: the sandbox's own /proc
    /// has no binfmt_misc to look at).
    pub emulates: Vec<String>,
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
    }
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
