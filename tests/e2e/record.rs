//! What an image carries (issue 18), through a real slave: a `script` build that makes a small
//! Debian-like root file system (apt sources with a password, an `auth.conf`, a dpkg status)
//! and a real partitioned ext4 disk image with `sfdisk` and `mkfs.ext4 -d`. The record the
//! slave reads and the master serves: sources without credentials and with the site's and the
//! project's rewrite maps applied, the package list, the image's layout and `.bmap`, an SPDX
//! SBOM, and the difference between two builds. The slow tier checks the same against a real
//! mmdebstrap image (`images.rs`).

use kiln_shared::record::{BuildDiff, ImageLayout, Package};
use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer, Repo};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const PASSWORD: &str = "s3cret-Pa55";

/// A branch whose build makes `rootfs` in the scratch dir (the documented place) and a
/// partitioned `disk.img` in the output dir; `extra` adds the package `hello`.
fn image_branch(repo: &Repo, extra: bool) -> String {
    let hello = if extra {
        "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n\n"
    } else {
        ""
    };
    let script = format!(
        r##"#!/bin/bash
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
R="$KILN_SCRATCH_DIR/rootfs"
mkdir -p "$R/etc/apt/sources.list.d" "$R/var/lib/dpkg" "$R/usr/lib"
echo "fake key" > "$KILN_SCRATCH_DIR/build-key.gpg"
cat > "$R/etc/apt/sources.list" <<END
# the internal mirror, with its password
deb [arch=amd64 signed-by=$KILN_SCRATCH_DIR/build-key.gpg] http://kiln:{PASSWORD}@mirror.internal/debian bookworm main contrib
END
cat > "$R/etc/apt/sources.list.d/security.sources" <<END
Types: deb
URIs: http://mirror.internal/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://vendor.internal/apt
Suites: stable
Components: main
Enabled: no
END
echo "machine mirror.internal login kiln password {PASSWORD}" > "$R/etc/apt/auth.conf"
cat > "$R/var/lib/dpkg/status" <<END
Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5

Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22

Package: libapt-pkg6.0
Status: install ok installed
Architecture: amd64
Source: apt (2.6.1)
Version: 2.6.1

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

{hello}END
printf 'PRETTY_NAME="Kiln Test 12"\nID=debian\n' > "$R/usr/lib/os-release"
ln -s ../usr/lib/os-release "$R/etc/os-release"
IMG="$KILN_OUTPUT_DIR/disk.img"
truncate -s 64M "$IMG"
printf 'label: gpt\nstart=2048, size=100352, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' | sfdisk -q --no-reread --no-tell-kernel "$IMG"
mkfs.ext4 -q -F -L rootfs -d "$R" -E offset=1048576 "$IMG" 50176k
echo made the image
"##
    );
    repo.file(
        "kiln.toml",
        "backend = \"script\"\n[script]\ncommand = \"./build.sh\"\n",
        false,
    )
    .file("build.sh", &script, true)
    .commit("main", if extra { "add hello" } else { "the image" })
}

/// The SPDX project's validator, installed once into the target dir
/// (`tests/support/install-spdx-tools.sh`).
fn pyspdxtools() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        kiln_tests::install_into_target(
            "support/install-spdx-tools.sh",
            "KILN_SPDX_DIR",
            "spdx-venv",
            "scripts/install-deps.sh installs python3-venv",
        )
    })
}

