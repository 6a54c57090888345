//! A running farm: the real `kiln-master` binary and real `kiln-slave` processes.

use crate::proc::{die_with_parent, Killed};
use crate::Postgres;
use anyhow::{bail, Context, Result};
use kiln_shared::api::{Artifact, Build, Project, Slave, SlaveCreated};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A test's own WebSocket to the master.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Clone)]
pub struct FarmOptions {
    pub heartbeat_secs: u32,
    pub lost_timeout_secs: u32,
    pub lost_retries: i32,
    /// Use the embedded PostgreSQL instead of the shared test cluster.
    pub embedded_db: bool,
    /// Use this database (a URL, e.g. one made with `Postgres::new_database` and filled by the
    /// test) instead of a new one in the shared test cluster.
    pub database_url: Option<String>,
    pub extra_master_toml: String,
    /// Serve HTTPS/WSS with a private CA made the way `kiln-master init --tls-self-signed`
    /// makes it (default); slaves get `--ca`, the test's clients trust it.
    pub tls: bool,
    /// Appended to the config after every section (`[auth]`, `[[auth.oidc]]`, ...).
    pub extra_toml: String,
    /// The master's listen address (default `127.0.0.1:0`); a test that must know its URL
    /// before start (`master.public_url` for sign-in providers) picks a port with
    /// [`crate::free_port`].
    pub listen: Option<String>,
}

impl Default for FarmOptions {
    fn default() -> Self {
        FarmOptions {
            heartbeat_secs: 1,
            lost_timeout_secs: 4,
            lost_retries: 1,
            embedded_db: false,
            database_url: None,
            extra_master_toml: String::new(),
            tls: true,
            extra_toml: String::new(),
            listen: None,
        }
    }
}

pub struct Farm {
    /// `https://127.0.0.1:PORT` (or `http://` without TLS).
    pub url: String,
    /// The private CA the master's certificate is signed by (`None`: plain HTTP).
    pub ca: Option<PathBuf>,
    pub token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// How often `wait_build` polls.
    pub poll: Duration,
    config: PathBuf,
    master: Option<Killed>,
    /// An in-process master (see `Farm::in_process`).
    pub server: Option<kiln_master::Server>,
    /// Lines the master printed (stdout and stderr), for failure messages.
    master_log: PathBuf,
}

