//! `backend = "vmdb2"`: runs a vmdb2 specification of the branch as it is (`[vmdb2] spec`),
//! building `image` in scratch space with the Jinja2 variables of `kiln.toml` (`size` among
//! them). The image then gets its sha256, layout and block map, and is compressed
//! (`images.rs`); vmdb2's detailed log is kept as the artifact `vmdb2.log`, and with
//! `rootfs_tarball` the root file system its `cache-rootfs` step saved as `rootfs.tar.gz`.
//!
//! vmdb2 maps the image's partitions with `kpartx` (device-mapper). On a host without
//! device-mapper whose kernel scans partitions of loop devices (some containers) the slave puts a
//! stand-in `kpartx` first on vmdb2's `PATH` that attaches the image with `losetup --partscan`
//! (and `partx -a` where the kernel does not scan by itself) and names its partition devices where vmdb2 looks for them (`/dev/mapper/loopNpM`).

use super::{step, Backend, BackendError, BoxFuture, Context};
use crate::recipe::Vmdb2Options;
use std::path::Path;
use tokio::process::Command;

pub struct Vmdb2(pub Vmdb2Options);

fn failed(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

/// The stand-in `kpartx` (`-a`/`-d` with `-s`/`-v` as vmdb2 calls it). Detaching the loop
/// device is left to vmdb2's own clean-up (and to the slave's, `leftovers.rs`).
const KPARTX: &str = r#"#!/bin/sh
# kpartx stand-in written by the Kiln slave: this host has no device-mapper, so the image's
# partitions are the loop device's own (losetup --partscan), linked from /dev/mapper.
set -eu
mode="$1"; shift
img=""
for a in "$@"; do case "$a" in -*) ;; *) img="$a" ;; esac; done
[ -n "$img" ] || { echo "kpartx stand-in: no image given" >&2; exit 1; }
case "$mode" in
  -a*)
    dev=$(losetup --find --show --partscan "$img")
    # Some kernels scan only when asked again.
    ls "${dev}p"[0-9]* >/dev/null 2>&1 || partx -a "$dev" 2>/dev/null || true
    i=0
    while ! ls "${dev}p"[0-9]* >/dev/null 2>&1; do
      i=$((i + 1))
      if [ "$i" -gt 100 ]; then
        echo "kpartx stand-in: no partition devices appeared for $dev: this host has neither device-mapper nor partition scanning of loop devices" >&2
        losetup -d "$dev"
        exit 1
      fi
      sleep 0.1
    done
    mkdir -p /dev/mapper
    for p in "${dev}p"[0-9]*; do
      n=$(basename "$p")
      ln -sfn "$p" "/dev/mapper/$n"
      echo "add map $n (0:0): 0 0 linear $dev 0"
    done
    ;;
  -d*)
    for dev in $(losetup -n -O NAME -j "$img"); do
      rm -f "/dev/mapper/$(basename "$dev")p"[0-9]*
    done
    ;;
  *) echo "kpartx stand-in: unsupported option $mode" >&2; exit 1 ;;
esac
"#;

/// Detaches what vmdb2 left attached to the image (its teardown does not always manage where
/// partitions are the loop device's own), before the image is moved and compressed; the log
/// says so. The slave's own clean-up after the build (`leftovers.rs`) is the last resort.
async fn detach_loops_of(ctx: &Context, image: &Path) {
    if !image.exists() {
        return;
    }
    let Ok(out) = Command::new("losetup")
        .args(["-n", "-O", "NAME", "-j"])
        .arg(image)
        .output()
        .await
    else {
        return;
    };
    for dev in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let detached = Command::new("losetup")
            .arg("-d")
            .arg(dev)
            .status()
            .await
            .is_ok_and(|s| s.success());
        ctx.log.note(&format!(
            "vmdb2 left {dev} attached to the image: {}",
            if detached {
                "detached"
            } else {
                "could not detach it"
            }
        ));
    }
}

