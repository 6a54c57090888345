//! `backend = "debos"`: runs a debos recipe of the branch as it is (`[debos] recipe`), with the
//! template variables of `kiln.toml`, the architecture, and the slave's mirrors as `mirror` and
//! `security_mirror` unless the recipe's variables name them. debos runs in its fakemachine (a
//! KVM guest) or natively on the host's root, as `fakemachine` says (`auto`: the guest when
//! `/dev/kvm` opens, and natively when fakemachine then cannot start its guest: some hosts open
//! `/dev/kvm` but run no guest). The files the recipe writes to its artifact dir are the build's artifacts;
//! each raw `*.img` gets its sha256 written beside it (`board.img.sha256`), its layout recorded,
//! and is then compressed as `compress` says.

use super::{step, Backend, BackendError, BoxFuture, Context};
use crate::recipe::DebosOptions;
use std::path::Path;
use tokio::process::Command;

pub struct Debos(pub DebosOptions);

fn failed(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

/// Where debos runs.
#[derive(Debug, PartialEq, Eq)]
enum Machine {
    /// In its fakemachine, a KVM guest.
    Kvm,
    /// On the host, as root (`--disable-fakemachine`).
    Native,
}

fn machine(choice: &str, kvm: bool) -> Result<Machine, String> {
    match (choice, kvm) {
        ("kvm", true) | ("auto", true) => Ok(Machine::Kvm),
        ("none", _) | ("auto", false) => Ok(Machine::Native),
        ("kvm", false) => Err(
            "debos.fakemachine = \"kvm\" but /dev/kvm cannot be opened on this slave; use \"auto\" or \"none\", or a slave with KVM".into(),
        ),
        (other, _) => Err(format!(
            "debos.fakemachine = \"{other}\" must be \"auto\", \"kvm\" or \"none\""
        )),
    }
}

/// The `-t name:value` pairs: the recipe's variables, then what Kiln knows that they leave out.
fn template_vars(o: &DebosOptions, ctx: &Context) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = o
        .variables
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut add = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            if !o.variables.contains_key(k) {
                vars.push((k.to_string(), v.to_string()));
            }
        }
    };
    add("architecture", o.architecture.as_deref());
    if o.use_slave_mirror {
        add("mirror", ctx.mirror.as_deref());
        add("security_mirror", ctx.security_mirror.as_deref());
    }
    vars
}

impl Backend for Debos {
    fn name(&self) -> &'static str {
        "debos"
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let o = &self.0;
            if !crate::machine::have_tool("debos") {
                return Err(failed(
                    "debos is not installed on this slave (apt-get install debos)",
                ));
            }
            let arch = o.architecture.clone().unwrap_or_else(|| ctx.arch.clone());
            if !ctx.emulates.contains(&arch) {
                crate::machine::can_run_arch(&arch).map_err(failed)?;
            }
            let m = machine(&o.fakemachine, crate::machine::kvm())
                .map_err(|e| failed(format!("kiln.toml: {e}")))?;
            if m == Machine::Native && crate::machine::in_user_namespace() {
                return Err(failed(
                    "debos without its fakemachine needs the host's root (debootstrap makes device nodes) and this slave runs builds in a user namespace; run debos projects on a slave with slave.sandbox = \"host-root\" or with KVM (see docs/security.md)",
                ));
            }
            let recipe = crate::recipe::branch_file(&ctx.src, &o.recipe)
                .map_err(|e| failed(format!("kiln.toml: debos.recipe \"{}\" {e}", o.recipe)))?;
            let recipe_dir = recipe.parent().unwrap_or(&ctx.src).to_path_buf();
            let vars = template_vars(o, ctx);
            let command = |m: &Machine| {
                let mut cmd = Command::new("debos");
                cmd.current_dir(&recipe_dir)
                    .env("LC_ALL", "C.UTF-8")
                    .arg(format!("--artifactdir={}", ctx.output.display()));
                match m {
                    Machine::Native => {
                        cmd.arg("--disable-fakemachine");
                        if let Ok(tmp) = super::scratch_tmp(ctx) {
                            cmd.env("TMPDIR", tmp);
                        }
                        if let Some(path) = without_udev(ctx) {
                            cmd.env("PATH", path);
                        }
                    }
                    Machine::Kvm => {
                        cmd.arg("--fakemachine-backend=kvm");
                        if let Some(mem) = &o.memory {
                            cmd.arg(format!("--memory={mem}"));
                        }
                        if let Some(s) = &o.scratch_size {
                            cmd.arg(format!("--scratchsize={s}"));
                        }
                    }
                }
                for (k, v) in &vars {
                    cmd.arg("-t").arg(format!("{k}:{v}"));
                }
                cmd.arg(&recipe).kill_on_drop(true);
                cmd
            };
            let shown: Vec<String> = vars
                .iter()
                .map(|(k, v)| format!("{k}={}", kiln_shared::record::sources::strip_credentials(v)))
                .collect();
            ctx.log.note(&format!(
                "debos: {} ({}), variables: {}",
                o.recipe,
                match m {
                    Machine::Kvm => "in its fakemachine, KVM",
                    Machine::Native => "natively, without fakemachine",
                },
                if shown.is_empty() {
                    "none".to_string()
                } else {
                    shown.join(", ")
                }
            ));
            let what = format!("debos {}", o.recipe);
            if m == Machine::Kvm && o.fakemachine == "auto" {
                ctx.log.note(&what);
                let (status, no_guest) =
                    crate::process::run_watching(command(&m), &ctx.log, Some(NO_GUEST))
                        .await
                        .map_err(|e| failed(format!("{what}: {e}")))?;
                if !status.success() {
                    if !no_guest || crate::machine::in_user_namespace() {
                        return Err(failed(format!(
                            "{what} failed with {}{}",
                            crate::process::describe(status),
                            ctx.log
                                .first_error()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        )));
                    }
                    if !crate::machine::loop_devices() {
                        return Err(failed(
                            "debos: fakemachine could not start its KVM guest on this slave, and without it debos needs loop devices, which this slave lacks (modprobe loop)",
                        ));
                    }
                    ctx.log.note(
                        "debos: fakemachine could not start its KVM guest on this slave (/dev/kvm opens but runs no guest); running natively instead",
                    );
                    ctx.log.forget_errors();
                    step(ctx, &what, command(&Machine::Native)).await?;
                }
            } else {
                if m == Machine::Native && !crate::machine::loop_devices() {
                    return Err(failed(
                        "debos without its fakemachine needs loop devices, which this slave lacks (modprobe loop, or fakemachine = \"kvm\" on a slave with KVM)",
                    ));
                }
                step(ctx, &what, command(&m)).await?;
            }
            let produced = std::fs::read_dir(&ctx.output)
                .map_err(|e| failed(format!("reading the artifact dir: {e}")))?
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .count();
            if produced == 0 {
                return Err(failed(format!(
                    "debos succeeded but {} wrote no file to its artifact dir (a `pack` or `image-partition` action's file)",
                    o.recipe
                )));
            }
            super::images::sum_record_compress(ctx, &o.compress).await
        })
    }
}

