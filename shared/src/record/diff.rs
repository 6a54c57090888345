//! Comparing two builds' records: packages, artifacts, sources.

use super::{
    ArtifactChange, ArtifactDiff, ArtifactSize, BuildDiff, CommitRange, Package, PackageDiff,
    SourcesDiff, VersionChange,
};
use crate::BuildId;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

/// An artifact as the master stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactFacts {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One side of a comparison.
#[derive(Clone, Debug)]
pub struct Side<'a> {
    pub build: BuildId,
    pub packages: &'a [Package],
    pub artifacts: &'a [ArtifactFacts],
    /// The build's sources in one-line form (after the rewrite map), one entry per line.
    pub sources: &'a [String],
    pub commit: Option<String>,
}

/// What changed from `a` to `b`. Packages are matched by (name, architecture); versions are
/// compared with [`super::version::compare`]. Every list is sorted by name. `commits` gets
/// `from`/`to` only: the master fills in the commits between them.
///
/// - Packages: `added` are in `b` only, `removed` in `a` only (sorted by name, then
///   architecture); a package in both is `upgraded` or `downgraded` when its versions compare
///   less or greater; versions that compare equal (`1.01` and `1.1`) are no change.
/// - Artifacts (by name): `added`/`removed` with their size; `changed` when size or sha256
///   differ (the sha256 compared case-insensitively).
/// - Sources: the set difference of the one-line entries, `added` in `b`'s order and `removed`
///   in `a`'s (each entry once); blank entries and `#` comment lines are ignored.
///
/// Should a side list the same package (name, architecture) or artifact name twice, its last
/// entry counts.
pub fn diff(a: &Side, b: &Side) -> BuildDiff {
    BuildDiff {
        from: a.build,
        to: b.build,
        packages: diff_packages(a.packages, b.packages),
        artifacts: diff_artifacts(a.artifacts, b.artifacts),
        sources: diff_sources(a.sources, b.sources),
        commits: CommitRange {
            from: a.commit.clone(),
            to: b.commit.clone(),
            commits: vec![],
            note: None,
        },
    }
}

fn by_key(packages: &[Package]) -> BTreeMap<(&str, &str), &Package> {
    packages
        .iter()
        .map(|p| ((p.name.as_str(), p.architecture.as_str()), p))
        .collect()
}

fn diff_packages(a: &[Package], b: &[Package]) -> PackageDiff {
    let (a, b) = (by_key(a), by_key(b));
    let mut out = PackageDiff::default();
    for (key, pa) in &a {
        match b.get(key) {
            None => out.removed.push((*pa).clone()),
            Some(pb) => {
                let change = || VersionChange {
                    name: pa.name.clone(),
                    architecture: pa.architecture.clone(),
                    from: pa.version.clone(),
                    to: pb.version.clone(),
                };
                match super::version::compare(&pa.version, &pb.version) {
                    Ordering::Less => out.upgraded.push(change()),
                    Ordering::Greater => out.downgraded.push(change()),
                    Ordering::Equal => {}
                }
            }
        }
    }
    out.added = b
        .iter()
        .filter(|(key, _)| !a.contains_key(key))
        .map(|(_, p)| (*p).clone())
        .collect();
    out
}

fn diff_artifacts(a: &[ArtifactFacts], b: &[ArtifactFacts]) -> ArtifactDiff {
    let by_name = |v: &'_ [ArtifactFacts]| -> BTreeMap<String, ArtifactFacts> {
        v.iter().map(|f| (f.name.clone(), f.clone())).collect()
    };
    let (a, b) = (by_name(a), by_name(b));
    let size = |f: &ArtifactFacts| ArtifactSize {
        name: f.name.clone(),
        size: f.size,
    };
    let mut out = ArtifactDiff::default();
    for (name, fa) in &a {
        match b.get(name) {
            None => out.removed.push(size(fa)),
            Some(fb) => {
                if fa.size != fb.size || !fa.sha256.eq_ignore_ascii_case(&fb.sha256) {
                    out.changed.push(ArtifactChange {
                        name: name.clone(),
                        from_size: fa.size,
                        to_size: fb.size,
                    });
                }
            }
        }
    }
    out.added = b
        .iter()
        .filter(|(name, _)| !a.contains_key(*name))
        .map(|(_, f)| size(f))
        .collect();
    out
}

fn entries(lines: &[String]) -> impl Iterator<Item = &String> {
    lines.iter().filter(|l| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    })
}

/// The entries of `x` that are not in `y`, in `x`'s order, each once.
fn only_in(x: &[String], y: &[String]) -> Vec<String> {
    let y: HashSet<&String> = entries(y).collect();
    let mut seen = HashSet::new();
    entries(x)
        .filter(|l| !y.contains(l) && seen.insert(*l))
        .cloned()
        .collect()
}

