//! The slave protocol at its edges, spoken by a hand-made slave over the real wire format.

use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec::{self, PROTOCOL_VERSION};
use kiln_shared::frames::{MasterFrame, SlaveFrame};
use kiln_shared::BuildState;
use kiln_tests::farm::Ws;
use kiln_tests::{Farm, GitServer, RawSlave};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn connect(
    farm: &Farm,
    token: &str,
    protocol: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    farm.ws("/ws/slave", Some(token), protocol).await
}

/// Slave `name`, registered, connected and welcomed.
async fn welcomed(farm: &Farm, name: &str) -> RawSlave {
    let mut s = RawSlave::connect(farm, name).await;
    match s.next().await {
        MasterFrame::Welcome { .. } => s,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// The connection ends (close frame or EOF) without further frames of substance.
async fn closed(ws: &mut Ws) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn protocol_mismatch_and_bad_tokens_are_refused_clearly() {
    let farm = Farm::start().await;
    let token = farm.register_slave("old").await;
    match connect(&farm, &token, "99").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 426);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(
                body.contains("speaks protocol version 99")
                    && body.contains(&format!("speaks {PROTOCOL_VERSION}")),
                "{body}"
            );
        }
        other => panic!("expected HTTP 426, got {:?}", other.map(|_| ())),
    }
    match connect(&farm, "kiln_s_wrong", &PROTOCOL_VERSION.to_string()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn corrupt_and_oversized_frames_close_only_that_connection() {
    let git = GitServer::start();
    let repo = git.repo("ok");
    repo.script_branch("main", "echo fine > \"$KILN_OUTPUT_DIR/f\"");
    let farm = Farm::start().await;

    let mut ws = welcomed(&farm, "garbage").await.ws;
    ws.send(Message::Binary(
        vec![1, 0xff, 0xff, 0xff, 0xff, 0xff, 7, 7].into(),
    ))
    .await
    .unwrap();
    assert!(
        closed(&mut ws).await,
        "a corrupt frame closes the connection"
    );

    let mut ws = welcomed(&farm, "huge").await.ws;
    let _ = ws
        .send(Message::Binary(
            vec![0u8; codec::MAX_FRAME_BYTES + 10].into(),
        ))
        .await;
    assert!(
        closed(&mut ws).await,
        "an oversized frame closes the connection"
    );

    let mut ws = welcomed(&farm, "texter").await.ws;
    ws.send(Message::Text("{\"hello\":1}".into()))
        .await
        .unwrap();
    assert!(closed(&mut ws).await, "a text frame closes the connection");

    // The master carries on: a real slave still builds.
    farm.wait_slave_online("garbage", false).await;
    let _slave = farm.slave("real").await;
    farm.project("ok", &repo.url, "main").await;
    let b = farm.request_build("ok", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
}

#[tokio::test]
async fn an_artifact_whose_sha256_does_not_match_is_rejected_and_fails_the_build() {
    let farm = Farm::start().await;
    farm.project("p", "git://127.0.0.1:9/unused.git", "main")
        .await;
    let mut liar = welcomed(&farm, "liar").await;
    let b = farm.request_build("p", json!({})).await;
    let job = liar.job().await;
    assert_eq!(job.build, b.id);
    liar.send(SlaveFrame::Started {
        build: b.id,
        commit: "0".repeat(40),
    })
    .await;
    farm.wait_build(b.id, Duration::from_secs(10), "running", |b| {
        b.state == BuildState::Running
    })
    .await;

    let r = farm
        .http
        .put(farm.api(&format!("{}/disk.img", job.upload_path)))
        .bearer_auth(&job.upload_token)
        .header("x-kiln-sha256", "ab".repeat(32))
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let b = farm.build(b.id).await;
    assert_eq!(b.state, BuildState::Failed);
    let reason = b.reason.unwrap();
    assert!(
        reason.contains("artifact 'disk.img' rejected") && reason.contains("sha256"),
        "{reason}"
    );
    let arts = farm.artifacts(b.id).await;
    assert!(arts.is_empty(), "the corrupt file is not kept: {arts:?}");

    // Another slave's token cannot upload into this build (only its upload token can), and
    // the build's own token takes nothing once the build has ended.
    let other = farm.register_slave("other").await;
    for (bearer, status) in [(other.as_str(), 401), (job.upload_token.as_str(), 409)] {
        let r = farm
            .http
            .put(farm.api(&format!("{}/x", job.upload_path)))
            .bearer_auth(bearer)
            .header("x-kiln-sha256", "ab".repeat(32))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
}
