//! The partitions of mmdebstrap's raw disk image (`[[mmdebstrap.layout]]` in `kiln.toml`): the
//! plan (sizes, offsets, the sfdisk script) and the assembly, without loop devices or mounts.
//!
//! Each partition holds the root file system's subtree at its mount point; the "/" partition
//! holds the rest, with the other partitions' mount points as empty directories. The subtrees
//! are moved out of the root file system for the time of `mkfs` and moved back after, so the
//! root file system the build leaves (and `rootfs.tar.zst`, packed before) stays whole.
//! - ext4 is written in place: `mkfs.ext4 -d DIR -E offset=…`.
//! - vfat is made in a file of its own (`mkfs.vfat`, then `mcopy -s` from mtools) and copied
//!   into the image at its offset, skipping zero blocks so the image stays sparse.
//!
//! Without a layout the image has one ext4 partition labelled `rootfs` from 1 MiB to 1 MiB
//! before the end, as it always had.

use super::{step, BackendError, Context};
use crate::recipe::{parse_size, MmdebstrapOptions, FILE};
use std::path::{Path, PathBuf};
use tokio::process::Command;

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;
/// A vfat partition at least this big is FAT32; a smaller one what `mkfs.vfat` picks.
const FAT32_FROM: u64 = 64 * MIB;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    Vfat,
    Ext4,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its place in `mmdebstrap.layout` (0 for the default root).
    pub index: usize,
    pub mountpoint: String,
    pub fs: Fs,
    pub label: Option<String>,
    /// Byte offset in the image, a multiple of 1 MiB.
    pub start: u64,
    /// Bytes, a multiple of 4 KiB.
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// "gpt" or "msdos".
    pub table: String,
    /// The image's size in bytes (whole sectors).
    pub image_bytes: u64,
    pub parts: Vec<Part>,
    /// False for the default single root partition (no layout in kiln.toml).
    pub explicit: bool,
}

fn key(i: usize, k: &str) -> String {
    format!("{FILE}: mmdebstrap.layout[{i}].{k}")
}

fn check_mountpoint(i: usize, m: &str) -> Result<(), String> {
    let ok = m == "/"
        || (m.starts_with('/')
            && !m.ends_with('/')
            && m[1..].split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-._+@".contains(ch))
            }));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} = \"{}\" must be an absolute path like \"/boot/firmware\" (letters, digits, - . _ + @; no '..', no trailing '/')",
            key(i, "mountpoint"),
            m.escape_debug()
        ))
    }
}

fn check_label(i: usize, fs: Fs, l: &str) -> Result<(), String> {
    let (max, what) = match fs {
        Fs::Vfat => (11, "vfat"),
        Fs::Ext4 => (16, "ext4"),
    };
    if l.is_empty()
        || l.len() > max
        || !l
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err(format!(
            "{} = \"{}\" must be 1 to {max} letters, digits, '-' or '_' for {what}",
            key(i, "label"),
            l.escape_debug()
        ));
    }
    Ok(())
}

