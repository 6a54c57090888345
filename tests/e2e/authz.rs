//! The authorization matrix: every route of `docs/api.md` as nobody, as a member of another
//! team, as a viewer, builder and maintainer of the project's team, and as a site admin, each
//! signed in through a real session (cookie, CSRF token, Origin); the expected status of each
//! cell is written in the table. Private projects are 404 for people outside their team, never
//! 403. Slaves, enrolling boards and uploads have tokens of their own, which no person has.
//! The notification routes of `docs/notifications.md` are in the table too.

use crate::notify::subscribe;
use kiln_tests::{free_port, Farm, FarmOptions, GitServer, Session};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Who asks, in the order the columns are tried (state changes made by one column are what the
/// next one finds: the builder cancels a build, so the maintainer finds it ended).
const WHO: [&str; 6] = [
    "nobody",
    "outsider",
    "viewer",
    "builder",
    "maintainer",
    "admin",
];

/// A farm with two teams (`boards` owns the private project `p`, `others` the public `pub`), a
/// person in each role, a Launchpad provider configured (never contacted) so that group
/// mappings can be made, and mail configured (to a port where nothing listens: mails wait) so
/// that mail subscriptions can be made, and webhooks allowed to loopback.
pub async fn people_farm() -> Farm {
    people_farm_on(None).await
}

/// [`people_farm`] on the database at `database_url` (a fresh one of its own when `None`).
pub async fn people_farm_on(database_url: Option<String>) -> Farm {
    let port = free_port();
    let farm = Farm::with(FarmOptions {
        database_url,
        listen: Some(format!("127.0.0.1:{port}")),
        extra_master_toml: format!("public_url = \"https://127.0.0.1:{port}\"\n"),
        extra_toml: format!(
            "[auth.launchpad]\nendpoint = \"http://127.0.0.1:9/+openid\"\n\
             claimed_id_prefix = \"http://127.0.0.1:9/+id/\"\n\
             api_url = \"http://127.0.0.1:9/api\"\nrefresh_secs = 3600\n\
             [notify]\nretry_first_ms = 200\nretry_max_delay_secs = 1\n\
             webhook_allow = [\"127.0.0.1/32\"]\n\
             [notify.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"kiln@example.org\"\n",
            free_port()
        ),
        ..Default::default()
    })
    .await;
    farm.add_team("boards").await;
    farm.add_team("others").await;
    for (who, team) in [
        ("viewer", Some(("boards", "viewer"))),
        ("builder", Some(("boards", "builder"))),
        ("maintainer", Some(("boards", "maintainer"))),
        ("outsider", Some(("others", "maintainer"))),
        ("extra", None),
    ] {
        add_person(&farm, who, false, team).await;
    }
    add_person(&farm, "admin-user", true, None).await;
    farm
}

/// `Farm::add_user` with a mail address (`{name}@example.org`: user subscriptions mail it).
pub async fn add_person(farm: &Farm, name: &str, admin: bool, team: Option<(&str, &str)>) {
    let (status, v) = farm
        .post(
            "/api/users",
            json!({ "username": name, "password": format!("{name}-password-123"),
                    "email": format!("{name}@example.org"), "admin": admin }),
        )
        .await;
    assert_eq!(status, 201, "creating user {name}: {v}");
    if let Some((team, role)) = team {
        let r = farm
            .http
            .put(farm.api(&format!("/api/teams/{team}/members/{name}")))
            .bearer_auth(&farm.token)
            .json(&json!({ "role": role }))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "adding {name} to {team}");
    }
}

pub async fn sign_in(farm: &Farm, who: &str) -> Option<Session> {
    match who {
        "nobody" => None,
        "admin" => Some(Session::login(farm, "admin-user", "admin-user-password-123").await),
        w => Some(Session::login(farm, w, &format!("{w}-password-123")).await),
    }
}

async fn project(farm: &Farm, name: &str, url: &str, team: &str, more: Value) {
    let mut body = json!({ "name": name, "branch_url": url, "team": team });
    body.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    let (status, v) = farm.post("/api/projects", body).await;
    assert_eq!(status, 201, "creating project {name}: {v}");
}

