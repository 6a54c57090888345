//! What this machine offers image tools ([`Capabilities`]): the tools and their versions, KVM,
//! loop devices, device-mapper, qemu-user binfmt, free disk. Sent in every hello (the master
//! shows it in `GET /api/slaves`), and read by `kiln-slave doctor`, which tells an admin which
//! Debian packages the slave lacks for each backend.

use kiln_shared::api::Capabilities;
use kiln_shared::config::SandboxMode;
use std::collections::BTreeMap;
use std::path::Path;

/// A tool: its name in [`Capabilities::tools`], the program looked for on `PATH`, and the
/// Debian package that brings it.
pub struct Tool {
    pub name: &'static str,
    pub program: &'static str,
    pub package: &'static str,
}

const fn tool(name: &'static str, program: &'static str, package: &'static str) -> Tool {
    Tool {
        name,
        program,
        package,
    }
}

pub const TOOLS: [Tool; 14] = [
    tool("git", "git", "git"),
    tool("mmdebstrap", "mmdebstrap", "mmdebstrap"),
    tool("live-build", "lb", "live-build"),
    tool("debootstrap", "debootstrap", "debootstrap"),
    tool("debos", "debos", "debos"),
    tool("vmdb2", "vmdb2", "vmdb2"),
    tool("sfdisk", "sfdisk", "fdisk"),
    tool("mkfs.ext4", "mkfs.ext4", "e2fsprogs"),
    tool("mtools", "mcopy", "mtools"),
    tool("zstd", "zstd", "zstd"),
    tool("xz", "xz", "xz-utils"),
    tool(
        "qemu-user-static",
        "qemu-aarch64-static",
        "qemu-user-static",
    ),
    tool(
        "qemu-system-x86_64",
        "qemu-system-x86_64",
        "qemu-system-x86",
    ),
    tool(
        "qemu-system-aarch64",
        "qemu-system-aarch64",
        "qemu-system-arm",
    ),
];

/// Probes the machine; `work_dir` is where builds run (its free space is reported).
pub fn probe(work_dir: &Path) -> Capabilities {
    Capabilities {
        tools: tool_versions(),
        kvm: crate::machine::kvm(),
        loop_devices: crate::machine::loop_devices(),
        device_mapper: device_mapper(),
        binfmt: crate::machine::emulated_arches(),
        free_disk_bytes: free_bytes(work_dir).unwrap_or(0),
    }
}

/// Tools found on `PATH`, with the version of the Debian package that installed them (one
/// `dpkg-query` for all).
fn tool_versions() -> BTreeMap<String, String> {
    let found: Vec<&Tool> = TOOLS
        .iter()
        .filter(|t| crate::machine::have_tool(t.program))
        .collect();
    let mut versions = BTreeMap::new();
    if !found.is_empty() {
        if let Ok(out) = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"])
            .args(found.iter().map(|t| t.package))
            .output()
        {
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                let mut f = l.split('\t');
                if let (Some(p), Some(v), Some(st)) = (f.next(), f.next(), f.next()) {
                    if st.starts_with("ii") {
                        versions.insert(p.to_string(), v.to_string());
                    }
                }
            }
        }
    }
    found
        .into_iter()
        .map(|t| {
            let v = versions
                .get(t.package)
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            (t.name.to_string(), v)
        })
        .collect()
}

/// The kernel has device-mapper (a loaded or built-in `dm_mod` registers its misc device).
fn device_mapper() -> bool {
    std::fs::read_to_string("/proc/misc")
        .map(|m| m.lines().any(|l| l.trim_end().ends_with(" device-mapper")))
        .unwrap_or(false)
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The backends a slave can offer, in the order it names them.
pub const BACKENDS: [&str; 6] = [
    "script",
    "exec",
    "mmdebstrap",
    "live-build",
    "debos",
    "vmdb2",
];

/// The backends this slave offers the master (its `Hello`): those [`missing_for`] finds
/// nothing missing for, so the master never sends a build this slave's `doctor` would call
/// not ready.
pub fn ready_backends(c: &Capabilities, sandbox: SandboxMode) -> Vec<String> {
    BACKENDS
        .iter()
        .filter(|b| missing_for(b, c, sandbox).is_ok_and(|m| m.is_empty()))
        .map(|b| b.to_string())
        .collect()
}

/// Everything `doctor` can check: the backends, and the boot test.
fn checkable() -> impl Iterator<Item = &'static str> {
    BACKENDS.into_iter().chain(["boot-test"])
}

