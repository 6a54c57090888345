//! The slow tier: real images built by real tools. Run by `scripts/test.sh` with
//! `--ignored`; each builds through the whole farm like a user would.

use kiln_shared::BuildState;
use kiln_tests::{Farm, GitServer};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks a built `disk.img.zst` into `dir`: the raw image and its partition table (sfdisk's).
fn unpack_disk_image(dir: &Path, zst: &[u8]) -> (std::path::PathBuf, serde_json::Value) {
    let zpath = dir.join("disk.img.zst");
    std::fs::write(&zpath, zst).unwrap();
    let img = dir.join("disk.img");
    run(Command::new("zstd")
        .args(["-d", "-q", "-f"])
        .arg(&zpath)
        .arg("-o")
        .arg(&img));
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&img))).unwrap();
    (img, table["partitiontable"].clone())
}

/// Checks a built disk image: one Linux partition at 1 MiB, an ext4 root with /etc/os-release.
fn check_disk_image(dir: &Path, zst: &[u8], want_arch_file: Option<&str>) {
    let (img, table) = unpack_disk_image(dir, zst);
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{table}");
    assert_eq!(parts[0]["start"], 2048, "{table}");
    assert_eq!(table["label"], "gpt");
    check_root_partition(dir, &img, &parts[0], want_arch_file);
}

/// Copies partition `part` (an entry of sfdisk's JSON) of `img` into a file of `dir`.
fn extract_partition(
    dir: &Path,
    img: &Path,
    part: &serde_json::Value,
    name: &str,
) -> std::path::PathBuf {
    let out = dir.join(name);
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "status=none"])
        .arg(format!("skip={}", part["start"].as_u64().unwrap() * 512))
        .arg(format!("count={}", part["size"].as_u64().unwrap() * 512)));
    out
}