/// vmdb2's log names every command it ran, with the mirrors given to it: a mirror's password
/// (in a URL) is taken out before the log becomes an artifact.
fn hide_credentials(log: &Path, vars: &[(String, String)]) {
    let secret: Vec<(&str, String)> = vars
        .iter()
        .map(|(_, v)| {
            (
                v.as_str(),
                kiln_shared::record::sources::strip_credentials(v),
            )
        })
        .filter(|(v, shown)| v != shown)
        .collect();
    if secret.is_empty() {
        return;
    }
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    let mut clean = text;
    for (v, shown) in &secret {
        clean = clean.replace(v, shown);
    }
    let _ = std::fs::write(log, clean);
}

/// Whether the kernel has device-mapper (its control device).
fn have_device_mapper() -> bool {
    Path::new("/dev/mapper/control").exists()
}

impl Backend for Vmdb2 {
    fn name(&self) -> &'static str {
        "vmdb2"
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let o = &self.0;
            if !crate::machine::have_tool("vmdb2") {
                return Err(failed(
                    "vmdb2 is not installed on this slave (apt-get install vmdb2)",
                ));
            }
            if crate::machine::in_user_namespace() {
                return Err(failed(
                    "vmdb2 needs the host's root (it partitions, formats and mounts loop devices) and this slave runs builds in a user namespace; run vmdb2 projects on a slave with slave.sandbox = \"host-root\" (see docs/security.md)",
                ));
            }
            let spec = crate::recipe::branch_file(&ctx.src, &o.spec)
                .map_err(|e| failed(format!("kiln.toml: vmdb2.spec \"{}\" {e}", o.spec)))?;
            let spec_dir = spec.parent().unwrap_or(&ctx.src).to_path_buf();
            let image = ctx.scratch.join(&o.image);
            let tarball = if o.rootfs_tarball {
                ctx.output.join("rootfs.tar.gz")
            } else {
                ctx.scratch.join("rootfs.tar.gz")
            };
            // vmdb2 mounts the image's file systems in temporary dirs.
            let tmp = super::scratch_tmp(ctx).map_err(failed)?;
            let mut cmd = Command::new("vmdb2");
            cmd.current_dir(&spec_dir)
                .env("LC_ALL", "C.UTF-8")
                .env("TMPDIR", &tmp)
                .arg(format!("--output={}", image.display()))
                .arg(format!("--rootfs-tarball={}", tarball.display()))
                .arg(format!("--log={}", ctx.output.join("vmdb2.log").display()));
            if o.verbose {
                cmd.arg("--verbose");
            }
            let mut vars: Vec<(String, String)> = o
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // What Kiln knows that the variables leave out: the size, the slave's mirrors.
            for (k, v) in [
                ("size", o.size.as_deref()),
                ("mirror", ctx.mirror.as_deref()),
                ("security_mirror", ctx.security_mirror.as_deref()),
            ] {
                if let (Some(v), false) = (v, o.variables.contains_key(k)) {
                    vars.push((k.into(), v.into()));
                }
            }
            for (k, v) in &vars {
                cmd.arg(format!("--variable={k}={v}"));
            }
            cmd.arg(&spec).kill_on_drop(true);
            if !have_device_mapper() {
                let path = super::stand_in(&ctx.scratch.join("vmdb2-bin"), "kpartx", KPARTX)
                    .map_err(|e| failed(format!("cannot write the kpartx stand-in: {e}")))?;
                cmd.env("PATH", path);
                ctx.log.note(
                    "vmdb2: no device-mapper on this slave: its kpartx steps use the loop device's own partitions (losetup --partscan) instead",
                );
            }
            ctx.log.note(&format!(
                "vmdb2: {} → {}, variables: {}",
                o.spec,
                o.image,
                if vars.is_empty() {
                    "none".to_string()
                } else {
                    vars.iter()
                        .map(|(k, v)| {
                            format!("{k}={}", kiln_shared::record::sources::strip_credentials(v))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            let ran = step(ctx, &format!("vmdb2 {}", o.spec), cmd).await;
            detach_loops_of(ctx, &image).await;
            hide_credentials(&ctx.output.join("vmdb2.log"), &vars);
            ran?;
            if !image.is_file() {
                return Err(failed(format!(
                    "vmdb2 succeeded but made no {} (the specification's mkimg step writes the image given as --output)",
                    o.image
                )));
            }
            std::fs::rename(&image, ctx.output.join(&o.image))
                .map_err(|e| failed(format!("moving {}: {e}", o.image)))?;
            super::images::sum_record_compress(ctx, &o.compress).await
        })
    }
}