/// The partitions `o` asks for, checked, with their offsets. Errors name the key at fault.
pub fn plan(o: &MmdebstrapOptions) -> Result<Plan, String> {
    let image_bytes = o.image_bytes() / SECTOR * SECTOR;
    let table = o.partition_table.clone();
    // The first MiB holds the partition table; the last one is left for GPT's backup header.
    let end = image_bytes.saturating_sub(MIB);
    if o.layout.is_empty() {
        return Ok(Plan {
            table,
            image_bytes,
            parts: vec![Part {
                index: 0,
                mountpoint: "/".into(),
                fs: Fs::Ext4,
                label: Some("rootfs".into()),
                start: MIB,
                size: end.saturating_sub(MIB) / 4096 * 4096,
            }],
            explicit: false,
        });
    }
    let max = if table == "msdos" { 4 } else { 128 };
    if o.layout.len() > max {
        return Err(format!(
            "{FILE}: mmdebstrap.layout has {} partitions; a {} partition table holds at most {max}",
            o.layout.len(),
            if table == "msdos" {
                "msdos (MBR, primary partitions only)"
            } else {
                "gpt"
            }
        ));
    }
    let mut parts: Vec<Part> = Vec::new();
    let mut start = MIB;
    let last = o.layout.len() - 1;
    for (i, p) in o.layout.iter().enumerate() {
        check_mountpoint(i, &p.mountpoint)?;
        if let Some(j) = parts.iter().position(|q| q.mountpoint == p.mountpoint) {
            return Err(format!(
                "{} = \"{}\" is also layout[{j}]'s; each mount point has one partition",
                key(i, "mountpoint"),
                p.mountpoint
            ));
        }
        let fs = match p.filesystem.as_str() {
            "vfat" => Fs::Vfat,
            "ext4" => Fs::Ext4,
            other => {
                return Err(format!(
                    "{} = \"{}\" is not supported (vfat, ext4)",
                    key(i, "filesystem"),
                    other.escape_debug()
                ))
            }
        };
        if p.mountpoint == "/" && fs != Fs::Ext4 {
            return Err(format!(
                "{} = \"{}\": the \"/\" partition must be ext4",
                key(i, "filesystem"),
                p.filesystem
            ));
        }
        if let Some(l) = &p.label {
            check_label(i, fs, l)?;
        }
        let size = match &p.size {
            Some(s) => match parse_size(s) {
                Some(n) if n >= MIB => n.div_ceil(MIB) * MIB,
                _ => {
                    return Err(format!(
                        "{} = \"{}\" must be a size like \"128M\" or \"1G\", at least 1M",
                        key(i, "size"),
                        s.escape_debug()
                    ))
                }
            },
            None if i == last => {
                let rest = end.saturating_sub(start) / 4096 * 4096;
                if rest < MIB {
                    return Err(format!(
                        "{}: the last partition takes the rest of mmdebstrap.image_size = \"{}\", but the partitions before it leave nothing",
                        key(i, "size"),
                        o.image_size
                    ));
                }
                rest
            }
            None => {
                return Err(format!(
                "{} is missing: only the last partition may leave out its size (it takes the rest)",
                key(i, "size")
            ))
            }
        };
        if start + size > end {
            return Err(format!(
                "{} = \"{}\": the partitions then end at {} MiB, past mmdebstrap.image_size = \"{}\" ({} MiB, less 1 MiB at each end for the partition table)",
                key(i, "size"),
                p.size.as_deref().unwrap_or_default(),
                (start + size).div_ceil(MIB),
                o.image_size,
                image_bytes >> 20
            ));
        }
        parts.push(Part {
            index: i,
            mountpoint: p.mountpoint.clone(),
            fs,
            label: p
                .label
                .clone()
                .or_else(|| (p.mountpoint == "/").then(|| "rootfs".to_string())),
            start,
            size,
        });
        start = (start + size).div_ceil(MIB) * MIB;
    }
    match parts.iter().filter(|p| p.mountpoint == "/").count() {
        1 => {}
        n => {
            return Err(format!(
                "{FILE}: mmdebstrap.layout must have exactly one partition with mountpoint = \"/\" (it has {n})"
            ))
        }
    }
    Ok(Plan {
        table,
        image_bytes,
        parts,
        explicit: true,
    })
}

impl Fs {
    /// The partition type for sfdisk.
    fn type_code(self, table: &str, mountpoint: &str, size: u64) -> &'static str {
        let esp = matches!(mountpoint, "/boot/efi" | "/efi");
        match (table, self) {
            ("msdos", Fs::Ext4) => "83",
            ("msdos", Fs::Vfat) if esp => "ef",
            ("msdos", Fs::Vfat) if size >= FAT32_FROM => "c",
            ("msdos", Fs::Vfat) => "e",
            (_, Fs::Ext4) => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            (_, Fs::Vfat) if esp => "C12A7328-F817-11D2-BA4B-00A0C93EC93B",
            (_, Fs::Vfat) => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        }
    }
}