/// Checks the ext4 root file system in partition `part` of `img`: it is clean, has
/// /etc/os-release saying Debian, and `want_arch_file`; returns the extracted partition.
fn check_root_partition(
    dir: &Path,
    img: &Path,
    part: &serde_json::Value,
    want_arch_file: Option<&str>,
) -> std::path::PathBuf {
    let part = extract_partition(dir, img, part, "root.ext4");
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck ({}): {}{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    // /etc/os-release exists (in Debian a symlink to ../usr/lib/os-release) and says Debian.
    let link = run(Command::new("debugfs")
        .args(["-R", "stat /etc/os-release"])
        .arg(&part));
    assert!(link.contains("Inode"), "no /etc/os-release: {link}");
    let mut os_release = run(Command::new("debugfs")
        .args(["-R", "cat /etc/os-release"])
        .arg(&part));
    if link.contains("Type: symlink") {
        assert!(link.contains("../usr/lib/os-release"), "{link}");
        os_release = run(Command::new("debugfs")
            .args(["-R", "cat /usr/lib/os-release"])
            .arg(&part));
    }
    assert!(os_release.contains("ID=debian"), "{os_release}");
    if let Some(f) = want_arch_file {
        let listing = run(Command::new("debugfs")
            .args(["-R", &format!("stat {f}")])
            .arg(&part));
        assert!(listing.contains("Inode"), "{f} missing: {listing}");
    }
    part
}

/// The branch of the mmdebstrap image tests: a minbase image of `arch` with `packages` (TOML
/// list items) and any `extra` lines of the `[mmdebstrap]` table.
fn mmdebstrap_branch(repo: &kiln_tests::Repo, arch: &str, packages: &str, extra: &str) -> String {
    repo.file(
        "kiln.toml",
        &format!(
            "backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"bookworm\"\narchitecture = \"{arch}\"\nvariant = \"minbase\"\npackages = [{packages}]\nimage_size = \"1G\"\ncustomize_hooks = [\"hooks/stamp.sh\"]\n{extra}"
        ),
        false,
    )
    .file("hooks/stamp.sh", "#!/bin/sh\nset -e\necho kiln-test > \"$1/etc/kiln-stamp\"\n", true)
    // A board's firmware configuration, for the layout with a vfat boot partition.
    .file(
        "hooks/firmware.sh",
        "#!/bin/sh\nset -e\nmkdir -p \"$1/boot/firmware\"\necho arm_64bit=1 > \"$1/boot/firmware/config.txt\"\n",
        true,
    )
    .commit("main", &format!("image with {packages}"))
}

async fn mmdebstrap_build(
    arch: &str,
    packages: &str,
    extra: &str,
) -> (Farm, kiln_shared::api::Build, GitServer) {
    let git = GitServer::start();
    let repo = git.repo("image");
    mmdebstrap_branch(&repo, arch, packages, extra);
    let farm = Farm::with(kiln_tests::FarmOptions {
        heartbeat_secs: 5,
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    let slave = farm.slave("builder").await;
    std::mem::forget(slave); // lives until the test process ends
    farm.project("image", &repo.url, "main").await;
    let b = farm.request_build("image", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(1500)).await;
    (farm, b, git)
}

/// An internal mirror that wants a password: a reverse proxy on loopback in front of
/// `upstream` that answers 401 to requests without `user:password` (HTTP basic auth).
/// Returns its base URL (`http://127.0.0.1:PORT/debian`).
async fn mirror_with_password(upstream: String, user: &str, password: &str) -> String {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{header, StatusCode};
    use axum::response::Response;
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (want, client, upstream) = (want.clone(), client.clone(), upstream.clone());
        async move {
            let authorised = req
                .headers()
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes() == want.as_bytes());
            if !authorised {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(header::WWW_AUTHENTICATE, "Basic realm=\"internal mirror\"")
                    .body(Body::empty())
                    .unwrap();
            }
            let path = req.uri().path();
            let Some(rest) = path.strip_prefix("/debian") else {
                return Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(Body::empty())
                    .unwrap();
            };
            let mut up = client.request(req.method().clone(), format!("{upstream}{rest}"));
            for h in [header::RANGE, header::IF_MODIFIED_SINCE, header::IF_RANGE] {
                if let Some(v) = req.headers().get(&h) {
                    up = up.header(h.as_str(), v.as_bytes());
                }
            }
            match up.send().await {
                Ok(r) => {
                    let mut b = Response::builder().status(r.status().as_u16());
                    for h in [
                        "content-type",
                        "content-length",
                        "last-modified",
                        "content-range",
                        "accept-ranges",
                    ] {
                        if let Some(v) = r.headers().get(h) {
                            b = b.header(h, v.as_bytes());
                        }
                    }
                    b.body(Body::from_stream(r.bytes_stream())).unwrap()
                }
                Err(e) => Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Body::from(e.to_string()))
                    .unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/debian")
}

fn run_in(dir: &Path, cmd: &mut Command) -> String {
    run(cmd.current_dir(dir))
}

/// A real minbase image built from an internal mirror that needs a password: the image, and
/// what Kiln records of it (issue 18) checked against the tools themselves: the apt sources
/// without the password and with the project's rewrite map applied, the packages that
/// `dpkg-query` in the image lists, the partitions `sfdisk --json` shows, a `.bmap` that
/// `bmaptool copy` accepts, an SBOM the SPDX validator accepts; then a second build with one
/// more package, and the difference between the two.
#[tokio::test]
#[ignore = "slow tier: real mmdebstrap image (scripts/test.sh runs it)"]
async fn mmdebstrap_amd64_minbase_image() {
    const PASSWORD: &str = "mirror-Pa55word";
    let upstream = kiln_tests::host_apt::mirror();
    let internal = mirror_with_password(upstream.clone(), "kiln", PASSWORD).await;
    let with_password = internal.replacen("http://", &format!("http://kiln:{PASSWORD}@"), 1);
    let git = GitServer::start();
    let repo = git.repo("image");
    let mirror_line = format!("mirror = \"{with_password}\"\n");
    mmdebstrap_branch(&repo, "amd64", "\"systemd-sysv\", \"udev\"", &mirror_line);
    let farm = Farm::with(kiln_tests::FarmOptions {
        heartbeat_secs: 5,
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("builder").await;
    farm.project("image", &repo.url, "main").await;
    let (s, v) = farm
        .patch(
            "/api/projects/image",
            json!({"source_rewrites": {internal.clone(): upstream.clone()}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let b = farm.request_build("image", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(1500)).await;
    let log = farm.log(b.id).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}\n{log}", b.reason);
    assert!(
        !log.contains(PASSWORD),
        "the mirror's password is in the log"
    );
    let names = farm.artifact_names(b.id).await;
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "disk.img.bmap",
            "disk.img.zst",
            "packages.manifest",
            "rootfs.tar.zst",
            "sbom.spdx.json"
        ]
    );
    let manifest = String::from_utf8(farm.download(b.id, "packages.manifest").await).unwrap();
    assert!(
        manifest.lines().any(|l| l.starts_with("systemd-sysv\t")),
        "{manifest}"
    );
    assert!(manifest.lines().any(|l| l.starts_with("udev\t")));
    assert!(manifest.lines().all(|l| l.split('\t').count() == 3));
    let dir = kiln_tests::tempdir("kiln-img-");
    let zst = farm.download(b.id, "disk.img.zst").await;
    check_disk_image(dir.path(), &zst, Some("/etc/kiln-stamp"));
    let tar = farm.download(b.id, "rootfs.tar.zst").await;
    std::fs::write(dir.path().join("rootfs.tar.zst"), tar).unwrap();
    let listing = run(Command::new("tar")
        .args(["-I", "zstd", "-tf"])
        .arg(dir.path().join("rootfs.tar.zst")));
    assert!(
        listing.lines().any(|l| l == "./etc/os-release"),
        "rootfs tarball lacks ./etc/os-release"
    );

    // The sources: the internal mirror, its password gone, shown under its public name.
    let sources = farm
        .get_raw(&format!("/api/builds/{}/sources?format=list", b.id))
        .await
        .text()
        .await
        .unwrap();
    assert!(!sources.contains(PASSWORD), "{sources}");
    assert!(!sources.contains(&internal), "{sources}");
    assert!(
        sources
            .lines()
            .any(|l| l.starts_with(&format!("deb {upstream} bookworm main"))),
        "{sources}"
    );
    let project_sources = farm
        .get_raw("/api/projects/image/sources")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        project_sources.contains(&format!("URIs: {upstream}\n")),
        "{project_sources}"
    );

    // The packages: exactly what dpkg-query in the image lists.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run_in(
        dir.path(),
        Command::new("tar")
            .args(["-I", "zstd", "-xf", "rootfs.tar.zst", "-C"])
            .arg(&root),
    );
    let in_image = run(Command::new("chroot").arg(&root).args([
        "dpkg-query",
        "-W",
        "-f",
        "${Package}\t${Version}\t${Architecture}\n",
    ]));
    let mut want: Vec<String> = in_image.lines().map(str::to_string).collect();
    want.sort();
    let packages: Vec<kiln_shared::record::Package> =
        farm.get(&format!("/api/builds/{}/packages", b.id)).await;
    let mut got: Vec<String> = packages
        .iter()
        .map(|p| format!("{}\t{}\t{}", p.name, p.version, p.architecture))
        .collect();
    got.sort();
    assert_eq!(got, want);
    for name in ["dpkg", "apt", "base-files"] {
        assert!(packages.iter().any(|p| p.name == name), "{name} missing");
    }

    // The layout: what sfdisk says of the raw image, and the root file system's os-release.
    let raw = dir.path().join("disk.img");
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&raw))).unwrap();
    let layout: kiln_shared::record::ImageLayout = farm
        .get(&format!(
            "/api/builds/{}/artifacts/disk.img.zst/layout",
            b.id
        ))
        .await;
    let t = &table["partitiontable"];
    assert_eq!(layout.table.as_deref(), t["label"].as_str());
    assert_eq!(layout.size, std::fs::metadata(&raw).unwrap().len());
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(layout.partitions.len(), parts.len());
    for (p, s) in layout.partitions.iter().zip(parts) {
        assert_eq!(p.start, s["start"].as_u64().unwrap() * 512);
        assert_eq!(p.size, s["size"].as_u64().unwrap() * 512);
        assert_eq!(p.part_type, s["type"].as_str().unwrap());
        assert!(p.uuid.is_some(), "{p:?}");
    }
    let rootp = &layout.partitions[0];
    assert_eq!(rootp.filesystem.as_deref(), Some("ext4"));
    assert_eq!(rootp.label.as_deref(), Some("rootfs"));
    assert_eq!(
        rootp
            .os_release
            .as_ref()
            .and_then(|o| o.get("ID"))
            .map(String::as_str),
        Some("debian")
    );

    // The bmap: bmaptool writes exactly the image from the compressed artifact and the map.
    std::fs::write(
        dir.path().join("disk.img.bmap"),
        farm.download(b.id, "disk.img.bmap").await,
    )
    .unwrap();
    run_in(
        dir.path(),
        Command::new("bmaptool").args([
            "copy",
            "--bmap",
            "disk.img.bmap",
            "disk.img.zst",
            "flashed.img",
        ]),
    );
    let sum = |f: &str| run(Command::new("sha256sum").arg(dir.path().join(f)))[..64].to_string();
    assert_eq!(sum("flashed.img"), sum("disk.img"));

    // The SBOM passes the SPDX validator.
    crate::record::assert_valid_spdx(&farm.download(b.id, "sbom.spdx.json").await);

    // One more package: the diff between the two builds says exactly that.
    mmdebstrap_branch(
        &repo,
        "amd64",
        "\"systemd-sysv\", \"udev\", \"hello\"",
        &mirror_line,
    );
    let c = farm.request_build("image", json!({})).await;
    let c = farm.wait_ended(c.id, Duration::from_secs(1500)).await;
    assert_eq!(c.state, BuildState::Succeeded, "{:?}", c.reason);
    let d: kiln_shared::record::BuildDiff = farm
        .get(&format!("/api/builds/{}/diff/{}", b.id, c.id))
        .await;
    let added: Vec<&str> = d.packages.added.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(added, ["hello"], "{d:?}");
    assert!(d.packages.removed.is_empty(), "{d:?}");
    assert!(
        d.packages.upgraded.is_empty() && d.packages.downgraded.is_empty(),
        "{d:?}"
    );
    assert!(
        d.sources.added.is_empty() && d.sources.removed.is_empty(),
        "{d:?}"
    );
    assert_eq!(d.commits.commits.len(), 1, "{:?}", d.commits);
}

