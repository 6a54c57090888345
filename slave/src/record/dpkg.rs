//! The installed packages of a root file system, read from its dpkg status file directly (no
//! `dpkg-query`, no chroot).

use super::rootfs;
use kiln_shared::record::Package;
use std::path::Path;

const STATUS: &str = "var/lib/dpkg/status";
/// A status file of 20,000 packages is about 30 MB.
const MAX_STATUS: u64 = 256 << 20;

/// The packages whose status is `install ok installed`, sorted by name, then architecture.
pub fn packages(root: &Path) -> Result<Vec<Package>, String> {
    let bytes = rootfs::read(root, STATUS, MAX_STATUS)
        .map_err(|e| format!("/{STATUS} in the root file system: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out: Vec<Package> = stanzas(&text).filter_map(|s| package(&s)).collect();
    out.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    Ok(out)
}

/// One stanza's fields (name, value) with continuation lines dropped: none of the fields read
/// here spans lines.
type Stanza<'a> = Vec<(&'a str, &'a str)>;

fn stanzas(text: &str) -> impl Iterator<Item = Stanza<'_>> {
    let mut lines = text.lines().peekable();
    std::iter::from_fn(move || {
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        lines.peek()?;
        let mut fields = Vec::new();
        for line in lines.by_ref() {
            if line.trim().is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim(), v.trim()));
            }
        }
        Some(fields)
    })
}

fn field<'a>(s: &Stanza<'a>, name: &str) -> Option<&'a str> {
    s.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn package(s: &Stanza<'_>) -> Option<Package> {
    let status: Vec<&str> = field(s, "Status")?.split_whitespace().collect();
    if status != ["install", "ok", "installed"] {
        return None;
    }
    let name = field(s, "Package")?.to_owned();
    let source = field(s, "Source")
        .and_then(|v| v.split_whitespace().next())
        .map_or_else(|| name.clone(), str::to_owned);
    Some(Package {
        version: field(s, "Version").unwrap_or_default().to_owned(),
        architecture: field(s, "Architecture").unwrap_or_default().to_owned(),
        source,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const STATUS_TEXT: &str = "\
Package: zlib1g
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime
 zlib is a library implementing the deflate compression method found
 .
 Source: not-a-field

Package: libc6
Status: install ok installed
Architecture: i386
Source: glibc
Version: 2.36-9+deb12u4

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4
";

    fn pkg(name: &str, version: &str, arch: &str, source: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: arch.into(),
            source: source.into(),
        }
    }

    #[test]
    fn parses_installed_packages() {
        let d = std::env::temp_dir().join(format!("kiln-dpkg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("var/lib/dpkg")).unwrap();
        let err = packages(&d).unwrap_err();
        assert!(err.contains("/var/lib/dpkg/status"), "{err}");
        fs::write(d.join(STATUS), STATUS_TEXT).unwrap();
        assert_eq!(
            packages(&d).unwrap(),
            [
                pkg("base-files", "12.4+deb12u5", "amd64", "base-files"),
                pkg("libc6", "2.36-9+deb12u4", "amd64", "glibc"),
                pkg("libc6", "2.36-9+deb12u4", "i386", "glibc"),
                pkg("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib"),
            ]
        );
        fs::remove_file(d.join(STATUS)).unwrap();
        std::os::unix::fs::symlink("/var/lib/dpkg/status", d.join(STATUS)).unwrap();
        let err = packages(&d).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn reads_this_machines_status_when_present() {
        if Path::new("/var/lib/dpkg/status").is_file() {
            let got = packages(Path::new("/")).unwrap();
            assert!(got.iter().any(|p| p.name == "dpkg"));
        }
    }
}
