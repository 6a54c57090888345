//! A block map of a sparse raw image in bmaptool's format 2.0 (as `bmaptool create` writes
//! it, see bmap-tools' `BmapCreate.py` and `Filemap.py`): the mapped 4096-byte block ranges
//! found with the FIEMAP ioctl (`SEEK_DATA`/`SEEK_HOLE` where that is missing), each with its
//! sha256, and the sha256 of the bmap file itself
//! computed with that field set to zeros. `bmaptool copy --bmap disk.img.bmap disk.img.zst`
//! then writes only the mapped blocks.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

const BLOCK: u64 = 4096;
const ZERO_SUM: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Writes the bmap of `raw` to `out`.
pub fn write_bmap(raw: &Path, out: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", raw.display());
    let mut file = File::open(raw).map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    if size == 0 {
        return Err(format!(
            "{}: cannot make a bmap of an empty image",
            raw.display()
        ));
    }
    let ranges = block_ranges(&file, size).map_err(err)?;
    let mut lines = String::new();
    for &(first, last) in &ranges {
        let sum = range_sha256(&mut file, first, last).map_err(err)?;
        lines.push_str(&range_line(first, last, &sum));
    }
    let mapped: u64 = ranges.iter().map(|(f, l)| l - f + 1).sum();
    let xml = document(size, mapped, &lines);
    std::fs::write(out, xml).map_err(|e| format!("{}: {e}", out.display()))
}

/// The mapped ranges of whole blocks, first and last block included, in order: from the
/// FIEMAP ioctl as `bmaptool create` does (it counts allocated but unwritten extents, such as
/// the zeroed journal and the wiped end of a file system, as mapped: they must overwrite what
/// the target device held), or from `SEEK_DATA`/`SEEK_HOLE` where FIEMAP is not supported.
fn block_ranges(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    match fiemap_ranges(file, size) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => {
            seek_ranges(file, size)
        }
        other => other,
    }
}

/// Adds bytes `start..end` as whole blocks, merging with the range before when they touch.
fn push(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    if end <= start {
        return;
    }
    let (first, last) = (start / BLOCK, end.div_ceil(BLOCK) - 1);
    match ranges.last_mut() {
        Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
        _ => ranges.push((first, last)),
    }
}

fn seek_ranges(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some(start) = seek(file, pos, libc::SEEK_DATA)? else {
            break;
        };
        if start >= size {
            break;
        }
        let end = seek(file, start, libc::SEEK_HOLE)?
            .unwrap_or(size)
            .min(size);
        push(&mut ranges, start, end);
        pos = end.max(start + 1);
    }
    Ok(ranges)
}

const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 1;
const FIEMAP_EXTENT_LAST: u32 = 1;
const EXTENTS: usize = 256;

/// `struct fiemap_extent` (linux/fiemap.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

/// `struct fiemap` with room for [`EXTENTS`] extents.
#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS],
}

fn fiemap_ranges(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut pos = 0;
    let limit = size.div_ceil(BLOCK) * BLOCK;
    while pos < size {
        let mut m = Box::new(Fiemap {
            start: pos,
            length: limit - pos,
            flags: FIEMAP_FLAG_SYNC,
            mapped_extents: 0,
            extent_count: EXTENTS as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); EXTENTS],
        });
        // SAFETY: FS_IOC_FIEMAP reads and writes a `struct fiemap` followed by
        // `extent_count` extents, which `m` holds.
        let r =
            unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *m as *mut Fiemap) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = (m.mapped_extents as usize).min(EXTENTS);
        if n == 0 {
            break;
        }
        for e in &m.extents[..n] {
            let end = e.logical.saturating_add(e.length).min(size);
            push(&mut ranges, e.logical.max(pos), end);
            pos = pos.max(end);
        }
        if m.extents[n - 1].flags & FIEMAP_EXTENT_LAST != 0 {
            break;
        }
    }
    Ok(ranges)
}

