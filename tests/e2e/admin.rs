//! Admin actions on slaves, and how the master serves the web console.

use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn disabled_slaves_stay_connected_and_revoked_ones_lose_their_token() {
    let git = GitServer::start();
    let repo = git.repo("r");
    repo.script_branch("main", "echo ok > \"$KILN_OUTPUT_DIR/ok\"");
    let farm = Farm::start().await;
    let mut slave = farm.slave("s1").await;
    let (s, v) = farm.post("/api/slaves/s1/disable", json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enabled"], false);
    // Disabling keeps it connected (idle; tests/e2e/console_server.rs covers the queue side).
    assert!(farm
        .slaves()
        .await
        .iter()
        .any(|s| s.name == "s1" && s.online && !s.enabled));
    assert!(kiln_tests::alive(slave.pid().expect("running")));
    let (s, _) = farm.post("/api/slaves/s1/enable", json!({})).await;
    assert_eq!(s, 200);
    farm.project("r", &repo.url, "main").await;
    let b = farm.request_build("r", json!({})).await;
    assert_eq!(
        farm.wait_ended(b.id, Duration::from_secs(60)).await.state,
        BuildState::Succeeded
    );

    let r = farm
        .http
        .delete(farm.api("/api/slaves/s1"))
        .bearer_auth(&farm.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let status = slave
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("a revoked slave exits");
    assert!(!status.success());
    assert!(farm.slaves().await.is_empty());
    // The build keeps its history.
    assert_eq!(farm.build(b.id).await.state, BuildState::Succeeded);
}

#[tokio::test]
async fn the_console_is_served_with_client_routes_and_long_lived_hashed_assets() {
    let farm0 = kiln_tests::tempdir("kiln-dist-");
    let dist = farm0.path();
    std::fs::write(
        dist.join("index.html"),
        "<!doctype html><title>Kiln</title>",
    )
    .unwrap();
    std::fs::write(dist.join("app-0123456789abcdef.js"), "console.log(1)").unwrap();
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!("console_dir = \"{}\"", dist.display()),
        ..Default::default()
    })
    .await;
    for route in ["/", "/projects/board", "/builds/12", "/slaves"] {
        let r = farm.http.get(farm.api(route)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{route}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "{route}");
        assert!(
            r.text().await.unwrap().contains("<title>Kiln</title>"),
            "{route} serves the app"
        );
    }
    let r = farm
        .http
        .get(farm.api("/app-0123456789abcdef.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    // The API is not swallowed by the app's fallback.
    let r = farm.http.get(farm.api("/api/health")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    // A token in the query counts for nothing (it would end up in logs and histories): links
    // work with the session cookie, scripts send the bearer header.
    let r = farm
        .http
        .get(farm.api(&format!("/api/projects?token={}", farm.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
