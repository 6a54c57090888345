//! Artifacts in an S3-compatible object store (`[storage] kind = "s3"`), against a real Garage
//! on loopback: uploads streamed into multipart uploads, downloads streamed through the master
//! or redirected to presigned URLs, retention deleting the objects.

use futures_util::StreamExt;
use kiln_shared::api::Artifact;
use kiln_shared::BuildId;
use kiln_tests::garage::Garage;
use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// `VmHWM` (the peak resident set) of a process, in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM in /proc/PID/status")
}

fn random(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .unwrap();
    b
}

async fn artifact(farm: &Farm, id: BuildId, name: &str) -> Artifact {
    farm.artifacts(id)
        .await
        .into_iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("build {id} has no artifact {name}"))
}

/// Waits until nothing is stored under `prefix` in the bucket.
async fn wait_bucket_empty(garage: &Garage, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = garage.list(prefix).await;
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "retention left {left:?} in the bucket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The case: a 1 GiB artifact goes from a real slave through the master into Garage with
/// the master's peak memory under 64 MiB, comes back through the master byte for byte (whole,
/// and one range), and retention deletes it from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow tier: 1 GiB through a real Garage (built once with cargo install; scripts/test.sh runs it)"]
async fn a_gib_artifact_streams_through_the_master_into_garage_and_retention_deletes_it() {
    let started = Instant::now();
    let garage = Garage::start();
    let creds = garage.write_credentials(garage.dir.path());
    // Four random MiB at known offsets of an otherwise sparse GiB: the content can be checked.
    let drop = kiln_tests::drop_dir();
    let offsets = [0u64, 333, 777, 1023];
    let chunks: Vec<Vec<u8>> = offsets.iter().map(|_| random(MIB as usize)).collect();
    for (o, c) in offsets.iter().zip(&chunks) {
        std::fs::write(drop.path().join(format!("chunk-{o}")), c).unwrap();
    }
    let d = drop.path().display();
    let git = GitServer::start();
    let repo = git.repo("big");
    repo.script_branch(
        "main",
        &format!(
            "out=\"$KILN_OUTPUT_DIR/disk.img\"\ntruncate -s 1G \"$out\"\nfor n in {}; do dd if={d}/chunk-$n of=\"$out\" bs=1M seek=$n conv=notrunc status=none; done",
            offsets.map(|o| o.to_string()).join(" ")
        ),
    );
    let farm = Farm::with(FarmOptions {
        extra_master_toml: "retention_interval_secs = 1\n".into(),
        extra_toml: garage.storage_toml(&creds, "big", false),
        ..Default::default()
    })
    .await;
    let master = farm.master_pid().expect("a master process");
    let _slave = farm.slave("s1").await;
    let idle = peak_rss(master);
    farm.project("big", &repo.url, "main").await;
    let b = farm.request_build("big", json!({})).await;
    let ended = farm.wait_ended(b.id, Duration::from_secs(900)).await;
    assert_eq!(
        ended.state,
        kiln_shared::BuildState::Succeeded,
        "{}\nthe master's log ends:\n{}\ngarage's log ends:\n{}",
        farm.log(b.id).await,
        kiln_tests::farm::tail(&farm.master_log(), 40),
        kiln_tests::farm::tail(&garage.log(), 40)
    );
    let uploaded = started.elapsed();
    let a = artifact(&farm, b.id, "disk.img").await;
    assert_eq!(a.size as u64, 1 << 30);
    let key = format!("big/builds/{}/disk.img", b.id);
    let stored = garage.list(&format!("big/builds/{}", b.id)).await;
    assert!(
        stored.contains(&(key, 1 << 30)),
        "the object in Garage: {stored:?}"
    );
    assert!(
        !farm
            .dir
            .path()
            .join(format!("storage/builds/{}/artifacts/disk.img", b.id))
            .exists(),
        "nothing on the master's disk"
    );
    let peak = peak_rss(master);
    assert!(
        peak < 64 * MIB,
        "master peak RSS {} MiB during the upload",
        peak / MIB
    );

    // Back through the master: every byte checked as it comes, and the sha256 of the whole.
    let r = farm
        .get_raw(&format!("/api/builds/{}/artifacts/disk.img", b.id))
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let (mut at, mut sha) = (0u64, Sha256::new());
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap();
        let mut off = 0usize;
        while off < piece.len() {
            let pos = at + off as u64;
            let mib = pos / MIB;
            let in_mib = (pos % MIB) as usize;
            let n = (piece.len() - off).min(MIB as usize - in_mib);
            let got = &piece[off..off + n];
            match offsets.iter().position(|o| *o == mib) {
                Some(i) => assert!(
                    got == &chunks[i][in_mib..in_mib + n],
                    "wrong bytes at {pos}"
                ),
                None => assert!(got.iter().all(|b| *b == 0), "wrong bytes at {pos}"),
            }
            off += n;
        }
        sha.update(&piece);
        at += piece.len() as u64;
    }
    assert_eq!(at, 1 << 30);
    assert_eq!(hex::encode(sha.finalize()), a.sha256);
    // One range, as from a file.
    let r = farm
        .http
        .get(farm.api(&format!("/api/builds/{}/artifacts/disk.img", b.id)))
        .bearer_auth(&farm.token)
        .header("range", format!("bytes={}-{}", 777 * MIB, 778 * MIB - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {}-{}/{}", 777 * MIB, 778 * MIB - 1, 1u64 << 30).as_str()
    );
    assert!(r.bytes().await.unwrap() == chunks[2][..]);
    let peak = peak_rss(master);
    assert!(
        peak < 64 * MIB,
        "master peak RSS {} MiB after the download",
        peak / MIB
    );

    // Retention: a newer build, keep one, and the GiB leaves the bucket.
    repo.script_branch("main", "echo small > \"$KILN_OUTPUT_DIR/small\"");
    let next = farm.request_build("big", json!({})).await;
    farm.wait_ended(next.id, Duration::from_secs(120)).await;
    let (s, v) = farm
        .patch("/api/projects/big", json!({"keep_builds": 1}))
        .await;
    assert_eq!(s, 200, "{v}");
    wait_bucket_empty(&garage, &format!("big/builds/{}", b.id)).await;
    let kept = garage.list(&format!("big/builds/{}", next.id)).await;
    assert!(
        kept.iter().any(|(k, _)| k.ends_with("/small")),
        "the kept build's objects stay: {kept:?}"
    );
    eprintln!(
        "1 GiB: uploaded in {uploaded:?}, all done in {:?}, master peak RSS {} MiB ({} MiB before the build)",
        started.elapsed(),
        peak_rss(master) / MIB,
        idle / MIB
    );
}

/// `presign_downloads`: a download answers 307 to a presigned URL of Garage that serves the same
/// bytes (and nothing without access to the project); retention deletes the objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_downloads_redirect_to_garage_and_retention_deletes_the_objects() {
    let garage = Garage::start();
    let creds = garage.write_credentials(garage.dir.path());
    let git = GitServer::start();
    let repo = git.repo("small");
    repo.script_branch(
        "main",
        "head -c 7000000 /dev/urandom > \"$KILN_OUTPUT_DIR/img\"",
    );
    let clock = std::sync::Arc::new(kiln_master::clock::ManualClock::new(chrono::Utc::now()));
    let farm = Farm::in_process(
        FarmOptions {
            tls: false,
            extra_toml: garage.storage_toml(&creds, "kiln/presign", true),
            ..Default::default()
        },
        clock,
    )
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("small", &repo.url, "main").await;
    let mut ids = vec![];
    for _ in 0..2 {
        let b = farm.request_build("small", json!({})).await;
        let ended = farm.wait_ended(b.id, Duration::from_secs(120)).await;
        assert_eq!(ended.state, kiln_shared::BuildState::Succeeded);
        ids.push(b.id);
    }
    let a = artifact(&farm, ids[0], "img").await;
    let kept = garage
        .list(&format!("kiln/presign/builds/{}", ids[1]))
        .await;
    assert_eq!(
        garage
            .list(&format!("kiln/presign/builds/{}", ids[0]))
            .await,
        vec![
            (format!("kiln/presign/builds/{}/SHA256SUMS", ids[0]), 70),
            (format!("kiln/presign/builds/{}/img", ids[0]), 7_000_000)
        ],
        "the artifact and the sums the slave made"
    );

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(farm.api(&format!("/api/builds/{}/artifacts/img", ids[0])))
        .bearer_auth(&farm.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let url = r.headers()["location"].to_str().unwrap().to_string();
    assert!(url.starts_with(&garage.endpoint), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    // No credentials but the URL's own.
    let got = plain.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("filename=\"img\""));
    let bytes = got.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), a.sha256);
    // Without access to the project, no URL: the redirect is behind the same check.
    let anon = plain
        .get(farm.api(&format!("/api/builds/{}/artifacts/img", ids[0])))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(anon.status().as_u16(), 401 | 404),
        "{}",
        anon.status()
    );

    let (s, v) = farm
        .patch("/api/projects/small", json!({"keep_builds": 1}))
        .await;
    assert_eq!(s, 200, "{v}");
    let removed = kiln_master::retention::sweep(farm.state()).await.unwrap();
    assert_eq!(removed, 1);
    assert!(garage
        .list(&format!("kiln/presign/builds/{}", ids[0]))
        .await
        .is_empty());
    assert_eq!(
        garage
            .list(&format!("kiln/presign/builds/{}", ids[1]))
            .await,
        kept,
        "the kept build's objects stay"
    );
}

