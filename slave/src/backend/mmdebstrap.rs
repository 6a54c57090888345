//! `backend = "mmdebstrap"`: a Debian root file system from declarative options, delivered as
//! - `rootfs.tar.zst`: the root file system,
//! - `disk.img.zst`: a raw disk image with one partition (GPT or MBR) holding it as ext4, made
//!   without loop devices (`mkfs.ext4 -d` at the partition's offset),
//! - `packages.manifest`: every installed package with its version and architecture.
//!
//! The mirror defaults to the one the slave's own apt uses, and the host's
//! `Acquire::Check-Valid-Until` setting is passed on (snapshot mirrors need it off).

use super::{step, Backend, BackendError, BoxFuture, Context};
use crate::recipe::MmdebstrapOptions;
use std::path::Path;
use tokio::process::Command;

pub struct Mmdebstrap(pub MmdebstrapOptions);

const SECTOR: u64 = 512;
/// The partition starts at 1 MiB and the last MiB is left for the GPT backup header.
const MARGIN: u64 = 1 << 20;

fn failed(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            }
            total += m.len().div_ceil(4096) * 4096;
        }
    }
    total
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

            // Raw disk image: partition table, then ext4 written at the partition's offset.
            let size = o.image_bytes() / SECTOR * SECTOR;
            let part_bytes = size.saturating_sub(2 * MARGIN) / 4096 * 4096;
            let needed = dir_size(&rootfs);
            if needed + needed / 5 + (16 << 20) > part_bytes {
                return Err(failed(format!(
                    "mmdebstrap.image_size = \"{}\" is too small: the root file system needs about {} MiB; raise it",
                    o.image_size,
                    (needed + needed / 5 + (16 << 20)) >> 20
                )));
            }
            let img = ctx.scratch.join("disk.img");
            let f = std::fs::File::create(&img)
                .map_err(|e| failed(format!("creating the disk image: {e}")))?;
            f.set_len(size)
                .map_err(|e| failed(format!("sizing the disk image: {e}")))?;
            drop(f);
            let (label, ptype) = match o.partition_table.as_str() {
                "msdos" => ("dos", "83"),
                _ => ("gpt", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            };
            let script = format!(
                "label: {label}\nstart={}, size={}, type={ptype}\n",
                MARGIN / SECTOR,
                part_bytes / SECTOR
            );
            let script_file = ctx.scratch.join("partitions.sfdisk");
            std::fs::write(&script_file, &script).map_err(|e| failed(e.to_string()))?;
            let mut sf = Command::new("sh");
            sf.arg("-c")
                .arg("sfdisk --no-reread --no-tell-kernel \"$1\" < \"$2\"")
                .arg("sh")
                .arg(&img)
                .arg(&script_file);
            step(ctx, "partitioning disk.img", sf).await?;
            let mut mkfs = Command::new("mkfs.ext4");
            mkfs.args(["-q", "-F", "-L", "rootfs", "-d"])
                .arg(&rootfs)
                .arg("-E")
                .arg(format!("offset={MARGIN}"))
                .arg(&img)
                .arg(format!("{}k", part_bytes / 1024));
            step(ctx, "making the ext4 root file system", mkfs).await?;
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
