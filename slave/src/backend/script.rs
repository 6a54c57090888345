//! `backend = "script"`: runs an executable from the branch. It finds `KILN_OUTPUT_DIR`,
//! `KILN_BUILD_ID`, `KILN_PROJECT`, `KILN_COMMIT`, `KILN_ARCH` (and `KILN_RELEASE` for release
//! builds) in its environment; every file it leaves in `KILN_OUTPUT_DIR` becomes an artifact.

use super::{step, Backend, BackendError, BoxFuture, Context};
use crate::recipe::ScriptOptions;
use std::os::unix::fs::PermissionsExt;
use tokio::process::Command;

pub struct Script(pub ScriptOptions);

impl Backend for Script {
    fn name(&self) -> &'static str {
        "script"
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let path = crate::recipe::branch_file(&ctx.src, &self.0.command).map_err(|e| {
                BackendError::Failed(format!(
                    "kiln.toml: script.command \"{}\" {e}",
                    self.0.command
                ))
            })?;
            let meta = std::fs::metadata(&path)
                .map_err(|e| BackendError::Failed(format!("kiln.toml: script.command: {e}")))?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                return Err(BackendError::Failed(format!(
                    "kiln.toml: script.command \"{}\" is not an executable file (chmod +x it and commit)",
                    self.0.command
                )));
            }
            let mut cmd = Command::new(&path);
            cmd.args(&self.0.args)
                .current_dir(&ctx.src)
                .env("KILN_OUTPUT_DIR", &ctx.output)
                .env("KILN_BUILD_ID", ctx.build.to_string())
                .env("KILN_PROJECT", &ctx.project)
                .env("KILN_COMMIT", &ctx.commit)
                .env("KILN_ARCH", &ctx.arch)
                .env("KILN_SCRATCH_DIR", &ctx.scratch);
            if let Some(r) = &ctx.release {
                cmd.env("KILN_RELEASE", r);
            }
            step(ctx, &format!("script {}", self.0.command), cmd).await
        })
    }
}
