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

/// Checks a built disk image: one Linux partition at 1 MiB, an ext4 root with /etc/os-release.
fn check_disk_image(dir: &Path, zst: &[u8], want_arch_file: Option<&str>) {
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
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{table}");
    assert_eq!(parts[0]["start"], 2048, "{table}");
    assert_eq!(table["partitiontable"]["label"], "gpt");
    let part = dir.join("root.ext4");
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", part.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "status=none"])
        .arg(format!("skip={}", 2048 * 512))
        .arg(format!(
            "count={}",
            parts[0]["size"].as_u64().unwrap() * 512
        )));
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
}

async fn mmdebstrap_build(
    arch: &str,
    packages: &str,
) -> (Farm, kiln_shared::api::Build, GitServer) {
    let git = GitServer::start();
    let repo = git.repo("image");
    repo.file(
        "kiln.toml",
        &format!(
            "backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"bookworm\"\narchitecture = \"{arch}\"\nvariant = \"minbase\"\npackages = [{packages}]\nimage_size = \"1G\"\ncustomize_hooks = [\"hooks/stamp.sh\"]\n"
        ),
        false,
    )
    .file("hooks/stamp.sh", "#!/bin/sh\nset -e\necho kiln-test > \"$1/etc/kiln-stamp\"\n", true)
    .commit("main", "image");
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

#[tokio::test]
#[ignore = "slow tier: real mmdebstrap image (scripts/test.sh runs it)"]
async fn mmdebstrap_amd64_minbase_image() {
    let (farm, b, _git) = mmdebstrap_build("amd64", "\"systemd-sysv\", \"udev\"").await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        b.reason,
        farm.log(b.id).await
    );
    let names: Vec<String> = farm
        .artifacts(b.id)
        .await
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "disk.img.zst",
            "packages.manifest",
            "rootfs.tar.zst"
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
    check_disk_image(
        dir.path(),
        &farm.download(b.id, "disk.img.zst").await,
        Some("/etc/kiln-stamp"),
    );
    let tar = farm.download(b.id, "rootfs.tar.zst").await;
    std::fs::write(dir.path().join("rootfs.tar.zst"), tar).unwrap();
    let listing = run(Command::new("tar")
        .args(["-I", "zstd", "-tf"])
        .arg(dir.path().join("rootfs.tar.zst")));
    assert!(
        listing.lines().any(|l| l == "./etc/os-release"),
        "rootfs tarball lacks ./etc/os-release"
    );
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
    let (farm, b, _git) = mmdebstrap_build("arm64", "").await;
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
    check_disk_image(
        dir.path(),
        &farm.download(b.id, "disk.img.zst").await,
        Some("/etc/kiln-stamp"),
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
            "#!/bin/sh\nset -e\nlb config noauto \\\n  --distribution bookworm \\\n  --binary-images tar \\\n  --bootloaders \"\" \\\n  --chroot-filesystem plain \\\n  --apt-recommends false \\\n  --memtest none --win32-loader false \\\n  --security false --updates false \\\n  --debian-installer none \\\n  --firmware-binary false --firmware-chroot false \\\n  \"${@}\"\n",
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
    let names: Vec<String> = farm
        .artifacts(b.id)
        .await
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("live-image-")),
        "{names:?}"
    );
}
