//! Walking a directory tree without following symbolic links.

use std::fs::Metadata;
use std::path::Path;

/// Calls `f` with the path and metadata (of the link itself, for a link) of everything below
/// `root`, descending into directories but never through a link. What cannot be read is skipped.
pub fn walk(root: &Path, mut f: impl FnMut(&Path, &Metadata)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = p.symlink_metadata() else {
                continue;
            };
            f(&p, &m);
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
}
