//! `backend = "live-build"`: runs `lb config` and `lb build` in a copy of the branch, the way
//! live-build configurations are kept (`auto/config`, `auto/build`, `config/`). The images and
//! lists live-build produces become the artifacts; the image's packages and apt sources are
//! read from the `chroot/` it keeps.

use super::{step, Backend, BackendError, BoxFuture, Context};
use crate::recipe::LiveBuildOptions;
use tokio::process::Command;

pub struct LiveBuild(pub LiveBuildOptions);

/// File name patterns of live-build's products.
fn is_product(name: &str) -> bool {
    name.starts_with("live-image-")
        || name.ends_with(".iso")
        || name.ends_with(".img")
        || name.ends_with(".hybrid.iso")
        || name.ends_with(".tar")
        || name.ends_with(".tar.gz")
        || name.ends_with(".tar.xz")
        || name.ends_with(".contents")
        || name.ends_with(".packages")
        || name.ends_with(".files")
        || name.ends_with(".zsync")
}

impl Backend for LiveBuild {
    fn name(&self) -> &'static str {
        "live-build"
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            if !crate::machine::have_tool("lb") {
                return Err(BackendError::Failed(
                    "live-build is not installed on this slave (apt-get install live-build)".into(),
                ));
            }
            if crate::machine::in_user_namespace() {
                return Err(BackendError::Failed(
                    "live-build needs the host's root (debootstrap makes device nodes) and this slave runs builds in a user namespace; run live-build projects on a slave with slave.sandbox = \"host-root\" (see docs/security.md)".into(),
                ));
            }
            let dir = ctx.scratch.join("lb");
            let mut cp = Command::new("cp");
            cp.arg("-a").arg(&ctx.src).arg(&dir);
            step(ctx, "copying the branch", cp).await?;
            let _ = std::fs::remove_dir_all(dir.join(".git"));
            let lb = |args: &[&str]| {
                let mut c = Command::new("lb");
                c.args(args).current_dir(&dir).env("LC_ALL", "C.UTF-8");
                c
            };
            let mut config = lb(&["config"]);
            config.args(&self.0.config_args);
            step(ctx, "lb config", config).await?;
            let mut extra: Vec<String> = vec![];
            if self.0.use_slave_mirror {
                if let Some(m) = &ctx.mirror {
                    for flag in ["--mirror-bootstrap", "--mirror-chroot", "--mirror-binary"] {
                        extra.push(flag.into());
                        extra.push(m.clone());
                    }
                }
            }
            if !ctx.apt_options.is_empty() {
                let opts: Vec<String> = ctx
                    .apt_options
                    .iter()
                    .map(|o| format!("-o {}", o.replacen(' ', "=", 1).replace('"', "")))
                    .collect();
                extra.push("--apt-options".into());
                extra.push(format!("--yes {}", opts.join(" ")));
            }
            if !extra.is_empty() {
                let mut c = lb(&["config", "noauto"]);
                c.args(&extra);
                step(ctx, "lb config (slave mirror and apt options)", c).await?;
            }
            step(ctx, "lb build", lb(&["build"])).await?;
            // live-build keeps the image's root file system as `chroot/`.
            let chroot = dir.join("chroot");
            if chroot.join("var/lib/dpkg/status").is_file() {
                ctx.record_rootfs(&chroot);
            }
            let mut found = 0;
            for e in std::fs::read_dir(&dir)
                .map_err(|e| BackendError::Failed(e.to_string()))?
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_file() && is_product(&name) {
                    std::fs::rename(e.path(), ctx.output.join(&name))
                        .map_err(|e| BackendError::Failed(format!("moving {name}: {e}")))?;
                    found += 1;
                }
            }
            if found == 0 {
                return Err(BackendError::Failed(
                    "lb build succeeded but produced no image (no live-image-* file)".into(),
                ));
            }
            Ok(())
        })
    }
}
