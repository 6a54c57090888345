//! A raw disk image's layout, read from the file without mounting it and without loop devices:
//! the partition table from `sfdisk --json`, each file system from `blkid -p` (probing at the
//! partition's offset) or, failing that, its ext superblock, and a root file system's
//! `os-release` through `debugfs` (`IMAGE?offset=N`).

use kiln_shared::record::{ImageLayout, Partition};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// The layout of the raw image `raw`, uploaded as `artifact`. An image without a partition
/// table but with a file system at its start is one pseudo-partition (number 1 at 0).
pub fn image_layout(raw: &Path, artifact: &str) -> Result<ImageLayout, String> {
    let size = std::fs::metadata(raw)
        .map_err(|e| format!("{}: {e}", raw.display()))?
        .len();
    let mut layout = ImageLayout {
        artifact: artifact.to_owned(),
        size,
        ..Default::default()
    };
    match partition_table(raw)? {
        Some(table) => {
            layout.table = table["label"].as_str().map(str::to_owned);
            layout.disk_id = table["id"].as_str().map(str::to_owned);
            layout.partitions = partitions(&table);
        }
        None => layout.partitions.push(Partition {
            number: 1,
            size,
            ..Default::default()
        }),
    }
    for p in &mut layout.partitions {
        p.size = p.size.min(size.saturating_sub(p.start));
        describe(raw, p)?;
    }
    if layout.table.is_none() && layout.partitions[0].filesystem.is_none() {
        layout.partitions.clear();
    }
    Ok(layout)
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    cmd.output().map_err(|e| format!("cannot run {what}: {e}"))
}

/// `sfdisk --json`'s `partitiontable`, or `None` when the image has no partition table.
fn partition_table(raw: &Path) -> Result<Option<Value>, String> {
    let out = run(Command::new("sfdisk").arg("--json").arg(raw), "sfdisk")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("does not contain a recognized partition table") {
            return Ok(None);
        }
        return Err(format!("sfdisk --json {}: {}", raw.display(), err.trim()));
    }
    let mut v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("sfdisk --json {}: unreadable output: {e}", raw.display()))?;
    Ok(Some(v["partitiontable"].take()))
}

fn partitions(table: &Value) -> Vec<Partition> {
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let list = table["partitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    list.iter()
        .enumerate()
        .map(|(i, p)| Partition {
            number: node_number(p["node"].as_str().unwrap_or_default()).unwrap_or(i as u32 + 1),
            start: p["start"].as_u64().unwrap_or(0).saturating_mul(sector),
            size: p["size"].as_u64().unwrap_or(0).saturating_mul(sector),
            part_type: p["type"].as_str().unwrap_or_default().to_owned(),
            ..Default::default()
        })
        .collect()
}

/// `disk.img1` → 1, `disk0p12` → 12.
fn node_number(node: &str) -> Option<u32> {
    let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    node[node.len() - digits..].parse().ok()
}

/// Fills in the file system, its usage and `os-release`.
fn describe(raw: &Path, p: &mut Partition) -> Result<(), String> {
    let sb = ext::read(raw, p.start);
    match blkid(raw, p.start, p.size)? {
        Some(tags) => {
            p.filesystem = tags.get("TYPE").cloned();
            p.label = tags.get("LABEL").cloned();
            p.uuid = tags.get("UUID").cloned();
        }
        None => {
            if let Some(sb) = &sb {
                p.filesystem = Some(sb.kind().to_owned());
                p.label = sb.label.clone();
                p.uuid = Some(sb.uuid.clone());
            }
        }
    }
    let is_ext = p
        .filesystem
        .as_deref()
        .is_some_and(|f| f.starts_with("ext"));
    if let (true, Some(sb)) = (is_ext, &sb) {
        p.used_bytes = Some(sb.used_bytes());
        p.free_bytes = Some(sb.free_bytes());
        p.os_release = os_release(raw, p.start);
    }
    Ok(())
}

/// `blkid -p` at an offset: its tags, `Some(empty)` when it finds nothing, `None` when blkid
/// is not installed or gives no clear answer (the caller then reads the superblock itself).
fn blkid(raw: &Path, offset: u64, size: u64) -> Result<Option<BTreeMap<String, String>>, String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(offset.to_string())
        .arg("--size")
        .arg(size.to_string())
        .arg(raw)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot run blkid: {e}")),
    };
    match out.status.code() {
        Some(0) => Ok(Some(export_tags(&String::from_utf8_lossy(&out.stdout)))),
        // 2: nothing found.
        Some(2) => Ok(Some(BTreeMap::new())),
        // 8: ambivalent (several signatures), 4: usage error, ...: let the superblock decide.
        _ => {
            tracing::warn!(
                "blkid -p -O {offset} {}: {:?} {}",
                raw.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(None)
        }
    }
}

/// `KEY=value` lines, `\` escapes undone; empty values are left out.
fn export_tags(text: &str) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let mut value = String::new();
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            value.push(if c == '\\' {
                chars.next().unwrap_or(c)
            } else {
                c
            });
        }
        if !value.is_empty() {
            tags.insert(k.to_owned(), value);
        }
    }
    tags
}

