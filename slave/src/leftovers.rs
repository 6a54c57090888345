//! What a build may leave attached to the machine after its processes are gone: loop devices
//! (global: they outlive the build's mount namespace) whose backing file is one of the build's
//! files, and mounts under the build's directory (a host-root build can reach the host's mount
//! namespace). [`release`] detaches and unmounts them; it runs after every build, succeeded,
//! failed or cancelled, once its processes have ended and before its files are removed.
//!
//! Loop devices are matched by the backing file's device and inode (a build sees its private
//! `/tmp` under another path than the host does), or, for a backing file already deleted (the
//! runner frees its scratch space before the outputs are uploaded), by the name it was attached
//! under: the build's dir is bound at the same path inside its sandbox.

use serde::Deserialize;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What [`release`] freed, for the build's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub loop_devices: Vec<String>,
    pub mounts: Vec<PathBuf>,
    /// What could not be freed, with the reason.
    pub failures: Vec<String>,
}

impl Released {
    pub fn is_empty(&self) -> bool {
        self.loop_devices.is_empty() && self.mounts.is_empty() && self.failures.is_empty()
    }
}

/// Unmounts every mount under `dir` (deepest first), then detaches every loop device backed by
/// a file under `dir`.
pub fn release(dir: &Path) -> Released {
    let mut out = Released::default();
    for m in mounts_under(dir) {
        // Lazy: whatever still holds it open (nothing should: the build's processes are gone)
        // cannot keep the mount attached.
        match Command::new("umount").arg("-l").arg(&m).output() {
            Ok(o) if o.status.success() => out.mounts.push(m),
            Ok(o) => out.failures.push(format!(
                "umount {}: {}",
                m.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => out.failures.push(format!("umount {}: {e}", m.display())),
        }
    }
    let devices = loop_devices();
    if devices.is_empty() {
        return out;
    }
    let files = files_under(dir);
    for d in devices {
        let by_name = d
            .file
            .as_deref()
            .is_some_and(|f| Path::new(f.trim_end_matches(" (deleted)")).starts_with(dir));
        if !files.contains(&(d.dev, d.ino)) && !by_name {
            continue;
        }
        match Command::new("losetup").arg("-d").arg(&d.name).output() {
            Ok(o) if o.status.success() => out.loop_devices.push(d.name),
            Ok(o) => out.failures.push(format!(
                "losetup -d {}: {}",
                d.name,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => out.failures.push(format!("losetup -d {}: {e}", d.name)),
        }
    }
    out
}

/// An attached loop device and its backing file's (device, inode).
#[derive(Debug, PartialEq, Eq)]
pub struct LoopDevice {
    pub name: String,
    pub dev: (u64, u64),
    pub ino: u64,
    /// The backing file's name as its attacher saw it.
    pub file: Option<String>,
}

#[derive(Deserialize)]
struct LosetupList {
    #[serde(default)]
    loopdevices: Vec<LosetupRow>,
}

#[derive(Deserialize)]
struct LosetupRow {
    name: String,
    #[serde(rename = "back-ino")]
    back_ino: Option<serde_json::Value>,
    #[serde(rename = "back-maj:min")]
    back_maj_min: Option<String>,
    #[serde(rename = "back-file")]
    back_file: Option<String>,
}

/// The attached loop devices (none when `losetup` is missing or lists nothing). `losetup` is
/// asked only when sysfs shows an attached device, or cannot be read: most builds attach none,
/// and a process started after every build is a few milliseconds of each no-op build.
pub fn loop_devices() -> Vec<LoopDevice> {
    if attached_in_sysfs(Path::new("/sys/block")) == Some(false) {
        return vec![];
    }
    let Ok(o) = Command::new("losetup")
        .args([
            "--json",
            "--list",
            "-O",
            "NAME,BACK-INO,BACK-MAJ:MIN,BACK-FILE",
        ])
        .output()
    else {
        return vec![];
    };
    parse_losetup(&String::from_utf8_lossy(&o.stdout))
}

/// Whether `block` (sysfs's `/sys/block`) shows a loop device with a backing file: the kernel
/// gives a loop device its `loop/` directory while it is attached. `None` when it cannot tell.
fn attached_in_sysfs(block: &Path) -> Option<bool> {
    let entries = std::fs::read_dir(block).ok()?;
    let mut attached = false;
    for e in entries {
        let e = e.ok()?;
        if e.file_name().as_encoded_bytes().starts_with(b"loop") && e.path().join("loop").is_dir() {
            attached = true;
        }
    }
    Some(attached)
}

fn parse_losetup(json: &str) -> Vec<LoopDevice> {
    let Ok(list) = serde_json::from_str::<LosetupList>(json) else {
        return vec![];
    };
    list.loopdevices
        .into_iter()
        .filter_map(|r| {
            let ino = match r.back_ino? {
                serde_json::Value::Number(n) => n.as_u64()?,
                serde_json::Value::String(s) => s.trim().parse().ok()?,
                _ => return None,
            };
            let (maj, min) = r.back_maj_min?.trim().split_once(':').and_then(|(a, b)| {
                Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?))
            })?;
            Some(LoopDevice {
                name: r.name,
                dev: (maj, min),
                ino,
                file: r.back_file,
            })
        })
        .collect()
}

/// (device as (major, minor), inode) of every regular file under `dir`, not following links.
fn files_under(dir: &Path) -> HashSet<((u64, u64), u64)> {
    let mut out = HashSet::new();
    crate::tree::walk(dir, |_, m| {
        if m.is_file() {
            let dev = m.dev();
            out.insert(((libc::major(dev).into(), libc::minor(dev).into()), m.ino()));
        }
    });
    out
}

/// Mount points at or under `dir` in this process's mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found = parse_mountinfo_under(&text, dir);
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn parse_mountinfo_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_tells_whether_a_loop_device_is_attached() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(attached_in_sysfs(&d.path().join("missing")), None);
        std::fs::create_dir_all(d.path().join("loop0")).unwrap();
        std::fs::create_dir_all(d.path().join("sda/loop")).unwrap();
        assert_eq!(attached_in_sysfs(d.path()), Some(false));
        std::fs::create_dir_all(d.path().join("loop7/loop")).unwrap();
        assert_eq!(attached_in_sysfs(d.path()), Some(true));
    }

    #[test]
    fn losetup_json_with_padded_numbers() {
        let j = r#"{"loopdevices": [
            {"name": "/dev/loop0", "back-ino": 10010928, "back-maj:min": "     254:0  ",
             "back-file": "/w/builds/7/scratch/disk.img (deleted)"},
            {"name": "/dev/loop1", "back-ino": "77", "back-maj:min": "8:1"},
            {"name": "/dev/loop2", "back-ino": null, "back-maj:min": null}
        ]}"#;
        assert_eq!(
            parse_losetup(j),
            vec![
                LoopDevice {
                    name: "/dev/loop0".into(),
                    dev: (254, 0),
                    ino: 10010928,
                    file: Some("/w/builds/7/scratch/disk.img (deleted)".into())
                },
                LoopDevice {
                    name: "/dev/loop1".into(),
                    dev: (8, 1),
                    ino: 77,
                    file: None
                },
            ]
        );
        assert!(parse_losetup("").is_empty());
        assert!(parse_losetup("{}").is_empty());
    }

    #[test]
    fn mounts_under_a_dir_only_and_unescaped() {
        let mi = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                  30 22 7:0 / /work/builds/7/scratch/mnt rw - ext4 /dev/loop0 rw\n\
                  31 22 7:1 / /work/builds/7/scratch/a\\040b rw - ext4 /dev/loop1 rw\n\
                  32 22 7:2 / /work/builds/70/scratch/mnt rw - ext4 /dev/loop2 rw\n";
        assert_eq!(
            parse_mountinfo_under(mi, Path::new("/work/builds/7")),
            vec![
                PathBuf::from("/work/builds/7/scratch/mnt"),
                PathBuf::from("/work/builds/7/scratch/a b")
            ]
        );
    }
}