/// `lseek(2)` with `SEEK_DATA`/`SEEK_HOLE`; `None` when there is no more data (`ENXIO`).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> std::io::Result<Option<u64>> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| std::io::Error::other("offset out of range"))?;
    // SAFETY: lseek on an open descriptor; it only moves the file position.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(r as u64))
}

/// The sha256 of blocks `first..=last` (the last one may be short at the end of the file).
fn range_sha256(file: &mut File, first: u64, last: u64) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(first * BLOCK))?;
    let mut hash = Sha256::new();
    let mut left = (last - first + 1) * BLOCK;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex::encode(hash.finalize()))
}

fn range_line(first: u64, last: u64, sum: &str) -> String {
    if first == last {
        format!("        <Range chksum=\"{sum}\"> {first} </Range>\n")
    } else {
        format!("        <Range chksum=\"{sum}\"> {first}-{last} </Range>\n")
    }
}

/// bmaptool's `human_size`.
fn human_size(size: u64) -> String {
    match size {
        1 => "1 byte".to_owned(),
        0..=511 => format!("{size} bytes"),
        _ => {
            let mut s = size as f64;
            for unit in ["KiB", "MiB", "GiB", "TiB"] {
                s /= 1024.0;
                if s < 1024.0 {
                    return format!("{s:.1} {unit}");
                }
            }
            format!("{s:.1} EiB")
        }
    }
}