fn unknown_backend(name: &str) -> String {
    let known: Vec<&str> = checkable().collect();
    format!("unknown backend \"{name}\" (known: {})", known.join(", "))
}

/// What a backend (or the boot test) needs that `c` lacks: `(what, Debian package)` pairs.
pub fn missing_for(
    backend: &str,
    c: &Capabilities,
    sandbox: SandboxMode,
) -> Result<Vec<(String, String)>, String> {
    let need: &[&str] = match backend {
        "script" | "exec" => &["git"],
        "mmdebstrap" => &["git", "mmdebstrap", "sfdisk", "mkfs.ext4", "zstd"],
        "live-build" => &["git", "live-build", "debootstrap"],
        "debos" => &["git", "debos", "zstd", "xz"],
        "vmdb2" => &["git", "vmdb2", "zstd", "xz"],
        "boot-test" => &["zstd"],
        other => return Err(unknown_backend(other)),
    };
    let mut missing: Vec<(String, String)> = need
        .iter()
        .filter(|n| !c.tools.contains_key(**n))
        .filter_map(|n| TOOLS.iter().find(|t| t.name == *n))
        .map(|t| (t.name.to_string(), t.package.to_string()))
        .collect();
    match backend {
        "vmdb2" if sandbox != SandboxMode::HostRoot => missing.push((
            "the host's root (vmdb2 partitions, formats and mounts loop devices)".into(),
            "slave.sandbox = \"host-root\"".into(),
        )),
        "debos" if sandbox != SandboxMode::HostRoot => missing.push((
            "the host's root (debos runs as root, natively or to start its fakemachine)".into(),
            "slave.sandbox = \"host-root\"".into(),
        )),
        _ => {}
    }
    match backend {
        "vmdb2" if !c.loop_devices => missing.push((
            "loop devices (vmdb2 attaches its image to one)".into(),
            "the loop kernel module (modprobe loop)".into(),
        )),
        "debos" if !c.loop_devices && !c.kvm => missing.push((
            "loop devices or KVM (debos makes images on loop devices, or in its fakemachine)"
                .into(),
            "the loop kernel module (modprobe loop), or access to /dev/kvm".into(),
        )),
        "live-build" if sandbox != SandboxMode::HostRoot => missing.push((
            "the host's root (live-build makes device nodes)".into(),
            "slave.sandbox = \"host-root\"".into(),
        )),
        "boot-test" => {
            let native = crate::machine::native_arch();
            let qemu = match native.as_str() {
                "arm64" => "qemu-system-aarch64",
                _ => "qemu-system-x86_64",
            };
            if !c.tools.contains_key(qemu) {
                let t = TOOLS.iter().find(|t| t.name == qemu).expect("listed");
                missing.push((t.name.into(), t.package.into()));
            }
        }
        _ => {}
    }
    Ok(missing)
}