fn binfmt_arm64_ready() -> Result<(), String> {
    let entry = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
    if !Path::new("/proc/sys/fs/binfmt_misc/status").exists() {
        let _ = Command::new("mount")
            .args([
                "-t",
                "binfmt_misc",
                "binfmt_misc",
                "/proc/sys/fs/binfmt_misc",
            ])
            .status();
    }
    if !entry.exists()
        || std::fs::read_to_string(entry)
            .map(|s| !s.starts_with("enabled"))
            .unwrap_or(true)
    {
        let _ = Command::new("update-binfmts")
            .args(["--enable", "qemu-aarch64"])
            .status();
    }
    match std::fs::read_to_string(entry) {
        Ok(s) if s.starts_with("enabled") => Ok(()),
        Ok(s) => Err(format!("qemu-aarch64 binfmt is not enabled: {s}")),
        Err(e) => Err(format!(
            "no qemu-aarch64 binfmt entry ({e}); install qemu-user-static and binfmt-support"
        )),
    }
}

#[tokio::test]
#[ignore = "slow tier: real arm64 image through qemu-user (scripts/test.sh runs it)"]
async fn mmdebstrap_arm64_minbase_image_under_qemu() {
    if let Err(why) = binfmt_arm64_ready() {
        eprintln!("\n!!!!!!!! SKIPPED arm64 image test: {why} !!!!!!!!\n");
        return;
    }
    // A board's layout: an MBR with a FAT boot partition for the firmware and an ext4 root.
    let layout = r#"partition_table = "msdos"
essential_hooks = ["hooks/firmware.sh"]
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
    let (farm, b, _git) = mmdebstrap_build("arm64", "", layout).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        b.reason,
        farm.log(b.id).await
    );
    let manifest = String::from_utf8(farm.download(b.id, "packages.manifest").await).unwrap();
    assert!(
        manifest
            .lines()
            .any(|l| l.starts_with("libc6\t") && l.ends_with("\tarm64")),
        "{manifest}"
    );
    let dir = kiln_tests::tempdir("kiln-img-");
    let (img, table) = unpack_disk_image(dir.path(), &farm.download(b.id, "disk.img.zst").await);
    assert_eq!(table["label"], "dos", "{table}");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["start"], 2048, "{table}");
    assert_eq!(parts[0]["size"], 128 * 2048, "{table}");
    assert_eq!(parts[0]["type"], "c", "{table}");
    assert_eq!(parts[1]["start"], 129 * 2048, "{table}");
    assert_eq!(parts[1]["type"], "83", "{table}");
    // The FAT boot partition: its label and the hook's file, read with mtools at its offset.
    let fat = format!("{}@@{}", img.display(), 2048 * 512);
    let mtools = |tool: &str, args: &[&str]| {
        run(Command::new(tool)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&fat)
            .args(args))
    };
    let label = mtools("mlabel", &["-s", "::"]);
    assert!(label.contains("BOOT"), "{label}");
    assert_eq!(mtools("mtype", &["::config.txt"]), "arm_64bit=1\n");
    // The ext4 root: Debian's files, an empty mount point for the boot partition, an fstab.
    let root = check_root_partition(dir.path(), &img, &parts[1], Some("/etc/kiln-stamp"));
    let debugfs = |req: &str| run(Command::new("debugfs").args(["-R", req]).arg(&root));
    assert!(!debugfs("cat /etc/debian_version").trim().is_empty());
    let firmware = debugfs("ls -p /boot/firmware");
    assert_eq!(
        firmware.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "/boot/firmware is not empty in the root partition: {firmware}"
    );
    let fstab = debugfs("cat /etc/fstab");
    assert!(
        fstab.contains("LABEL=BOOT\t/boot/firmware\tvfat"),
        "{fstab}"
    );
    assert!(fstab.contains("LABEL=rootfs\t/\text4"), "{fstab}");
    // rootfs.tar.zst keeps the whole tree, the boot partition's files too.
    let tar = dir.path().join("rootfs.tar.zst");
    std::fs::write(&tar, farm.download(b.id, "rootfs.tar.zst").await).unwrap();
    let listing = run(Command::new("tar").args(["-I", "zstd", "-tf"]).arg(&tar));
    assert!(
        listing.lines().any(|l| l == "./boot/firmware/config.txt"),
        "no config.txt in rootfs.tar.zst"
    );
}

