//! Sessions the backend-for-frontend way: the local sign-in, the cookie's attributes, CSRF
//! tokens and allowed origins, rate limits, logout, time-outs, API tokens, and permissions read
//! again on every request and every console message.

use crate::authz::{people_farm, people_farm_on, sign_in};
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_tests::session::{browser_client, console_next, console_send};
use kiln_tests::{Farm, FarmOptions, GitServer, Session};
use reqwest::Method;
use serde_json::{json, Value};

async fn project(farm: &Farm, name: &str, url: &str, team: &str, more: Value) {
    let mut body = json!({ "name": name, "branch_url": url, "team": team, "tags": ["nowhere"] });
    body.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    let (status, v) = farm.post("/api/projects", body).await;
    assert_eq!(status, 201, "creating project {name}: {v}");
}

#[tokio::test]
async fn cookie_requests_need_the_csrf_token_and_an_allowed_origin() {
    let git = GitServer::start();
    let repo = git.repo("csrf");
    repo.script_branch("main", "true");
    let farm = people_farm().await;
    project(&farm, "p", &repo.url, "boards", json!({})).await;
    let s = sign_in(&farm, "builder").await.unwrap();
    let path = format!("{}/api/projects/p/builds", farm.url);
    // The cookie alone changes nothing.
    let r = s
        .http
        .post(&path)
        .header("origin", &farm.url)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("X-CSRF-Token"),
        "{body}"
    );
    // A wrong token neither.
    let r = s
        .http
        .post(&path)
        .header("origin", &farm.url)
        .header("x-csrf-token", "guess")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The right token from another site's page.
    let r = s
        .http
        .post(&path)
        .header("origin", "https://evil.example")
        .header("x-csrf-token", &s.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Origin"), "{body}");
    // No Origin at all (a browser always sends one on a POST).
    let r = s
        .http
        .post(&path)
        .header("x-csrf-token", &s.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Both right: the build is queued.
    let (status, v) = s
        .send(Method::POST, "/api/projects/p/builds", Some(&json!({})))
        .await;
    assert_eq!(status, 201, "{v}");
    // Reading needs neither.
    let r = s
        .http
        .get(format!("{}/api/projects/p", farm.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The console's WebSocket checks Origin before upgrading.
    match s.console(&farm, "https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        Ok(_) => panic!("a WebSocket from another origin was upgraded"),
        Err(e) => panic!("{e}"),
    }
    s.console(&farm, &farm.url)
        .await
        .expect("same-origin console");
    // Signing in from another site's form is refused too.
    let r = browser_client(&farm)
        .post(farm.api("/auth/local/login"))
        .header("origin", "https://evil.example")
        .json(&json!({"username": "builder", "password": "builder-password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn local_sign_in_sets_a_host_cookie_rotates_and_logs_out() {
    let farm = people_farm().await;
    let client = browser_client(&farm);
    let login = |pw: &'static str| {
        client
            .post(farm.api("/auth/local/login"))
            .header("origin", &farm.url)
            .json(&json!({"username": "viewer", "password": pw}))
            .send()
    };
    let r = login("viewer-password-123").await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    // The farm serves HTTPS: the prefixed, Secure, HttpOnly, SameSite=Lax cookie.
    assert!(cookie.starts_with("__Host-kiln_session="), "{cookie}");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Domain="), "{cookie}");
    let first = cookie.split(';').next().unwrap().to_string();
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["username"], "viewer");
    assert_eq!(me["teams"], json!([{"team": "boards", "role": "viewer"}]));
    // Signing in again makes a new session and ends the old one.
    let r = login("viewer-password-123").await.unwrap();
    assert_eq!(r.status(), 200);
    let second = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    let plain = kiln_tests::farm::client(farm.ca.as_deref());
    let old = plain
        .get(farm.api("/api/me"))
        .header("cookie", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let new = plain
        .get(farm.api("/api/me"))
        .header("cookie", &second)
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
    let csrf = new.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Logging out ends it on the server: the cookie stops working even if a copy was kept.
    let r = plain
        .post(farm.api("/auth/logout"))
        .header("cookie", &second)
        .header("origin", &farm.url)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = plain
        .get(farm.api("/api/me"))
        .header("cookie", &second)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    // The audit log has both sign-ins and the logout, with the address.
    let audit: Value = farm.get("/api/audit?limit=500").await;
    let of_viewer: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "viewer")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(of_viewer, ["logout", "login", "login"], "{audit}");
    assert!(audit[0]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.")));
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_account() {
    let farm = people_farm().await;
    let client = browser_client(&farm);
    let attempt = |pw: &'static str| {
        client
            .post(farm.api("/auth/local/login"))
            .json(&json!({"username": "builder", "password": pw}))
            .send()
    };
    for _ in 0..5 {
        let r = attempt("wrong password!").await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "wrong user name or password");
    }
    // Now even the right password waits.
    let r = attempt("builder-password-123").await.unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("account 'builder'"),
        "{v}"
    );
    // Another account is not held up by it.
    Session::login(&farm, "viewer", "viewer-password-123").await;
    // An unknown name is refused the same way as a wrong password.
    let r = client
        .post(farm.api("/auth/local/login"))
        .json(&json!({"username": "nobody-here", "password": "whatever-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let refused: Value = farm.get("/api/audit?action=login_refused").await;
    assert!(refused.as_array().unwrap().len() >= 7, "{refused}");
}

#[tokio::test]
async fn removal_from_a_team_bites_at_once_even_on_an_open_console() {
    let git = GitServer::start();
    let repo = git.repo("removal");
    repo.script_branch("main", "true");
    let farm = people_farm().await;
    project(&farm, "p", &repo.url, "boards", json!({})).await;
    project(
        &farm,
        "open",
        &repo.url,
        "others",
        json!({"visibility": "public"}),
    )
    .await;
    let viewer = sign_in(&farm, "viewer").await.unwrap();
    let mut ws = viewer.console(&farm, &farm.url).await.unwrap();
    console_send(&mut ws, &ConsoleRequest::SubscribeQueue).await;
    let before = farm.request_build("p", json!({})).await;
    loop {
        if let Some(ConsoleEvent::Build(b)) = console_next(&mut ws).await {
            if b.id == before.id {
                break;
            }
        }
    }
    let r = farm
        .http
        .delete(farm.api("/api/teams/boards/members/viewer"))
        .bearer_auth(&farm.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The REST API forgets the project at once ...
    assert_eq!(viewer.get("/api/projects/p").await.0, 404);
    // ... and so does the open console: a build of `p` is not sent, one of the public project
    // queued after it is.
    let hidden = farm.request_build("p", json!({})).await;
    let shown = farm.request_build("open", json!({})).await;
    loop {
        match console_next(&mut ws).await {
            Some(ConsoleEvent::Build(b)) if b.id == hidden.id => {
                panic!("the console still got a build of a project its user left")
            }
            Some(ConsoleEvent::Build(b)) if b.id == shown.id => break,
            Some(_) => {}
            None => panic!("console closed"),
        }
    }
    // Signing out ends the open console too.
    let r = viewer
        .request(Method::POST, "/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let after = farm.request_build("open", json!({})).await;
    loop {
        match console_next(&mut ws).await {
            Some(ConsoleEvent::Error { message }) => {
                assert!(message.contains("session has ended"), "{message}");
                break;
            }
            Some(ConsoleEvent::Build(b)) if b.id == after.id => {
                panic!("a signed-out console still gets builds")
            }
            Some(_) => {}
            None => panic!("closed without saying why"),
        }
    }
}

#[tokio::test]
async fn api_tokens_carry_at_most_their_owners_role() {
    let git = GitServer::start();
    let repo = git.repo("tokens");
    repo.script_branch("main", "true");
    let farm = people_farm().await;
    project(&farm, "p", &repo.url, "boards", json!({})).await;
    let maintainer = sign_in(&farm, "maintainer").await.unwrap();
    let (status, v) = maintainer
        .send(
            Method::POST,
            "/api/tokens",
            Some(&json!({"name": "ci", "role": "builder"})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    let id = v["token"]["id"].as_i64().unwrap();
    // Above one's own role: refused.
    let (status, _) = maintainer
        .send(
            Method::POST,
            "/api/tokens",
            Some(&json!({"name": "x", "role": "admin"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = maintainer
        .send(
            Method::POST,
            "/api/tokens",
            Some(&json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 400);
    // The token builds but does not change settings; it needs no CSRF token or Origin.
    let plain = &farm.http;
    let r = plain
        .post(farm.api("/api/projects/p/builds"))
        .bearer_auth(&secret)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = plain
        .patch(farm.api("/api/projects/p"))
        .bearer_auth(&secret)
        .json(&json!({"priority": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A token cannot make tokens (a leaked one would outlive its own revocation).
    let r = plain
        .post(farm.api("/api/tokens"))
        .bearer_auth(&secret)
        .json(&json!({"name": "child"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let me: Value = plain
        .get(farm.api("/api/me"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["via"], "token");
    assert_eq!(me["token_role"], "builder");
    assert_eq!(me["csrf_token"], Value::Null);
    // Listed without the secret, then revoked: refused at once.
    let (_, list) = maintainer.get("/api/tokens").await;
    assert_eq!(list[0]["name"], "ci");
    assert!(!list.to_string().contains(&secret));
    let (status, _) = maintainer
        .send(Method::DELETE, &format!("/api/tokens/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let r = plain
        .get(farm.api("/api/me"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The token in a query string counts for nothing.
    let r = plain
        .get(farm.api(&format!("/api/projects?token={}", farm.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_admin_token_from_init_is_the_first_admins_api_token() {
    let farm = Farm::start().await;
    let me: Value = farm.get("/api/me").await;
    assert_eq!(me["username"], "admin");
    assert_eq!(me["admin"], true);
    assert_eq!(me["via"], "token");
    let tokens: Value = farm.get("/api/tokens").await;
    assert_eq!(tokens[0]["name"], "admin.token");
    assert_eq!(tokens[0]["role"], "admin");
    // `kiln-master user add` makes a local account with a one-time password.
    let out = std::process::Command::new(kiln_tests::bin_dir().join("kiln-master"))
        .arg("--config")
        .arg(farm.config_path())
        .args(["user", "add", "lead", "--admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let password = stdout.lines().last().unwrap().trim().to_string();
    assert_eq!(password.len(), 20, "{stdout}");
    let lead = Session::login(&farm, "lead", &password).await;
    let (_, me) = lead.get("/api/me").await;
    assert_eq!(me["admin"], true);
    assert_eq!(me["must_change_password"], true);
    let (status, _) = lead
        .send(
            Method::POST,
            "/api/me/password",
            Some(&json!({"current": password, "new": "a much better password"})),
        )
        .await;
    assert_eq!(status, 204);
    let (_, me) = Session::login(&farm, "lead", "a much better password")
        .await
        .get("/api/me")
        .await;
    assert_eq!(me["must_change_password"], false);
    // The password never reached the master's log.
    assert!(!farm.master_log().contains(&password));
}

#[tokio::test]
async fn sessions_end_after_the_idle_and_absolute_time_outs() {
    use chrono::{Duration, TimeZone, Utc};
    let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    let clock = std::sync::Arc::new(kiln_master::clock::ManualClock::new(t0));
    let farm = Farm::in_process(
        FarmOptions {
            extra_toml: "[auth]\nsession_idle_secs = 3600\nsession_max_secs = 10800\n".into(),
            ..Default::default()
        },
        clock.clone(),
    )
    .await;
    farm.add_user("u", false, None).await;
    let s = Session::login(&farm, "u", "u-password-123").await;
    // Used every 50 minutes, it lives until 3 hours after sign-in.
    for minutes in [50, 100, 150] {
        clock.set(t0 + Duration::minutes(minutes));
        assert_eq!(s.get("/api/me").await.0, 200, "at {minutes} min");
    }
    clock.set(t0 + Duration::minutes(181));
    assert_eq!(s.get("/api/me").await.0, 401);
    // Left alone for more than an hour, it ends.
    let s = Session::login(&farm, "u", "u-password-123").await;
    clock.set(t0 + Duration::minutes(181 + 61));
    assert_eq!(s.get("/api/me").await.0, 401);
}

/// The config is the admin token's source: a new hash there replaces the token at the next
/// start; the old one is refused.
#[tokio::test]
async fn a_new_admin_token_hash_in_the_config_replaces_the_old_token() {
    let mut farm = Farm::start().await;
    let old = farm.token.clone();
    assert_eq!(farm.get_raw("/api/me").await.status(), 200);
    let new = "kiln_a_a_newer_admin_token".to_string();
    let hash = |t: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
    let config = std::fs::read_to_string(farm.config_path()).unwrap();
    assert!(config.contains(&hash(&old)));
    std::fs::write(farm.config_path(), config.replace(&hash(&old), &hash(&new))).unwrap();
    farm.restart_master();
    let me = |t: String| {
        let http = farm.http.clone();
        let url = farm.api("/api/me");
        async move {
            http.get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(old).await, 401);
    assert_eq!(me(new.clone()).await, 200);
    farm.token = new;
    let tokens: Value = farm.get("/api/tokens").await;
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
}

/// The master's count of access changes (`kiln_access_changes_total`).
async fn access_changes(farm: &Farm) -> f64 {
    let text = farm
        .http
        .get(farm.api("/metrics"))
        .bearer_auth(&farm.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kiln_access_changes_total "))
        .unwrap_or_else(|| panic!("no kiln_access_changes_total in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// An open console keeps its person's access while nothing changes it, and a change made by
/// another process (a second master, a `kiln-master` command, an admin's `psql`) reaches it too:
/// the database's triggers tell the master, which reads the console's access again.
#[tokio::test]
async fn a_change_made_by_another_process_reaches_an_open_console() {
    use kiln_master::db;
    let git = GitServer::start();
    let repo = git.repo("elsewhere");
    repo.script_branch("main", "true");
    let url = kiln_tests::Postgres::shared().new_database();
    let farm = people_farm_on(Some(url.clone())).await;
    project(&farm, "p", &repo.url, "boards", json!({})).await;
    project(
        &farm,
        "open",
        &repo.url,
        "others",
        json!({"visibility": "public"}),
    )
    .await;
    let viewer = sign_in(&farm, "viewer").await.unwrap();
    let mut ws = viewer.console(&farm, &farm.url).await.unwrap();
    console_send(&mut ws, &ConsoleRequest::SubscribeQueue).await;
    let before = farm.request_build("p", json!({})).await;
    loop {
        if let Some(ConsoleEvent::Build(b)) = console_next(&mut ws).await {
            if b.id == before.id {
                break;
            }
        }
    }
    let changes = access_changes(&farm).await;
    let pool = db::connect(db::Target::Url(&url), 1)
        .await
        .expect("connect");
    let gone = sqlx::query(
        "DELETE FROM team_members WHERE user_id = (SELECT id FROM users WHERE username = 'viewer')",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(gone, 1);
    // The master hears of it ...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while access_changes(&farm).await <= changes {
        assert!(
            std::time::Instant::now() < deadline,
            "the master did not hear of a change made in the database"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // ... and the open console no longer gets builds of `p`.
    let hidden = farm.request_build("p", json!({})).await;
    let shown = farm.request_build("open", json!({})).await;
    loop {
        match console_next(&mut ws).await {
            Some(ConsoleEvent::Build(b)) if b.id == hidden.id => {
                panic!("the console still got a build of a project its user was taken out of")
            }
            Some(ConsoleEvent::Build(b)) if b.id == shown.id => break,
            Some(_) => {}
            None => panic!("console closed"),
        }
    }
}
