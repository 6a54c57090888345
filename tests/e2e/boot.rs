//! The boot test (issue 18, `[boot]` in kiln.toml) of real images in real QEMU: a minbase image
//! with a kernel reaches a login prompt; the same image with a broken init fails the build with
//! reason "boot test failed", and its serial console is kept in the log, the record and the
//! failed build's artifacts.

use kiln_shared::record::ImageLayout;
use kiln_shared::BuildState;
use kiln_tests::{Farm, GitServer, Repo};
use serde_json::json;
use std::time::Duration;

/// A bookworm amd64 minbase image with a kernel, and `hook` as its customize hook.
fn bootable_branch(repo: &Repo, hook: &str) {
    repo.file(
        "kiln.toml",
        "backend = \"mmdebstrap\"\n\
         [mmdebstrap]\nsuite = \"bookworm\"\narchitecture = \"amd64\"\n\
         packages = [\"linux-image-amd64\", \"systemd-sysv\", \"udev\"]\n\
         image_size = \"2G\"\ncustomize_hooks = [\"hooks/customize.sh\"]\n\
         [boot]\ntimeout_secs = 1200\n",
        false,
    )
    .file("hooks/customize.sh", hook, true)
    .commit("main", "a bootable image");
}

const NAME_IT: &str = "#!/bin/sh\nset -e\necho kiln-boot > \"$1/etc/hostname\"\n";
/// init that ends at once: the kernel panics ("Attempted to kill init!").
const BREAK_INIT: &str = "#!/bin/sh\nset -e\nrm -f \"$1/sbin/init\"\n\
    printf '#!/bin/sh\\necho broken init\\nexit 1\\n' > \"$1/sbin/init\"\nchmod 755 \"$1/sbin/init\"\n";

async fn layout(farm: &Farm, id: kiln_shared::BuildId) -> ImageLayout {
    let images: Vec<ImageLayout> = farm.get(&format!("/api/builds/{id}/images")).await;
    images
        .into_iter()
        .find(|i| i.artifact == "disk.img.zst")
        .unwrap_or_else(|| panic!("build {id} has no layout of disk.img.zst"))
}

#[tokio::test]
#[ignore = "slow tier: two real images booted in QEMU (scripts/test.sh runs it)"]
async fn a_kernel_image_boots_to_login_and_a_broken_init_fails_the_build() {
    let git = GitServer::start();
    let good = git.repo("good");
    bootable_branch(&good, NAME_IT);
    let bad = git.repo("bad");
    bootable_branch(&bad, BREAK_INIT);
    let farm = Farm::with(kiln_tests::FarmOptions {
        heartbeat_secs: 5,
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    // Two slaves: both images build and boot at once.
    let _a = farm.slave("builder-a").await;
    let _b = farm.slave("builder-b").await;
    farm.project("good", &good.url, "main").await;
    farm.project("bad", &bad.url, "main").await;
    let g = farm.request_build("good", json!({})).await;
    let b = farm.request_build("bad", json!({})).await;
    let g = farm.wait_ended(g.id, Duration::from_secs(2400)).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(2400)).await;

    // The good image reached its login prompt; the serial log is an artifact.
    let log = farm.log(g.id).await;
    assert_eq!(g.state, BuildState::Succeeded, "{:?}\n{log}", g.reason);
    assert!(log.contains("[kiln] boot test passed"), "{log}");
    let t = layout(&farm, g.id).await.boot.expect("a boot outcome");
    assert!(t.passed, "{t:?}");
    assert_eq!(t.pattern, "login:");
    assert!(["kvm", "tcg"].contains(&t.accel.as_str()), "{t:?}");
    assert!(
        t.serial_tail
            .last()
            .is_some_and(|l| l.contains("kiln-boot login:")),
        "the last serial line is the image's own login prompt: {t:?}"
    );
    assert_eq!(t.log.as_deref(), Some("boot-serial.log"));
    let serial =
        String::from_utf8_lossy(&farm.download(g.id, "boot-serial.log").await).into_owned();
    assert!(serial.contains("Linux version"), "{serial}");
    assert!(serial.contains("kiln-boot login:"), "{serial}");

    // The broken init failed the build, saying why with the last serial lines; the whole serial
    // console is in the build log and the outcome in the record.
    let log = farm.log(b.id).await;
    assert_eq!(b.state, BuildState::Failed, "{log}");
    let reason = b.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("boot test failed"), "{reason}");
    assert!(reason.contains("Kernel panic - not syncing"), "{reason}");
    assert!(reason.contains("Attempted to kill init"), "{reason}");
    assert!(
        log.contains("broken init"),
        "the serial console is in the log: {log}"
    );
    assert!(log.contains("Linux version"), "{log}");
    let t = layout(&farm, b.id).await.boot.expect("a boot outcome");
    assert!(!t.passed, "{t:?}");
    let serial =
        String::from_utf8_lossy(&farm.download(b.id, "boot-serial.log").await).into_owned();
    assert!(
        serial.contains("Attempted to kill init"),
        "kept as an artifact: {serial}"
    );
    // The record names the line that failed it (the tail holds the last lines, which after a
    // panic are its register dump).
    assert!(t.detail.contains("Attempted to kill init"), "{t:?}");
}