fn spawn_master(config: &Path, listen: &str, log: &Path) -> Result<(Killed, String)> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut c = Command::new(crate::bin_dir().join("kiln-master"));
    c.arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(listen)
        .env(
            "KILN_LOG",
            "info,kiln_master=debug,sqlx=warn,tower_http=warn",
        )
        .stdout(Stdio::piped())
        .stderr(logf);
    die_with_parent(&mut c, libc::SIGKILL);
    let mut child = c.spawn().context("starting kiln-master")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut copy = std::fs::OpenOptions::new().append(true).open(log)?;
    std::thread::spawn(move || {
        // Everything it prints goes to its log too (tracing writes to stdout).
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(copy, "{line}");
            if let Some(addr) = line.strip_prefix("kiln-master ready on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let master = Killed(child);
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(url) => Ok((master, url)),
        Err(_) => bail!(
            "kiln-master did not become ready; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// A farm's data dir and config file: the admin token's hash, the options, a database of its own
/// in the shared test cluster (or none, for the embedded one).
fn write_config(
    o: &FarmOptions,
    extra: &str,
) -> (tempfile::TempDir, String, PathBuf, Option<PathBuf>) {
    let dir = crate::tempdir("kiln-farm-");
    let (tls, ca) = if o.tls {
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let made = kiln_master::tls::self_signed(&dir.path().join("tls"), &names)
            .expect("a private CA for the farm");
        (
            "\n[master.tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\n",
            Some(made.ca),
        )
    } else {
        ("", None)
    };
    let token = "kiln_a_test_admin_token".to_string();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    let db = match (&o.database_url, o.embedded_db) {
        (None, true) => String::new(),
        (Some(url), _) => format!("[database]\nurl = \"{url}\"\nmax_connections = 8\n"),
        (None, false) => format!(
            "[database]\nurl = \"{}\"\nmax_connections = 8\n",
            Postgres::shared().new_database()
        ),
    };
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[master]\nadmin_token_sha256 = \"{hash}\"\nheartbeat_secs = {}\nlost_timeout_secs = {}\nlost_retries = {}\n{extra}{}\n{tls}\n{db}\n{}\n",
            o.heartbeat_secs, o.lost_timeout_secs, o.lost_retries, o.extra_master_toml, o.extra_toml
        ),
    )
    .expect("writing the farm's config");
    (dir, token, config, ca)
}

/// An HTTP client that trusts the farm's CA (and nothing else).
pub fn client(ca: Option<&Path>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().tls_built_in_root_certs(false);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("the farm's CA");
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"));
    }
    b.build().expect("an HTTP client")
}

impl Farm {
    pub async fn start() -> Farm {
        Farm::with(FarmOptions::default()).await
    }

    pub async fn with(o: FarmOptions) -> Farm {
        let (dir, token, config, ca) = write_config(&o, "");
        let master_log = dir.path().join("master.log");
        let listen = o.listen.as_deref().unwrap_or("127.0.0.1:0");
        let (master, url) = spawn_master(&config, listen, &master_log).expect("master");
        Farm {
            url,
            http: client(ca.as_deref()),
            ca,
            token,
            dir,
            poll: Duration::from_millis(50),
            config,
            master: Some(master),
            server: None,
            master_log,
        }
    }

    /// A master running inside the test process, on the given clock, with only its dispatcher
    /// in the background: the test drives liveness, time-outs, the scheduler and retention at
    /// the times it sets (`kiln_master::liveness::sweep(farm.state())`, ...).
    pub async fn in_process(
        o: FarmOptions,
        clock: std::sync::Arc<dyn kiln_master::clock::Clock>,
    ) -> Farm {
        let (dir, token, config, ca) = write_config(&o, "timezone = \"UTC\"\n");
        let cfg = kiln_shared::config::Config::load(&config).expect("config");
        let (pool, _) = kiln_master::db::open(&cfg).await.expect("database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server =
            kiln_master::build_with(cfg, pool, listener, clock, kiln_master::Loops::DispatchOnly)
                .await
                .expect("master");
        Farm {
            url: server.url(),
            http: client(ca.as_deref()),
            ca,
            token,
            poll: Duration::from_millis(50),
            master_log: dir.path().join("master.log"),
            dir,
            config,
            master: None,
            server: Some(server),
        }
    }

    /// Stops the in-process master and starts a new one on the same address and database, on
    /// `clock` (set it later to simulate an outage).
    pub async fn restart_in_process(
        &mut self,
        clock: std::sync::Arc<dyn kiln_master::clock::Clock>,
    ) {
        let old = self.server.take().expect("an in-process farm");
        let addr = old.addr;
        old.shutdown().await.expect("stopping the master");
        let cfg = kiln_shared::config::Config::load(&self.config).expect("config");
        let (pool, _) = kiln_master::db::open(&cfg).await.expect("database");
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("same address");
        let server =
            kiln_master::build_with(cfg, pool, listener, clock, kiln_master::Loops::DispatchOnly)
                .await
                .expect("master");
        self.server = Some(server);
        self.http = client(self.ca.as_deref());
    }

    /// The in-process master's state.
    pub fn state(&self) -> &kiln_master::state::AppState {
        &self.server.as_ref().expect("an in-process farm").state
    }

    /// The name of the farm's database in the shared test cluster (`None`: embedded).
    /// The URL of the farm's database (`None`: the embedded one).
    pub fn database_url(&self) -> Option<String> {
        let cfg = std::fs::read_to_string(&self.config).ok()?;
        let url = cfg.lines().find_map(|l| l.strip_prefix("url = \""))?;
        Some(url.trim_end_matches('"').to_string())
    }

    pub fn database_name(&self) -> Option<String> {
        let cfg = std::fs::read_to_string(&self.config).ok()?;
        let url = cfg.lines().find_map(|l| l.strip_prefix("url = \""))?;
        let after = url.split_once("localhost/")?.1;
        Some(after.split(['?', '"']).next()?.to_string())
    }

    pub fn master_log(&self) -> String {
        std::fs::read_to_string(&self.master_log).unwrap_or_default()
    }

    /// Another master serving this farm: the same config (database, storage, keys), its own
    /// port and log (`master-{name}.log` in the farm's dir). Returns it and its URL.
    pub fn another_master(&self, name: &str) -> (Killed, String) {
        let log = self.dir.path().join(format!("master-{name}.log"));
        spawn_master(&self.config, "127.0.0.1:0", &log).expect("another master")
    }

    pub fn master_pid(&self) -> Option<i32> {
        self.master.as_ref().map(|m| m.pid())
    }

    /// SIGKILLs the master (its database stays).
    pub fn kill_master(&mut self) {
        if let Some(mut m) = self.master.take() {
            m.kill_and_wait();
        }
        // Pooled keep-alive connections died with it.
        self.http = client(self.ca.as_deref());
    }

    /// SIGTERMs the master and waits for it to exit; its exit status, or `None` if it is still
    /// running after `timeout` (it is then killed).
    pub async fn stop_master(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut m = self.master.take()?;
        m.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = m.0.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the master again on the same address.
    pub fn restart_master(&mut self) {
        self.kill_master();
        let listen = self.host_port();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match spawn_master(&self.config, &listen, &self.master_log) {
                Ok((m, _)) => {
                    self.master = Some(m);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restarting master: {e:#}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("master did not restart: {e:#}"),
            }
        }
    }

    /// `127.0.0.1:PORT` of the master.
    pub fn host_port(&self) -> String {
        self.url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string()
    }

    /// Opens one of the master's WebSockets as a hand-made client would: `path` (with any query),
    /// an optional bearer token, the given `x-kiln-protocol`, over the farm's TLS.
    pub async fn ws(
        &self,
        path: &str,
        bearer: Option<&str>,
        protocol: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        self.ws_at(&self.url, path, bearer, protocol).await
    }

    /// [`Farm::ws`] to the master at `url` (another master serving this farm).
    pub async fn ws_at(
        &self,
        url: &str,
        path: &str,
        bearer: Option<&str>,
        protocol: &str,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let base = url
            .replace("https://", "wss://")
            .replace("http://", "ws://");
        let mut req = format!("{base}{path}").into_client_request()?;
        if let Some(t) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req.headers_mut()
            .insert("x-kiln-protocol", protocol.parse().unwrap());
        let connector = self
            .tls_client_config()
            .map(tokio_tungstenite::Connector::Rustls);
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector)
            .await
            .map(|(ws, _)| ws)
    }

    /// `/ws/slave` with a slave's token, speaking this build's protocol version.
    pub async fn slave_ws(&self, token: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let version = kiln_shared::codec::PROTOCOL_VERSION.to_string();
        self.ws("/ws/slave", Some(token), &version).await
    }

    /// A rustls client context trusting the farm's CA, for the test's own WebSocket clients.
    /// The farm's config file (for running `kiln-master` subcommands against it).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn tls_client_config(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        use rustls_pki_types::pem::PemObject;
        let ca = self.ca.as_ref()?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("CA") {
            roots.add(c.expect("PEM")).expect("a usable CA");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(std::sync::Arc::new(config))
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.api(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET")
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = self.get_raw(path).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// POST returning (status, JSON body).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// PATCH returning (status, JSON body).
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    /// `method` with a JSON body as the admin, returning (status, JSON body or null).
    async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method.clone(), self.api(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let v = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    pub async fn project(&self, name: &str, url: &str, branch: &str) -> Project {
        let (s, v) = self
            .post(
                "/api/projects",
                json!({"name": name, "branch_url": url, "branch": branch}),
            )
            .await;
        assert_eq!(s, 201, "create project: {v}");
        serde_json::from_value(v).unwrap()
    }

    pub async fn request_build(&self, project: &str, body: Value) -> Build {
        let (s, v) = self
            .post(&format!("/api/projects/{project}/builds"), body)
            .await;
        assert_eq!(s, 201, "request build: {v}");
        serde_json::from_value(v).unwrap()
    }

    pub async fn build(&self, id: kiln_shared::BuildId) -> Build {
        self.get(&format!("/api/builds/{id}")).await
    }

    /// Polls until the build satisfies `pred`; panics with the build, its log and the master's
    /// log after `timeout`.
    pub async fn wait_build(
        &self,
        id: kiln_shared::BuildId,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Build) -> bool,
    ) -> Build {
        let deadline = Instant::now() + timeout;
        loop {
            let b = self.build(id).await;
            if pred(&b) {
                return b;
            }
            if Instant::now() > deadline {
                panic!(
                    "build {id} never became {what} within {timeout:?}: {b:?}\n--- build log:\n{}\n--- master log (tail):\n{}",
                    self.log(id).await,
                    tail(&self.master_log(), 60)
                );
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    pub async fn wait_ended(&self, id: kiln_shared::BuildId, timeout: Duration) -> Build {
        self.wait_build(id, timeout, "ended", |b| b.state.is_terminal())
            .await
    }

    pub async fn log(&self, id: kiln_shared::BuildId) -> String {
        self.get_raw(&format!("/api/builds/{id}/log"))
            .await
            .text()
            .await
            .unwrap_or_default()
    }

    /// The build of a `Repo::numbered_branch` has every line once, in order, and its artifact.
    pub async fn assert_numbered(&self, id: kiln_shared::BuildId, lines: u32) {
        let log = self.log(id).await;
        let got: Vec<&str> = log.lines().filter(|l| l.starts_with("n=")).collect();
        let want: Vec<String> = (1..=lines).map(|i| format!("n={i}")).collect();
        assert_eq!(got, want, "every line once, in order");
        assert_eq!(self.download(id, "out").await, b"done\n");
    }

    pub async fn artifacts(&self, id: kiln_shared::BuildId) -> Vec<Artifact> {
        self.get(&format!("/api/builds/{id}/artifacts")).await
    }

    /// The names of a build's artifacts, as the API lists them.
    pub async fn artifact_names(&self, id: kiln_shared::BuildId) -> Vec<String> {
        self.artifacts(id)
            .await
            .into_iter()
            .map(|a| a.name)
            .collect()
    }

    pub async fn download(&self, id: kiln_shared::BuildId, name: &str) -> Vec<u8> {
        let r = self
            .get_raw(&format!("/api/builds/{id}/artifacts/{name}"))
            .await;
        assert!(r.status().is_success(), "download {name}: {}", r.status());
        r.bytes().await.unwrap().to_vec()
    }

    /// Registers a slave; returns its token.
    pub async fn register_slave(&self, name: &str) -> String {
        self.register_slave_tagged(name, &[]).await
    }

    /// Registers a slave with the tags an admin approves for it; returns its token.
    pub async fn register_slave_tagged(&self, name: &str, tags: &[&str]) -> String {
        let (s, v) = self
            .post("/api/slaves", json!({"name": name, "tags": tags}))
            .await;
        assert_eq!(s, 201, "register slave: {v}");
        serde_json::from_value::<SlaveCreated>(v).unwrap().token
    }

    /// Registers and starts a real `kiln-slave`, and waits until the master sees it online.
    pub async fn slave(&self, name: &str) -> SlaveProc {
        self.slave_with(name, &[]).await
    }

    pub async fn slave_with(&self, name: &str, extra: &[&str]) -> SlaveProc {
        self.slave_through(name, &self.url.clone(), extra).await
    }

    /// A slave that reaches the master at `master` (a [`crate::Proxy`], say).
    /// The tags it declares (`--tags`) are the ones the admin approved at registration.
    pub async fn slave_through(&self, name: &str, master: &str, extra: &[&str]) -> SlaveProc {
        let tags: Vec<&str> = extra
            .iter()
            .position(|f| *f == "--tags")
            .and_then(|i| extra.get(i + 1))
            .map(|t| t.split(',').collect())
            .unwrap_or_default();
        let token = self.register_slave_tagged(name, &tags).await;
        let work = self.dir.path().join(format!("slave-{name}"));
        let mut s = SlaveProc {
            name: name.into(),
            token,
            work,
            master: master.to_string(),
            ca: self.ca.clone(),
            envs: vec![],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: self.dir.path().join(format!("slave-{name}.log")),
            exe: crate::bin_dir().join("kiln-slave"),
            proc: None,
        };
        s.start();
        self.wait_slave_online(name, true).await;
        s
    }

    pub async fn slaves(&self) -> Vec<Slave> {
        self.get("/api/slaves").await
    }

    pub async fn wait_slave_online(&self, name: &str, online: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .slaves()
                .await
                .iter()
                .any(|s| s.name == name && s.online == online)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slave {name} never became online={online}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub struct SlaveProc {
    pub name: String,
    pub token: String,
    pub work: PathBuf,
    master: String,
    /// Given as `--ca` (the farm's private CA).
    pub ca: Option<PathBuf>,
    /// More flags for the daemon.
    pub extra: Vec<String>,
    /// More environment variables for the daemon.
    pub envs: Vec<(String, String)>,
    pub log: PathBuf,
    /// The kiln-slave binary to run (tests swap it to simulate an upgrade).
    pub exe: PathBuf,
    proc: Option<Killed>,
}

impl SlaveProc {
    pub fn start(&mut self) {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        // The token lives where `kiln-slave register` keeps it, never on the command line.
        std::fs::create_dir_all(&self.work).unwrap();
        let token_file = self.work.join("slave.token");
        if !token_file.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&token_file)
                .unwrap();
            writeln!(f, "{}", self.token).unwrap();
        }
        let mut c = Command::new(&self.exe);
        c.args(["--master", &self.master, "--name", &self.name])
            .arg("--work-dir")
            .arg(&self.work)
            .args(
                self.ca
                    .iter()
                    .flat_map(|ca| [std::ffi::OsStr::new("--ca"), ca.as_os_str()]),
            )
            .args(&self.extra)
            .env("KILN_LOG", "info,kiln_slave=debug")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        die_with_parent(&mut c, libc::SIGKILL);
        self.proc = Some(Killed(c.spawn().expect("kiln-slave")));
    }

    pub fn pid(&self) -> Option<i32> {
        self.proc.as_ref().map(|p| p.pid())
    }

    pub fn signal(&self, sig: i32) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    /// Waits for the daemon to exit by itself; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let p = self.proc.as_mut()?;
        loop {
            if let Ok(Some(s)) = p.0.try_wait() {
                self.proc = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_and_wait();
        }
    }

    /// SIGTERMs the daemon (builds it runs carry on, to be re-adopted).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGTERM);
            let _ = p.0.wait();
        }
    }

    /// Pids of build runners working in this slave's work dir (they outlive the daemon).
    pub fn runner_pids(&self) -> Vec<i32> {
        crate::processes_with(&format!("run-build --dir {}", self.work.display()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon's log says `needle` (an event only the slave sees).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "slave {} never logged '{needle}' within {timeout:?}:\n{}",
                self.name,
                tail(&self.log_text(), 40)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SlaveProc {
    fn drop(&mut self) {
        self.kill9();
        // Build runners are detached on purpose; a test must not leave them behind. A runner is
        // PID 1 of its sandbox, a child of the sandbox's first process, which leads the
        // build's session and process group: that group is killed (the runner's own pid leads
        // no group).
        for pid in self.runner_pids() {
            // SAFETY: plain system calls on processes this slave started.
            unsafe {
                let group = libc::getpgid(pid);
                if group > 1 && group != libc::getpgrp() {
                    libc::kill(-group, libc::SIGKILL);
                }
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The hello of a hand-driven slave in protocol tests: amd64, the script backend, capacity 1,
/// holding nothing.
pub fn test_hello(name: &str) -> kiln_shared::frames::Hello {
    kiln_shared::frames::Hello {
        name: name.into(),
        arch: "amd64".into(),
        tags: vec![],
        backends: vec!["script".into()],
        capacity: 1,
        version: "test".into(),
        builds: vec![],
        emulates: vec![],
        capabilities: Default::default(),
    }
}
