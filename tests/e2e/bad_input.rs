//! Bad input over every `/api/` route: NUL bytes and control characters, over-long strings, wrong
//! types, unknown fields, malformed JSON, unknown paths and wrong methods. Each answers a 4xx JSON
//! error whose `error` says what is wrong: never a 500, never the console's HTML.

use kiln_tests::{Farm, FarmOptions, GitServer};
use reqwest::Method;
use serde_json::{json, Value};

struct Case {
    method: Method,
    path: String,
    body: Option<String>,
    /// The status it must answer.
    status: u16,
    /// A piece of the message it must carry.
    says: &'static str,
}

fn case(method: Method, path: &str, body: Option<&str>, status: u16, says: &'static str) -> Case {
    Case {
        method,
        path: path.to_string(),
        body: body.map(str::to_string),
        status,
        says,
    }
}

#[tokio::test]
async fn every_api_route_answers_bad_input_with_a_json_4xx() {
    let git = GitServer::start();
    let repo = git.repo("ok");
    repo.script_branch("main", "echo ok > \"$KILN_OUTPUT_DIR/ok\"");
    let dist = kiln_tests::tempdir("kiln-console-");
    std::fs::write(dist.path().join("index.html"), "<html>console</html>").unwrap();
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!("console_dir = \"{}\"", dist.path().display()),
        ..Default::default()
    })
    .await;
    farm.project("p", &repo.url, "main").await;
    let b = farm.request_build("p", json!({})).await;
    farm.register_slave("s").await;
    let id = b.id.to_string();
    let long = "x".repeat(5000);
    let url = repo.url.clone();
    use Method as M;
    let nul_name = json!({"name": "a\u{0}b", "branch_url": url}).to_string();
    let long_name = json!({"name": long, "branch_url": url}).to_string();
    let long_url =
        json!({"name": "q", "branch_url": format!("{url}/{}", "y".repeat(3000))}).to_string();
    let nul_branch = json!({"name": "q", "branch_url": url, "branch": "ma\u{0}in"}).to_string();
    let misspelt = json!({"name": "q", "branch_url": url, "brnach": "main"}).to_string();
    let wrong_type = json!({"name": 5, "branch_url": url}).to_string();
    let cases = vec![
        // Unknown paths and methods.
        case(M::GET, "/api/nope", None, 404, "no API route"),
        case(M::GET, "/api", None, 404, "no API route"),
        case(
            M::POST,
            "/api/projects/p/nope",
            Some("{}"),
            404,
            "no API route",
        ),
        case(M::GET, "/ws/nope", None, 404, "no API route"),
        case(
            M::PUT,
            "/api/projects",
            Some("{}"),
            405,
            "does not take PUT",
        ),
        case(M::DELETE, "/api/builds", None, 405, "does not take DELETE"),
        // NUL bytes and control characters in paths and queries.
        case(
            M::GET,
            "/api/projects/a%00b",
            None,
            400,
            "control character",
        ),
        case(
            M::PATCH,
            "/api/projects/a%00b",
            Some("{}"),
            400,
            "control character",
        ),
        case(
            M::DELETE,
            "/api/projects/a%0Ab",
            None,
            400,
            "control character",
        ),
        case(
            M::POST,
            "/api/projects/%00/builds",
            Some("{}"),
            400,
            "control character",
        ),
        case(
            M::GET,
            "/api/builds?project=a%00",
            None,
            400,
            "control character",
        ),
        case(
            M::GET,
            "/api/builds?state=%00",
            None,
            400,
            "control character",
        ),
        case(
            M::GET,
            &format!("/api/builds/{id}/artifacts/a%00b"),
            None,
            400,
            "control character",
        ),
        case(
            M::POST,
            "/api/slaves/s%00/drain",
            None,
            400,
            "control character",
        ),
        case(
            M::POST,
            "/api/slaves/s%00/disable",
            None,
            400,
            "control character",
        ),
        case(
            M::POST,
            "/api/slaves/s%00/enable",
            None,
            400,
            "control character",
        ),
        case(
            M::DELETE,
            "/api/slaves/s%00",
            None,
            400,
            "control character",
        ),
        case(
            M::PUT,
            &format!("/api/slave/builds/{id}/artifacts/a%00"),
            Some("x"),
            400,
            "control character",
        ),
        case(M::GET, "/api/projects/%FF", None, 400, "UTF-8"),
        // Wrong types in paths and queries.
        case(M::GET, "/api/builds/abc", None, 400, "abc"),
        case(
            M::GET,
            "/api/builds/99999999999999999999",
            None,
            400,
            "99999999999999999999",
        ),
        case(M::POST, "/api/builds/x/cancel", None, 400, "x"),
        case(M::POST, "/api/builds/x/rebuild", None, 400, "x"),
        case(M::GET, "/api/builds/x/log", None, 400, "x"),
        case(M::GET, "/api/builds/x/artifacts", None, 400, "x"),
        case(M::GET, "/api/builds?limit=many", None, 400, "limit"),
        case(M::GET, "/api/builds?state=exploded", None, 400, "exploded"),
        // Unknown objects and over-long names in paths.
        case(
            M::GET,
            &format!("/api/projects/{long}"),
            None,
            404,
            "no project",
        ),
        case(M::GET, "/api/builds/424242", None, 404, "no build"),
        case(
            M::GET,
            &format!("/api/builds/{id}/artifacts/nope"),
            None,
            404,
            "no artifact",
        ),
        case(M::POST, "/api/slaves/nobody/drain", None, 404, "no slave"),
        // Bodies: malformed, wrong types, unknown fields, NUL bytes, over-long strings.
        case(M::POST, "/api/projects", Some("{"), 400, "JSON"),
        case(M::POST, "/api/projects", Some(&wrong_type), 422, "name"),
        case(M::POST, "/api/projects", Some(&misspelt), 422, "brnach"),
        case(M::POST, "/api/projects", Some(&nul_name), 400, "name"),
        case(M::POST, "/api/projects", Some(&long_name), 400, "name"),
        case(M::POST, "/api/projects", Some(&long_url), 400, "branch URL"),
        case(M::POST, "/api/projects", Some(&nul_branch), 400, "branch"),
        case(
            M::PATCH,
            "/api/projects/p",
            Some(r#"{"priorty": 3}"#),
            422,
            "priorty",
        ),
        case(
            M::PATCH,
            "/api/projects/p",
            Some(r#"{"priority": "high"}"#),
            422,
            "priority",
        ),
        case(
            M::PATCH,
            "/api/projects/p",
            Some(r#"{"schedule": "0 0 30 2 \u0000"}"#),
            400,
            "schedule",
        ),
        case(
            M::PATCH,
            "/api/projects/p",
            Some(r#"{"backend": "-x"}"#),
            400,
            "backend",
        ),
        case(
            M::POST,
            "/api/projects/p/builds",
            Some(r#"{"comit": "abc1234"}"#),
            422,
            "comit",
        ),
        case(
            M::POST,
            "/api/projects/p/builds",
            Some(r#"{"commit": "abc\u0000123"}"#),
            400,
            "commit",
        ),
        case(
            M::POST,
            "/api/projects/p/builds",
            Some(&format!(r#"{{"release": "{long}"}}"#)),
            400,
            "release",
        ),
        case(
            M::POST,
            "/api/projects/p/builds",
            Some(r#"{"priority": []}"#),
            422,
            "priority",
        ),
        case(
            M::POST,
            "/api/slaves",
            Some(r#"{"name": "s2", "tokn": "x"}"#),
            422,
            "tokn",
        ),
        case(
            M::POST,
            "/api/slaves",
            Some(r#"{"name": "s\u0000"}"#),
            400,
            "name",
        ),
        case(
            M::POST,
            "/api/slaves",
            Some(&format!(r#"{{"name": "{long}"}}"#)),
            400,
            "name",
        ),
        // The slaves' upload without the build's upload token.
        case(
            M::PUT,
            &format!("/api/slave/builds/{id}/artifacts/a"),
            Some("x"),
            401,
            "upload token",
        ),
    ];
    let mut failures = vec![];
    for c in &cases {
        let mut req = farm
            .http
            .request(c.method.clone(), farm.api(&c.path))
            .bearer_auth(&farm.token);
        if let Some(b) = &c.body {
            req = req
                .header("content-type", "application/json")
                .body(b.clone());
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = r.text().await.unwrap_or_default();
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let message = body
            .as_ref()
            .and_then(|b| b["error"].as_str())
            .unwrap_or("")
            .to_string();
        let ok =
            status == c.status && ctype.starts_with("application/json") && message.contains(c.says);
        if !ok {
            failures.push(format!(
                "{} {} → {status} {ctype}: {text} (wanted {} saying '{}')",
                c.method,
                &c.path[..c.path.len().min(80)],
                c.status,
                c.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing above reached a handler that changed anything, and the master still serves.
    let projects: Vec<Value> = farm.get("/api/projects").await;
    assert_eq!(projects.len(), 1);
    // Outside /api/ and /ws/ the console's page is served.
    let page = farm.get_raw("/builds/1").await.text().await.unwrap();
    assert!(page.contains("console"), "{page}");
}
