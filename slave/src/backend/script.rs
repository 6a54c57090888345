//! `backend = "script"`: runs an executable from the branch. It finds `KILN_OUTPUT_DIR`,
//! `KILN_BUILD_ID`, `KILN_PROJECT`, `KILN_COMMIT`, `KILN_ARCH` (and `KILN_RELEASE` for release
//! builds) in its environment; every file it leaves in `KILN_OUTPUT_DIR` becomes an artifact.

use super::{step, Backend, BackendError, BoxFuture, Context};
use crate::recipe::ScriptOptions;

pub struct Script(pub ScriptOptions);

impl Backend for Script {
    fn name(&self) -> &'static str {
        "script"
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let path = super::branch_program(ctx, "script.command", &self.0.command)?;
            let mut cmd = super::branch_command(ctx, &path);
            cmd.args(&self.0.args);
            step(ctx, &format!("script {}", self.0.command), cmd).await
        })
    }
}
