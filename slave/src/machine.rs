//! What this machine is: its Debian architecture, the image tools it has, and the apt mirror and
//! options its own apt uses (so builds default to them; no mirror is ever written in the code).

use std::path::Path;
use std::sync::OnceLock;

/// Debian architecture name of this machine: asked of dpkg once per process (a build's start
/// asks it for every architecture it might emulate).
pub fn native_arch() -> String {
    static NATIVE: OnceLock<String> = OnceLock::new();
    NATIVE.get_or_init(ask_native_arch).clone()
}

fn ask_native_arch() -> String {
    if let Ok(out) = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
    {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !s.is_empty() {
            return s;
        }
    }
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "x86" => "i386",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        other => other,
    }
    .to_string()
}

pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Whether the kernel offers loop devices.
pub fn loop_devices() -> bool {
    Path::new("/dev/loop-control").exists()
}

/// Whether `/dev/kvm` opens for this process.
pub fn kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Whether this process is in a user namespace other than the host's (its root is not the
/// host's root).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// The first Debian archive (not security, not updates) in the machine's apt sources.
pub fn apt_mirror() -> Option<String> {
    apt_mirror_from(Path::new("/etc/apt"))
}

pub fn apt_mirror_from(etc_apt: &Path) -> Option<String> {
    apt_source_from(etc_apt, is_main_archive)
}

/// The first security archive (a suite ending in `-security`) in the machine's apt sources.
pub fn apt_security_mirror() -> Option<String> {
    apt_security_mirror_from(Path::new("/etc/apt"))
}

pub fn apt_security_mirror_from(etc_apt: &Path) -> Option<String> {
    apt_source_from(etc_apt, |s| {
        s.ends_with("-security") || s.ends_with("/updates")
    })
}

/// The URI of the first `deb` source with a suite that `wanted` accepts.
fn apt_source_from(etc_apt: &Path, wanted: fn(&str) -> bool) -> Option<String> {
    let mut files: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let found = if f.extension().is_some_and(|e| e == "sources") {
            from_deb822(&text, wanted)
        } else if f.extension().is_some_and(|e| e == "list") {
            from_one_line(&text, wanted)
        } else {
            None
        };
        if found.is_some() {
            return found;
        }
    }
    std::fs::read_to_string(etc_apt.join("sources.list"))
        .ok()
        .and_then(|t| from_one_line(&t, wanted))
}

fn is_main_archive(suite: &str) -> bool {
    !suite.contains("security") && !suite.contains("updates") && !suite.contains("backports")
}

fn from_deb822(text: &str, wanted: fn(&str) -> bool) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
            })
        };
        let types = field("Types").unwrap_or_default();
        let enabled = field("Enabled").is_none_or(|e| e != "no");
        let suites = field("Suites").unwrap_or_default();
        if enabled
            && types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(wanted)
        {
            if let Some(uri) =
                field("URIs").and_then(|u| u.split_whitespace().next().map(str::to_string))
            {
                return Some(uri);
            }
        }
    }
    None
}

fn from_one_line(text: &str, wanted: fn(&str) -> bool) -> Option<String> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace().filter(|w| !w.starts_with('['));
        if w.next()? != "deb" {
            return None;
        }
        let uri = w.next()?;
        let suite = w.next()?;
        wanted(suite).then(|| uri.to_string())
    })
}

/// apt options of the host that builds must share: today `Acquire::Check-Valid-Until`, which a
/// snapshot mirror needs off.
pub fn apt_options() -> Vec<String> {
    let Ok(out) = std::process::Command::new("apt-config")
        .args(["dump", "Acquire::Check-Valid-Until"])
        .output()
    else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let v = l.strip_prefix("Acquire::Check-Valid-Until ")?;
            Some(format!(
                "Acquire::Check-Valid-Until {}",
                v.trim_end_matches(';')
            ))
        })
        .collect()
}

/// The qemu-user binfmt entry needed to run binaries of `arch` here, if any.
pub fn binfmt_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "arm64" => "qemu-aarch64",
        "armhf" | "armel" => "qemu-arm",
        "riscv64" => "qemu-riscv64",
        "ppc64el" => "qemu-ppc64le",
        "s390x" => "qemu-s390x",
        "i386" => return None,
        "amd64" => "qemu-x86_64",
        _ => return None,
    })
}

/// Foreign architectures this machine can run through an enabled qemu-user binfmt entry.
pub fn emulated_arches() -> Vec<String> {
    let native = native_arch();
    [
        "arm64", "armhf", "armel", "riscv64", "ppc64el", "s390x", "amd64",
    ]
    .into_iter()
    .filter(|a| *a != native && can_run_arch(a).is_ok())
    .map(str::to_string)
    .collect()
}

/// Whether this machine can run binaries of `arch` (natively or through an enabled binfmt).
pub fn can_run_arch(arch: &str) -> Result<(), String> {
    let native = native_arch();
    if arch == native
        || (native == "amd64" && arch == "i386")
        || (native == "arm64" && arch == "armhf")
    {
        return Ok(());
    }
    let Some(name) = binfmt_name(arch) else {
        return Err(format!(
            "this slave ({native}) has no way to run {arch} binaries"
        ));
    };
    let entry = Path::new("/proc/sys/fs/binfmt_misc").join(name);
    match std::fs::read_to_string(&entry) {
        Ok(s) if s.lines().next() == Some("enabled") => Ok(()),
        _ => Err(format!(
            "this slave ({native}) cannot run {arch} binaries: binfmt entry {name} is not enabled \
             (install qemu-user-static and binfmt-support, mount binfmt_misc, run update-binfmts --enable {name})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_security(s: &str) -> bool {
        s.ends_with("-security")
    }

    #[test]
    fn deb822_tells_the_archive_from_its_security_archive() {
        let t = "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n\
                 Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            from_deb822(t, is_main_archive).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            from_deb822(t, is_security).as_deref(),
            Some("http://sec.example/debian-security")
        );
    }

    #[test]
    fn one_line_format() {
        let t = "# c\ndeb [arch=amd64] http://m.example/debian bookworm main\n\
                 deb http://s.example/debian-security bookworm-security main\n";
        assert_eq!(
            from_one_line(t, is_main_archive).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            from_one_line(t, is_security).as_deref(),
            Some("http://s.example/debian-security")
        );
        assert_eq!(
            from_one_line("deb-src http://x/ y main", is_main_archive),
            None
        );
    }
}
