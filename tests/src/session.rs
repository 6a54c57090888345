//! A person signed in to a farm the way the console is: a cookie jar holding the session cookie,
//! the session's CSRF token sent as `X-CSRF-Token`, and the farm's own `Origin` on every
//! request, as a browser would send them.

use crate::Farm;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub struct Session {
    pub http: reqwest::Client,
    pub jar: std::sync::Arc<reqwest::cookie::Jar>,
    pub base: String,
    pub csrf: String,
    pub username: String,
}

/// A client with a cookie jar that trusts the farm's CA and follows no redirects.
pub fn browser_client(farm: &Farm) -> reqwest::Client {
    browser_client_with(farm, std::sync::Arc::default())
}

pub fn browser_client_with(
    farm: &Farm,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .cookie_provider(jar)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &farm.ca {
        let pem = std::fs::read(ca).expect("the farm's CA");
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"));
    }
    b.build().expect("an HTTP client")
}

impl Session {
    /// Signs in with a local account through `POST /auth/local/login`; panics if refused.
    pub async fn login(farm: &Farm, username: &str, password: &str) -> Session {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let http = browser_client_with(farm, jar.clone());
        let r = http
            .post(farm.api("/auth/local/login"))
            .header("origin", &farm.url)
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("login request");
        let status = r.status();
        let text = r.text().await.expect("login answer");
        let me: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("signing in as {username}: {status} {text}"));
        assert_eq!(status, StatusCode::OK, "signing in as {username}: {me}");
        Session {
            http,
            jar,
            base: farm.url.clone(),
            csrf: me["csrf_token"].as_str().expect("csrf_token").to_string(),
            username: username.to_string(),
        }
    }

    /// A request as the console makes it (CSRF token and Origin on everything).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .header("origin", &self.base)
    }

    /// The `Cookie` header the browser would send to the farm.
    pub fn cookie_header(&self) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let url: reqwest::Url = self.base.parse().expect("the farm's URL");
        self.jar
            .cookies(&url)
            .and_then(|v| v.to_str().ok().map(str::to_string))
    }

    /// Opens the console's WebSocket as the browser would: the cookie and `origin`.
    pub async fn console(
        &self,
        farm: &Farm,
        origin: &str,
    ) -> Result<crate::farm::Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let base = self
            .base
            .replace("https://", "wss://")
            .replace("http://", "ws://");
        let mut req = format!("{base}/ws/console").into_client_request()?;
        if let Some(c) = self.cookie_header() {
            req.headers_mut().insert("cookie", c.parse().unwrap());
        }
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let connector = farm
            .tls_client_config()
            .map(tokio_tungstenite::Connector::Rustls);
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector)
            .await
            .map(|(ws, _)| ws)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .request(Method::GET, path)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Farm {
    /// Creates a local account with the admin token (and puts it in `team` with `role`, when
    /// given); returns its password.
    pub async fn add_user(&self, name: &str, admin: bool, team: Option<(&str, &str)>) -> String {
        let password = format!("{name}-password-123");
        let (status, v) = self
            .post(
                "/api/users",
                json!({ "username": name, "password": password, "admin": admin }),
            )
            .await;
        assert_eq!(status, 201, "creating user {name}: {v}");
        if let Some((team, role)) = team {
            let r = self
                .http
                .put(self.api(&format!("/api/teams/{team}/members/{name}")))
                .bearer_auth(&self.token)
                .json(&json!({ "role": role }))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 200, "adding {name} to {team}");
        }
        password
    }

    /// Creates a team with the admin token.
    pub async fn add_team(&self, name: &str) {
        let (status, v) = self.post("/api/teams", json!({ "name": name })).await;
        assert_eq!(status, 201, "creating team {name}: {v}");
    }
}

/// Sends `req` on a console socket.
pub async fn console_send(ws: &mut crate::farm::Ws, req: &kiln_shared::frames::ConsoleRequest) {
    use futures_util::SinkExt;
    let bytes = kiln_shared::codec::encode(req).expect("encode");
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        bytes.into(),
    ))
    .await
    .expect("send");
}

/// The next event on a console socket (`None`: closed), within 30 s.
pub async fn console_next(ws: &mut crate::farm::Ws) -> Option<kiln_shared::frames::ConsoleEvent> {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
            .await
            .expect("a console event within 30 s");
        match msg {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                return Some(kiln_shared::codec::decode(&b).expect("a console event"))
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None | Some(Err(_)) => {
                return None
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// The builds in the console's queue snapshot as `session` gets it. The end of the snapshot is
/// marked by the answer to a request about `marker` (a build the session may see) sent after it
/// (answers come in order).
pub async fn console_snapshot(
    farm: &Farm,
    session: &Session,
    marker: kiln_shared::BuildId,
) -> Vec<kiln_shared::BuildId> {
    let mut ws = session
        .console(farm, &session.base)
        .await
        .expect("console socket");
    snapshot_on(&mut ws, marker).await
}

/// The builds in the queue snapshot a console socket `ws` gets (in the order sent), its end
/// marked as [`console_snapshot`]'s is.
pub async fn snapshot_on(
    ws: &mut crate::farm::Ws,
    marker: kiln_shared::BuildId,
) -> Vec<kiln_shared::BuildId> {
    use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
    console_send(ws, &ConsoleRequest::SubscribeQueue).await;
    console_send(
        ws,
        &ConsoleRequest::EarlierLog {
            build: marker,
            before_seq: 0,
            lines: 1,
        },
    )
    .await;
    let mut out = vec![];
    loop {
        match console_next(ws).await {
            Some(ConsoleEvent::Build(b)) => out.push(b.id),
            Some(ConsoleEvent::EarlierLines { build, .. }) if build == marker => return out,
            Some(_) => {}
            None => panic!("the console closed before its snapshot ended"),
        }
    }
}
