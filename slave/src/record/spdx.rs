//! An SPDX 2.3 JSON document of a build's image: one package per installed Debian package
//! (with a `pkg:deb` purl), contained in a package for the image itself, which carries the
//! provenance (the configuration commit and branch, the apt sources).

use kiln_shared::record::sources::{strip_credentials, to_one_line};
use kiln_shared::record::{BuildRecord, Package};
use serde_json::{json, Value};
use std::collections::HashSet;

const NOASSERTION: &str = "NOASSERTION";
const IMAGE_ID: &str = "SPDXRef-Image";

/// The document for `record`, named `name` (the image), with the given namespace and
/// creation time (RFC 3339, UTC, `Z`); `commit` and `branch_url` are the configuration it was
/// built from.
pub fn spdx_document(
    record: &BuildRecord,
    name: &str,
    namespace: &str,
    created: &str,
    commit: Option<&str>,
    branch_url: &str,
) -> Value {
    let mut ids = HashSet::from([IMAGE_ID.to_owned()]);
    let mut packages = vec![image_package(record, name, commit, branch_url)];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE_ID)];
    for p in &record.packages {
        let id = unique_id(&mut ids, p);
        relationships.push(relationship(IMAGE_ID, "CONTAINS", &id));
        packages.push(deb_package(p, id));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": namespace,
        "creationInfo": {
            "created": created,
            "creators": ["Tool: kiln"],
        },
        "documentDescribes": [IMAGE_ID],
        "packages": packages,
        "relationships": relationships,
    })
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({
        "spdxElementId": from,
        "relationshipType": kind,
        "relatedSpdxElement": to,
    })
}

fn image_package(record: &BuildRecord, name: &str, commit: Option<&str>, branch: &str) -> Value {
    let branch = strip_credentials(branch);
    let source_info = match commit {
        Some(c) => format!("built by Kiln from commit {c} of {branch}"),
        None => format!("built by Kiln from {branch} (commit unknown)"),
    };
    let sources = if record.sources.is_empty() {
        "none recorded\n".to_owned()
    } else {
        to_one_line(&record.sources)
    };
    let mut comment = format!("apt sources:\n{sources}");
    if !record.images.is_empty() {
        let names: Vec<&str> = record.images.iter().map(|i| i.artifact.as_str()).collect();
        comment.push_str(&format!("disk images: {}\n", names.join(", ")));
    }
    let mut p = json!({
        "SPDXID": IMAGE_ID,
        "name": name,
        "supplier": NOASSERTION,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "sourceInfo": source_info,
        "comment": comment,
    });
    if let Some(c) = commit {
        p["versionInfo"] = json!(c);
    }
    p
}

fn deb_package(p: &Package, id: String) -> Value {
    json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "supplier": NOASSERTION,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "sourceInfo": format!("built from source package {}", p.source),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": purl(p),
        }],
    })
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH`, percent-encoded as the purl spec says.
pub fn purl(p: &Package) -> String {
    let mut s = format!("pkg:deb/debian/{}", encode(&p.name));
    if !p.version.is_empty() {
        s.push('@');
        s.push_str(&encode(&p.version));
    }
    if !p.architecture.is_empty() {
        s.push_str("?arch=");
        s.push_str(&encode(&p.architecture));
    }
    s
}

/// Everything but ASCII letters, digits and `.-_~` percent-encoded.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b".-_~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `SPDXRef-Package-NAME-ARCH` with anything but letters, digits, `.` and `-` made `-`, and a
/// number added when that is taken.
fn unique_id(taken: &mut HashSet<String>, p: &Package) -> String {
    let sanitise = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let base = format!(
        "SPDXRef-Package-{}-{}",
        sanitise(&p.name),
        sanitise(&p.architecture)
    );
    let mut id = base.clone();
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn pkg(name: &str, version: &str, arch: &str, source: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: arch.into(),
            source: source.into(),
        }
    }

    fn record() -> BuildRecord {
        BuildRecord {
            sources: Vec::new(),
            packages: vec![
                pkg("libstdc++6", "12.2.0-14", "amd64", "gcc-12"),
                pkg("libstdc--6", "1.0", "amd64", "x"),
                pkg("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib"),
            ],
            images: Vec::new(),
        }
    }

    #[test]
    fn purls_and_ids() {
        assert_eq!(
            purl(&pkg("zlib1g", "1:1.2.13.dfsg-1", "amd64", "zlib")),
            "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64"
        );
        assert_eq!(
            purl(&pkg("libstdc++6", "12.2.0-14+b1", "i386", "gcc-12")),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bb1?arch=i386"
        );
        let mut taken = HashSet::new();
        let a = unique_id(&mut taken, &pkg("libstdc++6", "", "amd64", ""));
        let b = unique_id(&mut taken, &pkg("libstdc--6", "", "amd64", ""));
        assert_eq!(a, "SPDXRef-Package-libstdc--6-amd64");
        assert_eq!(b, "SPDXRef-Package-libstdc--6-amd64-2");
    }

    /// Calls the shared `strip_credentials` (it must be implemented).
    #[test]
    fn document_shape() {
        let doc = spdx_document(
            &record(),
            "bookworm-base",
            "https://kiln.example/spdx/builds/7",
            "2024-05-01T12:00:00Z",
            Some("0123abcd"),
            "https://user:token@git.example/images.git#main",
        );
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["documentDescribes"][0], IMAGE_ID);
        let packages = doc["packages"].as_array().unwrap();
        assert_eq!(packages.len(), 4);
        let image = &packages[0];
        let info = image["sourceInfo"].as_str().unwrap();
        assert!(
            info.contains("0123abcd") && !info.contains("token"),
            "{info}"
        );
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 4);
        assert_eq!(packages[3]["sourceInfo"], "built from source package zlib");
        assert!(!doc.to_string().contains("token"));
    }

    /// Validates a document with pyspdxtools (`pip install spdx-tools`; `PYSPDXTOOLS` may name
    /// the program, e.g. in a venv).
    #[test]
    fn pyspdxtools_accepts_it() {
        let env = std::env::var("PYSPDXTOOLS").ok();
        let tool = env
            .as_deref()
            .into_iter()
            .chain(["pyspdxtools"])
            .find(|t| Command::new(t).arg("--help").output().is_ok());
        let Some(tool) = tool else {
            eprintln!("skipped: pyspdxtools not installed (pip install spdx-tools)");
            return;
        };
        let doc = spdx_document(
            &record(),
            "bookworm-base",
            "https://kiln.example/spdx/builds/7",
            "2024-05-01T12:00:00Z",
            Some("0123abcd"),
            "https://git.example/images.git",
        );
        let dir = std::env::temp_dir().join(format!("kiln-spdx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("image.spdx.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        let out = Command::new(tool).arg("-i").arg(&file).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.to_lowercase().contains("invalid"), "{text}");
        let _ = std::fs::remove_dir_all(Path::new(&dir));
    }
}
