//! Golden frames: the exact bytes of one example of every frame, checked in under
//! `tests/golden/`. A change of wire format (a bincode upgrade, a reordered field) shows up here as
//! a failing test and a diff. After an intended change, regenerate with
//! `KILN_BLESS=1 cargo test -p kiln-shared --test golden` and bump `PROTOCOL_VERSION`.

use chrono::{TimeZone, Utc};
use kiln_shared::api::{Build, Slave};
use kiln_shared::codec;
use kiln_shared::frames::*;
use kiln_shared::{BuildId, BuildState, SlaveId};
use std::path::PathBuf;

fn check(name: &str, bytes: Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.hex"));
    let hex = hex::encode(&bytes);
    if std::env::var_os("KILN_BLESS").is_some() {
        std::fs::write(&path, format!("{hex}\n")).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with KILN_BLESS=1 to create it",
            path.display()
        )
    });
    assert_eq!(hex, want.trim(), "frame {name} changed on the wire");
}

fn held() -> Vec<BuildId> {
    vec![BuildId(42)]
}

/// How many variants the enum `T` has, asked of its own `Deserialize` (serde names the range in
/// the error for an out-of-range variant index), so a new variant without a golden fails below.
fn variant_count<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> usize {
    let mut bytes = codec::encode(&()).unwrap();
    bytes.push(250);
    let err = codec::decode::<T>(&bytes).expect_err("variant 250 does not exist");
    let msg = err.to_string();
    let n = msg
        .rsplit("0 <= i < ")
        .next()
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok());
    n.unwrap_or_else(|| panic!("cannot read the variant count from: {msg}"))
}

/// The variant index of an encoded frame (the first byte after the version prefix).
fn variant_of(bytes: &[u8]) -> usize {
    let (_, used) = codec::peek_version(bytes).unwrap();
    bytes[used] as usize
}

/// Fails when a variant of `T` has no golden frame.
fn assert_every_variant<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    what: &str,
    encoded: &[Vec<u8>],
) {
    let mut seen: Vec<usize> = encoded.iter().map(|b| variant_of(b)).collect();
    seen.sort();
    seen.dedup();
    let all: Vec<usize> = (0..variant_count::<T>()).collect();
    assert_eq!(
        seen, all,
        "every {what} variant needs a golden frame (variant indices seen vs. all)"
    );
}

fn frames_slave() -> Vec<(&'static str, SlaveFrame)> {
    vec![
        (
            "slave_hello",
            SlaveFrame::Hello(Hello {
                name: "board-7".into(),
                arch: "arm64".into(),
                tags: vec!["imx8".into()],
                backends: vec!["script".into(), "mmdebstrap".into()],
                capacity: 2,
                version: "0.1.0".into(),
                builds: held(),
                emulates: vec!["armhf".into()],
                capabilities: kiln_shared::api::Capabilities {
                    tools: [("mmdebstrap".to_string(), "1.3.5-1".to_string())].into(),
                    kvm: false,
                    loop_devices: true,
                    device_mapper: false,
                    binfmt: vec!["armhf".into()],
                    free_disk_bytes: 1 << 30,
                },
            }),
        ),
        ("slave_heartbeat", SlaveFrame::Heartbeat { builds: held() }),
        (
            "slave_started",
            SlaveFrame::Started {
                build: BuildId(42),
                commit: "a".repeat(40),
            },
        ),
        (
            "slave_log",
            SlaveFrame::Log {
                build: BuildId(42),
                first_seq: 7,
                lines: vec!["I: ok".into(), "E: bad".into()],
            },
        ),
        (
            "slave_progress",
            SlaveFrame::Progress {
                build: BuildId(42),
                phase: "mmdebstrap".into(),
                percent: Some(40),
            },
        ),
        (
            "slave_finished",
            SlaveFrame::Finished {
                build: BuildId(42),
                outcome: Outcome::Failed {
                    reason: "exit status 3".into(),
                },
                log_lines: 9,
            },
        ),
        ("slave_draining", SlaveFrame::Draining),
    ]
}

fn frames_master() -> Vec<(&'static str, MasterFrame)> {
    vec![
        (
            "master_welcome",
            MasterFrame::Welcome {
                slave: SlaveId(3),
                cadence: Cadence {
                    heartbeat_secs: 5,
                    lost_timeout_secs: 30,
                    log_chunk_bytes: 65536,
                },
            },
        ),
        (
            "master_refused",
            MasterFrame::Refused {
                reason: "disabled".into(),
            },
        ),
        (
            "master_assign",
            MasterFrame::Assign(Job {
                build: BuildId(42),
                project: "board".into(),
                branch_url: "git://h/board.git".into(),
                branch: "main".into(),
                commit: Some("abcdef1".into()),
                release: Some("v1".into()),
                path: Some("images/board".into()),
                allow_file_urls: false,
                upload_path: "/api/slave/builds/42/artifacts".into(),
                upload_token: "eyJ0eXAiOiJKV1QifQ.e30.c2ln".into(),
            }),
        ),
        (
            "master_cancel",
            MasterFrame::Cancel {
                build: BuildId(42),
                reason: "cancelled".into(),
            },
        ),
        (
            "master_log_ack",
            MasterFrame::LogAck {
                build: BuildId(42),
                next_seq: 9,
            },
        ),
        (
            "master_finished_ack",
            MasterFrame::FinishedAck { build: BuildId(42) },
        ),
        ("master_drain", MasterFrame::Drain),
        (
            "master_token_rotated",
            MasterFrame::TokenRotated {
                token: "kiln_s_new".into(),
            },
        ),
        (
            "master_reconcile",
            MasterFrame::Reconcile {
                builds: vec![
                    (BuildId(1), Directive::Keep { next_seq: 5 }),
                    (BuildId(3), Directive::Forget { reason: "f".into() }),
                ],
            },
        ),
    ]
}