fn diff_sources(a: &[String], b: &[String]) -> SourcesDiff {
    SourcesDiff {
        added: only_in(b, a),
        removed: only_in(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, arch: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: arch.into(),
            source: name.into(),
        }
    }

    fn art(name: &str, size: u64, sha: &str) -> ArtifactFacts {
        ArtifactFacts {
            name: name.into(),
            size,
            sha256: sha.into(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn side<'a>(
        id: i64,
        packages: &'a [Package],
        artifacts: &'a [ArtifactFacts],
        sources: &'a [String],
        commit: Option<&str>,
    ) -> Side<'a> {
        Side {
            build: BuildId(id),
            packages,
            artifacts,
            sources,
            commit: commit.map(str::to_string),
        }
    }

    fn change(name: &str, arch: &str, from: &str, to: &str) -> VersionChange {
        VersionChange {
            name: name.into(),
            architecture: arch.into(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn empty_sides() {
        let d = diff(&side(1, &[], &[], &[], None), &side(2, &[], &[], &[], None));
        assert_eq!(
            d,
            BuildDiff {
                from: BuildId(1),
                to: BuildId(2),
                packages: PackageDiff::default(),
                artifacts: ArtifactDiff::default(),
                sources: SourcesDiff::default(),
                commits: CommitRange::default(),
            }
        );
    }

    #[test]
    fn identical_sides_have_no_changes() {
        let p = vec![pkg("libc6", "2.36-9+deb12u4", "amd64")];
        let a = vec![art("disk.img.zst", 10, "ab")];
        let s = strings(&["deb http://h/d s main"]);
        let d = diff(
            &side(1, &p, &a, &s, Some("c1")),
            &side(2, &p, &a, &s, Some("c1")),
        );
        assert_eq!(d.packages, PackageDiff::default());
        assert_eq!(d.artifacts, ArtifactDiff::default());
        assert_eq!(d.sources, SourcesDiff::default());
        assert_eq!(d.commits.from.as_deref(), Some("c1"));
        assert_eq!(d.commits.to.as_deref(), Some("c1"));
    }

    #[test]
    fn packages() {
        let a = vec![
            pkg("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
            pkg("libc6", "2.36-9+deb12u4", "amd64"),
            pkg("libc6", "2.36-9+deb12u4", "i386"),
            pkg("curl", "7.88.1-10+deb12u12", "amd64"),
            pkg("old-tool", "1.0", "all"),
            pkg("same", "1.01", "all"),
            pkg("bash", "5.2.15-2", "amd64"),
        ];
        let b = vec![
            pkg("bash", "5.2.15-2+b2", "amd64"),
            pkg("libc6", "2.36-9+deb12u10", "amd64"),
            pkg("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
            pkg("curl", "7.88.1-10+deb12u5", "amd64"),
            pkg("new-tool", "2.0", "arm64"),
            pkg("libc6", "2.36-9+deb12u4", "arm64"),
            pkg("same", "1.1", "all"),
            pkg("aaa", "1", "all"),
        ];
        let d = diff(&side(1, &a, &[], &[], None), &side(2, &b, &[], &[], None));
        assert_eq!(
            d.packages.added,
            vec![
                pkg("aaa", "1", "all"),
                pkg("libc6", "2.36-9+deb12u4", "arm64"),
                pkg("new-tool", "2.0", "arm64"),
            ]
        );
        assert_eq!(
            d.packages.removed,
            vec![
                pkg("libc6", "2.36-9+deb12u4", "i386"),
                pkg("old-tool", "1.0", "all"),
            ]
        );
        assert_eq!(
            d.packages.upgraded,
            vec![
                change("bash", "amd64", "5.2.15-2", "5.2.15-2+b2"),
                change("libc6", "amd64", "2.36-9+deb12u4", "2.36-9+deb12u10"),
            ]
        );
        assert_eq!(
            d.packages.downgraded,
            vec![change(
                "curl",
                "amd64",
                "7.88.1-10+deb12u12",
                "7.88.1-10+deb12u5"
            )]
        );
    }

    #[test]
    fn packages_reversed_swaps_the_lists() {
        let a = vec![pkg("x", "1.0", "amd64"), pkg("y", "1", "all")];
        let b = vec![pkg("x", "1.0~rc1", "amd64"), pkg("z", "1", "all")];
        let d = diff(&side(1, &a, &[], &[], None), &side(2, &b, &[], &[], None));
        let r = diff(&side(2, &b, &[], &[], None), &side(1, &a, &[], &[], None));
        assert_eq!(d.packages.added, r.packages.removed);
        assert_eq!(d.packages.removed, r.packages.added);
        assert_eq!(
            d.packages.downgraded,
            vec![change("x", "amd64", "1.0", "1.0~rc1")]
        );
        assert_eq!(
            r.packages.upgraded,
            vec![change("x", "amd64", "1.0~rc1", "1.0")]
        );
        assert!(d.packages.upgraded.is_empty());
        assert!(r.packages.downgraded.is_empty());
    }

    #[test]
    fn epoch_upgrade() {
        let a = vec![pkg("p", "2.0", "amd64")];
        let b = vec![pkg("p", "1:0.1", "amd64")];
        let d = diff(&side(1, &a, &[], &[], None), &side(2, &b, &[], &[], None));
        assert_eq!(
            d.packages.upgraded,
            vec![change("p", "amd64", "2.0", "1:0.1")]
        );
    }

    #[test]
    fn artifacts() {
        let a = vec![
            art("disk.img.zst", 100, "aa"),
            art("disk.img.bmap", 5, "bb"),
            art("rootfs.tar", 50, "cc"),
            art("same-size.img", 10, "dd"),
            art("case.img", 10, "ABCDEF"),
            art("manifest.json", 1, "ee"),
        ];
        let b = vec![
            art("manifest.json", 1, "ee"),
            art("case.img", 10, "abcdef"),
            art("same-size.img", 10, "d0"),
            art("disk.img.zst", 120, "aa2"),
            art("boot.img", 7, "ff"),
            art("zz.log", 3, "11"),
        ];
        let d = diff(&side(1, &[], &a, &[], None), &side(2, &[], &b, &[], None));
        assert_eq!(
            d.artifacts,
            ArtifactDiff {
                added: vec![
                    ArtifactSize {
                        name: "boot.img".into(),
                        size: 7
                    },
                    ArtifactSize {
                        name: "zz.log".into(),
                        size: 3
                    },
                ],
                removed: vec![
                    ArtifactSize {
                        name: "disk.img.bmap".into(),
                        size: 5
                    },
                    ArtifactSize {
                        name: "rootfs.tar".into(),
                        size: 50
                    },
                ],
                changed: vec![
                    ArtifactChange {
                        name: "disk.img.zst".into(),
                        from_size: 100,
                        to_size: 120
                    },
                    ArtifactChange {
                        name: "same-size.img".into(),
                        from_size: 10,
                        to_size: 10
                    },
                ],
            }
        );
    }

    #[test]
    fn sources() {
        let a = strings(&[
            "deb http://z/d s main",
            "deb http://h/d bookworm main",
            "deb http://old/d s main",
            "deb http://a/d s main",
        ]);
        let b = strings(&[
            "deb http://new2/d s main",
            "deb http://h/d bookworm main",
            "deb http://new1/d s main",
            "deb http://new2/d s main",
            "",
            "# from /etc/apt/sources.list",
        ]);
        let d = diff(&side(1, &[], &[], &a, None), &side(2, &[], &[], &b, None));
        assert_eq!(
            d.sources,
            SourcesDiff {
                added: strings(&["deb http://new2/d s main", "deb http://new1/d s main"]),
                removed: strings(&[
                    "deb http://z/d s main",
                    "deb http://old/d s main",
                    "deb http://a/d s main"
                ]),
            }
        );
    }

    #[test]
    fn sources_from_rendered_records() {
        use crate::record::sources::{one_line_entries, parse_deb822};
        let a = parse_deb822(
            "Types: deb\nURIs: http://h/d\nSuites: bookworm bookworm-updates\nComponents: main\n",
            "x",
        );
        let b = parse_deb822(
            "Types: deb\nURIs: http://h/d\nSuites: bookworm trixie\nComponents: main\n",
            "y",
        );
        let (la, lb) = (one_line_entries(&a), one_line_entries(&b));
        let d = diff(&side(1, &[], &[], &la, None), &side(2, &[], &[], &lb, None));
        assert_eq!(d.sources.added, strings(&["deb http://h/d trixie main"]));
        assert_eq!(
            d.sources.removed,
            strings(&["deb http://h/d bookworm-updates main"])
        );
    }

    #[test]
    fn commits() {
        let d = diff(
            &side(7, &[], &[], &[], Some("abc123")),
            &side(9, &[], &[], &[], None),
        );
        assert_eq!(d.from, BuildId(7));
        assert_eq!(d.to, BuildId(9));
        assert_eq!(
            d.commits,
            CommitRange {
                from: Some("abc123".into()),
                to: None,
                commits: vec![],
                note: None,
            }
        );
    }
}