/// Natively on a host without a udev daemon (a container, a host whose PID 1 is not systemd),
/// debos's `image-partition` waits forever in `udevadm trigger --settle`, and systemd-nspawn
/// (its chroot steps) wants `/dev/disk`, which udev makes. Then debos gets a `udevadm` that
/// does nothing, first on its `PATH` (returned), and an empty `/dev/disk`; the log says so.
fn without_udev(ctx: &Context) -> Option<String> {
    if Path::new("/run/udev/control").exists() {
        return None;
    }
    let path = match super::stand_in(
        &ctx.scratch.join("debos-bin"),
        "udevadm",
        "#!/bin/sh\n# No udev daemon on this slave: nothing to wait for.\nexit 0\n",
    ) {
        Ok(p) => p,
        Err(e) => {
            ctx.log.note(&format!(
                "debos: no udev daemon here, and no udevadm stand-in: {e}"
            ));
            return None;
        }
    };
    if !Path::new("/dev/disk").exists() {
        if let Err(e) = std::fs::create_dir("/dev/disk") {
            ctx.log
                .note(&format!("debos: cannot create /dev/disk: {e}"));
        }
    }
    ctx.log.note(
        "debos: no udev daemon on this slave (/run/udev/control is missing): debos runs with a udevadm that does nothing, and an empty /dev/disk",
    );
    Some(path)
}

/// What debos prints when its fakemachine's KVM guest does not start (before any action ran).
const NO_GUEST: &str = "error starting kvm backend";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fakemachine_auto_follows_kvm_and_kvm_needs_it() {
        assert_eq!(machine("auto", true), Ok(Machine::Kvm));
        assert_eq!(machine("auto", false), Ok(Machine::Native));
        assert_eq!(machine("none", true), Ok(Machine::Native));
        assert_eq!(machine("kvm", true), Ok(Machine::Kvm));
        assert!(machine("kvm", false).unwrap_err().contains("/dev/kvm"));
        assert!(machine("uml", true).unwrap_err().contains("\"auto\""));
    }

    #[test]
    fn the_slave_mirror_is_offered_unless_the_recipe_names_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = Context::for_test(
            dir.path(),
            dir.path(),
            dir.path(),
            crate::process::Log::open(&dir.path().join("log")).unwrap(),
        );
        ctx.mirror = Some("http://m/debian".into());
        let mut o: DebosOptions = toml::from_str(
            "recipe = \"board.yaml\"\narchitecture = \"arm64\"\nvariables = { suite = \"trixie\" }",
        )
        .unwrap();
        let vars = template_vars(&o, &ctx);
        assert_eq!(
            vars,
            [
                ("suite".to_string(), "trixie".to_string()),
                ("architecture".into(), "arm64".into()),
                ("mirror".into(), "http://m/debian".into()),
            ]
        );
        o.variables
            .insert("mirror".into(), "http://own/debian".into());
        assert!(template_vars(&o, &ctx).contains(&("mirror".into(), "http://own/debian".into())));
        assert!(!template_vars(&o, &ctx).contains(&("mirror".into(), "http://m/debian".into())));
        o.variables.remove("mirror");
        o.use_slave_mirror = false;
        assert!(!template_vars(&o, &ctx).iter().any(|(k, _)| k == "mirror"));
    }
}