async fn call(
    farm: &Farm,
    s: Option<&Session>,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    match s {
        Some(s) => s.send(method.clone(), path, body).await,
        None => {
            let client = kiln_tests::session::browser_client(farm);
            let mut req = client.request(method.clone(), farm.api(path));
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
    }
}

#[tokio::test]
async fn every_route_times_every_role() {
    let git = GitServer::start();
    let repo = git.repo("authz");
    // The build leaves a tiny root file system and disk image, so that it has a record of
    // what its image carries for the record's routes.
    repo.script_branch(
        "main",
        r#"echo ok > "$KILN_OUTPUT_DIR/ok"
R="$KILN_SCRATCH_DIR/rootfs"
mkdir -p "$R/var/lib/dpkg" "$R/etc/apt"
printf 'Package: a\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n' > "$R/var/lib/dpkg/status"
echo 'deb http://deb.example/debian bookworm main' > "$R/etc/apt/sources.list"
PATH="$PATH:/usr/sbin:/sbin" mkfs.ext4 -q -F -d "$R" "$KILN_OUTPUT_DIR/disk.img" 8M"#,
    );
    let farm = people_farm().await;
    let url = repo.url.as_str();
    project(&farm, "p", url, "boards", json!({})).await;
    // Its builds wait for a slave tagged `nowhere`: one stays queued to be cancelled.
    project(&farm, "held", url, "boards", json!({ "tags": ["nowhere"] })).await;
    project(
        &farm,
        "pub",
        url,
        "others",
        json!({ "visibility": "public" }),
    )
    .await;
    for who in WHO {
        project(&farm, &format!("d-{who}"), url, "boards", json!({})).await;
    }
    // Notifications: a webhook on `p` that is told about `done` (a delivery to redeliver), and
    // subscriptions made by the admin (the team's list, the viewer's, the builder's) for the
    // rows that read and delete them.
    let hook = crate::notify::receiver(0).await;
    let hook_sub = subscribe(
        &farm,
        "/api/projects/p",
        json!({"webhook": hook.url, "secret": "hook secret"}),
    )
    .await
    .id;
    let _slave = farm.slave("s").await;
    let done = farm.request_build("p", json!({})).await;
    let done = farm.wait_ended(done.id, Duration::from_secs(120)).await;
    assert_eq!(
        done.state,
        kiln_shared::BuildState::Succeeded,
        "{:?}",
        done.reason
    );
    let delivery =
        crate::notify::wait_deliveries(&farm, "/api/projects/p", hook_sub, "delivered", |d| {
            crate::notify::delivered(d, 1)
        })
        .await[0]
            .id;
    let mut subs = std::collections::HashMap::new();
    for (key, owner, body) in [
        (
            "p-list",
            "/api/projects/p",
            json!({"email": "list@example.org"}),
        ),
        ("p-viewer", "/api/projects/p", json!({"user": "viewer"})),
        ("p-builder", "/api/projects/p", json!({"user": "builder"})),
        (
            "t-list",
            "/api/teams/boards",
            json!({"email": "boards@example.org"}),
        ),
        ("t-viewer", "/api/teams/boards", json!({"user": "viewer"})),
        ("t-builder", "/api/teams/boards", json!({"user": "builder"})),
        // A team no one here is in, with a public project.
        (
            "solo-t",
            "/api/teams/solo",
            json!({"email": "solo@example.org"}),
        ),
        (
            "solo-p",
            "/api/projects/solo-pub",
            json!({"email": "solo@example.org"}),
        ),
    ] {
        if key == "solo-t" {
            farm.add_team("solo").await;
            project(
                &farm,
                "solo-pub",
                url,
                "solo",
                json!({"visibility": "public"}),
            )
            .await;
        }
        subs.insert(key, subscribe(&farm, owner, body).await.id);
    }
    // People who see `p` for each column to subscribe (someone else than the one asking), and a
    // project per column whose template that column deletes.
    let template = json!({"subject": "{{ project }} #{{ build.id }}", "body": "{{ url }}\n"});
    for who in WHO {
        add_person(
            &farm,
            &format!("sub-{who}"),
            false,
            Some(("boards", "viewer")),
        )
        .await;
        project(&farm, &format!("tp-{who}"), url, "boards", json!({})).await;
        let (s, v) = crate::notify::call(
            &farm,
            Method::PUT,
            &format!("/api/projects/tp-{who}/templates/failed"),
            Some(template.clone()),
        )
        .await;
        assert_eq!(s, 200, "a template for tp-{who}: {v}");
    }
    let preview = json!({"event": "failed", "subject": "{{ project }} #{{ build.id }}",
                         "body": "{{ url }}", "build": done.id});
    let sub = |k: &str| subs[k];
    let held = farm.request_build("held", json!({})).await;
    farm.register_slave("idle").await;
    let sessions: Vec<Option<Session>> = {
        let mut v = vec![];
        for who in WHO {
            v.push(sign_in(&farm, who).await);
        }
        v
    };
    let viewer = sessions[2].as_ref().unwrap();
    let (_, t) = viewer
        .send(Method::POST, "/api/tokens", Some(&json!({"name": "mine"})))
        .await;
    let viewer_token = t["token"]["id"].as_i64().expect("a token id");
    let (b, h) = (done.id.to_string(), held.id.to_string());
    let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap();
    let pw = json!({"current": "not the password", "new": "a-new-long-password"});
    // (method, path ({who} is the column's name), body, [nobody, outsider, viewer, builder,
    // maintainer, admin])
    #[rustfmt::skip]
    let routes: Vec<(Method, String, Option<Value>, [u16; 6])> = vec![
        (m("GET"), "/api/health".into(), None, [200, 200, 200, 200, 200, 200]),
        (m("GET"), "/auth/providers".into(), None, [200, 200, 200, 200, 200, 200]),
        (m("GET"), "/api/me".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("POST"), "/api/me/password".into(), Some(pw), [401, 400, 400, 400, 400, 400]),
        // Projects: `p` is private to `boards`; `pub` belongs to `others` and is public.
        (m("GET"), "/api/projects".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("POST"), "/api/projects".into(), Some(json!({"name": "q-{who}", "branch_url": url, "team": "boards"})), [401, 400, 403, 403, 201, 201]),
        (m("GET"), "/api/projects/p".into(), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), "/api/projects/pub".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("PATCH"), "/api/projects/p".into(), Some(json!({"priority": 1})), [401, 404, 403, 403, 200, 200]),
        (m("PATCH"), "/api/projects/pub".into(), Some(json!({"priority": 1})), [401, 200, 403, 403, 403, 200]),
        (m("POST"), "/api/projects/p/builds".into(), Some(json!({})), [401, 404, 403, 201, 201, 201]),
        (m("POST"), "/api/projects/p/builds".into(), Some(json!({"release": "r-{who}"})), [401, 404, 403, 201, 201, 201]),
        (m("POST"), "/api/projects/pub/builds".into(), Some(json!({})), [401, 201, 403, 403, 403, 201]),
        (m("DELETE"), "/api/projects/d-{who}".into(), None, [401, 404, 403, 403, 204, 204]),
        // Builds of `p`.
        (m("GET"), "/api/builds".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/log"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/artifacts"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/artifacts/ok"), None, [401, 404, 200, 200, 200, 200]),
        // What its image carries (docs/image-record.md).
        (m("GET"), format!("/api/builds/{b}/sources"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/sources?format=list"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/packages"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/images"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/artifacts/disk.img/layout"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), format!("/api/builds/{b}/diff/{b}"), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), "/api/projects/p/sources".into(), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), "/api/projects/p/sources?release=none".into(), None, [401, 404, 404, 404, 404, 404]),
        (m("PUT"), format!("/api/slave/builds/{b}/record"), Some(json!({})), [401, 401, 401, 401, 401, 401]),
        (m("POST"), format!("/api/builds/{b}/rebuild"), None, [401, 404, 403, 201, 201, 201]),
        // The builder cancels it; after that it has ended.
        (m("POST"), format!("/api/builds/{h}/cancel"), None, [401, 404, 403, 200, 409, 409]),
        (m("GET"), "/api/catalog".into(), None, [401, 200, 200, 200, 200, 200]),
        // Public: a public key (this farm signs nothing, so it has none to give).
        (m("GET"), "/api/signing-key".into(), None, [404, 404, 404, 404, 404, 404]),
        // Slaves: everyone sees them, only admins change them.
        (m("GET"), "/api/slaves".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("POST"), "/api/slaves".into(), Some(json!({"name": "t-{who}"})), [401, 403, 403, 403, 403, 201]),
        (m("POST"), "/api/slaves/idle/drain".into(), None, [401, 403, 403, 403, 403, 409]),
        (m("POST"), "/api/slaves/idle/disable".into(), None, [401, 403, 403, 403, 403, 200]),
        (m("POST"), "/api/slaves/idle/enable".into(), None, [401, 403, 403, 403, 403, 200]),
        (m("POST"), "/api/slaves/idle/rotate-token".into(), None, [401, 403, 403, 403, 403, 200]),
        (m("GET"), "/api/slaves/registration-tokens".into(), None, [401, 403, 403, 403, 403, 200]),
        (m("POST"), "/api/slaves/registration-tokens".into(), Some(json!({"expires_in_s": 600, "uses": 1})), [401, 403, 403, 403, 403, 201]),
        (m("DELETE"), "/api/slaves/registration-tokens/1".into(), None, [401, 403, 403, 403, 403, 204]),
        // Enrolling takes a registration token and uploads the build's upload token: no
        // person's session is either.
        (m("POST"), "/api/slaves/register".into(), Some(json!({"name": "u"})), [401, 401, 401, 401, 401, 401]),
        (m("PUT"), format!("/api/slave/builds/{b}/artifacts/x"), None, [401, 401, 401, 401, 401, 401]),
        (m("POST"), "/api/slaves/t-admin/revoke".into(), None, [401, 403, 403, 403, 403, 204]),
        (m("DELETE"), "/api/slaves/idle".into(), None, [401, 403, 403, 403, 403, 204]),
        // People and teams: admins only, except one's own tokens and the teams one is in.
        (m("GET"), "/api/users".into(), None, [401, 403, 403, 403, 403, 200]),
        (m("POST"), "/api/users".into(), Some(json!({"username": "n-{who}", "password": "long-enough-pw"})), [401, 403, 403, 403, 403, 201]),
        (m("GET"), "/api/teams".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("POST"), "/api/teams".into(), Some(json!({"name": "t-{who}"})), [401, 403, 403, 403, 403, 201]),
        (m("PUT"), "/api/teams/boards/members/extra".into(), Some(json!({"role": "viewer"})), [401, 403, 403, 403, 403, 200]),
        (m("DELETE"), "/api/teams/boards/members/extra".into(), None, [401, 403, 403, 403, 403, 204]),
        (m("GET"), "/api/teams/boards/mappings".into(), None, [401, 403, 403, 403, 403, 200]),
        (m("POST"), "/api/teams/boards/mappings".into(), Some(json!({"provider": "launchpad", "group": "lp-boards", "role": "builder"})), [401, 403, 403, 403, 403, 201]),
        (m("DELETE"), "/api/teams/boards/mappings/1".into(), None, [401, 403, 403, 403, 403, 204]),
        (m("GET"), "/api/tokens".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("POST"), "/api/tokens".into(), Some(json!({"name": "t"})), [401, 201, 201, 201, 201, 201]),
        // The viewer's own token: theirs to revoke; no one else's (an admin's may, but by then
        // it is gone).
        (m("DELETE"), format!("/api/tokens/{viewer_token}"), None, [401, 404, 204, 404, 404, 404]),
        (m("GET"), "/api/audit".into(), None, [401, 403, 403, 403, 403, 200]),
        // Prometheus metrics: site admins (and the scrape token of `[metrics] token_file`,
        // which no person has: tests/e2e/metrics.rs).
        (m("GET"), "/metrics".into(), None, [401, 403, 403, 403, 403, 200]),
        // Notifications (docs/notifications.md). A project's subscriptions: its maintainers see
        // and change all of them; anyone who sees the project, their own (`user` = them).
        // Someone else's subscription is 404 to those who may not see it (as a token is), a
        // private project stays 404, and what needs the maintainer role is 403.
        (m("GET"), "/api/projects/p/subscriptions".into(), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), "/api/projects/pub/subscriptions".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("GET"), format!("/api/projects/p/subscriptions/{}/deliveries", sub("p-list")), None, [401, 404, 404, 404, 200, 200]),
        (m("GET"), format!("/api/projects/p/subscriptions/{}/deliveries", sub("p-viewer")), None, [401, 404, 200, 404, 200, 200]),
        (m("GET"), format!("/api/projects/p/subscriptions/{hook_sub}/deliveries"), None, [401, 404, 404, 404, 200, 200]),
        (m("GET"), format!("/api/projects/solo-pub/subscriptions/{}/deliveries", sub("solo-p")), None, [401, 404, 404, 404, 404, 200]),
        (m("POST"), format!("/api/deliveries/{delivery}/redeliver"), None, [401, 404, 403, 403, 201, 201]),
        (m("POST"), "/api/deliveries/999999/redeliver".into(), None, [401, 404, 404, 404, 404, 404]),
        (m("DELETE"), format!("/api/projects/p/subscriptions/{}", sub("p-viewer")), None, [401, 404, 204, 404, 404, 404]),
        (m("DELETE"), format!("/api/projects/p/subscriptions/{}", sub("p-builder")), None, [401, 404, 404, 204, 404, 404]),
        (m("DELETE"), format!("/api/projects/p/subscriptions/{}", sub("p-list")), None, [401, 404, 404, 404, 204, 404]),
        (m("DELETE"), format!("/api/projects/solo-pub/subscriptions/{}", sub("solo-p")), None, [401, 404, 404, 404, 404, 204]),
        (m("POST"), "/api/projects/p/subscriptions".into(), Some(json!({"user": "{me}"})), [401, 404, 201, 201, 201, 201]),
        (m("POST"), "/api/projects/p/subscriptions".into(), Some(json!({"user": "sub-{who}"})), [401, 404, 403, 403, 201, 201]),
        (m("POST"), "/api/projects/p/subscriptions".into(), Some(json!({"email": "{who}@example.org"})), [401, 404, 403, 403, 201, 201]),
        (m("POST"), "/api/projects/p/subscriptions".into(), Some(json!({"webhook": format!("{}?from={{who}}", hook.url), "secret": "s-{who}"})), [401, 404, 403, 403, 201, 201]),
        // Only admins may be told about slaves going offline.
        (m("POST"), "/api/projects/p/subscriptions".into(), Some(json!({"email": "off-{who}@example.org", "events": ["slave_offline"]})), [401, 404, 403, 403, 403, 201]),
        (m("POST"), "/api/projects/pub/subscriptions".into(), Some(json!({"user": "{me}"})), [401, 201, 201, 201, 201, 201]),
        (m("POST"), "/api/projects/pub/subscriptions".into(), Some(json!({"email": "pub-{who}@example.org"})), [401, 201, 403, 403, 403, 201]),
        // A team's subscriptions: the same with the team's role; a team one is not in is 404.
        (m("GET"), "/api/teams/boards/subscriptions".into(), None, [401, 404, 200, 200, 200, 200]),
        (m("GET"), "/api/teams/others/subscriptions".into(), None, [401, 200, 404, 404, 404, 200]),
        (m("GET"), format!("/api/teams/boards/subscriptions/{}/deliveries", sub("t-list")), None, [401, 404, 404, 404, 200, 200]),
        (m("GET"), format!("/api/teams/boards/subscriptions/{}/deliveries", sub("t-viewer")), None, [401, 404, 200, 404, 200, 200]),
        (m("DELETE"), format!("/api/teams/boards/subscriptions/{}", sub("t-viewer")), None, [401, 404, 204, 404, 404, 404]),
        (m("DELETE"), format!("/api/teams/boards/subscriptions/{}", sub("t-builder")), None, [401, 404, 404, 204, 404, 404]),
        (m("DELETE"), format!("/api/teams/boards/subscriptions/{}", sub("t-list")), None, [401, 404, 404, 404, 204, 404]),
        (m("DELETE"), format!("/api/teams/solo/subscriptions/{}", sub("solo-t")), None, [401, 404, 404, 404, 404, 204]),
        (m("POST"), "/api/teams/boards/subscriptions".into(), Some(json!({"user": "{me}"})), [401, 404, 201, 201, 201, 201]),
        (m("POST"), "/api/teams/boards/subscriptions".into(), Some(json!({"user": "sub-{who}"})), [401, 404, 403, 403, 201, 201]),
        (m("POST"), "/api/teams/boards/subscriptions".into(), Some(json!({"email": "t-{who}@example.org"})), [401, 404, 403, 403, 201, 201]),
        (m("POST"), "/api/teams/others/subscriptions".into(), Some(json!({"email": "o-{who}@example.org"})), [401, 201, 404, 404, 404, 201]),
        // Templates: the site's are read by anyone signed in and changed by admins; a project's
        // by its maintainers.
        (m("GET"), "/api/templates".into(), None, [401, 200, 200, 200, 200, 200]),
        (m("PUT"), "/api/templates/failed".into(), Some(template.clone()), [401, 403, 403, 403, 403, 200]),
        (m("POST"), "/api/templates/preview".into(), Some(preview.clone()), [401, 403, 403, 403, 403, 200]),
        (m("DELETE"), "/api/templates/failed".into(), None, [401, 403, 403, 403, 403, 204]),
        (m("GET"), "/api/projects/p/templates".into(), None, [401, 404, 403, 403, 200, 200]),
        (m("GET"), "/api/projects/pub/templates".into(), None, [401, 200, 403, 403, 403, 200]),
        (m("PUT"), "/api/projects/p/templates/failed".into(), Some(template.clone()), [401, 404, 403, 403, 200, 200]),
        (m("POST"), "/api/projects/p/templates/preview".into(), Some(preview.clone()), [401, 404, 403, 403, 200, 200]),
        (m("DELETE"), "/api/projects/tp-{who}/templates/failed".into(), None, [401, 404, 403, 403, 204, 204]),
        // Unsubscribing takes the token from a mail, and no sign-in: a bad one is refused alike.
        (m("POST"), "/api/unsubscribe".into(), Some(json!({"token": "not-a-token"})), [400, 400, 400, 400, 400, 400]),
        // Signing in is for anyone; a provider's login sends the browser on (Launchpad is
        // configured here, no OpenID Connect provider is).
        (m("POST"), "/auth/local/login".into(), Some(json!({"username": "{who}", "password": "not the password"})), [401, 401, 401, 401, 401, 401]),
        (m("GET"), "/auth/launchpad/login".into(), None, [303, 303, 303, 303, 303, 303]),
        (m("GET"), "/auth/oidc/corp/login".into(), None, [404, 404, 404, 404, 404, 404]),
        // Last: everyone signs out.
        (m("POST"), "/auth/logout".into(), None, [401, 204, 204, 204, 204, 204]),
    ];
    let mut wrong = vec![];
    for (method, path, body, want) in &routes {
        for (i, who) in WHO.iter().enumerate() {
            // `{me}`: the user name the column signs in with.
            let me = if *who == "admin" { "admin-user" } else { who };
            let path = path.replace("{who}", who);
            let body = body.as_ref().map(|b| {
                serde_json::from_str(&b.to_string().replace("{who}", who).replace("{me}", me))
                    .unwrap()
            });
            let (status, v) = call(&farm, sessions[i].as_ref(), method, &path, body.as_ref()).await;
            if status != want[i] {
                wrong.push(format!(
                    "{method} {path} as {who}: {status} (wanted {}) {v}",
                    want[i]
                ));
            }
            if status >= 400 && status != 405 && v.get("error").is_none() {
                wrong.push(format!(
                    "{method} {path} as {who}: {status} without a JSON error"
                ));
            }
        }
    }
    // The WebSockets, through real handshakes, with fresh sessions: the console's takes the
    // session cookie (or an API token), the slaves' only a slave token.
    let slave_token = farm.register_slave("ws-check").await;
    let version = kiln_shared::codec::PROTOCOL_VERSION.to_string();
    let status = |r: Result<kiln_tests::farm::Ws, tokio_tungstenite::tungstenite::Error>| match r {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    for who in WHO {
        let got = match sign_in(&farm, who).await {
            Some(s) => status(s.console(&farm, &farm.url).await),
            None => status(farm.ws("/ws/console", None, &version).await),
        };
        if got != if who == "nobody" { 401 } else { 101 } {
            wrong.push(format!("/ws/console as {who}: {got}"));
        }
    }
    for (token, want) in [
        (None, 401),
        (Some(farm.token.as_str()), 401),
        (Some(slave_token.as_str()), 101),
    ] {
        let got = status(farm.ws("/ws/slave", token, &version).await);
        if got != want {
            wrong.push(format!("/ws/slave with {token:?}: {got} (wanted {want})"));
        }
    }
    assert_eq!(
        status(farm.ws("/ws/console", Some(&farm.token), &version).await),
        101,
        "an API token opens the console's socket"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Lists never show what someone may not see: the outsider's projects, builds and console queue
/// hold nothing of the private project `p`.
#[tokio::test]
async fn private_projects_are_absent_from_lists_and_the_console() {
    let git = GitServer::start();
    let repo = git.repo("lists");
    repo.script_branch("main", "true");
    let farm = people_farm().await;
    project(
        &farm,
        "p",
        &repo.url,
        "boards",
        json!({ "tags": ["nowhere"] }),
    )
    .await;
    project(
        &farm,
        "pub",
        &repo.url,
        "others",
        json!({ "visibility": "public", "tags": ["nowhere"] }),
    )
    .await;
    let hidden = farm.request_build("p", json!({})).await;
    let shown = farm.request_build("pub", json!({})).await;
    let outsider = Session::login(&farm, "outsider", "outsider-password-123").await;
    let (_, projects) = outsider.get("/api/projects").await;
    let names: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["pub"]);
    assert_eq!(projects[0]["role"], "maintainer");
    let (_, builds) = outsider.get("/api/builds").await;
    let ids: Vec<i64> = builds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["id"].as_i64())
        .collect();
    assert_eq!(ids, [shown.id.0]);
    let (_, builds) = outsider.get("/api/builds?project=p").await;
    assert_eq!(builds, json!([]));
    let viewer = Session::login(&farm, "viewer", "viewer-password-123").await;
    let (_, projects) = viewer.get("/api/projects").await;
    let roles: Vec<(String, String)> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("p".into(), "viewer".into()),
            ("pub".into(), "viewer".into())
        ]
    );
    // The outsider's console: the queue snapshot holds `pub`'s build only.
    let seen = kiln_tests::session::console_snapshot(&farm, &outsider, shown.id).await;
    assert!(seen.contains(&shown.id), "{seen:?}");
    assert!(!seen.contains(&hidden.id), "{seen:?}");
}

