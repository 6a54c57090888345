//! Installing and configuring: init, config errors that name the key, the embedded database.

use kiln_tests::{bin_dir, Farm, FarmOptions};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn init_writes_a_config_and_a_private_admin_token() {
    let dir = kiln_tests::tempdir("kiln-init-");
    let data = dir.path().join("any/where");
    let out = Command::new(bin_dir().join("kiln-master"))
        .args(["init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mode = std::fs::metadata(data.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let cfg = std::fs::read_to_string(data.join("kiln.toml")).unwrap();
    assert!(!cfg.contains(token.trim()), "only the hash is stored");
    let cfg = kiln_shared::config::Config::load(&data.join("kiln.toml"))
        .expect("the written config loads");
    assert_eq!(cfg.data_dir(), std::path::absolute(&data).unwrap());
    // Refuses to overwrite.
    let again = Command::new(bin_dir().join("kiln-master"))
        .args(["init", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn config_errors_name_the_key() {
    let dir = kiln_tests::tempdir("kiln-cfg-");
    for (text, key) in [
        ("[master]\nlisten_on = \"x\"\n", "listen_on"),
        (
            "[master]\nheartbeat_secs = 10\nlost_timeout_secs = 3\n",
            "master.lost_timeout_secs",
        ),
        ("[database]\nurl = \"mysql://x\"\n", "database.url"),
        ("[slave]\ncapacity = 0\n", "slave.capacity"),
        ("version = 7\n", "version"),
    ] {
        let cfg = dir.path().join("kiln.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(bin_dir().join("kiln-master"))
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "error for {text:?} should name {key}: {err}"
        );
    }
    let out = Command::new(bin_dir().join("kiln-slave"))
        .args(["--master", "ftp://x", "--name", "n"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--master"));
    // A token is never taken from the command line, where every local user can read it.
    let mut child = Command::new(bin_dir().join("kiln-slave"))
        .args(["--master", "https://x", "--token", "t", "--name", "n"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Refused at once; a slave that took the flag would try to connect forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln-slave accepted --token and ran");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--token'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn master_runs_its_own_postgres_when_no_url_is_configured() {
    let farm = Farm::with(FarmOptions {
        embedded_db: true,
        ..Default::default()
    })
    .await;
    let h: serde_json::Value = farm.get("/api/health").await;
    assert_eq!(h["status"], "ok");
    assert!(farm.dir.path().join("postgres/PG_VERSION").exists());
    assert!(
        farm.dir.path().join("run/.s.PGSQL.5432").exists(),
        "the embedded cluster listens on a unix socket in the data dir"
    );
    // No other local user can reach it (it would be a superuser there).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "psql", "-X", "-h"])
            .arg(farm.dir.path().join("run"))
            .args(["-U", "kiln", "-d", "kiln", "-c", "SELECT 1"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "another local user reached the embedded database"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Permission denied"), "{err}");
    }
    let (s, v) = farm
        .post("/api/slaves", serde_json::json!({"name": "s"}))
        .await;
    assert_eq!(s, 201, "{v}");
    // `migrate` works against the same cluster.
    let out = Command::new(bin_dir().join("kiln-master"))
        .arg("--config")
        .arg(farm.dir.path().join("kiln.toml"))
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