/// Asserts that the SPDX validator accepts `sbom` (an SPDX 2.3 JSON document).
pub fn assert_valid_spdx(sbom: &[u8]) {
    let dir = kiln_tests::tempdir("kiln-spdx-");
    let file = dir.path().join("sbom.spdx.json");
    std::fs::write(&file, sbom).unwrap();
    let out = Command::new(pyspdxtools())
        .arg("-i")
        .arg(&file)
        .output()
        .expect("running pyspdxtools");
    assert!(
        out.status.success(),
        "pyspdxtools refuses the SBOM: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn text(farm: &Farm, path: &str) -> (u16, String) {
    let r = farm.get_raw(path).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn built(farm: &Farm, body: Value) -> kiln_shared::api::Build {
    let b = farm.request_build("board", body).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        b.reason,
        farm.log(b.id).await
    );
    b
}

async fn patch(farm: &Farm, path: &str, body: Value) -> reqwest::Response {
    farm.http
        .patch(farm.api(path))
        .bearer_auth(&farm.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_builds_sources_packages_layout_sbom_and_diff() {
    let git = GitServer::start();
    let repo = git.repo("board");
    image_branch(&repo, false);
    let farm = Farm::with(FarmOptions {
        extra_toml: "[sources.rewrite]\n\"http://mirror.internal/debian\" = \"https://deb.debian.org/debian\"\n\"http://mirror.internal/debian-security\" = \"https://site.example/wrong\"\n".into(),
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("board", &repo.url, "main").await;

    // Before any build: a clear message, not an empty file.
    let (status, body) = text(&farm, "/api/projects/board/sources").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no successful build"), "{body}");

    // The project's map wins over the site's for the same URL; a bad map names the field.
    let r = patch(
        &farm,
        "/api/projects/board",
        json!({"source_rewrites": {
            "http://mirror.internal/debian-security": "https://security.debian.org/debian-security"
        }}),
    )
    .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = patch(
        &farm,
        "/api/projects/board",
        json!({"source_rewrites": {"mirror.internal": "https://x/"}}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["field"], "source_rewrites", "{e}");

    let a = built(&farm, json!({"release": "v1"})).await;
    let log = farm.log(a.id).await;
    assert!(
        !log.contains(PASSWORD),
        "the password reached the log:\n{log}"
    );

    // Sources: the password, auth.conf and the build's own key path are gone; both maps apply.
    let (status, deb822) = text(&farm, &format!("/api/builds/{}/sources", a.id)).await;
    assert_eq!(status, 200, "{deb822}");
    assert!(
        !deb822.contains(PASSWORD) && !deb822.contains("kiln@"),
        "{deb822}"
    );
    assert!(!deb822.contains("build-key.gpg"), "{deb822}");
    assert!(!deb822.contains("mirror.internal"), "{deb822}");
    assert!(
        !deb822.contains("vendor.internal"),
        "a disabled source is listed:\n{deb822}"
    );
    assert!(
        deb822.contains("URIs: https://deb.debian.org/debian\n"),
        "{deb822}"
    );
    assert!(
        deb822.contains("URIs: https://security.debian.org/debian-security\n"),
        "{deb822}"
    );
    assert!(deb822.contains("Components: main contrib\n"), "{deb822}");
    assert!(deb822.contains("Architectures: amd64\n"), "{deb822}");
    assert!(
        deb822.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"),
        "{deb822}"
    );
    let (_, list) = text(&farm, &format!("/api/builds/{}/sources?format=list", a.id)).await;
    let lines: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "deb [arch=amd64] https://deb.debian.org/debian bookworm main contrib",
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] https://security.debian.org/debian-security bookworm-security main",
        ],
        "{list}"
    );
    let (status, body) = text(&farm, &format!("/api/builds/{}/sources?format=yaml", a.id)).await;
    assert_eq!(status, 400);
    assert!(body.contains("yaml"), "{body}");

    // Packages: installed ones only, with their source package.
    let pkgs: Vec<Package> = farm.get(&format!("/api/builds/{}/packages", a.id)).await;
    let names: Vec<(&str, &str, &str)> = pkgs
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str(), p.source.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("base-files", "12.4+deb12u5", "base-files"),
            ("dpkg", "1.21.22", "dpkg"),
            ("libapt-pkg6.0", "2.6.1", "apt"),
        ]
    );

    // The image: what sfdisk and the file system say, read without mounting; a .bmap beside it.
    let images: Vec<ImageLayout> = farm.get(&format!("/api/builds/{}/images", a.id)).await;
    assert_eq!(images.len(), 1, "{images:?}");
    let l: ImageLayout = farm
        .get(&format!("/api/builds/{}/artifacts/disk.img/layout", a.id))
        .await;
    assert_eq!(l, images[0]);
    assert_eq!(l.table.as_deref(), Some("gpt"));
    assert_eq!(l.size, 64 << 20);
    assert_eq!(l.partitions.len(), 1);
    let p = &l.partitions[0];
    assert_eq!((p.start, p.size), (2048 * 512, 100352 * 512));
    assert_eq!(p.filesystem.as_deref(), Some("ext4"));
    assert_eq!(p.label.as_deref(), Some("rootfs"));
    assert!(
        p.used_bytes.unwrap() > 0 && p.free_bytes.unwrap() > 0,
        "{p:?}"
    );
    assert_eq!(
        p.os_release
            .as_ref()
            .and_then(|o| o.get("PRETTY_NAME"))
            .map(String::as_str),
        Some("Kiln Test 12")
    );
    assert_eq!(l.bmap.as_deref(), Some("disk.img.bmap"));
    let bmap = String::from_utf8(farm.download(a.id, "disk.img.bmap").await).unwrap();
    assert!(bmap.contains("<bmap version=\"2.0\">"), "{bmap}");
    let (status, body) = text(
        &farm,
        &format!("/api/builds/{}/artifacts/disk.img.bmap/layout", a.id),
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("not a disk image"), "{body}");

    // The SBOM: SPDX 2.3, one package per dpkg package, the config commit as provenance.
    let sbom_bytes = farm.download(a.id, "sbom.spdx.json").await;
    assert_valid_spdx(&sbom_bytes);
    let sbom: Value = serde_json::from_slice(&sbom_bytes).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let sbom_text = sbom.to_string();
    assert!(
        sbom_text.contains(a.commit.as_deref().unwrap()),
        "{sbom_text}"
    );
    assert!(!sbom_text.contains(PASSWORD), "{sbom_text}");
    for name in ["base-files", "dpkg", "libapt-pkg6.0"] {
        assert!(
            sbom["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == name),
            "{name} not in the SBOM"
        );
    }

    // A second build with one more package: the diff says exactly that.
    image_branch(&repo, true);
    let b = built(&farm, json!({})).await;
    let d: BuildDiff = farm
        .get(&format!("/api/builds/{}/diff/{}", a.id, b.id))
        .await;
    let added: Vec<&str> = d.packages.added.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(added, ["hello"], "{d:?}");
    assert!(
        d.packages.removed.is_empty() && d.packages.upgraded.is_empty(),
        "{d:?}"
    );
    assert!(
        d.packages.downgraded.is_empty() && d.sources.added.is_empty(),
        "{d:?}"
    );
    assert!(
        d.artifacts.added.is_empty() && d.artifacts.removed.is_empty(),
        "{d:?}"
    );
    assert_eq!(d.commits.commits.len(), 1, "{:?}", d.commits);
    assert_eq!(d.commits.commits[0].subject, "add hello");
    assert_eq!(d.commits.to, b.commit);

    // Per project: the last successful build's sources, or a named release's.
    let r = farm.get_raw("/api/projects/board/sources").await;
    assert_eq!(
        r.headers()["x-kiln-build"].to_str().unwrap(),
        b.id.to_string()
    );
    let r = farm.get_raw("/api/projects/board/sources?release=v1").await;
    assert_eq!(
        r.headers()["x-kiln-build"].to_str().unwrap(),
        a.id.to_string()
    );
    let (status, body) = text(&farm, "/api/projects/board/sources?release=v9").await;
    assert_eq!(status, 404);
    assert!(body.contains("release 'v9'"), "{body}");

    // Debian's bmaptool accepts the slave's bmap and writes exactly the image.
    let dir = kiln_tests::tempdir("kiln-bmap-");
    let img = dir.path().join("disk.img");
    std::fs::write(&img, farm.download(a.id, "disk.img").await).unwrap();
    let bmap_file = dir.path().join("disk.img.bmap");
    std::fs::write(&bmap_file, bmap).unwrap();
    let out = dir.path().join("copy.img");
    let st = Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap_file)
        .arg(&img)
        .arg(&out)
        .output()
        .expect("bmaptool (scripts/install-deps.sh installs bmap-tools)");
    assert!(
        st.status.success(),
        "bmaptool copy: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&img).unwrap(),
        "bmaptool's copy differs from the image"
    );
}

/// What a slave sends is the build's word: the master takes a record only with the build's
/// upload token; reading a record of a build that does not exist names it.
#[tokio::test]
async fn the_record_route_takes_only_an_upload_token() {
    let farm = Farm::start().await;
    let put = |token: Option<&str>| {
        let mut r = farm
            .http
            .put(farm.api("/api/slave/builds/1/record"))
            .json(&json!({}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(put(None).await.unwrap().status(), 401);
    assert_eq!(
        put(Some(&farm.token)).await.unwrap().status(),
        401,
        "the admin token is not an upload token"
    );
    let (status, body) = text(&farm, "/api/builds/999/packages").await;
    assert_eq!(status, 404);
    assert!(body.contains("999"), "{body}");
}

/// With a signing key, the master signs each build's `SHA256SUMS` (once it matches what it
/// stored): Debian's `minisign` verifies the download with the public key from
/// `GET /api/signing-key`, and refuses a changed file. A build's own `SHA256SUMS` that does not
/// match its artifacts is not signed.
#[tokio::test]
async fn checksums_are_signed_and_minisign_verifies_a_download() {
    let keys = kiln_tests::tempdir("kiln-minisign-");
    let (key, public) = (keys.path().join("kiln.key"), keys.path().join("kiln.pub"));
    // A key made as docs/image-record.md says: `minisign -G`, with a password (read from
    // standard input when it is not a terminal), kept in a file beside the key.
    let mut gen = Command::new("minisign")
        .args(["-G", "-f", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("minisign (scripts/install-deps.sh installs it)");
    std::io::Write::write_all(gen.stdin.as_mut().unwrap(), b"key password\nkey password\n")
        .unwrap();
    let out = gen.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = keys.path().join("kiln.key.password");
    std::fs::write(&password, "key password\n").unwrap();
    let git = GitServer::start();
    let repo = git.repo("signed");
    repo.script_branch("main", "echo image > \"$KILN_OUTPUT_DIR/disk.img.zst\"");
    let farm = Farm::with(FarmOptions {
        extra_toml: format!(
            "[signing]\nminisign_key_file = \"{}\"\npassword_file = \"{}\"\n",
            key.display(),
            password.display()
        ),
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("signed", &repo.url, "main").await;
    let b = farm.request_build("signed", json!({})).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    let names = farm.artifact_names(b.id).await;
    assert_eq!(names, ["SHA256SUMS", "SHA256SUMS.minisig", "disk.img.zst"]);

    // The public key is served to anyone, signed in or not.
    let served = farm
        .http
        .get(farm.api("/api/signing-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served = served.text().await.unwrap();
    let want = std::fs::read_to_string(&public).unwrap();
    assert_eq!(
        served.lines().last(),
        want.lines().last(),
        "the served key is not the key's public half"
    );
    let dir = kiln_tests::tempdir("kiln-verify-");
    for name in ["SHA256SUMS", "SHA256SUMS.minisig", "disk.img.zst"] {
        std::fs::write(dir.path().join(name), farm.download(b.id, name).await).unwrap();
    }
    std::fs::write(dir.path().join("kiln.pub"), &served).unwrap();
    let verify = || {
        Command::new("minisign")
            .current_dir(dir.path())
            .args(["-V", "-p", "kiln.pub", "-m", "SHA256SUMS"])
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "minisign -V: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains(&format!("kiln build {}", b.id)),
        "the trusted comment names the build: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let check = Command::new("sha256sum")
        .current_dir(dir.path())
        .args(["-c", "SHA256SUMS"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
    std::fs::write(dir.path().join("SHA256SUMS"), sums.replacen('0', "1", 1)).unwrap();
    assert!(!verify().status.success(), "a changed SHA256SUMS verifies");

    // A build's own SHA256SUMS that lies about its files is delivered but not signed.
    repo.script_branch(
        "main",
        "echo image > \"$KILN_OUTPUT_DIR/disk.img.zst\"\necho \"0000  disk.img.zst\" > \"$KILN_OUTPUT_DIR/SHA256SUMS\"",
    );
    let c = farm.request_build("signed", json!({})).await;
    let c = farm.wait_ended(c.id, MINUTE).await;
    assert_eq!(c.state, BuildState::Succeeded, "{:?}", c.reason);
    let names = farm.artifact_names(c.id).await;
    assert_eq!(names, ["SHA256SUMS", "disk.img.zst"]);

    // One that tells the truth is signed: it is sent after the files it names, although the
    // output dir lists it first.
    repo.script_branch(
        "main",
        "cd \"$KILN_OUTPUT_DIR\"\necho image > disk.img.zst\nsha256sum disk.img.zst > SHA256SUMS",
    );
    let d = farm.request_build("signed", json!({})).await;
    let d = farm.wait_ended(d.id, MINUTE).await;
    assert_eq!(d.state, BuildState::Succeeded, "{:?}", d.reason);
    let names = farm.artifact_names(d.id).await;
    assert_eq!(
        names,
        ["SHA256SUMS", "SHA256SUMS.minisig", "disk.img.zst"],
        "{}",
        farm.log(d.id).await
    );

    // An image with packages: Kiln adds the block map and the SBOM, names them in the build's
    // own SHA256SUMS (which ends without a newline here), and the whole is signed and checks.
    repo.script_branch(
        "main",
        r#"R="$KILN_SCRATCH_DIR/rootfs"
mkdir -p "$R/var/lib/dpkg" "$R/usr/lib"
printf 'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n\n' > "$R/var/lib/dpkg/status"
printf 'PRETTY_NAME="Kiln Test 12"\nID=debian\n' > "$R/usr/lib/os-release"
IMG="$KILN_OUTPUT_DIR/disk.img"
truncate -s 64M "$IMG"
printf 'label: gpt\nstart=2048, size=100352, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' | /usr/sbin/sfdisk -q --no-reread --no-tell-kernel "$IMG"
/usr/sbin/mkfs.ext4 -q -F -L rootfs -d "$R" -E offset=1048576 "$IMG" 50176k
cd "$KILN_OUTPUT_DIR"
printf '%s' "$(sha256sum disk.img)" > SHA256SUMS"#,
    );
    let e = farm.request_build("signed", json!({})).await;
    let e = farm.wait_ended(e.id, MINUTE).await;
    assert_eq!(e.state, BuildState::Succeeded, "{:?}", e.reason);
    let names = farm.artifact_names(e.id).await;
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "SHA256SUMS.minisig",
            "disk.img",
            "disk.img.bmap",
            "sbom.spdx.json"
        ],
        "{}",
        farm.log(e.id).await
    );
    let dir = kiln_tests::tempdir("kiln-verify-sbom-");
    for name in [
        "SHA256SUMS",
        "SHA256SUMS.minisig",
        "disk.img",
        "disk.img.bmap",
        "sbom.spdx.json",
    ] {
        std::fs::write(dir.path().join(name), farm.download(e.id, name).await).unwrap();
    }
    std::fs::write(dir.path().join("kiln.pub"), &served).unwrap();
    for (what, cmd, args) in [
        (
            "minisign -V",
            "minisign",
            ["-V", "-p", "kiln.pub", "-m", "SHA256SUMS"].as_slice(),
        ),
        (
            "sha256sum -c",
            "sha256sum",
            ["-c", "--strict", "SHA256SUMS"].as_slice(),
        ),
    ] {
        let out = Command::new(cmd)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3, "{sums}");
}