#[tokio::test]
#[ignore = "slow tier: real live-build image (scripts/test.sh runs it)"]
async fn live_build_minimal_image() {
    let git = GitServer::start();
    let repo = git.repo("live");
    // A minimal live-build configuration kept the usual way: auto/config plus config/.
    repo.file("kiln.toml", "backend = \"live-build\"\n", false)
        .file(
            "auto/config",
            "#!/bin/sh\nset -e\nlb config noauto \\\n  --distribution bookworm \\\n  --binary-images tar \\\n  --bootloaders \"\" \\\n  --chroot-filesystem plain \\\n  --apt-recommends false \\\n  --memtest none --win32-loader false \\\n  --security true --updates true \\\n  --debian-installer none \\\n  --firmware-binary false --firmware-chroot false \\\n  \"${@}\"\n",
            true,
        )
        .file("config/package-lists/kiln.list.chroot", "ca-certificates\n", false)
        .commit("main", "live");
    let farm = Farm::with(kiln_tests::FarmOptions {
        heartbeat_secs: 5,
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    // live-build needs the host's root: only a host-root slave offers it (docs/security.md).
    let _slave = farm
        .slave_with("builder", &["--sandbox", "host-root"])
        .await;
    farm.project("live", &repo.url, "main").await;
    let b = farm.request_build("live", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(2400)).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        b.reason,
        kiln_tests::farm::tail(&farm.log(b.id).await, 80)
    );
    let names = farm.artifact_names(b.id).await;
    assert!(
        names.iter().any(|n| n.starts_with("live-image-")),
        "{names:?}"
    );
    // What the image carries, read from live-build's chroot.
    assert!(names.iter().any(|n| n == "sbom.spdx.json"), "{names:?}");
    let packages: Vec<kiln_shared::record::Package> =
        farm.get(&format!("/api/builds/{}/packages", b.id)).await;
    for name in ["dpkg", "base-files", "systemd-sysv"] {
        assert!(
            packages.iter().any(|p| p.name == name),
            "{name}: {packages:?}"
        );
    }
    // use_slave_mirror (the default) took the security archive to the slave's too; the
    // image's sources say so and the log names no other archive.
    let log = farm.log(b.id).await;
    assert!(
        !log.contains("use_slave_mirror: the image's apt sources still reach"),
        "{}",
        kiln_tests::farm::tail(&log, 80)
    );
    let sources = farm
        .get_raw(&format!("/api/builds/{}/sources?format=list", b.id))
        .await;
    assert_eq!(sources.status(), 200);
    let sources = sources.text().await.unwrap();
    let security = kiln_tests::host_apt::security_mirror();
    assert!(
        sources
            .lines()
            .any(|l| l.contains(&security) && l.contains("bookworm-security")),
        "{security} for bookworm-security in:\n{sources}"
    );
}

/// Builds the branch of `repo` as project `name` on a farm with one host-root slave, as image
/// tools that need the host's root (debos, vmdb2) are run; the build must succeed. Its log
/// lines about the backend (where it ran, what stand-ins it used) are printed for the record.
async fn host_root_build(
    repo: &kiln_tests::Repo,
    name: &str,
) -> (Farm, kiln_shared::api::Build, String) {
    let farm = Farm::with(kiln_tests::FarmOptions {
        heartbeat_secs: 5,
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    let slave = farm
        .slave_with("builder", &["--sandbox", "host-root"])
        .await;
    farm.project(name, &repo.url, "main").await;
    let b = farm.request_build(name, json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(1800)).await;
    let log = farm.log(b.id).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        b.reason,
        kiln_tests::farm::tail(&log, 80)
    );
    for l in log
        .lines()
        .filter(|l| l.starts_with(&format!("[kiln] {name}")))
    {
        eprintln!("{l}");
    }
    drop(slave);
    (farm, b, log)
}

/// A debos recipe kept as board teams keep them: a minimal Debian arm64 image (under qemu-user)
/// from template variables with defaults, the mirror given by Kiln (the slave's), a `pack` of the
/// root file system and a partitioned disk image (`image-partition`, `filesystem-deploy`), built
/// without KVM (`fakemachine = "none"`: natively on the host-root slave, with a stand-in
/// `udevadm` where no udev daemon runs).
#[tokio::test]
#[ignore = "slow tier: real debos build (scripts/test.sh runs it)"]
async fn debos_recipe_packs_a_rootfs_and_compresses_its_image() {
    let git = GitServer::start();
    let repo = git.repo("debos");
    let recipe = r#"{{- $suite := or .suite "bookworm" -}}
{{- $architecture := or .architecture "amd64" -}}
{{- $hostname := or .hostname "board" -}}
architecture: {{ $architecture }}

actions:
  - action: debootstrap
    suite: {{ $suite }}
    components: [ main ]
    mirror: {{ .mirror }}
    variant: minbase
    check-gpg: true
    keyring-file: /usr/share/keyrings/debian-archive-keyring.gpg

  - action: run
    description: name the board
    chroot: true
    command: echo {{ $hostname }} > /etc/hostname

  - action: pack
    file: rootfs.tar.gz
    compression: gz

  - action: image-partition
    imagename: board.img
    imagesize: 512MB
    partitiontype: msdos
    mountpoints:
      - mountpoint: /
        partition: root
    partitions:
      - name: root
        fs: ext4
        start: 1MiB
        end: 100%
        flags: [ boot ]

  - action: filesystem-deploy
    description: the root file system into the image
"#;
    repo.file(
        "kiln.toml",
        "backend = \"debos\"\n[debos]\nrecipe = \"recipes/board.yaml\"\narchitecture = \"arm64\"\nfakemachine = \"none\"\nvariables = { hostname = \"kiln-board\" }\n",
        false,
    )
    .file("recipes/board.yaml", recipe, false)
    .commit("main", "debos");
    // Natively, debos needs the host's root: only a host-root slave offers it.
    let (farm, b, log) = host_root_build(&repo, "debos").await;
    assert!(
        log.contains("variables: hostname=kiln-board, architecture=arm64, mirror="),
        "{}",
        kiln_tests::farm::tail(&log, 80)
    );
    let mut names = farm.artifact_names(b.id).await;
    names.sort();
    for want in [
        "SHA256SUMS",
        "board.img.bmap",
        "board.img.sha256",
        "board.img.zst",
        "rootfs.tar.gz",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    assert!(!names.iter().any(|n| n == "board.img"), "{names:?}");
    let dir = tempfile::tempdir().unwrap();
    // The variable reached the recipe: the board's name is in its root file system.
    std::fs::write(
        dir.path().join("rootfs.tar.gz"),
        farm.download(b.id, "rootfs.tar.gz").await,
    )
    .unwrap();
    let hostname = run(Command::new("tar")
        .arg("-xzOf")
        .arg(dir.path().join("rootfs.tar.gz"))
        .arg("./etc/hostname"));
    assert_eq!(hostname.trim(), "kiln-board");
    // The image: one partition at 1 MiB (MBR) holding a clean ext4 root with the board's name.
    let (img, table) = unpack_disk_image(dir.path(), &farm.download(b.id, "board.img.zst").await);
    assert_eq!(table["label"], "dos", "{table}");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{table}");
    assert_eq!(parts[0]["start"], 2048, "{table}");
    check_root_partition(
        dir.path(),
        &img,
        &parts[0],
        Some("/usr/lib/aarch64-linux-gnu"),
    );
    // The raw image's sum was taken before compression: it is the sum of what unpacks.
    let sum = run(Command::new("sha256sum").arg(&img));
    let recorded = String::from_utf8(farm.download(b.id, "board.img.sha256").await).unwrap();
    assert_eq!(
        recorded.split_whitespace().next(),
        sum.split_whitespace().next(),
        "{recorded}"
    );
    assert!(recorded.trim_end().ends_with("  board.img"), "{recorded}");
}

/// The slave's caches (issue 19), the same minbase image built three times on one slave:
/// 1. cold, with `rootfs_cache = true`: every package file fetched, the root file system kept;
/// 2. the same commit again: the cached root file system reused, mmdebstrap not run, no package
///    fetched at all;
/// 3. a commit that turns the root file system cache off: mmdebstrap runs, and takes every
///    package file from the package cache (counted in its access log).
///
/// All three make the same packages. The times go to docs/benchmarks.md, not into an assertion.
#[tokio::test]
#[ignore = "slow tier: three real mmdebstrap images (scripts/test.sh runs it)"]
async fn a_second_mmdebstrap_build_takes_its_packages_from_the_slave_cache() {
    let git = GitServer::start();
    let repo = git.repo("cached");
    mmdebstrap_branch(&repo, "amd64", "\"hello\"", "rootfs_cache = true\n");
    let farm = Farm::start().await;
    let slave = farm.slave("cacher").await;
    farm.project("cached", &repo.url, "main").await;
    let access = slave.work.join("apt-cache/access.log");
    let mut times = vec![];
    let mut manifests = vec![];
    let mut logs = vec![];
    let mut seen = 0;
    let mut lines_of_build = vec![];
    for i in 0..3 {
        if i == 2 {
            mmdebstrap_branch(&repo, "amd64", "\"hello\"", "rootfs_cache = false\n");
        }
        let started = std::time::Instant::now();
        let b = farm.request_build("cached", json!({})).await;
        let b = farm.wait_ended(b.id, Duration::from_secs(1500)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
        times.push(started.elapsed().as_secs_f64());
        manifests.push(farm.download(b.id, "packages.manifest").await);
        logs.push(farm.log(b.id).await);
        let log = std::fs::read_to_string(&access).expect("the cache's access log");
        let all: Vec<String> = log.lines().map(str::to_string).collect();
        lines_of_build.push(all[seen..].to_vec());
        seen = all.len();
    }
    let has = |i: usize, what: &str| {
        assert!(
            logs[i].contains(what),
            "build {}: no '{what}' in\n{}",
            i + 1,
            kiln_tests::farm::tail(&logs[i], 60)
        )
    };
    has(0, "rootfs cache: miss (key ");
    has(0, "rootfs cache: kept this root file system");
    has(1, "rootfs cache: hit (key ");
    // This host has memory to spare: the cached root file system is unpacked into a tmpfs.
    has(1, "rootfs cache: unpacking into memory (tmpfs, ");
    assert!(
        !logs[1].contains("[kiln] mmdebstrap bookworm"),
        "{}",
        logs[1]
    );
    assert!(!logs[2].contains("rootfs cache:"), "{}", logs[2]);
    assert_eq!(manifests[0], manifests[1], "the same image from the cache");
    let (first, rootfs_hit, second) = (&lines_of_build[0], &lines_of_build[1], &lines_of_build[2]);
    assert!(rootfs_hit.is_empty(), "{rootfs_hit:?}");
    let debs = |lines: &[String], what: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(what) && l.ends_with(".deb"))
            .count()
    };
    assert!(debs(first, "MISS") > 50, "{first:?}");
    assert_eq!(debs(second, "MISS"), 0, "{second:?}");
    assert_eq!(debs(second, "HIT"), debs(first, "MISS"), "{second:?}");
    assert_eq!(manifests[0], manifests[2], "the same image");
    eprintln!(
        "caches: cold build {:.1} s ({} package files fetched); root file system cache hit {:.1} s ({:.1}x); package cache only {:.1} s ({} from the cache)",
        times[0],
        debs(first, "MISS"),
        times[1],
        times[0] / times[1],
        times[2],
        debs(second, "HIT")
    );
}

/// A vmdb2 specification for a Raspberry Pi-style arm64 image, as Debian's board images keep
/// them: an image made, partitioned (a FAT boot partition and an ext4 root), mapped with
/// `kpartx`, formatted, the root mounted and debootstrapped for arm64 (under qemu-user) from the
/// mirror Kiln gives, its root file system cached (`rootfs_tarball`), an fstab written. Where the
/// host has no device-mapper the slave's `kpartx` stand-in maps the partitions instead. This
/// kernel cannot mount vfat, so the boot files go in with mtools from a `shell` step (a Pi spec
/// mounts it at /boot/firmware instead).
#[tokio::test]
#[ignore = "slow tier: real vmdb2 build (scripts/test.sh runs it)"]
async fn vmdb2_spec_builds_a_partitioned_image() {
    let git = GitServer::start();
    let repo = git.repo("vmdb2");
    let spec = r#"steps:
  - mkimg: "{{ output }}"
    size: "{{ size }}"
  - mklabel: msdos
    device: "{{ output }}"
  - mkpart: primary
    fs-type: fat32
    device: "{{ output }}"
    start: 1M
    end: 64M
    tag: boot
  - mkpart: primary
    device: "{{ output }}"
    start: 64M
    end: 100%
    tag: root
  - kpartx: "{{ output }}"
  - mkfs: vfat
    partition: boot
    label: BOOT
  - mkfs: ext4
    partition: root
  - mount: root
  - unpack-rootfs: root
  - debootstrap: bookworm
    arch: arm64
    mirror: "{{ mirror }}"
    target: root
    variant: minbase
    unless: rootfs_unpacked
  - cache-rootfs: root
    unless: rootfs_unpacked
  - chroot: root
    shell: echo {{ hostname }} > /etc/hostname
  - fstab: root
  - shell: |
      dev=$(losetup -n -O NAME -j "{{ output }}" | head -n1)
      printf 'arm_64bit=1\n' > "$ROOT/tmp/config.txt"
      mcopy -i "/dev/mapper/$(basename "$dev")p1" "$ROOT/tmp/config.txt" ::config.txt
      rm "$ROOT/tmp/config.txt"
    root-fs: root
"#;
    repo.file(
        "kiln.toml",
        "backend = \"vmdb2\"\n[vmdb2]\nspec = \"board.yaml\"\nimage = \"board.img\"\nsize = \"512M\"\nrootfs_tarball = true\nvariables = { hostname = \"kiln-vmdb2\" }\n",
        false,
    )
    .file("board.yaml", spec, false)
    .commit("main", "vmdb2");
    let (farm, b, _log) = host_root_build(&repo, "vmdb2").await;
    let names = farm.artifact_names(b.id).await;
    for want in [
        "board.img.zst",
        "board.img.sha256",
        "board.img.bmap",
        "rootfs.tar.gz",
        "vmdb2.log",
        "SHA256SUMS",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (img, table) = unpack_disk_image(dir.path(), &farm.download(b.id, "board.img.zst").await);
    assert_eq!(table["label"], "dos", "{table}");
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    // The boot partition: FAT, with the firmware's configuration.
    let boot = extract_partition(dir.path(), &img, &parts[0], "boot.vfat");
    let config = run(Command::new("mtype")
        .arg("-i")
        .arg(&boot)
        .arg("::config.txt"));
    assert_eq!(config.trim(), "arm_64bit=1");
    let root = check_root_partition(
        dir.path(),
        &img,
        &parts[1],
        Some("/usr/lib/aarch64-linux-gnu"),
    );
    let hostname = run(Command::new("debugfs")
        .args(["-R", "cat /etc/hostname"])
        .arg(&root));
    assert_eq!(hostname.trim(), "kiln-vmdb2");
    let sum = run(Command::new("sha256sum").arg(&img));
    let recorded = String::from_utf8(farm.download(b.id, "board.img.sha256").await).unwrap();
    assert_eq!(
        recorded.split_whitespace().next(),
        sum.split_whitespace().next()
    );
    // Nothing of the build is left attached.
    let attached = run(Command::new("losetup").args(["-n", "-O", "BACK-FILE"]));
    assert!(!attached.contains("board.img"), "{attached}");
}
