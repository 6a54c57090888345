//! TLS between the master and its slaves and users (every other test's farm runs over HTTPS/WSS
//! with its own private CA too): plain HTTP off loopback refused at start, slaves that refuse a
//! master they cannot verify and say why, pins, and certificates re-read on SIGHUP without
//! dropping connections.

use kiln_tests::farm::client;
use kiln_tests::{bin_dir, Farm, FarmOptions};
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn plain_http_off_loopback_is_refused_at_start() {
    let farm_dir = kiln_tests::tempdir("kiln-plain-");
    let config = farm_dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        "version = 1\n[master]\n[database]\nurl = \"postgres://nobody@localhost/none\"\n",
    )
    .unwrap();
    let out = Command::new(bin_dir().join("kiln-master"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plain HTTP on 0.0.0.0") && err.contains("master.tls"),
        "{err}"
    );
}

#[tokio::test]
async fn init_makes_a_ca_and_prints_its_fingerprint() {
    let dir = kiln_tests::tempdir("kiln-init-tls-");
    let out = Command::new(bin_dir().join("kiln-master"))
        .args([
            "init",
            "--tls-self-signed",
            "--tls-name",
            "kiln.test",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let fp = text
        .lines()
        .find_map(|l| l.strip_prefix("CA sha256 fingerprint: "))
        .expect("the fingerprint is printed");
    assert_eq!(fp.len(), 64);
    for f in ["tls/ca.pem", "tls/server.pem", "tls/server.key"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("tls/server.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let cfg = std::fs::read_to_string(dir.path().join("kiln.toml")).unwrap();
    assert!(
        cfg.contains("[master.tls]\ncert = \"tls/server.pem\""),
        "{cfg}"
    );
    kiln_shared::config::Config::load(&dir.path().join("kiln.toml")).expect("it parses");
}

/// Starts a slave with `flags` in place of `--ca` and returns what it printed when it stopped.
async fn refused_slave(farm: &Farm, name: &str, flags: &[&str]) -> String {
    let token = farm.register_slave(name).await;
    let work = farm.dir.path().join(format!("slave-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    let token_file = work.join("slave.token");
    std::fs::write(&token_file, &token).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin_dir().join("kiln-slave"))
            .args(["--master", &farm.url, "--name", name])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--work-dir")
            .arg(&work)
            .args(flags)
            .output(),
    )
    .await
    .expect("the slave stops by itself")
    .unwrap();
    assert!(
        !out.status.success(),
        "a slave that cannot verify the master must not run"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_slave_refuses_a_master_it_cannot_verify_and_says_why() {
    let farm = Farm::start().await;
    let other = kiln_tests::tempdir("kiln-other-ca-");
    let other_ca = kiln_master::tls::self_signed(other.path(), &["localhost".into()]).unwrap();
    let host = farm.host_port();

    let err = refused_slave(&farm, "wrong-ca", &["--ca", other_ca.ca.to_str().unwrap()]).await;
    assert!(err.contains(&host) && err.contains("--ca"), "{err}");
    assert!(err.contains("does not verify"), "{err}");

    let err = refused_slave(&farm, "wrong-pin", &["--ca-sha256", &other_ca.ca_sha256]).await;
    assert!(err.contains(&host) && err.contains("--ca-sha256"), "{err}");

    let err = refused_slave(&farm, "system-roots", &[]).await;
    assert!(err.contains(&host) && err.contains("--ca FILE"), "{err}");

    // The right pin is enough.
    let ca_der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(farm.ca.as_ref().unwrap()).unwrap()
    };
    let pin = kiln_master::tls::fingerprint(&ca_der);
    let mut pinned = farm.slave_with("pinned", &[]).await;
    pinned.stop();
    pinned.ca = None;
    pinned.extra = vec!["--ca-sha256".to_string(), pin];
    pinned.start();
    farm.wait_slave_online("pinned", true).await;
}

#[tokio::test]
async fn sighup_rereads_the_certificate_and_keeps_connections() {
    let farm = Farm::with(FarmOptions::default()).await;
    let slave = farm.slave("s1").await;
    let old_ca = farm.ca.clone().unwrap();
    // A new CA and certificate in place of the old ones.
    let fresh = kiln_tests::tempdir("kiln-new-ca-");
    let new =
        kiln_master::tls::self_signed(fresh.path(), &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
    let tls_dir = farm.dir.path().join("tls");
    std::fs::copy(&new.cert, tls_dir.join("server.pem")).unwrap();
    std::fs::copy(&new.key, tls_dir.join("server.key")).unwrap();
    // SAFETY: signalling the test's own master.
    unsafe { libc::kill(farm.master_pid().unwrap(), libc::SIGHUP) };
    let with_new = client(Some(&new.ca));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while with_new.get(farm.api("/api/health")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client(Some(&old_ca))
            .get(farm.api("/api/health"))
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // The slave's connection (made with the old certificate) was not dropped.
    let online = with_new
        .get(farm.api("/api/slaves"))
        .bearer_auth(&farm.token)
        .send()
        .await
        .unwrap()
        .json::<Vec<kiln_shared::api::Slave>>()
        .await
        .unwrap();
    assert!(online.iter().any(|s| s.name == "s1" && s.online));
    assert_eq!(
        slave.log_text().matches("connected to the master").count(),
        1,
        "{}",
        slave.log_text()
    );
}
