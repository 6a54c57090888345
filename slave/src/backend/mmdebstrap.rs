//! `backend = "mmdebstrap"`: a Debian root file system from declarative options, delivered as
//! - `rootfs.tar.zst`: the root file system,
//! - `disk.img.zst`: a raw disk image (GPT or MBR) with one ext4 partition holding it, or the
//!   partitions of `[[mmdebstrap.layout]]` (`layout.rs`), made without loop devices or mounts,
//! - `packages.manifest`: every installed package with its version and architecture.
//!
//! The mirror defaults to the one the slave's own apt uses, and the host's
//! `Acquire::Check-Valid-Until` setting is passed on (snapshot mirrors need it off).

use super::{step, Backend, BackendError, BoxFuture, Context};
use crate::recipe::MmdebstrapOptions;
use tokio::process::Command;

pub struct Mmdebstrap(pub MmdebstrapOptions);

fn failed(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

impl Backend for Mmdebstrap {
    fn name(&self) -> &'static str {
        "mmdebstrap"
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let o = &self.0;
            let arch = o.architecture.clone().unwrap_or_else(|| ctx.arch.clone());
            if !ctx.emulates.contains(&arch) {
                crate::machine::can_run_arch(&arch).map_err(failed)?;
            }
            if !crate::machine::have_tool("mmdebstrap") {
                return Err(failed(
                    "mmdebstrap is not installed on this slave (apt-get install mmdebstrap)",
                ));
            }
            let rootfs = ctx.scratch.join("rootfs");
            let mut cmd = Command::new("mmdebstrap");
            cmd.arg(format!("--variant={}", o.variant))
                .arg(format!("--architectures={arch}"))
                .arg(format!("--components={}", o.components.join(",")))
                .arg("--mode=root")
                .env("LC_ALL", "C.UTF-8");
            if !o.packages.is_empty() {
                cmd.arg(format!("--include={}", o.packages.join(",")));
            }
            for opt in ctx.apt_options.iter().chain(&o.aptopts) {
                cmd.arg(format!("--aptopt={opt}"));
            }
            // Package files through the slave's cache (plain-http archives only; mmdebstrap
            // removes this setting from the image at its clean-up).
            if let Some(p) = &ctx.apt_proxy {
                cmd.arg(format!("--aptopt=Acquire::http::Proxy \"{p}\""));
            }
            for (flag, hooks) in [
                ("--setup-hook", &o.setup_hooks),
                ("--essential-hook", &o.essential_hooks),
                ("--customize-hook", &o.customize_hooks),
            ] {
                for h in hooks {
                    let path = crate::recipe::branch_file(&ctx.src, h)
                        .map_err(|e| failed(format!("kiln.toml: hook \"{h}\" {e}")))?;
                    cmd.arg(format!("{flag}={}", path.display()));
                }
            }
            cmd.arg(&o.suite).arg(&rootfs);
            let mirror = o.mirror.clone().or_else(|| ctx.mirror.clone());
            if let Some(m) = &mirror {
                cmd.arg(m);
            }
            // A mirror's password (in kiln.toml) stays out of the log.
            ctx.log.note(&format!(
                "mirror: {}",
                mirror
                    .as_deref()
                    .map(kiln_shared::record::sources::strip_credentials)
                    .unwrap_or_else(|| "mmdebstrap's default".into())
            ));
            step(
                ctx,
                &format!("mmdebstrap {} {arch} ({})", o.suite, o.variant),
                cmd,
            )
            .await?;
            if let Some(m) = &mirror {
                ctx.record_tool_source(crate::record::apt::from_tool(
                    std::slice::from_ref(m),
                    &o.suite,
                    &o.components,
                    "mmdebstrap",
                ));
            }
            ctx.record_rootfs(&rootfs);

            // Manifest of installed packages.
            let manifest = ctx.output.join("packages.manifest");
            let out = Command::new("dpkg-query")
                .arg(format!(
                    "--admindir={}",
                    rootfs.join("var/lib/dpkg").display()
                ))
                .args(["-W", "-f", "${Package}\t${Version}\t${Architecture}\n"])
                .output()
                .await
                .map_err(|e| failed(format!("cannot run dpkg-query: {e}")))?;
            if !out.status.success() {
                return Err(failed(format!(
                    "listing installed packages failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            std::fs::write(&manifest, &out.stdout)
                .map_err(|e| failed(format!("writing the manifest: {e}")))?;
            ctx.log.note(&format!(
                "{} packages installed",
                out.stdout.iter().filter(|&&b| b == b'\n').count()
            ));

            // Root file system tarball.
            let mut tar = Command::new("tar");
            tar.arg("--numeric-owner")
                .arg("--xattrs")
                .arg("--acls")
                .arg("-I")
                .arg("zstd -T0 -q")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(ctx.output.join("rootfs.tar.zst"))
                .arg(".");
            step(ctx, "packing rootfs.tar.zst", tar).await?;

            // Raw disk image: its partitions (`layout.rs`).
            let plan = super::layout::plan(o).map_err(failed)?;
            let img = ctx.scratch.join("disk.img");
            super::layout::assemble(ctx, &plan, &rootfs, &img, &o.image_size).await?;
            ctx.record_image(&img, "disk.img.zst");
            let mut z = Command::new("zstd");
            z.args(["-T0", "-q", "--rm", "-f"])
                .arg(&img)
                .arg("-o")
                .arg(ctx.output.join("disk.img.zst"));
            step(ctx, "compressing disk.img.zst", z).await?;
            Ok(())
        })
    }
}