impl Plan {
    /// sfdisk's input for the partition table.
    pub fn sfdisk_script(&self) -> String {
        let label = if self.table == "msdos" { "dos" } else { "gpt" };
        let mut s = format!("label: {label}\n");
        for p in &self.parts {
            s.push_str(&format!(
                "start={}, size={}, type={}",
                p.start / SECTOR,
                p.size / SECTOR,
                p.fs.type_code(&self.table, &p.mountpoint, p.size)
            ));
            if self.explicit && self.table != "msdos" {
                if let Some(l) = &p.label {
                    s.push_str(&format!(", name=\"{l}\""));
                }
            }
            s.push('\n');
        }
        s
    }

    /// `/etc/fstab` mounting every labelled partition by its label, parents first.
    pub fn fstab(&self) -> String {
        let mut parts: Vec<&Part> = self.parts.iter().filter(|p| p.label.is_some()).collect();
        parts.sort_by_key(|p| p.mountpoint.trim_end_matches('/').matches('/').count());
        let mut s = String::from(
            "# Written by Kiln from kiln.toml's [[mmdebstrap.layout]].\n# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n",
        );
        for p in parts {
            let (fs, opts, pass) = match (p.fs, p.mountpoint.as_str()) {
                (Fs::Ext4, "/") => ("ext4", "errors=remount-ro", 1),
                (Fs::Ext4, _) => ("ext4", "defaults", 2),
                (Fs::Vfat, _) => ("vfat", "defaults", 2),
            };
            s.push_str(&format!(
                "LABEL={}\t{}\t{fs}\t{opts}\t0\t{pass}\n",
                p.label.as_deref().unwrap_or_default(),
                p.mountpoint
            ));
        }
        s
    }
}

fn failed(s: impl Into<String>) -> BackendError {
    BackendError::Failed(s.into())
}

/// Bytes a tree takes (4 KiB blocks); for vfat, the first thing in it vfat cannot hold (a
/// symbolic link, a device, a FIFO or socket).
fn tree_size(p: &Path) -> (u64, Option<PathBuf>) {
    let mut total = 0;
    let mut odd = None;
    crate::tree::walk(p, |path, m| {
        if !m.is_dir() && !m.is_file() && odd.is_none() {
            odd = Some(path.to_path_buf());
        }
        total += m.len().div_ceil(4096) * 4096;
    });
    (total, odd)
}

/// A subtree moved out of the root file system while the partitions are made.
struct Moved {
    /// Where it belongs in the root file system.
    home: PathBuf,
    /// Where it is now.
    away: PathBuf,
}

/// Puts moved subtrees back (the latest first) and the root's original `/etc/fstab`.
fn restore(moved: &mut Vec<Moved>, fstab: &mut Option<(PathBuf, Option<Vec<u8>>)>) -> Vec<String> {
    let mut errors = vec![];
    while let Some(m) = moved.pop() {
        let r = std::fs::remove_dir(&m.home).and_then(|()| std::fs::rename(&m.away, &m.home));
        if let Err(e) = r {
            errors.push(format!("putting {} back: {e}", m.home.display()));
        }
    }
    if let Some((path, old)) = fstab.take() {
        let r = match old {
            Some(bytes) => std::fs::write(&path, bytes),
            None => std::fs::remove_file(&path),
        };
        if let Err(e) = r {
            errors.push(format!("putting {} back: {e}", path.display()));
        }
    }
    errors
}

/// Moves the subtree at `mountpoint` out of `rootfs` to `away`, leaving an empty directory
/// of the same mode and owner (created if the root file system has none there).
fn move_out(rootfs: &Path, mountpoint: &str, away: &Path) -> Result<Option<Moved>, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let rel = mountpoint.trim_start_matches('/');
    // No component may be a symbolic link: the partition holds what is at that path.
    let mut at = rootfs.to_path_buf();
    for c in rel.split('/') {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "the mount point {mountpoint} of a partition is not a directory in the root file system (/{} is a link or file)",
                    at.strip_prefix(rootfs).unwrap_or(&at).display()
                ))
            }
            Err(_) => {
                std::fs::create_dir_all(rootfs.join(rel))
                    .map_err(|e| format!("creating the mount point {mountpoint}: {e}"))?;
                std::fs::create_dir_all(away)
                    .map_err(|e| format!("creating {}: {e}", away.display()))?;
                return Ok(None);
            }
        }
    }
    let home = rootfs.join(rel);
    let meta = home.symlink_metadata().map_err(|e| e.to_string())?;
    std::fs::rename(&home, away).map_err(|e| format!("moving {mountpoint} aside: {e}"))?;
    let made = std::fs::create_dir(&home)
        .and_then(|()| {
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        })
        .and_then(|()| std::os::unix::fs::lchown(&home, Some(meta.uid()), Some(meta.gid())));
    if let Err(e) = made {
        // Owners may not be settable everywhere (tests as a user): the mode is kept all the same.
        if e.kind() != std::io::ErrorKind::PermissionDenied {
            let _ = std::fs::remove_dir(&home);
            let _ = std::fs::rename(away, &home);
            return Err(format!("making the empty mount point {mountpoint}: {e}"));
        }
    }
    Ok(Some(Moved {
        home,
        away: away.to_path_buf(),
    }))
}