/// The root file system's `os-release` through `debugfs` (which does not follow symlinks, so
/// `/usr/lib/os-release` is tried after `/etc/os-release`).
fn os_release(raw: &Path, offset: u64) -> Option<BTreeMap<String, String>> {
    let device = format!("{}?offset={offset}", raw.display());
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|file| {
            let out = Command::new("debugfs")
                .arg("-R")
                .arg(format!("cat {file}"))
                .arg(&device)
                .output()
                .ok()?;
            let map = parse_os_release(&String::from_utf8_lossy(&out.stdout));
            (out.status.success() && !map.is_empty()).then_some(map)
        })
}

/// `KEY=value` / `KEY="value"` lines (os-release(5)); comments and other lines are skipped.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let valid_key = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if line.starts_with('#') || !valid_key {
            continue;
        }
        map.insert(k.to_owned(), unquote(v.trim()));
    }
    map
}

fn unquote(v: &str) -> String {
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if !quoted {
        return v.to_owned();
    }
    let inner = &v[1..v.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// The ext2/3/4 superblock, read directly (1024 bytes at the file system's offset + 1024).
mod ext {
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    const MAGIC: u16 = 0xEF53;
    const COMPAT_HAS_JOURNAL: u32 = 0x4;
    const INCOMPAT_EXTENTS: u32 = 0x40;
    const INCOMPAT_64BIT: u32 = 0x80;
    const INCOMPAT_FLEX_BG: u32 = 0x200;
    /// huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum: ext4 only.
    const RO_COMPAT_EXT4: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400;

    pub struct Superblock {
        pub blocks: u64,
        pub free_blocks: u64,
        pub block_size: u64,
        pub compat: u32,
        pub incompat: u32,
        pub ro_compat: u32,
        pub uuid: String,
        pub label: Option<String>,
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    pub fn read(raw: &Path, offset: u64) -> Option<Superblock> {
        let f = std::fs::File::open(raw).ok()?;
        let mut b = [0u8; 1024];
        f.read_exact_at(&mut b, offset.checked_add(1024)?).ok()?;
        parse(&b)
    }

    pub fn parse(b: &[u8; 1024]) -> Option<Superblock> {
        if u16::from_le_bytes([b[56], b[57]]) != MAGIC {
            return None;
        }
        let log = u32_at(b, 24);
        if log > 6 {
            return None;
        }
        let incompat = u32_at(b, 96);
        let wide = incompat & INCOMPAT_64BIT != 0;
        let hi = |at: usize| {
            if wide {
                u64::from(u32_at(b, at)) << 32
            } else {
                0
            }
        };
        let u = &b[104..120];
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            hex::encode(&u[0..4]),
            hex::encode(&u[4..6]),
            hex::encode(&u[6..8]),
            hex::encode(&u[8..10]),
            hex::encode(&u[10..16])
        );
        let name = &b[120..136];
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(16)];
        let label = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        Some(Superblock {
            blocks: u64::from(u32_at(b, 4)) | hi(0x150),
            free_blocks: u64::from(u32_at(b, 12)) | hi(0x158),
            block_size: 1024 << log,
            compat: u32_at(b, 92),
            incompat,
            ro_compat: u32_at(b, 100),
            uuid,
            label,
        })
    }

    impl Superblock {
        pub fn kind(&self) -> &'static str {
            let ext4_incompat = INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG;
            if self.incompat & ext4_incompat != 0 || self.ro_compat & RO_COMPAT_EXT4 != 0 {
                "ext4"
            } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
                "ext3"
            } else {
                "ext2"
            }
        }

        pub fn free_bytes(&self) -> u64 {
            self.free_blocks
                .min(self.blocks)
                .saturating_mul(self.block_size)
        }

        pub fn used_bytes(&self) -> u64 {
            (self.blocks - self.free_blocks.min(self.blocks)).saturating_mul(self.block_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    const GPT_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok()
    }

    fn tools_present() -> bool {
        let missing: Vec<&str> = ["sfdisk", "mkfs.ext4", "blkid", "debugfs"]
            .into_iter()
            .filter(|t| !have(t))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "skipped: {missing:?} not installed (apt-get install fdisk e2fsprogs util-linux)"
            );
        }
        missing.is_empty()
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-layout-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// A root directory whose `/etc/os-release` is a symlink, as in Debian.
    fn rootfs(d: &Path) -> PathBuf {
        let root = d.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(
            root.join("usr/lib/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        fs::write(root.join("etc/hostname"), "kiln\n").unwrap();
        root
    }

    fn sh(script: &str, args: &[&Path]) {
        let st = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    }

    /// Made as `backend/mmdebstrap.rs` makes disk images: sparse file, sfdisk script, then
    /// `mkfs.ext4 -d` at the partition's offset.
    fn disk_image(d: &Path, label: &str, ptype: &str) -> PathBuf {
        let img = d.join(format!("{label}.img"));
        let size: u64 = 64 << 20;
        let margin: u64 = 1 << 20;
        let part = (size - 2 * margin) / 4096 * 4096;
        fs::File::create(&img).unwrap().set_len(size).unwrap();
        let script = d.join(format!("{label}.sfdisk"));
        fs::write(
            &script,
            format!(
                "label: {label}\nstart={}, size={}, type={ptype}\n",
                margin / 512,
                part / 512
            ),
        )
        .unwrap();
        sh(
            "sfdisk -q --no-reread --no-tell-kernel \"$1\" < \"$2\"",
            &[&img, &script],
        );
        let root = rootfs(d);
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "rootfs", "-d"])
            .arg(&root)
            .args(["-E", &format!("offset={margin}")])
            .arg(&img)
            .arg(format!("{}k", part / 1024))
            .status()
            .unwrap();
        assert!(st.success());
        img
    }

    fn check_root_partition(p: &Partition) {
        assert_eq!(p.number, 1);
        assert_eq!(p.start, 1 << 20);
        assert_eq!(p.size, (62 << 20) / 4096 * 4096);
        assert_eq!(p.filesystem.as_deref(), Some("ext4"));
        assert_eq!(p.label.as_deref(), Some("rootfs"));
        assert_eq!(p.uuid.as_deref().map(str::len), Some(36));
        let (used, free) = (p.used_bytes.unwrap(), p.free_bytes.unwrap());
        assert_eq!(used + free, p.size);
        assert!(used > 0 && free > used, "{used} {free}");
        let os = p.os_release.as_ref().expect("os-release");
        assert_eq!(os["ID"], "debian");
        assert_eq!(os["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
    }

    #[test]
    fn gpt_image() {
        if !tools_present() {
            return;
        }
        let d = tmp("gpt");
        let img = disk_image(&d, "gpt", GPT_LINUX);
        let l = image_layout(&img, "disk.img.zst").unwrap();
        assert_eq!(l.artifact, "disk.img.zst");
        assert_eq!(l.size, 64 << 20);
        assert_eq!(l.table.as_deref(), Some("gpt"));
        assert_eq!(l.disk_id.as_deref().map(str::len), Some(36));
        assert_eq!(l.partitions.len(), 1);
        assert_eq!(l.partitions[0].part_type, GPT_LINUX);
        check_root_partition(&l.partitions[0]);
        // The superblock read agrees with blkid.
        let sb = ext::read(&img, 1 << 20).unwrap();
        assert_eq!(sb.kind(), "ext4");
        assert_eq!(Some(sb.uuid), l.partitions[0].uuid);
        assert_eq!(sb.label.as_deref(), Some("rootfs"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn dos_image() {
        if !tools_present() {
            return;
        }
        let d = tmp("dos");
        let img = disk_image(&d, "dos", "83");
        let l = image_layout(&img, "disk.img.zst").unwrap();
        assert_eq!(l.table.as_deref(), Some("dos"));
        assert!(l.disk_id.as_deref().unwrap().starts_with("0x"));
        assert_eq!(l.partitions[0].part_type, "83");
        check_root_partition(&l.partitions[0]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn bare_file_system_and_blank_image() {
        if !tools_present() {
            return;
        }
        let d = tmp("bare");
        let root = rootfs(&d);
        let img = d.join("bare.img");
        fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "rootfs", "-d"])
            .arg(&root)
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        let l = image_layout(&img, "rootfs.ext4").unwrap();
        assert_eq!(l.table, None);
        assert_eq!(l.partitions.len(), 1);
        let p = &l.partitions[0];
        assert_eq!((p.number, p.start, p.size), (1, 0, 32 << 20));
        assert_eq!(p.filesystem.as_deref(), Some("ext4"));
        assert_eq!(p.os_release.as_ref().unwrap()["VERSION_ID"], "12");

        let blank = d.join("blank.img");
        fs::File::create(&blank).unwrap().set_len(1 << 20).unwrap();
        let l = image_layout(&blank, "blank.img").unwrap();
        assert_eq!((l.table, l.partitions.len()), (None, 0));
        assert!(image_layout(&d.join("none.img"), "x").is_err());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn helpers() {
        assert_eq!(node_number("disk.img1"), Some(1));
        assert_eq!(node_number("disk0p12"), Some(12));
        assert_eq!(node_number("disk"), None);
        let os = parse_os_release("# c\nNAME=\"Debian \\\"x\\\"\"\nID=debian\nBAD KEY=1\nV='1'\n");
        assert_eq!(os["NAME"], "Debian \"x\"");
        assert_eq!(os["ID"], "debian");
        assert_eq!(os["V"], "1");
        assert_eq!(os.len(), 3);
        let tags = export_tags("LABEL=my\\ disk\nTYPE=vfat\nEMPTY=\n");
        assert_eq!(tags["LABEL"], "my disk");
        assert_eq!(tags.len(), 2);
    }
}