/// `kiln-slave doctor`: what this slave has, and what it lacks for `backends` (all when empty).
/// Returns the report and whether anything is missing.
pub fn doctor(c: &Capabilities, backends: &[String], sandbox: SandboxMode) -> (String, bool) {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "tools:");
    for t in &TOOLS {
        match c.tools.get(t.name) {
            Some(v) => {
                let _ = writeln!(o, "  {:<20} {v}", t.name);
            }
            None => {
                let _ = writeln!(o, "  {:<20} - (apt-get install {})", t.name, t.package);
            }
        }
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(o, "kvm: {}", yes(c.kvm));
    let _ = writeln!(o, "loop devices: {}", yes(c.loop_devices));
    let _ = writeln!(o, "device-mapper: {}", yes(c.device_mapper));
    let _ = writeln!(
        o,
        "qemu-user binfmt: {}",
        if c.binfmt.is_empty() {
            "none".to_string()
        } else {
            c.binfmt.join(", ")
        }
    );
    let _ = writeln!(
        o,
        "free disk in the work dir: {} MiB",
        c.free_disk_bytes >> 20
    );
    let all: Vec<String> = checkable().map(String::from).collect();
    let wanted = if backends.is_empty() { &all } else { backends };
    let mut packages: Vec<String> = vec![];
    let mut lacking = false;
    for b in wanted {
        match missing_for(b, c, sandbox) {
            Ok(m) if m.is_empty() => {
                let _ = writeln!(o, "{b}: ready");
            }
            Ok(m) => {
                lacking = true;
                let what: Vec<String> = m.iter().map(|(w, p)| format!("{w} ({p})")).collect();
                let _ = writeln!(o, "{b}: missing {}", what.join(", "));
                for (_, p) in m {
                    if !p.contains(' ') && !packages.contains(&p) {
                        packages.push(p);
                    }
                }
            }
            Err(e) => {
                lacking = true;
                let _ = writeln!(o, "{e}");
            }
        }
    }
    if !packages.is_empty() {
        let _ = writeln!(o, "to install: apt-get install {}", packages.join(" "));
    }
    (o, lacking)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctor_names_the_missing_packages() {
        let mut c = Capabilities::default();
        c.tools.insert("git".into(), "1:2.39".into());
        c.tools.insert("mmdebstrap".into(), "1.3.5".into());
        let (report, lacking) = doctor(
            &c,
            &["mmdebstrap".into(), "script".into()],
            SandboxMode::UserNamespace,
        );
        assert!(lacking);
        assert!(
            report
                .contains("mmdebstrap: missing sfdisk (fdisk), mkfs.ext4 (e2fsprogs), zstd (zstd)"),
            "{report}"
        );
        assert!(report.contains("script: ready"), "{report}");
        assert!(
            report.contains("to install: apt-get install fdisk e2fsprogs zstd"),
            "{report}"
        );
        let (report, _) = doctor(&c, &["live-build".into()], SandboxMode::UserNamespace);
        assert!(report.contains("slave.sandbox = \"host-root\""), "{report}");
        assert!(missing_for("kiwi", &c, SandboxMode::HostRoot)
            .unwrap_err()
            .contains("unknown backend"));
    }

    #[test]
    fn a_slave_offers_only_the_backends_it_has_everything_for() {
        let mut c = Capabilities::default();
        assert!(
            ready_backends(&c, SandboxMode::HostRoot).is_empty(),
            "no git"
        );
        for t in ["git", "mmdebstrap", "live-build", "debootstrap"] {
            c.tools.insert(t.into(), "1".into());
        }
        // mmdebstrap without the tools that make its disk image; live-build only as the
        // host's root.
        assert_eq!(
            ready_backends(&c, SandboxMode::HostRoot),
            ["script", "exec", "live-build"]
        );
        assert_eq!(
            ready_backends(&c, SandboxMode::UserNamespace),
            ["script", "exec"]
        );
        for t in ["sfdisk", "mkfs.ext4", "zstd", "xz", "debos", "vmdb2"] {
            c.tools.insert(t.into(), "1".into());
        }
        assert_eq!(
            ready_backends(&c, SandboxMode::UserNamespace),
            ["script", "exec", "mmdebstrap"]
        );
        c.loop_devices = true;
        assert_eq!(ready_backends(&c, SandboxMode::HostRoot), BACKENDS);
        // Every backend offered is one the rules know.
        for b in BACKENDS {
            assert!(missing_for(b, &c, SandboxMode::HostRoot).is_ok(), "{b}");
        }
    }

    #[test]
    fn vmdb2_needs_loop_devices_and_debos_loop_devices_or_kvm() {
        let mut c = Capabilities::default();
        for t in ["git", "vmdb2", "debos", "zstd", "xz"] {
            c.tools.insert(t.into(), "1".into());
        }
        let lacks = |c: &Capabilities, b: &str| {
            missing_for(b, c, SandboxMode::HostRoot)
                .unwrap()
                .into_iter()
                .map(|(what, _)| what)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            lacks(&c, "vmdb2"),
            ["loop devices (vmdb2 attaches its image to one)"]
        );
        assert!(lacks(&c, "debos")[0].starts_with("loop devices or KVM"));
        c.kvm = true;
        assert!(lacks(&c, "debos").is_empty());
        assert_eq!(lacks(&c, "vmdb2").len(), 1);
        c.loop_devices = true;
        assert!(lacks(&c, "vmdb2").is_empty());
    }

    #[test]
    fn this_machine_is_probed() {
        let c = probe(Path::new("/"));
        assert!(c.free_disk_bytes > 0);
        assert!(c.tools.contains_key("git"), "{c:?}");
    }
}