/// The slaves list shows where builds run, but not builds of projects hidden from the person.
#[tokio::test]
async fn slaves_show_only_builds_one_may_see() {
    let git = GitServer::start();
    let repo = git.repo("busy");
    repo.script_branch("main", "sleep 120");
    let farm = people_farm().await;
    project(
        &farm,
        "busy",
        &repo.url,
        "boards",
        json!({ "tags": ["busy"] }),
    )
    .await;
    let _slave = farm.slave_with("worker", &["--tags", "busy"]).await;
    let b = farm.request_build("busy", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "running", |b| {
        b.state == kiln_shared::BuildState::Running
    })
    .await;
    let builds_of = |v: &Value| -> Vec<i64> {
        let worker = v
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "worker")
            .unwrap();
        worker["builds"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_i64)
            .collect()
    };
    let viewer = sign_in(&farm, "viewer").await.unwrap();
    assert_eq!(builds_of(&viewer.get("/api/slaves").await.1), [b.id.0]);
    let outsider = sign_in(&farm, "outsider").await.unwrap();
    assert_eq!(
        builds_of(&outsider.get("/api/slaves").await.1),
        Vec::<i64>::new()
    );
    let r = farm
        .post(&format!("/api/builds/{}/cancel", b.id), json!({}))
        .await;
    assert_eq!(r.0, 200);
}
