//! The authorization matrix: every route of `docs/api.md` without a token, with a wrong token, and
//! with the admin token; the expected answer of each cell is in the table. (Until the login issue
//! there is one role, the admin; slaves and enrolling boards have tokens of their own.)

use kiln_tests::{Farm, GitServer};
use reqwest::Method;
use serde_json::json;

/// What a cell expects.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// 401 with a JSON error.
    Refused,
    /// Anything but 401/403 (the route ran; its own checks may still answer 4xx).
    Allowed,
}

#[tokio::test]
async fn every_route_times_every_credential() {
    use Want::*;
    let git = GitServer::start();
    let repo = git.repo("authz");
    repo.script_branch("main", "echo ok > \"$KILN_OUTPUT_DIR/ok\"");
    let farm = Farm::start().await;
    farm.project("p", &repo.url, "main").await;
    let b = farm.request_build("p", json!({})).await;
    farm.register_slave("s").await;
    let id = b.id.to_string();
    let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
    // (method, path, body, without a token, with a wrong token, with the admin token)
    let routes: Vec<(Method, String, Option<serde_json::Value>, Want, Want, Want)> = vec![
        (
            m("GET"),
            "/api/health".into(),
            None,
            Allowed,
            Allowed,
            Allowed,
        ),
        (
            m("GET"),
            "/api/projects".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/projects".into(),
            Some(json!({"name": "q", "branch_url": repo.url})),
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            "/api/projects/p".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("PATCH"),
            "/api/projects/p".into(),
            Some(json!({"priority": 1})),
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/projects/p/builds".into(),
            Some(json!({})),
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            "/api/builds".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            format!("/api/builds/{id}"),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            format!("/api/builds/{id}/log"),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            format!("/api/builds/{id}/artifacts"),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            format!("/api/builds/{id}/artifacts/ok"),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            format!("/api/builds/{id}/rebuild"),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            format!("/api/builds/{id}/cancel"),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            "/api/catalog".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            "/api/slaves".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/slaves".into(),
            Some(json!({"name": "t"})),
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/slaves/s/drain".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/slaves/s/disable".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/slaves/s/enable".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/slaves/s/rotate-token".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("GET"),
            "/api/slaves/registration-tokens".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("POST"),
            "/api/slaves/registration-tokens".into(),
            Some(json!({"expires_in_s": 600, "uses": 1})),
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("DELETE"),
            "/api/slaves/registration-tokens/1".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        // Enrolling takes a registration token, which neither a wrong nor the admin token is.
        (
            m("POST"),
            "/api/slaves/register".into(),
            Some(json!({"name": "u"})),
            Refused,
            Refused,
            Refused,
        ),
        // Uploads take the build's upload token only.
        (
            m("PUT"),
            format!("/api/slave/builds/{id}/artifacts/x"),
            None,
            Refused,
            Refused,
            Refused,
        ),
        (
            m("POST"),
            "/api/slaves/t/revoke".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("DELETE"),
            "/api/slaves/s".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
        (
            m("DELETE"),
            "/api/projects/q".into(),
            None,
            Refused,
            Refused,
            Allowed,
        ),
    ];
    let mut wrong = vec![];
    for (method, path, body, none, bad, admin) in &routes {
        for (who, token, want) in [
            ("nobody", None, none),
            ("a wrong token", Some("kiln_a_wrong"), bad),
            ("the admin", Some(farm.token.as_str()), admin),
        ] {
            let mut req = farm.http.request(method.clone(), farm.api(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            let json = r
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
            let ok = match want {
                Refused => status == 401 && json,
                Allowed => status != 401 && status != 403,
            };
            if !ok {
                wrong.push(format!(
                    "{method} {path} as {who}: {status} (wanted {want:?})"
                ));
            }
        }
    }
    // The WebSockets, through real handshakes: the console's takes the admin token as ?token=
    // (a browser cannot set headers there), the slaves' only a slave token.
    let slave_token = farm.register_slave("ws-check").await;
    for (path, token, want) in [
        ("/ws/console", None, 401),
        ("/ws/console", Some("kiln_a_wrong"), 401),
        ("/ws/console", Some(farm.token.as_str()), 101),
        ("/ws/slave", None, 401),
        ("/ws/slave", Some(farm.token.as_str()), 401),
        ("/ws/slave", Some(slave_token.as_str()), 101),
    ] {
        // The console's token rides the query; the slaves' the Authorization header.
        let (path, bearer) = match (path, token) {
            ("/ws/console", Some(t)) => (format!("{path}?token={t}"), None),
            _ => (path.to_string(), token),
        };
        let version = kiln_shared::codec::PROTOCOL_VERSION.to_string();
        let got = match farm.ws(&path, bearer, &version).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{path}: {e}"),
        };
        if got != want {
            wrong.push(format!("{path} with {token:?}: {got} (wanted {want})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
