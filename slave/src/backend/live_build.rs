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

/// `lb config` options pointing every archive live-build reaches at the slave's mirrors: the
/// main archive (whose `-updates` suite live-build takes from the same mirror) for debootstrap,
/// the chroot, the installer and the image's own sources, and the security archive for the
/// chroot and the image. Each with its `--parent-` twin: those are what live-build writes into
/// the sources of a Debian (not derived) image, and the first `lb config` already saved them
/// with live-build's defaults.
fn slave_mirror_args(mirror: Option<&str>, security: Option<&str>) -> Vec<String> {
    const MAIN: &[&str] = &[
        "--mirror-bootstrap",
        "--parent-mirror-bootstrap",
        "--mirror-chroot",
        "--parent-mirror-chroot",
        "--mirror-binary",
        "--parent-mirror-binary",
        "--mirror-debian-installer",
        "--parent-mirror-debian-installer",
    ];
    const SECURITY: &[&str] = &[
        "--mirror-chroot-security",
        "--parent-mirror-chroot-security",
        "--mirror-binary-security",
        "--parent-mirror-binary-security",
    ];
    let mut out = vec![];
    for (flags, m) in [(MAIN, mirror), (SECURITY, security)] {
        if let Some(m) = m {
            for f in flags {
                out.push(f.to_string());
                out.push(m.to_string());
            }
        }
    }
    out
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
                extra.extend(slave_mirror_args(
                    ctx.mirror.as_deref(),
                    ctx.security_mirror.as_deref(),
                ));
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
                if self.0.use_slave_mirror {
                    for a in ctx.foreign_archives() {
                        ctx.log.note(&format!(
                            "use_slave_mirror: the image's apt sources still reach {}, which is not one of the slave's mirrors (slave.mirror, slave.security_mirror)",
                            kiln_shared::record::sources::strip_credentials(&a)
                        ));
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slave_mirror_covers_the_security_archive_too() {
        let a = slave_mirror_args(Some("http://m/debian"), Some("http://m/debian-security"));
        let pairs: Vec<(&str, &str)> = a
            .chunks(2)
            .map(|c| (c[0].as_str(), c[1].as_str()))
            .collect();
        let main = "http://m/debian";
        let security = "http://m/debian-security";
        assert_eq!(
            pairs,
            [
                ("--mirror-bootstrap", main),
                ("--parent-mirror-bootstrap", main),
                ("--mirror-chroot", main),
                ("--parent-mirror-chroot", main),
                ("--mirror-binary", main),
                ("--parent-mirror-binary", main),
                ("--mirror-debian-installer", main),
                ("--parent-mirror-debian-installer", main),
                ("--mirror-chroot-security", security),
                ("--parent-mirror-chroot-security", security),
                ("--mirror-binary-security", security),
                ("--parent-mirror-binary-security", security),
            ]
        );
        // Without a known security archive, live-build keeps its own (and the build says so).
        assert_eq!(slave_mirror_args(Some("http://m/debian"), None).len(), 16);
        assert!(slave_mirror_args(None, None).is_empty());
    }
}