#[test]
fn slave_frames_are_stable() {
    let mut all = vec![];
    for (name, f) in frames_slave() {
        let bytes = codec::encode(&f).unwrap();
        assert_eq!(codec::decode::<SlaveFrame>(&bytes).unwrap(), f);
        all.push(bytes.clone());
        check(name, bytes);
    }
    assert_every_variant::<SlaveFrame>("SlaveFrame", &all);
}

#[test]
fn master_frames_are_stable() {
    let mut all = vec![];
    for (name, f) in frames_master() {
        let bytes = codec::encode(&f).unwrap();
        assert_eq!(codec::decode::<MasterFrame>(&bytes).unwrap(), f);
        all.push(bytes.clone());
        check(name, bytes);
    }
    assert_every_variant::<MasterFrame>("MasterFrame", &all);
}

#[test]
fn every_directive_has_a_golden_frame() {
    // Directives ride inside `Reconcile`; encode each on its own to see their indices.
    let all: Vec<Vec<u8>> = frames_master()
        .into_iter()
        .filter_map(|(_, f)| match f {
            MasterFrame::Reconcile { builds } => Some(builds),
            _ => None,
        })
        .flatten()
        .map(|(_, d)| codec::encode(&d).unwrap())
        .collect();
    assert_every_variant::<Directive>("Directive", &all);
}

#[test]
fn console_frames_are_stable() {
    let t = Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap();
    let build = Build {
        id: BuildId(42),
        project: "board".into(),
        state: BuildState::Running,
        reason: None,
        commit: Some("a".repeat(40)),
        requested_commit: None,
        release: None,
        trigger: "manual".into(),
        priority: 0,
        waiting_reason: None,
        rebuild_of: None,
        branch_url: "git://h/board.git".into(),
        branch: "main".into(),
        path: None,
        slave: Some("board-7".into()),
        retry_of: None,
        log_lines: 10,
        created_at: t,
        dispatched_at: Some(t),
        started_at: Some(t),
        finished_at: None,
        release_notes: None,
    };
    let slave = Slave {
        id: SlaveId(3),
        name: "board-7".into(),
        online: true,
        enabled: true,
        draining: false,
        arch: Some("arm64".into()),
        tags: vec![],
        backends: vec!["script".into()],
        capacity: 1,
        emulates: vec![],
        version: Some("0.1.0".into()),
        last_seen: Some(t),
        builds: vec![BuildId(42)],
        capabilities: None,
    };
    let events = [
        ("console_build", ConsoleEvent::Build(build)),
        ("console_slave", ConsoleEvent::Slave(slave)),
        (
            "console_log_lines",
            ConsoleEvent::LogLines {
                build: BuildId(42),
                first_seq: 0,
                lines: vec!["x".into()],
            },
        ),
        (
            "console_log_end",
            ConsoleEvent::LogEnd { build: BuildId(42) },
        ),
        (
            "console_progress",
            ConsoleEvent::Progress {
                build: BuildId(42),
                phase: "fetching".into(),
                percent: Some(5),
            },
        ),
        (
            "console_error",
            ConsoleEvent::Error {
                message: "corrupt frame".into(),
            },
        ),
        ("console_resync", ConsoleEvent::Resync),
        (
            "console_earlier_lines",
            ConsoleEvent::EarlierLines {
                build: BuildId(42),
                first_seq: 90,
                before_seq: 92,
                lines: vec!["a".into(), "b".into()],
            },
        ),
    ];
    let mut all = vec![];
    for (name, e) in events {
        let bytes = codec::encode(&e).unwrap();
        assert_eq!(codec::decode::<ConsoleEvent>(&bytes).unwrap(), e);
        all.push(bytes.clone());
        check(name, bytes);
    }
    assert_every_variant::<ConsoleEvent>("ConsoleEvent", &all);
    let mut all = vec![];
    for (name, r) in [
        ("console_subscribe_queue", ConsoleRequest::SubscribeQueue),
        (
            "console_unsubscribe_queue",
            ConsoleRequest::UnsubscribeQueue,
        ),
        (
            "console_subscribe_log",
            ConsoleRequest::SubscribeLog {
                build: BuildId(42),
                from_seq: 100,
            },
        ),
        (
            "console_unsubscribe_log",
            ConsoleRequest::UnsubscribeLog { build: BuildId(42) },
        ),
        (
            "console_subscribe_log_tail",
            ConsoleRequest::SubscribeLogTail {
                build: BuildId(42),
                lines: 2000,
            },
        ),
        (
            "console_earlier_log",
            ConsoleRequest::EarlierLog {
                build: BuildId(42),
                before_seq: 5000,
                lines: 2000,
            },
        ),
    ] {
        let bytes = codec::encode(&r).unwrap();
        assert_eq!(codec::decode::<ConsoleRequest>(&bytes).unwrap(), r);
        all.push(bytes.clone());
        check(name, bytes);
    }
    assert_every_variant::<ConsoleRequest>("ConsoleRequest", &all);
}
