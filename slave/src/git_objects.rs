//! Whether a bare repository has an object, read in-process from its object store (a loose
//! object's file, or a pack index): the git cache asks it on every build whose branch head is
//! advertised by the server, and a `git rev-parse` process for it cost 2–3 ms of each no-op
//! build's start. Anything it cannot read counts as absent: the caller then fetches.

use std::os::unix::fs::FileExt;
use std::path::Path;

/// Whether `repo` (a bare repository) has the object with the full hex id `id` (SHA-1 or
/// SHA-256), loose or in a pack (index version 2).
pub fn has_object(repo: &Path, id: &str) -> bool {
    let Some(raw) = from_hex(id) else {
        return false;
    };
    let id = id.to_ascii_lowercase();
    let objects = repo.join("objects");
    if objects.join(&id[..2]).join(&id[2..]).is_file() {
        return true;
    }
    let Ok(packs) = std::fs::read_dir(objects.join("pack")) else {
        return false;
    };
    packs.flatten().any(|e| {
        let p = e.path();
        p.extension().is_some_and(|x| x == "idx") && index_lists(&p, &raw).unwrap_or(false)
    })
}

/// A full object id: 40 (SHA-1) or 64 (SHA-256) hex digits, as bytes.
fn from_hex(id: &str) -> Option<Vec<u8>> {
    if !(id.len() == 40 || id.len() == 64) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(id.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether the pack index at `idx` lists `id`. Version 2: a magic number and version, a
/// fan-out table of 256 big-endian counts (objects whose first byte is at most i), then the ids,
/// sorted. Only the header and the ids that share `id`'s first byte are read.
fn index_lists(idx: &Path, id: &[u8]) -> std::io::Result<bool> {
    const HEADER: usize = 8;
    const FANOUT: usize = 256 * 4;
    let f = std::fs::File::open(idx)?;
    let file_len = f.metadata()?.len();
    let mut head = vec![0u8; HEADER + FANOUT];
    f.read_exact_at(&mut head, 0)?;
    if head[..HEADER] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Ok(false);
    }
    let count = |i: usize| {
        let at = HEADER + 4 * i;
        u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]) as usize
    };
    // A damaged index (counts that fall, or more ids than the file holds) is not read further:
    // nothing is allocated from its numbers before they are checked against its size.
    let len = id.len();
    let total = count(255);
    if (1..256).any(|i| count(i) < count(i - 1))
        || (HEADER + FANOUT) as u64 + total as u64 * len as u64 > file_len
    {
        return Ok(false);
    }
    let first = usize::from(id[0]);
    let (lo, hi) = (if first == 0 { 0 } else { count(first - 1) }, count(first));
    if lo >= hi {
        return Ok(false);
    }
    let mut ids = vec![0u8; (hi - lo) * len];
    f.read_exact_at(&mut ids, (HEADER + FANOUT + lo * len) as u64)?;
    let sorted: Vec<&[u8]> = ids.chunks_exact(len).collect();
    Ok(sorted.binary_search_by(|probe| (*probe).cmp(id)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git_cache::tests::{sh as git, Fixture};

    #[test]
    fn a_damaged_index_is_not_believed() {
        let d = tempfile::tempdir().unwrap();
        let idx = d.path().join("x.idx");
        let mut data = vec![0xff, b't', b'O', b'c', 0, 0, 0, 2];
        // Every bucket claims 2^31 objects: far more than the file holds.
        for _ in 0..256 {
            data.extend_from_slice(&0x8000_0000u32.to_be_bytes());
        }
        std::fs::write(&idx, &data).unwrap();
        assert!(!index_lists(&idx, &[0x80; 20]).unwrap());
        // Counts that fall.
        let mut falling = data[..8].to_vec();
        for i in 0..256u32 {
            falling.extend_from_slice(&(if i == 3 { 0u32 } else { 5 }).to_be_bytes());
        }
        falling.extend(vec![0u8; 5 * 20]);
        std::fs::write(&idx, &falling).unwrap();
        assert!(!index_lists(&idx, &[0; 20]).unwrap());
        // Cut short.
        std::fs::write(&idx, &data[..100]).unwrap();
        assert!(index_lists(&idx, &[0; 20]).is_err());
    }

    #[test]
    fn finds_loose_and_packed_objects_and_nothing_else() {
        let f = Fixture::new("objects");
        f.remote("w");
        let repo = f.root.join("r.git");
        git(&f.root, &["init", "-q", "--bare", "r.git"]);
        let push = || {
            git(
                &f.root.join("w"),
                &["push", "-q", repo.to_str().unwrap(), "main"],
            )
        };
        let commits: Vec<String> = (0..20).map(|i| f.commit("w", &i.to_string())).collect();
        push();
        // A push of few objects leaves them loose (receive.unpackLimit).
        for c in &commits {
            assert!(has_object(&repo, c), "{c}");
            assert!(has_object(&repo, &c.to_uppercase()), "{c}");
        }
        git(&repo, &["repack", "-a", "-d", "-q"]);
        git(&repo, &["prune-packed"]);
        for c in &commits {
            assert!(has_object(&repo, c), "packed {c}");
        }
        // One more commit, loose in the repository.
        let loose = f.commit("w", "loose");
        assert!(!has_object(&repo, &loose));
        push();
        let id = loose.as_str();
        assert!(repo.join("objects").join(&id[..2]).join(&id[2..]).is_file());
        assert!(has_object(&repo, &loose));
        // The first commit's id with its last digit changed: same fan-out bucket, not there.
        let (stem, last) = commits[0].split_at(39);
        let near = format!("{stem}{}", if last == "0" { "1" } else { "0" });
        for missing in [
            "0000000000000000000000000000000000000000",
            "ffffffffffffffffffffffffffffffffffffffff",
            &near,
            "not an id",
            &commits[0][..12],
        ] {
            assert!(!has_object(&repo, missing), "{missing}");
        }
    }
}