/// The quotas hold with a bucket as with files: an upload over the build's limit fails the
/// build, and what it had stored before leaves the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_leaves_nothing_in_the_bucket() {
    let garage = Garage::start();
    let creds = garage.write_credentials(garage.dir.path());
    let git = GitServer::start();
    let repo = git.repo("over");
    repo.script_branch(
        "main",
        "head -c 600000 /dev/urandom > \"$KILN_OUTPUT_DIR/a.img\"\nhead -c 600000 /dev/urandom > \"$KILN_OUTPUT_DIR/b.img\"",
    );
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!("[master.limits]\nartifact_bytes = {MIB}\n"),
        extra_toml: garage.storage_toml(&creds, "over", false),
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("over", &repo.url, "main").await;
    let b = farm.request_build("over", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(b.state, kiln_shared::BuildState::Failed);
    let want = format!("artifact limit of 1 MiB exceeded for build {}", b.id);
    assert_eq!(b.reason.as_deref(), Some(want.as_str()));
    assert!(farm.artifacts(b.id).await.is_empty());
    assert_eq!(
        garage.list(&format!("over/builds/{}", b.id)).await,
        vec![],
        "nothing of the build is kept in the bucket"
    );
}

/// `SHA256SUMS` read back from the bucket is signed, the signature goes to the bucket too, and
/// `minisign` verifies what the master streams back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_in_the_bucket_are_signed() {
    let garage = Garage::start();
    let creds = garage.write_credentials(garage.dir.path());
    let keys = kiln_tests::tempdir("kiln-minisign-");
    let (key, public) = (keys.path().join("kiln.key"), keys.path().join("kiln.pub"));
    // As docs/image-record.md says: `minisign -G` with a password, kept in a file beside the key.
    let mut gen = std::process::Command::new("minisign")
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
    let made = gen.wait_with_output().unwrap();
    assert!(made.status.success(), "{made:?}");
    let password = keys.path().join("kiln.key.password");
    std::fs::write(&password, "key password\n").unwrap();
    let git = GitServer::start();
    let repo = git.repo("signed");
    repo.script_branch("main", "echo image > \"$KILN_OUTPUT_DIR/disk.img\"");
    let farm = Farm::with(FarmOptions {
        extra_toml: format!(
            "[signing]\nminisign_key_file = \"{}\"\npassword_file = \"{}\"\n{}",
            key.display(),
            password.display(),
            garage.storage_toml(&creds, "signed", false)
        ),
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("signed", &repo.url, "main").await;
    let b = farm.request_build("signed", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(
        b.state,
        kiln_shared::BuildState::Succeeded,
        "{:?}",
        b.reason
    );
    let keys_in_bucket: Vec<String> = garage
        .list(&format!("signed/builds/{}", b.id))
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let base = format!("signed/builds/{}", b.id);
    assert_eq!(
        keys_in_bucket,
        [
            format!("{base}/SHA256SUMS"),
            format!("{base}/SHA256SUMS.minisig"),
            format!("{base}/disk.img")
        ]
    );
    let dir = kiln_tests::tempdir("kiln-verify-");
    for name in ["SHA256SUMS", "SHA256SUMS.minisig"] {
        std::fs::write(dir.path().join(name), farm.download(b.id, name).await).unwrap();
    }
    let ok = std::process::Command::new("minisign")
        .current_dir(dir.path())
        .arg("-V")
        .arg("-p")
        .arg(&public)
        .args(["-m", "SHA256SUMS"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "minisign -V: {ok:?}");
}
