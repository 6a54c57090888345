//! What an image carries (issue 18): the apt sources a build really used, its installed
//! packages and the layout of its disk images. The slave collects a [`BuildRecord`] after the
//! backend and sends it to the master (`PUT /api/builds/{id}/record`, with the build's upload
//! token); the master checks it again on arrival and serves it:
//!
//! - `GET /api/builds/{id}/sources` (deb822 text; `?format=list` one-line form),
//!   `GET /api/projects/{name}/sources` (the last successful build's; `?release=NAME`),
//! - `GET /api/builds/{id}/packages` (`[`[`Package`]`]`),
//! - `GET /api/builds/{id}/artifacts/{name}/layout` ([`ImageLayout`]),
//! - `GET /api/builds/{a}/diff/{b}` ([`BuildDiff`]).
//!
//! [`sources`] renders and cleans apt sources (credentials out, the rewrite map applied);
//! [`version`] compares Debian versions; [`diff`] compares two builds.

pub mod diff;
pub mod sources;
pub mod version;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One line of a `SHA256SUMS` file as `sha256sum` writes it: `(sum, name)` from `HEX  NAME`
/// (text mode) or `HEX *NAME` (binary mode); `None` for anything else. The master checks a
/// build's sums with it, the slave's runner looks for a name in them.
pub fn sums_line(line: &str) -> Option<(&str, &str)> {
    line.split_once("  ").or_else(|| line.split_once(" *"))
}

/// The largest record the master accepts (a 20,000-package image is about 2 MB).
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// Everything a slave learned about what a build made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildRecord {
    /// The apt sources the image was built from, without credentials.
    #[serde(default)]
    pub sources: Vec<AptSource>,
    /// The image's installed packages (empty when the backend made no Debian root file system).
    #[serde(default)]
    pub packages: Vec<Package>,
    /// One per disk image artifact.
    #[serde(default)]
    pub images: Vec<ImageLayout>,
}

/// One apt source (a deb822 stanza; a one-line entry is one stanza with one type and one URI).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptSource {
    /// `deb` and/or `deb-src`.
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    /// Empty for a flat repository (a suite ending in `/`).
    #[serde(default)]
    pub components: Vec<String>,
    /// Other fields, deb822 names as keys (`Architectures`, `Signed-By`, `Trusted`, ...).
    /// A `Signed-By` that names a file inside the build's work dir has been removed; an inline
    /// key block is kept (it is public).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Where it was found: a path in the image (`/etc/apt/sources.list.d/debian.sources`) or
    /// the tool that was given it (`mmdebstrap`).
    #[serde(default)]
    pub origin: String,
}

/// An installed package, from the image's dpkg status.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package name (the binary's own name when dpkg names no other).
    pub source: String,
}

/// A disk image's partition table and file systems, read on the slave from the raw image
/// (before any compression).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLayout {
    /// The artifact this describes, as uploaded (`disk.img.zst`).
    pub artifact: String,
    /// Size of the raw image in bytes.
    pub size: u64,
    /// `gpt` or `dos`; `None` when the image is a bare file system.
    pub table: Option<String>,
    /// The disk's GUID (GPT) or identifier (`0x1234abcd`, MBR).
    pub disk_id: Option<String>,
    pub partitions: Vec<Partition>,
    /// The `.bmap` artifact made for it, if any.
    #[serde(default)]
    pub bmap: Option<String>,
    /// How the boot test of this image went, when the build's `[boot]` asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootTest>,
}

/// The boot test of a disk image (`[boot]` in `kiln.toml`): QEMU booted it with the kernel of
/// its root file system and watched the serial console for a pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootTest {
    pub passed: bool,
    /// The text waited for (`login:` unless the build says otherwise).
    pub pattern: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// The emulator and machine, like `qemu-system-x86_64 -machine q35`.
    pub machine: String,
    /// Seconds from starting QEMU to the outcome.
    pub seconds: u32,
    /// What happened, for a person: `"login:" on the serial console after 63 s`.
    pub detail: String,
    /// The serial console's last lines, control characters removed.
    #[serde(default)]
    pub serial_tail: Vec<String>,
    /// The artifact holding the whole serial log (a succeeded build's).
    #[serde(default)]
    pub log: Option<String>,
}

