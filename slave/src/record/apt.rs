//! The apt sources a build's root file system names (`/etc/apt/sources.list`,
//! `/etc/apt/sources.list.d/*.list` and `*.sources`), and the entry a tool was given.
//!
//! Credentials never leave the slave: URIs are cleaned by
//! [`kiln_shared::record::sources::clean`], a `Signed-By` that names a key file in the build's
//! work directory (or in the root file system as seen from the host) is removed, and
//! `/etc/apt/auth.conf*` is never read.

use super::rootfs;
use kiln_shared::record::sources::{clean, parse_deb822, parse_one_line};
use kiln_shared::record::AptSource;
use std::path::{Component, Path, PathBuf};

/// Larger source files are skipped.
const MAX_SOURCES_FILE: u64 = 1 << 20;
const LIST_DIR: &str = "etc/apt/sources.list.d";

/// The sources in `root`: `sources.list` first, then `sources.list.d` in name order. Files
/// that are symlinks, not regular, larger than 1 MiB or unreadable are skipped; so are names
/// apt itself ignores. `work_dirs` are the build's work directory as the build saw it.
pub fn sources_in_rootfs(root: &Path, work_dirs: &[&Path]) -> Vec<AptSource> {
    let mut out = Vec::new();
    if let Some(text) = read_text(root, "etc/apt/sources.list") {
        out.extend(parse_one_line(&text, "/etc/apt/sources.list"));
    }
    for name in rootfs::list_dir(root, LIST_DIR) {
        let deb822 = match name.rsplit_once('.') {
            Some((stem, "list")) if apt_name(stem) => false,
            Some((stem, "sources")) if apt_name(stem) => true,
            _ => continue,
        };
        let rel = format!("{LIST_DIR}/{name}");
        let Some(text) = read_text(root, &rel) else {
            continue;
        };
        let origin = format!("/{rel}");
        out.extend(if deb822 {
            parse_deb822(&text, &origin)
        } else {
            parse_one_line(&text, &origin)
        });
    }
    clean(&mut out);
    let mut private: Vec<PathBuf> = work_dirs.iter().map(|d| normalise(d)).collect();
    private.push(normalise(root));
    for s in &mut out {
        drop_private_signed_by(s, &private);
    }
    out
}

/// The entry a tool (`mmdebstrap`) was given on its command line.
pub fn from_tool(uris: &[String], suite: &str, components: &[String], tool: &str) -> AptSource {
    let flat = suite.ends_with('/');
    let mut s = AptSource {
        types: vec!["deb".to_owned()],
        uris: uris.to_vec(),
        suites: vec![suite.to_owned()],
        components: if flat {
            Vec::new()
        } else {
            components.to_vec()
        },
        options: Default::default(),
        origin: tool.to_owned(),
    };
    clean(std::slice::from_mut(&mut s));
    s
}

/// apt reads only `sources.list.d` files whose names are made of these characters.
fn apt_name(stem: &str) -> bool {
    !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn read_text(root: &Path, rel: &str) -> Option<String> {
    match rootfs::read(root, rel, MAX_SOURCES_FILE) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(rootfs::Skip::Missing) => None,
        Err(e) => {
            tracing::warn!("apt sources: skipping /{rel}: {e}");
            None
        }
    }
}

/// Removes the key files under `private` from a `Signed-By` option (a list of paths and
/// fingerprints); removes the option when nothing is left. An inline key block is kept.
fn drop_private_signed_by(s: &mut AptSource, private: &[PathBuf]) {
    let Some(key) = s
        .options
        .keys()
        .find(|k| k.eq_ignore_ascii_case("signed-by"))
        .cloned()
    else {
        return;
    };
    let value = &s.options[&key];
    if value.contains("-----BEGIN") {
        return;
    }
    let items: Vec<&str> = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
        .collect();
    let kept: Vec<&str> = items
        .iter()
        .copied()
        .filter(|i| !is_private(i, private))
        .collect();
    if kept.len() == items.len() {
        return;
    }
    if kept.is_empty() {
        s.options.remove(&key);
    } else {
        let joined = kept.join(",");
        s.options.insert(key, joined);
    }
}

