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

/// The key of a root file system in the slave's cache: everything mmdebstrap makes it from.
/// The options, the hooks' contents, the branch's commit (a hook, an apt option or a package
/// may name any file of it), and the archive's `InRelease` as it is now, so a changed archive
/// (a point release, a new package version) makes a new key.
async fn cache_key(
    o: &MmdebstrapOptions,
    ctx: &Context,
    arch: &str,
    mirror: &str,
    hooks: &[(&str, &str, std::path::PathBuf)],
) -> Result<String, String> {
    use sha2::Digest;
    let url = format!(
        "{}/dists/{}/InRelease",
        mirror.trim_end_matches('/'),
        o.suite
    );
    let shown = kiln_shared::record::sources::strip_credentials(&url);
    let tls = crate::tls::client_config(&crate::tls::Trust::System)
        .map_err(|e| format!("no TLS context: {e}"))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{shown} answered {}", resp.status()));
    }
    let release = resp
        .bytes()
        .await
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut h = sha2::Sha256::new();
    let mut line = |k: &str, v: &str| {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    };
    line("kiln rootfs cache", "1");
    line("suite", &o.suite);
    line("architecture", arch);
    line("variant", &o.variant);
    line("components", &o.components.join(","));
    line("packages", &o.packages.join(","));
    line("mirror", mirror);
    for a in ctx.apt_options.iter().chain(&o.aptopts) {
        line("aptopt", a);
    }
    for (flag, name, path) in hooks {
        let content =
            std::fs::read(path).map_err(|e| format!("cannot read the hook {name}: {e}"))?;
        line(
            flag,
            &format!("{name} {}", hex::encode(sha2::Sha256::digest(&content))),
        );
    }
    line("commit", &ctx.commit);
    line("InRelease", &hex::encode(sha2::Sha256::digest(&release)));
    Ok(hex::encode(h.finalize()))
}

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
            let mut hook_files = vec![];
            for (flag, hooks) in [
                ("--setup-hook", &o.setup_hooks),
                ("--essential-hook", &o.essential_hooks),
                ("--customize-hook", &o.customize_hooks),
            ] {
                for h in hooks {
                    let path = crate::recipe::branch_file(&ctx.src, h)
                        .map_err(|e| failed(format!("kiln.toml: hook \"{h}\" {e}")))?;
                    cmd.arg(format!("{flag}={}", path.display()));
                    hook_files.push((flag, h.as_str(), path));
                }
            }
            cmd.arg(&o.suite).arg(&rootfs);
            let mirror = o.mirror.clone().or_else(|| ctx.mirror.clone());
            if let Some(m) = &mirror {
                cmd.arg(m);
            }
            let key = match (o.rootfs_cache, &mirror) {
                (false, _) => None,
                (true, None) => {
                    ctx.log.note("rootfs cache: no mirror is known, so the archive's state cannot be checked; not used");
                    None
                }
                (true, Some(m)) => match cache_key(o, ctx, &arch, m, &hook_files).await {
                    Ok(k) => Some(k),
                    Err(e) => {
                        ctx.log.note(&format!("rootfs cache: not used: {e}"));
                        None
                    }
                },
            };
            let cached = ctx.rootfs_cache.join(crate::rootfs_cache::TARBALL);
            let hit = key.is_some()
                && crate::rootfs_cache::read_key(&ctx.rootfs_cache.join(crate::rootfs_cache::KEY))
                    == key
                && cached.is_file();
            // A mirror's password (in kiln.toml) stays out of the log.
            ctx.log.note(&format!(
                "mirror: {}",
                mirror
                    .as_deref()
                    .map(kiln_shared::record::sources::strip_credentials)
                    .unwrap_or_else(|| "mmdebstrap's default".into())
            ));
            let mut from_cache = false;
            // The root file system the rest of the build reads: mmdebstrap's, or the cached one,
            // unpacked into memory where it fits (`in_memory.rs`).
            let mut root = rootfs.clone();
            if hit {
                ctx.log.note(&format!(
                    "rootfs cache: hit (key {}): the root file system an earlier build of this project made from the same options, hooks and archive; mmdebstrap not run",
                    key.as_deref().unwrap_or_default()
                ));
                let into = super::in_memory::for_tarball(ctx, &cached)
                    .await
                    .unwrap_or_else(|| rootfs.clone());
                std::fs::create_dir_all(&into)
                    .map_err(|e| failed(format!("creating {}: {e}", into.display())))?;
                let mut tar = Command::new("tar");
                tar.args([
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--acls",
                ])
                .args(["-I", "zstd -q", "-xpf"])
                .arg(&cached)
                .arg("-C")
                .arg(&into);
                // A damaged entry is no reason to fail: mmdebstrap makes it again, and this
                // build's result replaces it.
                let unpacked = match step(ctx, "unpacking the cached root file system", tar).await {
                    Ok(()) => std::fs::rename(&cached, ctx.output.join("rootfs.tar.zst"))
                        .map_err(|e| format!("taking the cached rootfs.tar.zst: {e}")),
                    Err(e) => Err(e.to_string()),
                };
                match unpacked {
                    Ok(()) => {
                        from_cache = true;
                        root = into;
                    }
                    Err(e) => {
                        ctx.log.note(&format!(
                            "rootfs cache: the cached root file system cannot be used ({e}); running mmdebstrap"
                        ));
                        ctx.log.forget_errors();
                        let _ = std::fs::remove_dir_all(&into);
                    }
                }
            }
            if !from_cache {
                step(
                    ctx,
                    &format!("mmdebstrap {} {arch} ({})", o.suite, o.variant),
                    cmd,
                )
                .await?;
                if let Some(k) = &key {
                    let written = std::fs::create_dir_all(&ctx.rootfs_cache).and_then(|_| {
                        std::fs::write(ctx.rootfs_cache.join(crate::rootfs_cache::NEW_KEY), k)
                    });
                    match written {
                        Ok(()) => ctx.log.note(&format!(
                            "rootfs cache: miss (key {k}); this root file system is kept for the next build if this one succeeds"
                        )),
                        Err(e) => ctx.log.note(&format!("rootfs cache: cannot record the key: {e}")),
                    }
                }
            }
            if let Some(m) = &mirror {
                ctx.record_tool_source(crate::record::apt::from_tool(
                    std::slice::from_ref(m),
                    &o.suite,
                    &o.components,
                    "mmdebstrap",
                ));
            }
            ctx.record_rootfs(&root);

            // Manifest of installed packages.
            let manifest = ctx.output.join("packages.manifest");
            let out = Command::new("dpkg-query")
                .arg(format!(
                    "--admindir={}",
                    root.join("var/lib/dpkg").display()
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

            // Root file system tarball (taken from the cache on a hit).
            let mut tar = Command::new("tar");
            tar.arg("--numeric-owner")
                .arg("--xattrs")
                .arg("--acls")
                .arg("-I")
                .arg("zstd -T0 -q")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(ctx.output.join("rootfs.tar.zst"))
                .arg(".");
            if !from_cache {
                step(ctx, "packing rootfs.tar.zst", tar).await?;
            }

            // Raw disk image: its partitions (`layout.rs`).
            let plan = super::layout::plan(o).map_err(failed)?;
            let img = ctx.scratch.join("disk.img");
            super::layout::assemble(ctx, &plan, &root, &img, &o.image_size).await?;
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
