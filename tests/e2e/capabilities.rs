//! What a slave's machine offers (issue 19): probed by the slave at each connection, reported in
//! `GET /api/slaves`, and told to an admin by `kiln-slave doctor` with the packages it lacks.

use kiln_shared::api::Slave;
use kiln_tests::Farm;
use std::process::Command;

#[tokio::test]
async fn a_slave_reports_its_tools_and_the_doctor_names_what_is_missing() {
    let farm = Farm::start().await;
    let _s = farm.slave("prober").await;
    let slaves: Vec<Slave> = farm.get("/api/slaves").await;
    let s = slaves.iter().find(|s| s.name == "prober").expect("listed");
    let c = s.capabilities.as_ref().expect("capabilities in the hello");
    // The same facts the machine gives anyone who asks.
    let git = String::from_utf8(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(c.tools.get("git"), Some(&git), "{c:?}");
    assert!(c.tools.contains_key("mmdebstrap"), "{c:?}");
    assert_eq!(c.binfmt, s.emulates);
    assert_eq!(
        c.loop_devices,
        std::path::Path::new("/dev/loop-control").exists()
    );
    assert!(c.free_disk_bytes > 0);
    // The JSON names the issue gives.
    let raw: serde_json::Value = farm.get("/api/slaves").await;
    let caps = &raw[0]["capabilities"];
    for k in [
        "tools",
        "kvm",
        "loop",
        "device_mapper",
        "binfmt",
        "free_disk_bytes",
    ] {
        assert!(caps.get(k).is_some(), "no {k} in {caps}");
    }

    // The doctor: ready for mmdebstrap on this machine, and with tools hidden from its PATH it
    // names the Debian packages to install.
    let doctor = |path: &str| {
        Command::new(kiln_tests::bin_dir().join("kiln-slave"))
            .args(["doctor", "--backend", "mmdebstrap", "--backend", "script"])
            .env("PATH", path)
            .output()
            .unwrap()
    };
    let out = doctor(&std::env::var("PATH").unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("mmdebstrap: ready"), "{text}");
    let empty = kiln_tests::tempdir("kiln-doctor-");
    let out = doctor(empty.path().to_str().unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("to install: apt-get install git mmdebstrap fdisk e2fsprogs zstd"),
        "{text}"
    );
}