/// Copies `part` into `img` at `offset`, skipping zero blocks (the image is sparse and zero).
fn copy_into(part: &Path, img: &Path, offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = std::fs::File::open(part)?;
    let mut dst = std::fs::OpenOptions::new().write(true).open(img)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut at = offset;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        for (i, chunk) in buf[..n].chunks(4096).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                dst.seek(SeekFrom::Start(at + (i * 4096) as u64))?;
                dst.write_all(chunk)?;
            }
        }
        at += n as u64;
    }
    dst.sync_data()
}

/// Makes the raw disk image `img` from `rootfs` as `plan` says. `image_size` is the option's
/// text, for messages.
pub async fn assemble(
    ctx: &Context,
    plan: &Plan,
    rootfs: &Path,
    img: &Path,
    image_size: &str,
) -> Result<(), BackendError> {
    // Beside the root file system, on its file system: subtrees are renamed into it.
    let work = rootfs.parent().unwrap_or(&ctx.scratch).join("layout");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)
        .map_err(|e| failed(format!("creating {}: {e}", work.display())))?;
    let mut moved = vec![];
    let mut fstab = None;
    let r = assemble_moved(
        ctx, plan, rootfs, img, image_size, &work, &mut moved, &mut fstab,
    )
    .await;
    let errors = restore(&mut moved, &mut fstab);
    r?;
    if let Some(e) = errors.first() {
        return Err(failed(format!("restoring the root file system: {e}")));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn assemble_moved(
    ctx: &Context,
    plan: &Plan,
    rootfs: &Path,
    img: &Path,
    image_size: &str,
    work: &Path,
    moved: &mut Vec<Moved>,
    fstab: &mut Option<(PathBuf, Option<Vec<u8>>)>,
) -> Result<(), BackendError> {
    // Each partition's tree: the deepest mount points leave first, so a parent takes its
    // children's mount points as empty directories.
    let mut order: Vec<&Part> = plan.parts.iter().filter(|p| p.mountpoint != "/").collect();
    order.sort_by_key(|p| std::cmp::Reverse(p.mountpoint.matches('/').count()));
    let mut trees: Vec<(usize, PathBuf)> = vec![];
    for p in order {
        let away = work.join(format!("part{}", p.index));
        if let Some(m) = move_out(rootfs, &p.mountpoint, &away).map_err(failed)? {
            moved.push(m);
        }
        trees.push((p.index, away));
    }
    let tree = |p: &Part| -> PathBuf {
        trees
            .iter()
            .find(|(i, _)| *i == p.index)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| rootfs.to_path_buf())
    };

    // Every tree must fit its partition, with room for the file system's own blocks.
    for p in &plan.parts {
        let (used, odd) = tree_size(&tree(p));
        let (needed, what) = match p.fs {
            Fs::Ext4 => (used + used / 5 + (16 << 20), "ext4"),
            Fs::Vfat => (used + used / 10 + (2 << 20), "vfat"),
        };
        if p.fs == Fs::Vfat {
            if let Some(o) = odd {
                let rel = o.strip_prefix(tree(p)).unwrap_or(&o).display().to_string();
                return Err(failed(format!(
                    "{}/{rel} cannot go on the vfat partition layout[{}] (only files and directories can; this is a link, device, FIFO or socket)",
                    p.mountpoint.trim_end_matches('/'),
                    p.index
                )));
            }
        }
        if needed > p.size {
            return Err(failed(if plan.explicit {
                format!(
                    "{FILE}: mmdebstrap.layout[{}] ({what}, {}) is too small: its files need about {} MiB; raise its size{}",
                    p.index,
                    p.mountpoint,
                    needed.div_ceil(MIB),
                    if p.index + 1 == plan.parts.len() { " or mmdebstrap.image_size" } else { "" }
                )
            } else {
                format!(
                    "mmdebstrap.image_size = \"{image_size}\" is too small: the root file system needs about {} MiB; raise it",
                    needed >> 20
                )
            }));
        }
    }

    // The root's /etc/fstab, when the layout is kiln.toml's and the image has none of its own.
    if plan.explicit {
        let path = rootfs.join("etc/fstab");
        let old = std::fs::read(&path).ok();
        let own = old.as_ref().is_some_and(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        });
        let etc_is_root = rootfs
            .join("etc")
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir())
            && !plan
                .parts
                .iter()
                .any(|p| p.mountpoint == "/etc" || p.mountpoint.starts_with("/etc/"));
        if own {
            ctx.log.note("keeping the image's own /etc/fstab");
        } else if etc_is_root {
            std::fs::write(&path, plan.fstab())
                .map_err(|e| failed(format!("writing /etc/fstab: {e}")))?;
            *fstab = Some((path, old));
            ctx.log
                .note("wrote /etc/fstab (by label) into the root partition");
        }
    }

    let f =
        std::fs::File::create(img).map_err(|e| failed(format!("creating the disk image: {e}")))?;
    f.set_len(plan.image_bytes)
        .map_err(|e| failed(format!("sizing the disk image: {e}")))?;
    drop(f);
    let script_file = ctx.scratch.join("partitions.sfdisk");
    std::fs::write(&script_file, plan.sfdisk_script()).map_err(|e| failed(e.to_string()))?;
    let mut sf = Command::new("sh");
    sf.arg("-c")
        .arg("sfdisk --no-reread --no-tell-kernel \"$1\" < \"$2\"")
        .arg("sh")
        .arg(img)
        .arg(&script_file);
    let name = img
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    step(ctx, &format!("partitioning {name}"), sf).await?;

    for p in &plan.parts {
        let dir = tree(p);
        match p.fs {
            Fs::Ext4 => {
                let mut mkfs = Command::new("mkfs.ext4");
                mkfs.args(["-q", "-F"]);
                if let Some(l) = &p.label {
                    mkfs.arg("-L").arg(l);
                }
                mkfs.arg("-d")
                    .arg(&dir)
                    .arg("-E")
                    .arg(format!("offset={}", p.start))
                    .arg(img)
                    .arg(format!("{}k", p.size / 1024));
                let what = if !plan.explicit {
                    "making the ext4 root file system".to_string()
                } else {
                    format!("making the ext4 file system of {}", p.mountpoint)
                };
                step(ctx, &what, mkfs).await?;
            }
            Fs::Vfat => {
                for (tool, package) in [("mkfs.vfat", "dosfstools"), ("mcopy", "mtools")] {
                    if !crate::machine::have_tool(tool) {
                        return Err(failed(format!(
                            "a vfat partition needs {tool} on this slave (apt-get install {package})"
                        )));
                    }
                }
                // On the scratch disk: the root (and `work`) may be in memory (`in_memory.rs`).
                let file = ctx.scratch.join(format!("part{}.vfat", p.index));
                let f = std::fs::File::create(&file)
                    .map_err(|e| failed(format!("creating {}: {e}", file.display())))?;
                f.set_len(p.size)
                    .map_err(|e| failed(format!("sizing {}: {e}", file.display())))?;
                drop(f);
                let mut mkfs = Command::new("mkfs.vfat");
                if p.size >= FAT32_FROM {
                    mkfs.args(["-F", "32"]);
                }
                if let Some(l) = &p.label {
                    mkfs.arg("-n").arg(l);
                }
                mkfs.arg(&file);
                step(
                    ctx,
                    &format!("making the vfat file system of {}", p.mountpoint),
                    mkfs,
                )
                .await?;
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map_err(|e| failed(format!("reading {}: {e}", dir.display())))?
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                entries.sort();
                if !entries.is_empty() {
                    let mut mcopy = Command::new("mcopy");
                    mcopy
                        .env("MTOOLS_SKIP_CHECK", "1")
                        .args(["-s", "-m", "-i"])
                        .arg(&file)
                        .args(&entries)
                        .arg("::/");
                    step(
                        ctx,
                        &format!("copying {} into its vfat file system", p.mountpoint),
                        mcopy,
                    )
                    .await?;
                }
                copy_into(&file, img, p.start).map_err(|e| {
                    failed(format!(
                        "writing the vfat partition of {} into the image: {e}",
                        p.mountpoint
                    ))
                })?;
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{Backend, Recipe};

    fn options(extra: &str) -> Result<MmdebstrapOptions, String> {
        let r = Recipe::parse(&format!(
            "backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"bookworm\"\n{extra}"
        ))?;
        match r.backend {
            Backend::Mmdebstrap(o) => Ok(*o),
            _ => unreachable!(),
        }
    }

    const BOARD: &str = r#"image_size = "1G"
partition_table = "msdos"
[[mmdebstrap.layout]]
mountpoint = "/boot/firmware"
filesystem = "vfat"
label = "BOOT"
size = "128M"
[[mmdebstrap.layout]]
mountpoint = "/"
filesystem = "ext4"
label = "rootfs"
"#;

    #[test]
    fn without_a_layout_the_image_is_as_before() {
        let p = plan(&options("image_size = \"1G\"").unwrap()).unwrap();
        assert!(!p.explicit);
        assert_eq!(p.parts.len(), 1);
        assert_eq!(p.parts[0].start, MIB);
        assert_eq!(p.parts[0].size, (1 << 30) - 2 * MIB);
        assert_eq!(
            p.sfdisk_script(),
            format!(
                "label: gpt\nstart=2048, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
                ((1u64 << 30) - 2 * MIB) / 512
            )
        );
    }

    #[test]
    fn a_board_layout_has_its_offsets() {
        let p = plan(&options(BOARD).unwrap()).unwrap();
        assert!(p.explicit);
        assert_eq!(p.parts.len(), 2);
        assert_eq!((p.parts[0].start, p.parts[0].size), (MIB, 128 * MIB));
        assert_eq!(p.parts[0].fs, Fs::Vfat);
        assert_eq!(
            (p.parts[1].start, p.parts[1].size),
            (129 * MIB, (1 << 30) - 130 * MIB)
        );
        assert_eq!(
            p.sfdisk_script(),
            format!(
                "label: dos\nstart=2048, size=262144, type=c\nstart=264192, size={}, type=83\n",
                ((1u64 << 30) - 130 * MIB) / 512
            )
        );
        let fstab = p.fstab();
        let lines: Vec<&str> = fstab.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "LABEL=rootfs\t/\text4\terrors=remount-ro\t0\t1",
                "LABEL=BOOT\t/boot/firmware\tvfat\tdefaults\t0\t2"
            ]
        );
        // GPT: partition names, an EFI system partition at /boot/efi, sizes rounded up to MiB.
        let gpt = BOARD
            .replace("msdos", "gpt")
            .replace("/boot/firmware", "/boot/efi")
            .replace("128M", "1500K");
        let p = plan(&options(&gpt).unwrap()).unwrap();
        assert_eq!(p.parts[0].size, 2 * MIB);
        assert_eq!(p.parts[1].start, 3 * MIB);
        let script = p.sfdisk_script();
        assert!(script.starts_with("label: gpt\nstart=2048, size=4096, type=C12A7328-F817-11D2-BA4B-00A0C93EC93B, name=\"BOOT\"\n"), "{script}");
        assert!(
            script.ends_with(", type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"rootfs\"\n"),
            "{script}"
        );
    }

    #[test]
    fn layout_errors_name_the_key() {
        let part = |m: &str, fs: &str, more: &str| {
            format!("[[mmdebstrap.layout]]\nmountpoint = \"{m}\"\nfilesystem = \"{fs}\"\n{more}\n")
        };
        let root = part("/", "ext4", "");
        for (layout, says) in [
            (
                format!("{}{}", part("/boot", "vfat", "size = \"64M\""), part("/srv", "btrfs", "")),
                "kiln.toml: mmdebstrap.layout[1].filesystem = \"btrfs\" is not supported (vfat, ext4)",
            ),
            (part("/boot", "vfat", ""), "exactly one partition with mountpoint = \"/\" (it has 0)"),
            (format!("{}{root}", part("/", "ext4", "size = \"100M\"")), "layout[1].mountpoint = \"/\" is also layout[0]'s"),
            (format!("{}{root}", part("boot", "vfat", "size = \"64M\"")), "layout[0].mountpoint = \"boot\" must be an absolute path"),
            (format!("{}{root}", part("/boot/../etc", "vfat", "size = \"64M\"")), "layout[0].mountpoint"),
            (format!("{}{root}", part("/boot/", "vfat", "size = \"64M\"")), "layout[0].mountpoint"),
            (format!("{}{root}", part("/boot", "vfat", "size = \"lots\"")), "layout[0].size = \"lots\" must be a size"),
            (format!("{}{root}", part("/boot", "vfat", "")), "layout[0].size is missing: only the last partition"),
            (format!("{}{root}", part("/boot", "vfat", "size = \"1G\"")), "layout[0].size = \"1G\": the partitions then end at 1025 MiB, past mmdebstrap.image_size = \"1G\""),
            (format!("{}{root}", part("/boot", "vfat", "size = \"1022M\"")), "layout[1].size: the last partition takes the rest"),
            (format!("{}{root}", part("/boot", "vfat", "size = \"64M\"\nlabel = \"FIRMWARE-BOOT\"")), "layout[0].label = \"FIRMWARE-BOOT\" must be 1 to 11"),
            (format!("{}{}", part("/boot", "vfat", "size = \"64M\""), part("/", "ext4", "label = \"a-very-long-root-label\"")), "layout[1].label = \"a-very-long-root-label\" must be 1 to 16"),
            (part("/", "vfat", ""), "layout[0].filesystem = \"vfat\": the \"/\" partition must be ext4"),
            (format!("{}{root}", part("/boot", "vfat", "size = \"64M\"\nsize_mb = 3")), "size_mb"),
            (
                format!(
                    "partition_table = \"msdos\"\n{}{}{}{}{root}",
                    part("/a", "ext4", "size = \"8M\""),
                    part("/b", "ext4", "size = \"8M\""),
                    part("/c", "ext4", "size = \"8M\""),
                    part("/d", "ext4", "size = \"8M\"")
                ),
                "at most 4",
            ),
        ] {
            let e = options(&format!("image_size = \"1G\"\n{layout}")).unwrap_err();
            assert!(e.contains(says), "{layout}\n=> {e}");
        }
        // A root that is not last, with a size, and a nested ext4 partition: fine.
        options(&format!(
            "image_size = \"1G\"\n{}{}{}",
            part("/", "ext4", "size = \"512M\""),
            part("/boot", "ext4", "size = \"256M\""),
            part("/boot/efi", "vfat", "size = \"64M\"")
        ))
        .unwrap();
    }

    fn have(tool: &str) -> bool {
        crate::machine::have_tool(tool)
    }

    fn run(cmd: &mut std::process::Command) -> String {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[tokio::test]
    async fn a_two_partition_image_is_assembled_from_a_tree() {
        for t in ["mcopy", "mkfs.vfat", "mkfs.ext4", "sfdisk", "debugfs"] {
            if !have(t) {
                eprintln!("\n!!!!!!!! SKIPPED: no {t} (install mtools, dosfstools, e2fsprogs, fdisk) !!!!!!!!\n");
                return;
            }
        }
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        let scratch = d.path().join("scratch");
        std::fs::create_dir_all(rootfs.join("boot/firmware/overlays")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(rootfs.join("etc/debian_version"), "12.8\n").unwrap();
        std::fs::write(
            rootfs.join("etc/fstab"),
            "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("boot/firmware/config.txt"), "arm_64bit=1\n").unwrap();
        std::fs::write(rootfs.join("boot/firmware/overlays/a.dtbo"), "dtbo").unwrap();
        std::fs::write(rootfs.join("boot/vmlinuz"), "kernel").unwrap();
        let ctx = Context::for_test(
            d.path(),
            d.path(),
            &scratch,
            crate::process::Log::open(&d.path().join("log")).unwrap(),
        );
        let o = options(&BOARD.replace("1G", "100M").replace("128M", "20M")).unwrap();
        let p = plan(&o).unwrap();
        let img = scratch.join("disk.img");
        assemble(&ctx, &p, &rootfs, &img, &o.image_size)
            .await
            .unwrap();

        // The root file system is whole again, its fstab as it was.
        assert_eq!(
            std::fs::read_to_string(rootfs.join("boot/firmware/config.txt")).unwrap(),
            "arm_64bit=1\n"
        );
        assert!(rootfs.join("boot/firmware/overlays/a.dtbo").is_file());
        assert!(std::fs::read_to_string(rootfs.join("etc/fstab"))
            .unwrap()
            .starts_with("# UNCONFIGURED"));
        assert!(!scratch.join("layout").exists());

        let table: serde_json::Value =
            serde_json::from_str(&run(std::process::Command::new("sfdisk")
                .arg("-J")
                .arg(&img)))
            .unwrap();
        let parts = table["partitiontable"]["partitions"].as_array().unwrap();
        assert_eq!(table["partitiontable"]["label"], "dos", "{table}");
        assert_eq!(parts.len(), 2, "{table}");
        assert_eq!(
            (parts[0]["start"].as_u64(), parts[0]["size"].as_u64()),
            (Some(2048), Some(20 * 2048))
        );
        assert_eq!(parts[0]["type"], "e"); // under 64M: FAT16
        assert_eq!(parts[1]["start"].as_u64(), Some(21 * 2048));
        assert_eq!(parts[1]["type"], "83");

        let fat = format!("{}@@{}", img.display(), MIB);
        let mdir = |args: &[&str]| {
            run(std::process::Command::new(args[0])
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&fat)
                .args(&args[1..]))
        };
        assert!(mdir(&["mlabel", "-s", "::"]).contains("BOOT"));
        assert_eq!(mdir(&["mtype", "::config.txt"]), "arm_64bit=1\n");
        assert_eq!(mdir(&["mtype", "::overlays/a.dtbo"]), "dtbo");

        let root = d.path().join("root.ext4");
        run(std::process::Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", root.display()))
            .args(["bs=1M", "skip=21", "status=none"]));
        let debugfs = |req: &str| {
            run(std::process::Command::new("debugfs")
                .args(["-R", req])
                .arg(&root))
        };
        assert_eq!(debugfs("cat /etc/debian_version"), "12.8\n");
        assert_eq!(debugfs("cat /boot/vmlinuz"), "kernel");
        let fstab = debugfs("cat /etc/fstab");
        assert!(
            fstab.contains("LABEL=BOOT\t/boot/firmware\tvfat"),
            "{fstab}"
        );
        let firmware = debugfs("ls -p /boot/firmware");
        assert_eq!(
            firmware.lines().filter(|l| !l.trim().is_empty()).count(),
            2,
            "not empty: {firmware}"
        );
        assert!(run(std::process::Command::new("blkid").arg(&root)).contains("LABEL=\"rootfs\""));

        // A link on the vfat partition is refused, naming it; the tree is put back.
        std::os::unix::fs::symlink("config.txt", rootfs.join("boot/firmware/link.txt")).unwrap();
        let Err(BackendError::Failed(e)) = assemble(&ctx, &p, &rootfs, &img, &o.image_size).await
        else {
            panic!("a link on vfat")
        };
        assert!(
            e.contains("/boot/firmware/link.txt cannot go on the vfat partition layout[0]"),
            "{e}"
        );
        assert!(rootfs.join("boot/firmware/config.txt").is_file());
    }
}