impl BootTest {
    /// At most this many lines of [`BootTest::serial_tail`] are kept, each at most
    /// [`BootTest::MAX_LINE`] characters.
    pub const TAIL_LINES: usize = 40;
    pub const MAX_LINE: usize = 300;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// 1-based, as `sfdisk` numbers them.
    pub number: u32,
    /// Offset from the start of the image, in bytes.
    pub start: u64,
    pub size: u64,
    /// The partition type as the table states it (a GPT type GUID or an MBR type like `83`).
    #[serde(rename = "type")]
    pub part_type: String,
    /// `ext4`, `vfat`, ... as the file system's own header says; `None` when unrecognised.
    pub filesystem: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// For file systems whose headers say so (ext2/3/4).
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    /// `/etc/os-release` of a root file system, as key → value.
    #[serde(default)]
    pub os_release: Option<BTreeMap<String, String>>,
}

/// `GET /api/builds/{a}/diff/{b}`: what changed from build `a` to build `b`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildDiff {
    pub from: crate::BuildId,
    pub to: crate::BuildId,
    pub packages: PackageDiff,
    pub artifacts: ArtifactDiff,
    pub sources: SourcesDiff,
    pub commits: CommitRange,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub upgraded: Vec<VersionChange>,
    pub downgraded: Vec<VersionChange>,
}

/// A package (by name and architecture) whose version changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionChange {
    pub name: String,
    pub architecture: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactDiff {
    pub added: Vec<ArtifactSize>,
    pub removed: Vec<ArtifactSize>,
    /// Artifacts in both whose size or sha256 differ.
    pub changed: Vec<ArtifactChange>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSize {
    pub name: String,
    pub size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactChange {
    pub name: String,
    pub from_size: u64,
    pub to_size: u64,
}

/// Sources as one-line entries (after the rewrite map), so a change reads like a text diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRange {
    pub from: Option<String>,
    pub to: Option<String>,
    /// The commits after `from` up to and including `to`, newest first, when the master could
    /// read them from the branch; empty with `note` saying why otherwise.
    pub commits: Vec<Commit>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    pub subject: String,
}

/// Checks a rewrite map (`[sources.rewrite]` in the config, a project's `source_rewrites`):
/// at most 100 entries, each an absolute URL (`scheme://host/...`) to an absolute URL, without
/// credentials on either side (sources lose theirs before the map is applied, and a public URL
/// must not carry any). The error names the offending entry.
pub fn check_rewrite_map(map: &BTreeMap<String, String>) -> Result<(), String> {
    if map.len() > 100 {
        return Err(format!(
            "at most 100 rewrites are allowed, not {}",
            map.len()
        ));
    }
    for (from, to) in map {
        for (what, url) in [("an internal URL", from), ("a public URL", to)] {
            check_url(url).map_err(|why| format!("'{from}' → '{to}': {what} {why}"))?;
        }
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("is longer than 2048 characters".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must be absolute (scheme://host/path)".into());
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let authority = rest.split('/').next().unwrap_or("");
    if !scheme_ok || (authority.is_empty() && scheme != "file") {
        return Err("must be absolute (scheme://host/path)".into());
    }
    if authority.contains('@') {
        return Err("must not carry a user name or password".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn rewrite_maps_are_checked_naming_the_entry() {
        assert!(check_rewrite_map(&map(&[(
            "http://mirror.internal/debian",
            "https://deb.debian.org/debian"
        )]))
        .is_ok());
        let e =
            check_rewrite_map(&map(&[("mirror.internal", "https://deb.debian.org")])).unwrap_err();
        assert!(
            e.contains("'mirror.internal'") && e.contains("absolute"),
            "{e}"
        );
        let e = check_rewrite_map(&map(&[("http://m/d", "https://u:p@pub/d")])).unwrap_err();
        assert!(e.contains("public URL") && e.contains("password"), "{e}");
        let e = check_rewrite_map(&map(&[("http://m/d", "https://pub/ d")])).unwrap_err();
        assert!(e.contains("spaces"), "{e}");
    }
}