/// The whole file, its own checksum filled in.
fn document(size: u64, mapped: u64, ranges: &str) -> String {
    let blocks = size.div_ceil(BLOCK);
    let percent = mapped as f64 * 100.0 / blocks as f64;
    let xml = format!(
        r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     Written by Kiln in the format of bmap-tools' "bmaptool create". -->

<bmap version="2.0">
    <!-- Image size in bytes: {human} -->
    <ImageSize> {size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {BLOCK} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks} </BlocksCount>

    <!-- Count of mapped blocks: {mapped_human} or {percent:.1}% -->
    <MappedBlocksCount> {mapped} </MappedBlocksCount>

    <!-- Type of checksum used in this file -->
    <ChecksumType> sha256 </ChecksumType>

    <!-- The checksum of this bmap file. When it is calculated, the value of
         the checksum has be zero (all ASCII "0" symbols).  -->
    <BmapFileChecksum> {ZERO_SUM} </BmapFileChecksum>

    <!-- The block map which consists of elements which may either be a
         range of blocks or a single block. The 'chksum' attribute
         (if present) is the checksum of this blocks range. -->
    <BlockMap>
{ranges}    </BlockMap>
</bmap>
"#,
        human = human_size(size),
        mapped_human = human_size(mapped * BLOCK),
    );
    let sum = hex::encode(Sha256::digest(xml.as_bytes()));
    xml.replacen(ZERO_SUM, &sum, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::path::PathBuf;
    use std::process::Command;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-bmap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A sparse image: data at 0, at 1 MiB + 10 (crossing a block), and a short tail.
    fn sparse_image(path: &Path) {
        let mut f = File::create(path).unwrap();
        f.set_len((8 << 20) + 1000).unwrap();
        f.write_all(&[0x55; 512]).unwrap();
        f.seek(SeekFrom::Start((1 << 20) + 10)).unwrap();
        f.write_all(&[0xaa; 9000]).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[0x11; 1000]).unwrap();
    }

    fn sha256_file(p: &Path) -> String {
        hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
    }

    #[test]
    fn format_and_checksum() {
        let d = tmp("format");
        let img = d.join("x.img");
        sparse_image(&img);
        let bmap = d.join("x.bmap");
        write_bmap(&img, &bmap).unwrap();
        let text = std::fs::read_to_string(&bmap).unwrap();
        assert!(text.contains("<ImageSize> 8389608 </ImageSize>"), "{text}");
        assert!(text.contains("<BlocksCount> 2049 </BlocksCount>"));
        // Block 0, blocks 256..=258, block 2048 (unless this file system stores no holes).
        if text.contains("<MappedBlocksCount> 5 </MappedBlocksCount>") {
            assert!(text.contains("> 0 </Range>"));
            assert!(text.contains("> 256-258 </Range>"));
            assert!(text.contains("> 2048 </Range>"));
        }
        let start = text.find("<BmapFileChecksum> ").unwrap() + 19;
        let sum = text[start..start + 64].to_owned();
        let zeroed = text.replacen(&sum, ZERO_SUM, 1);
        assert_eq!(hex::encode(Sha256::digest(zeroed.as_bytes())), sum);
        assert!(write_bmap(&d.join("missing"), &bmap).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn seek_and_fiemap_agree_on_written_data() {
        let d = tmp("seek");
        let img = d.join("x.img");
        sparse_image(&img);
        let f = File::open(&img).unwrap();
        let size = f.metadata().unwrap().len();
        let seek = seek_ranges(&f, size).unwrap();
        if let Ok(fiemap) = fiemap_ranges(&f, size) {
            assert_eq!(seek, fiemap);
        }
        assert_eq!(seek.first().map(|r| r.0), Some(0));
        assert_eq!(seek.last().map(|r| r.1), Some(2048));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bmaptool_copies_it() {
        if Command::new("bmaptool").arg("--version").output().is_err() {
            eprintln!("skipped: bmaptool is not installed (apt-get install bmap-tools)");
            return;
        }
        let d = tmp("copy");
        let img = d.join("x.img");
        sparse_image(&img);
        let bmap = d.join("x.bmap");
        write_bmap(&img, &bmap).unwrap();
        let out = d.join("out.img");
        let st = Command::new("bmaptool")
            .arg("-q")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(&img)
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(sha256_file(&out), sha256_file(&img));
        let _ = std::fs::remove_dir_all(&d);
    }

    fn block_map(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("<Range") || l.starts_with("<MappedBlocksCount>"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    /// An ext4 file system written at 1 MiB into a 64 MiB sparse file, as the mmdebstrap
    /// backend writes its disk image: same block map as `bmaptool create`, and `bmaptool
    /// copy` restores it from the raw and from the zstd-compressed image.
    #[test]
    fn matches_bmaptool_on_an_ext4_image() {
        let have = |t: &str| Command::new(t).arg("-V").output().is_ok();
        if !(have("bmaptool") && have("mkfs.ext4") && have("zstd")) {
            eprintln!("skipped: needs bmaptool, mkfs.ext4 and zstd (apt-get install bmap-tools e2fsprogs zstd)");
            return;
        }
        let d = tmp("ext4");
        let root = d.join("root/etc");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("os-release"), "ID=debian\n").unwrap();
        std::fs::write(root.join("big"), vec![7u8; 300_000]).unwrap();
        let img = d.join("disk.img");
        File::create(&img).unwrap().set_len(64 << 20).unwrap();
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "rootfs", "-d"])
            .arg(d.join("root"))
            .args(["-E", "offset=1048576"])
            .arg(&img)
            .arg("63488k")
            .status()
            .unwrap();
        assert!(st.success());
        let ours = d.join("ours.bmap");
        write_bmap(&img, &ours).unwrap();
        let theirs = d.join("theirs.bmap");
        let st = Command::new("bmaptool")
            .arg("-q")
            .arg("create")
            .arg(&img)
            .arg("-o")
            .arg(&theirs)
            .status()
            .unwrap();
        assert!(st.success());
        let (a, b) = (
            std::fs::read_to_string(&ours).unwrap(),
            std::fs::read_to_string(&theirs).unwrap(),
        );
        assert_eq!(block_map(&a), block_map(&b));
        let st = Command::new("zstd")
            .args(["-q", "-k", "-f"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        let zst = d.join("disk.img.zst");
        for source in [&img, &zst] {
            let out = d.join("out.img");
            let _ = std::fs::remove_file(&out);
            let st = Command::new("bmaptool")
                .args(["-q", "copy", "--bmap"])
                .arg(&ours)
                .arg(source)
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success(), "{}", source.display());
            assert_eq!(sha256_file(&out), sha256_file(&img), "{}", source.display());
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(100), "100 bytes");
        assert_eq!(human_size(64 << 20), "64.0 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