fn is_private(item: &str, private: &[PathBuf]) -> bool {
    let p = Path::new(item);
    if !p.is_absolute() {
        return false;
    }
    let p = normalise(p);
    private.iter().any(|d| p.starts_with(d))
}

/// `/a/./b/../c` → `/a/c`, without touching the file system.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-apt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn signed_by_paths_in_work_dirs_and_root_are_dropped() {
        let private = vec![PathBuf::from("/build/work"), PathBuf::from("/srv/root")];
        let mut s = AptSource::default();
        s.options.insert(
            "Signed-By".into(),
            "/build/work/../work/k.gpg,/usr/share/keyrings/d.gpg".into(),
        );
        drop_private_signed_by(&mut s, &private);
        assert_eq!(s.options["Signed-By"], "/usr/share/keyrings/d.gpg");
        s.options
            .insert("signed-by".into(), "/srv/root/etc/k.gpg".into());
        s.options.remove("Signed-By");
        drop_private_signed_by(&mut s, &private);
        assert!(s.options.is_empty());
        s.options.insert(
            "Signed-By".into(),
            "\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n/build/work/x\n".into(),
        );
        drop_private_signed_by(&mut s, &private);
        assert_eq!(s.options.len(), 1);
        s.options
            .insert("Signed-By".into(), "/build/workshop/k.gpg".into());
        drop_private_signed_by(&mut s, &private);
        assert_eq!(s.options["Signed-By"], "/build/workshop/k.gpg");
    }

    #[test]
    fn apt_names() {
        assert!(apt_name("debian"));
        assert!(apt_name("my_repo-1.2"));
        assert!(!apt_name(""));
        assert!(!apt_name("debian~"));
        assert!(!apt_name("a b"));
    }

    /// Calls the shared parsers (they must be implemented).
    #[test]
    fn reads_a_root_file_system() {
        let d = tmp("root");
        let root = d.join("root");
        let list_d = root.join(LIST_DIR);
        fs::create_dir_all(&list_d).unwrap();
        fs::write(
            root.join("etc/apt/sources.list"),
            "deb [signed-by=/work/key.gpg] http://u:p@deb.example/debian bookworm main\n",
        )
        .unwrap();
        fs::write(
            list_d.join("debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .unwrap();
        fs::write(list_d.join("a.list"), "deb http://a.example/ ./\n").unwrap();
        fs::write(
            list_d.join("ignored.list~"),
            "deb http://x.example/ x main\n",
        )
        .unwrap();
        fs::write(d.join("host.list"), "deb http://host.example/ x main\n").unwrap();
        std::os::unix::fs::symlink(d.join("host.list"), list_d.join("host.list")).unwrap();
        fs::write(list_d.join("big.list"), vec![b'#'; (1 << 20) + 1]).unwrap();
        fs::write(
            root.join("etc/apt/auth.conf"),
            "machine x login y password z",
        )
        .unwrap();

        let got = sources_in_rootfs(&root, &[Path::new("/work")]);
        let origins: Vec<&str> = got.iter().map(|s| s.origin.as_str()).collect();
        assert_eq!(
            origins,
            [
                "/etc/apt/sources.list",
                "/etc/apt/sources.list.d/a.list",
                "/etc/apt/sources.list.d/debian.sources"
            ]
        );
        assert_eq!(got[0].uris, ["http://deb.example/debian"]);
        assert!(got[0].options.is_empty(), "{:?}", got[0].options);
        assert_eq!(got[1].suites, ["./"]);
        assert_eq!(got[2].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            got[2].options["Signed-By"],
            "/usr/share/keyrings/debian-archive-keyring.gpg"
        );
        let _ = fs::remove_dir_all(&d);
    }

    /// Calls the shared `clean` (it must be implemented).
    #[test]
    fn tool_entry() {
        let s = from_tool(
            &["http://user:secret@mirror.example/debian".into()],
            "bookworm",
            &["main".into(), "contrib".into()],
            "mmdebstrap",
        );
        assert_eq!(s.types, ["deb"]);
        assert_eq!(s.uris, ["http://mirror.example/debian"]);
        assert_eq!(s.suites, ["bookworm"]);
        assert_eq!(s.components, ["main", "contrib"]);
        assert_eq!(s.origin, "mmdebstrap");
    }
}
