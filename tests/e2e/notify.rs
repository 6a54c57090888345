//! Notifications end to end (`docs/notifications.md`): the real master mails a real SMTP server on
//! loopback (Debian's python3-aiosmtpd, `tests/support/smtp_sink.py`, which writes every message
//! it accepts to a directory) and posts to a webhook receiver running in the test; builds are real
//! `script` builds of a git branch on a real slave. Every wait polls for the awaited fact (a mail
//! in the directory, a delivery's state through the API) with a deadline; the exact counts are
//! checked once the master says everything was delivered.

use hmac::{Hmac, Mac};
use kiln_shared::api::Build;
use kiln_shared::notify::{Delivery, Subscription};
use kiln_shared::BuildState;
use kiln_tests::farm::tail;
use kiln_tests::proc::{Killed, Service};
use kiln_tests::{free_port, Farm, FarmOptions, GitServer, Repo};
use mail_parser::MimeHeaders;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `master.public_url` of every farm here: links in mails start with it, and the Message-ID's
/// domain is its host. (Nothing needs to answer there: the tests use the API with the admin
/// token, and the unsubscribe call needs no sign-in.)
const PUBLIC_URL: &str = "https://kiln.example.org";
const PUBLIC_HOST: &str = "kiln.example.org";

/// A build that fails, printing a line with characters HTML must escape.
const FAILING: &str = "echo 'widget <exploded> at step 7 & stopped'\nexit 3";
const FAILING_LINE: &str = "widget <exploded> at step 7 & stopped";
const SUCCEEDING: &str = "echo 'all good'\necho ok > \"$KILN_OUTPUT_DIR/ok\"";

const WAIT: Duration = Duration::from_secs(60);

// ---- the SMTP server --------------------------------------------------------------------------

/// `tests/support/smtp_sink.py` on a port chosen before it starts (the master's config names it,
/// and some tests start the server only after the master tried it).
struct SmtpSink {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Killed>,
    _tmp: tempfile::TempDir,
}

fn python() -> &'static str {
    // Debian's, which has python3-aiosmtpd (a pyenv python3 first on PATH would not).
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl SmtpSink {
    /// Picks the port; nothing listens on it until [`SmtpSink::start`].
    fn new() -> SmtpSink {
        let tmp = kiln_tests::tempdir("kiln-smtp-");
        let dir = tmp.path().join("mail");
        std::fs::create_dir_all(&dir).unwrap();
        SmtpSink {
            port: free_port(),
            log: tmp.path().join("smtp.log"),
            dir,
            child: None,
            _tmp: tmp,
        }
    }

    /// Starts the server and waits until it listens.
    fn start(&mut self) {
        assert!(self.child.is_none(), "the SMTP server already runs");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/smtp_sink.py");
        // The mail server's log says when python3-aiosmtpd is missing
        // (scripts/install-deps.sh installs it).
        let (child, ()) = Service {
            name: "smtp_sink.py",
            log: &self.log,
            timeout: Duration::from_secs(20),
            attempts: 3,
        }
        .start(
            || {
                let mut c = Command::new(python());
                c.arg(&script)
                    .arg(self.port.to_string())
                    .arg(&self.dir)
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                c
            },
            |line| (line.trim() == "ready").then_some(()),
        );
        self.child = Some(child);
    }

    /// The messages received so far, in the order they arrived.
    fn mails(&self) -> Vec<Mail> {
        let mut ns: Vec<usize> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".eml")?
                    .parse::<usize>()
                    .ok()
            })
            .collect();
        ns.sort();
        ns.into_iter().map(|n| Mail::read(&self.dir, n)).collect()
    }

    fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
            .count()
    }

    /// Waits until at least `n` messages arrived; all of them.
    async fn wait_count(&self, farm: &Farm, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + WAIT;
        while self.count() < n {
            if Instant::now() > deadline {
                panic!(
                    "{} mail(s) after {WAIT:?}, wanted {n}\n--- SMTP server's log:\n{}\n--- master log (tail):\n{}",
                    self.count(),
                    tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30),
                    tail(&farm.master_log(), 80)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.mails()
    }

    /// Checks that the count stays `n` for a while (after the master said all were delivered:
    /// nothing more may come).
    async fn stays(&self, n: usize, what: &str) -> Vec<Mail> {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let mails = self.mails();
            assert_eq!(
                mails.len(),
                n,
                "{what}: exactly {n} mail(s); got:\n{}",
                mails
                    .iter()
                    .map(Mail::summary)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.mails()
    }
}

/// One received message, parsed (headers decoded, quoted-printable/base64 bodies decoded).
#[derive(Clone, Debug)]
struct Mail {
    n: usize,
    raw: String,
    /// The envelope's RCPT TO.
    rcpt: Vec<String>,
    mail_from: String,
    headers: Vec<(String, String)>,
    subject: String,
    message_id: String,
    to: Vec<String>,
    from: Vec<String>,
    /// `multipart/alternative` and the like.
    content_type: String,
    text: String,
    html: String,
}

impl Mail {
    fn read(dir: &Path, n: usize) -> Mail {
        let bytes = std::fs::read(dir.join(format!("{n}.eml"))).expect("a mail");
        let env: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{n}.json"))).expect("its envelope"),
        )
        .expect("envelope JSON");
        let raw = String::from_utf8_lossy(&bytes).to_string();
        let msg = mail_parser::MessageParser::default()
            .parse(&bytes)
            .unwrap_or_else(|| panic!("mail {n} does not parse:\n{raw}"));
        let unfold = |s: &str| {
            s.replace("\r\n", "\n")
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
                .trim()
                .to_string()
        };
        let headers = msg
            .headers_raw()
            .map(|(k, v)| (k.to_string(), unfold(v)))
            .collect();
        let addrs = |a: Option<&mail_parser::Address>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|x| x.address().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
        };
        let part_text = |t: &str, s: &str| -> String {
            msg.parts
                .iter()
                .filter(|p| p.is_content_type(t, s))
                .filter_map(|p| p.text_contents().map(str::to_string))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let ct = msg
            .root_part()
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
            .unwrap_or_default()
            .to_ascii_lowercase();
        Mail {
            n,
            rcpt: env["rcpt_tos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
            mail_from: env["mail_from"].as_str().unwrap_or("").to_string(),
            headers,
            subject: msg.subject().unwrap_or("").to_string(),
            message_id: msg.message_id().unwrap_or("").to_string(),
            to: addrs(msg.to()),
            from: addrs(msg.from()),
            content_type: ct,
            text: part_text("text", "plain"),
            html: part_text("text", "html"),
            raw,
        }
    }

    /// The (unfolded) value of a header, by name in any case.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn summary(&self) -> String {
        format!(
            "#{} to {:?} [{}] {:?} build {:?}",
            self.n,
            self.rcpt,
            self.message_id,
            self.subject,
            self.header("X-Kiln-Build")
        )
    }

    /// The unsubscribe token from `List-Unsubscribe` (`<{public_url}/unsubscribe#TOKEN>`).
    fn unsubscribe_token(&self) -> String {
        let h = self
            .header("List-Unsubscribe")
            .unwrap_or_else(|| panic!("no List-Unsubscribe in:\n{}", self.raw));
        let prefix = format!("{PUBLIC_URL}/unsubscribe#");
        let at = h
            .find(&prefix)
            .unwrap_or_else(|| panic!("List-Unsubscribe {h:?} has no {prefix}"));
        h[at + prefix.len()..]
            .split(['>', ',', ' '])
            .next()
            .unwrap()
            .to_string()
    }
}

// ---- the farm ---------------------------------------------------------------------------------

fn notify_toml(smtp_port: Option<u16>) -> String {
    let mut t = "[notify]\nretry_first_ms = 200\nretry_max_delay_secs = 1\n\
                 webhook_allow = [\"127.0.0.1/32\"]\n"
        .to_string();
    if let Some(port) = smtp_port {
        t.push_str(&format!(
            "\n[notify.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"kiln@example.org\"\n"
        ));
    }
    t
}

/// A farm that mails `127.0.0.1:smtp_port` (if given) and may post webhooks to loopback.
async fn notify_farm(smtp_port: Option<u16>) -> Farm {
    Farm::with(FarmOptions {
        extra_master_toml: format!("public_url = \"{PUBLIC_URL}\"\n"),
        extra_toml: notify_toml(smtp_port),
        ..Default::default()
    })
    .await
}

/// Any request with the admin token: (status, JSON body or Null).
pub(crate) async fn call(
    farm: &Farm,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = farm
        .http
        .request(method, farm.api(path))
        .bearer_auth(&farm.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `POST {owner}/subscriptions` (owner: `/api/projects/x` or `/api/teams/t`), which must answer
/// 201 with the subscription.
pub(crate) async fn subscribe(farm: &Farm, owner: &str, body: Value) -> Subscription {
    let (s, v) = call(
        farm,
        Method::POST,
        &format!("{owner}/subscriptions"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 201, "subscribing {body}: {v}");
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("a subscription: {e}: {v}"))
}

async fn deliveries(farm: &Farm, owner: &str, sub: i64) -> Vec<Delivery> {
    farm.get(&format!("{owner}/subscriptions/{sub}/deliveries"))
        .await
}

/// Polls a subscription's deliveries until `pred` holds; panics with them and the master's log.
pub(crate) async fn wait_deliveries(
    farm: &Farm,
    owner: &str,
    sub: i64,
    what: &str,
    pred: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = deliveries(farm, owner, sub).await;
        if pred(&d) {
            return d;
        }
        if Instant::now() > deadline {
            panic!(
                "subscription {sub}'s deliveries never became {what} within {WAIT:?}:\n{d:#?}\n--- master log (tail):\n{}",
                tail(&farm.master_log(), 80)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Commits `script` as the branch's build, builds it (`body`: `{}` or `{"release": ...}`) and
/// waits for it to end in `want`.
async fn build(
    farm: &Farm,
    repo: &Repo,
    project: &str,
    script: &str,
    body: Value,
    want: BuildState,
) -> Build {
    repo.script_branch("main", script);
    let b = farm.request_build(project, body).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(
        b.state,
        want,
        "build {} of {project}: {:?}\n{}",
        b.id,
        b.reason,
        farm.log(b.id).await
    );
    b
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

pub(crate) fn delivered(d: &[Delivery], n: usize) -> bool {
    d.len() == n && d.iter().all(|d| d.state == "delivered")
}

/// The delivery about `build`.
fn about(d: &[Delivery], build: &Build) -> Delivery {
    d.iter()
        .find(|d| d.build == Some(build.id))
        .unwrap_or_else(|| panic!("no delivery about build {}: {d:#?}", build.id))
        .clone()
}

/// The mail about `build`.
fn mail_about(mails: &[Mail], build: &Build) -> Mail {
    let id = build.id.to_string();
    let found: Vec<&Mail> = mails
        .iter()
        .filter(|m| m.header("X-Kiln-Build") == Some(id.as_str()))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one mail about build {id}: {:?}",
        mails.iter().map(Mail::summary).collect::<Vec<_>>()
    );
    found[0].clone()
}

/// What every mail about a build carries (`docs/notifications.md`, "Mail"), worded by the
/// built-in templates.
fn check_mail(m: &Mail, to: &str, event: &str, project: &str, b: &Build, d: &Delivery) {
    check_mail_with(m, to, event, project, b, d, true)
}

/// `text_links_unsubscribe`: the body carries the unsubscribe link (the built-in templates'
/// footer; a maintainer's template need not use `unsubscribe_url`, the header is there anyway).
fn check_mail_with(
    m: &Mail,
    to: &str,
    event: &str,
    project: &str,
    b: &Build,
    d: &Delivery,
    text_links_unsubscribe: bool,
) {
    let ctx = format!("mail #{} ({event}):\n{}", m.n, m.raw);
    assert_eq!(m.rcpt, [to], "envelope recipient; {ctx}");
    assert_eq!(m.to, [to], "To; {ctx}");
    assert_eq!(m.from, ["kiln@example.org"], "From; {ctx}");
    assert_eq!(m.mail_from, "kiln@example.org", "envelope sender; {ctx}");
    assert_eq!(
        m.message_id,
        format!("kiln.notification.{}@{PUBLIC_HOST}", d.id),
        "Message-ID from the delivery's row and public_url's host; {ctx}"
    );
    assert!(
        m.header("List-Unsubscribe")
            .is_some_and(|h| h.contains(&format!("{PUBLIC_URL}/unsubscribe#"))),
        "List-Unsubscribe; {ctx}"
    );
    assert_eq!(
        m.header("Auto-Submitted"),
        Some("auto-generated"),
        "Auto-Submitted; {ctx}"
    );
    assert_eq!(m.header("X-Kiln-Event"), Some(event), "X-Kiln-Event; {ctx}");
    assert_eq!(
        m.header("X-Kiln-Project"),
        Some(project),
        "X-Kiln-Project; {ctx}"
    );
    assert_eq!(
        m.header("X-Kiln-Build"),
        Some(b.id.to_string().as_str()),
        "X-Kiln-Build; {ctx}"
    );
    // Plain text with an HTML alternative made from it.
    assert_eq!(
        m.content_type, "multipart/alternative",
        "a text body and an HTML alternative; {ctx}"
    );
    assert!(!m.text.is_empty(), "a text/plain part; {ctx}");
    assert!(!m.html.is_empty(), "a text/html part; {ctx}");
    let url = format!("{PUBLIC_URL}/builds/{}", b.id);
    assert!(
        m.text.contains(&url),
        "the build's URL {url} in the text; {ctx}"
    );
    assert!(
        m.html.contains(&format!("href=\"{url}\"")),
        "the build's URL as a link in the HTML; {ctx}"
    );
    if text_links_unsubscribe {
        assert!(
            m.text.contains(&format!("{PUBLIC_URL}/unsubscribe#")),
            "the unsubscribe link in the text; {ctx}"
        );
    }
    assert!(
        format!("{} {}", m.subject, m.text).contains(project),
        "the project's name; {ctx}"
    );
}

/// Every delivery fact of a mail that went out at once.
fn check_delivery(d: &Delivery, sub: &Subscription, to: &str, event: &str, b: &Build) {
    assert_eq!(d.subscription, Some(sub.id), "{d:?}");
    assert_eq!(d.build, Some(b.id), "{d:?}");
    assert_eq!(d.event, event, "{d:?}");
    assert_eq!(d.kind, "email", "{d:?}");
    assert_eq!(d.recipient, to, "{d:?}");
    assert_eq!(d.state, "delivered", "{d:?}");
    assert!(d.delivered_at.is_some(), "{d:?}");
    assert!(d.last_attempt_at.is_some(), "{d:?}");
    assert_eq!(d.response_code, Some(250), "the SMTP server's reply: {d:?}");
    assert_eq!(d.redelivery_of, None, "{d:?}");
}

// ---- mail -------------------------------------------------------------------------------------

/// A failure, the build that fixes it, and a release: one mail each, saying so, with the
/// documented headers, the build's link under `public_url`, the failure's log and an HTML
/// alternative.
#[tokio::test]
async fn mails_say_failed_fixed_and_release() {
    let git = GitServer::start();
    let repo = git.repo("mailed");
    repo.script_branch("main", FAILING);
    let mut sink = SmtpSink::new();
    sink.start();
    let farm = notify_farm(Some(sink.port)).await;
    let _slave = farm.slave("s").await;
    farm.project("board", &repo.url, "main").await;
    let owner = "/api/projects/board";
    let to = "team@example.org";
    let sub = subscribe(
        &farm,
        owner,
        json!({"email": to, "events": ["failed", "fixed", "release"]}),
    )
    .await;
    assert_eq!(sub.project.as_deref(), Some("board"));
    assert_eq!(sub.team, None);
    assert_eq!(sub.email.as_deref(), Some(to));
    assert_eq!(sorted(&sub.events), ["failed", "fixed", "release"]);
    assert_eq!(
        sorted(&sub.triggers),
        ["manual", "release", "schedule"],
        "all triggers when absent"
    );
    let listed: Vec<Subscription> = farm.get(&format!("{owner}/subscriptions")).await;
    assert_eq!(listed, std::slice::from_ref(&sub));

    let failed = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    sink.wait_count(&farm, 1).await;
    let fixed = build(
        &farm,
        &repo,
        "board",
        SUCCEEDING,
        json!({}),
        BuildState::Succeeded,
    )
    .await;
    sink.wait_count(&farm, 2).await;
    let release = build(
        &farm,
        &repo,
        "board",
        SUCCEEDING,
        json!({"release": "v1.0"}),
        BuildState::Succeeded,
    )
    .await;
    assert_eq!(release.trigger, "release");
    sink.wait_count(&farm, 3).await;
    let ds = wait_deliveries(&farm, owner, sub.id, "3 delivered", |d| delivered(d, 3)).await;
    assert!(
        ds.windows(2).all(|w| w[0].id > w[1].id),
        "newest first: {ds:#?}"
    );
    let mails = sink.stays(3, "failed, fixed, release").await;

    for (b, event) in [
        (&failed, "failed"),
        (&fixed, "fixed"),
        (&release, "release"),
    ] {
        let m = mail_about(&mails, b);
        let d = about(&ds, b);
        check_delivery(&d, &sub, to, event, b);
        assert_eq!(d.attempts, 1, "the server was up: {d:?}");
        check_mail(&m, to, event, "board", b, &d);
        assert!(
            m.subject.to_lowercase().contains(event),
            "the subject says {event}: {:?}",
            m.subject
        );
    }
    let m = mail_about(&mails, &failed);
    assert!(
        m.text.contains(FAILING_LINE),
        "the failure's log in the text:\n{}",
        m.text
    );
    assert!(
        m.html
            .contains("widget &lt;exploded&gt; at step 7 &amp; stopped"),
        "the log escaped in the HTML:\n{}",
        m.html
    );
    assert!(
        !m.html.contains("<exploded>"),
        "nothing of the log is markup in the HTML:\n{}",
        m.html
    );
    let m = mail_about(&mails, &release);
    assert!(
        format!("{} {}", m.subject, m.text).contains("v1.0"),
        "the release mail names the release:\n{}",
        m.raw
    );
    // Three different messages.
    let mut ids: Vec<&str> = mails.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

/// Failures while the SMTP server is down stay pending (tried, with the error), then go out once
/// each when it is up.
#[tokio::test]
async fn mail_waits_for_the_smtp_server_and_goes_out_once() {
    let git = GitServer::start();
    let repo = git.repo("down");
    repo.script_branch("main", FAILING);
    let mut sink = SmtpSink::new();
    let farm = notify_farm(Some(sink.port)).await;
    let _slave = farm.slave("s").await;
    farm.project("board", &repo.url, "main").await;
    let owner = "/api/projects/board";
    let to = "team@example.org";
    let sub = subscribe(&farm, owner, json!({"email": to, "events": ["failed"]})).await;
    let one = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    let two = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    let pending = wait_deliveries(&farm, owner, sub.id, "pending, tried twice", |d| {
        d.len() == 2
            && d.iter().all(|d| {
                d.state == "pending"
                    && d.attempts >= 2
                    && d.last_error.as_deref().is_some_and(|e| !e.is_empty())
                    && d.next_attempt_at.is_some()
                    && d.delivered_at.is_none()
            })
    })
    .await;
    assert_eq!(sink.count(), 0);

    sink.start();
    let ds = wait_deliveries(&farm, owner, sub.id, "2 delivered", |d| delivered(d, 2)).await;
    let mails = sink.stays(2, "each failure once").await;
    for b in [&one, &two] {
        let d = about(&ds, b);
        check_delivery(&d, &sub, to, "failed", b);
        assert!(
            d.attempts > about(&pending, b).attempts,
            "tried again until it worked: {d:?}"
        );
        check_mail(&mail_about(&mails, b), to, "failed", "board", b, &d);
    }
}

/// The master is SIGKILLed while mails wait for the SMTP server; after its restart each goes out
/// exactly once.
#[tokio::test]
async fn pending_mail_survives_a_killed_master_and_goes_out_once() {
    let git = GitServer::start();
    let repo = git.repo("killed");
    repo.script_branch("main", FAILING);
    let mut sink = SmtpSink::new();
    let mut farm = notify_farm(Some(sink.port)).await;
    let _slave = farm.slave("s").await;
    farm.project("board", &repo.url, "main").await;
    let owner = "/api/projects/board";
    let to = "team@example.org";
    let sub = subscribe(&farm, owner, json!({"email": to, "events": ["failed"]})).await;
    let one = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    let two = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    wait_deliveries(&farm, owner, sub.id, "pending, tried", |d| {
        d.len() == 2
            && d.iter()
                .all(|d| d.state == "pending" && d.attempts >= 1 && d.last_error.is_some())
    })
    .await;
    let before = farm.master_pid();
    farm.kill_master();
    sink.start();
    assert_eq!(sink.count(), 0, "nothing was sent before the restart");
    farm.restart_master();
    assert_ne!(farm.master_pid(), before);
    let ds = wait_deliveries(&farm, owner, sub.id, "2 delivered", |d| delivered(d, 2)).await;
    let mails = sink.stays(2, "each failure once after the restart").await;
    for b in [&one, &two] {
        let d = about(&ds, b);
        check_delivery(&d, &sub, to, "failed", b);
        check_mail(&mail_about(&mails, b), to, "failed", "board", b, &d);
    }
}

// ---- webhooks ---------------------------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Hooked {
    at: Instant,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) seen: Arc<Mutex<Vec<Hooked>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A webhook receiver on loopback that answers 500 to the first `fail_first` requests, then 200.
pub(crate) async fn receiver(fail_first: usize) -> Receiver {
    let seen: Arc<Mutex<Vec<Hooked>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let s = s.clone();
                async move {
                    let mut seen = s.lock().unwrap();
                    seen.push(Hooked {
                        at: Instant::now(),
                        headers,
                        body: body.to_vec(),
                    });
                    if seen.len() <= fail_first {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "not now")
                    } else {
                        (axum::http::StatusCode::OK, "thanks")
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Receiver { url, seen, task }
}

/// What a receiver does: HMAC-SHA256 of the raw body with the shared secret, `sha256=<hex>`,
/// compared in constant time.
fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// A receiver that fails twice gets the delivery on the third attempt; every attempt is signed
/// with the subscription's secret over the exact body, which carries the documented fields.
#[tokio::test]
async fn webhook_is_retried_until_2xx_and_signed() {
    let git = GitServer::start();
    let repo = git.repo("hooked");
    repo.script_branch("main", FAILING);
    let hook = receiver(2).await;
    let farm = notify_farm(None).await;
    let _slave = farm.slave("s").await;
    farm.project("board", &repo.url, "main").await;
    let owner = "/api/projects/board";
    let secret = "a shared secret";
    let (s, v) = call(
        &farm,
        Method::POST,
        &format!("{owner}/subscriptions"),
        Some(json!({"webhook": hook.url, "secret": secret, "events": ["failed"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        !v.to_string().contains(secret),
        "the secret is never shown again: {v}"
    );
    let sub: Subscription = serde_json::from_value(v).unwrap();
    assert_eq!(sub.webhook.as_deref(), Some(hook.url.as_str()));
    let listed: Value = farm.get(&format!("{owner}/subscriptions")).await;
    assert!(!listed.to_string().contains(secret), "{listed}");

    let b = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    let ds = wait_deliveries(&farm, owner, sub.id, "delivered", |d| delivered(d, 1)).await;
    let d = &ds[0];
    assert_eq!(d.attempts, 3, "500, 500, then 200: {d:?}");
    assert_eq!(d.response_code, Some(200), "{d:?}");
    assert_eq!(d.kind, "webhook", "{d:?}");
    assert_eq!(d.recipient, hook.url, "{d:?}");
    assert_eq!(d.event, "failed", "{d:?}");
    assert_eq!(d.build, Some(b.id), "{d:?}");
    assert_eq!(d.subscription, Some(sub.id), "{d:?}");
    // Nothing more comes once it was delivered.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(hook.seen.lock().unwrap().len(), 3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = hook.seen.lock().unwrap().clone();
    let now = chrono::Utc::now().timestamp();
    for (i, h) in seen.iter().enumerate() {
        let text = String::from_utf8_lossy(&h.body);
        let header = |n: &str| {
            h.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("attempt {}: no {n}", i + 1))
                .to_string()
        };
        assert!(
            header("content-type").starts_with("application/json"),
            "{:?}",
            h.headers
        );
        let sig = header("x-kiln-signature");
        assert!(
            verify(secret, &h.body, &sig),
            "attempt {}: {sig} is not HMAC-SHA256 of the body with the secret:\n{text}",
            i + 1
        );
        assert!(
            !verify("another secret", &h.body, &sig),
            "a wrong secret must not verify"
        );
        let mut tampered = h.body.clone();
        tampered.push(b' ');
        assert!(
            !verify(secret, &tampered, &sig),
            "other bytes must not verify"
        );
        let v: Value = serde_json::from_slice(&h.body).expect("a JSON body");
        assert_eq!(v["version"], 1, "{v}");
        assert_eq!(v["event"], "failed", "{v}");
        assert_eq!(header("x-kiln-event"), "failed");
        let ts = v["timestamp"].as_i64().expect("a timestamp");
        assert!((now - ts).abs() < 300, "timestamp {ts} is not now ({now})");
        assert_eq!(header("x-kiln-timestamp"), ts.to_string());
        assert_eq!(v["delivery"], d.id, "{v}");
        assert_eq!(header("x-kiln-delivery"), d.id.to_string());
        assert_eq!(v["project"], "board", "{v}");
        assert_eq!(v["build"]["id"], b.id.0, "{v}");
        assert_eq!(v["build"]["state"], "failed", "{v}");
        assert_eq!(v["build"]["branch"], "main", "{v}");
        assert_eq!(v["build"]["slave"], "s", "{v}");
        assert_eq!(v["url"], format!("{PUBLIC_URL}/builds/{}", b.id), "{v}");
        assert_eq!(
            v["log_url"],
            format!("{PUBLIC_URL}/api/builds/{}/log", b.id),
            "{v}"
        );
        assert!(v["artifacts"].is_array(), "{v}");
    }
    // Last (the facts above hold either way): the backoff.
    // Retried after retry_first_ms (200 ms), then twice that.
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    let log = farm.master_log();
    let attempts_log: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("notification not delivered") || l.contains("notification delivered")
        })
        .collect();
    assert!(
        gaps[0] >= Duration::from_millis(150) && gaps[1] >= Duration::from_millis(300),
        "retried after 200 ms, then after 400 ms (doubling); the gaps were {gaps:?}\n{d:?}\n--- master log:\n{}",
        attempts_log.join("\n")
    );
}

// ---- who gets what -----------------------------------------------------------------------------

/// All deliveries of some subscriptions of `owner`s.
async fn all_deliveries(farm: &Farm, subs: &[(&str, i64)]) -> Vec<Delivery> {
    let mut out = vec![];
    for (owner, id) in subs {
        out.extend(deliveries(farm, owner, *id).await);
    }
    out
}

/// One message per recipient per ending (the first subscribed event in the documented order,
/// one mail for an address subscribed through the project and its team), triggers filter
/// builds, cancelled builds tell no one, and a delivery can be sent again.
#[tokio::test]
async fn one_message_per_recipient_per_ending() {
    let git = GitServer::start();
    let repo = git.repo("who");
    repo.script_branch("main", SUCCEEDING);
    let mut sink = SmtpSink::new();
    sink.start();
    let farm = notify_farm(Some(sink.port)).await;
    let _slave = farm.slave("s").await;
    farm.add_team("crew").await;
    for (name, more) in [("board", json!({})), ("held", json!({"tags": ["nowhere"]}))] {
        let mut body = json!({"name": name, "branch_url": repo.url, "team": "crew"});
        body.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        let (s, v) = farm.post("/api/projects", body).await;
        assert_eq!(s, 201, "{v}");
    }
    let (project, team) = ("/api/projects/board", "/api/teams/crew");
    // The same address through the project and its team, every build event.
    let p = subscribe(&farm, project, json!({"email": "x@example.org"})).await;
    let t = subscribe(&farm, team, json!({"email": "x@example.org"})).await;
    // Only release builds.
    let r = subscribe(
        &farm,
        project,
        json!({"email": "rel@example.org", "triggers": ["release"]}),
    )
    .await;
    let x = [(project, p.id), (team, t.id)];

    let manual = build(
        &farm,
        &repo,
        "board",
        SUCCEEDING,
        json!({}),
        BuildState::Succeeded,
    )
    .await;
    // The outbox rows are written with the build's end: what is not there now never will be.
    assert_eq!(
        deliveries(&farm, project, r.id).await,
        [],
        "a manual build is not a release"
    );
    let d = all_deliveries(&farm, &x).await;
    assert_eq!(
        d.len(),
        1,
        "one message for x@ through project and team: {d:#?}"
    );
    assert_eq!(
        (d[0].event.as_str(), d[0].build),
        ("succeeded", Some(manual.id))
    );
    sink.wait_count(&farm, 1).await;

    let release = build(
        &farm,
        &repo,
        "board",
        SUCCEEDING,
        json!({"release": "v2.0"}),
        BuildState::Succeeded,
    )
    .await;
    let d: Vec<Delivery> = all_deliveries(&farm, &x)
        .await
        .into_iter()
        .filter(|d| d.build == Some(release.id))
        .collect();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].event, "release", "release comes before succeeded");
    let rd = wait_deliveries(&farm, project, r.id, "delivered", |d| delivered(d, 1)).await;
    assert_eq!(rd[0].event, "release");
    let mails = sink.wait_count(&farm, 3).await;
    let to_x: Vec<&Mail> = mails
        .iter()
        .filter(|m| m.rcpt == ["x@example.org"])
        .collect();
    assert_eq!(
        to_x.iter()
            .map(|m| m.header("X-Kiln-Event").unwrap_or(""))
            .collect::<Vec<_>>(),
        ["succeeded", "release"]
    );

    // A cancelled build tells no one (the team's subscription covers `held`).
    let held = farm.request_build("held", json!({})).await;
    let (s, v) = farm
        .post(&format!("/api/builds/{}/cancel", held.id), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    farm.wait_build(held.id, WAIT, "cancelled", |b| {
        b.state == BuildState::Cancelled
    })
    .await;
    let d = all_deliveries(&farm, &x).await;
    assert!(
        d.iter().all(|d| d.build != Some(held.id)),
        "cancelled builds notify nobody: {d:#?}"
    );

    // Sent again: the same message, a new delivery.
    let (s, v) = call(
        &farm,
        Method::POST,
        &format!("/api/deliveries/{}/redeliver", rd[0].id),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let again: Delivery = serde_json::from_value(v).unwrap();
    assert_eq!(again.redelivery_of, Some(rd[0].id));
    assert_eq!(again.build, Some(release.id));
    assert_ne!(again.id, rd[0].id);
    wait_deliveries(&farm, project, r.id, "2 delivered", |d| delivered(d, 2)).await;
    let mails = sink.wait_count(&farm, 4).await;
    let to_rel: Vec<&Mail> = mails
        .iter()
        .filter(|m| m.rcpt == ["rel@example.org"])
        .collect();
    assert_eq!(
        to_rel.len(),
        2,
        "{:?}",
        mails.iter().map(Mail::summary).collect::<Vec<_>>()
    );
    assert_eq!(to_rel[0].subject, to_rel[1].subject);
    assert_eq!(to_rel[0].text, to_rel[1].text);
    sink.stays(4, "nothing else").await;
}

// ---- templates --------------------------------------------------------------------------------

/// A maintainer's template is checked when saved (the line and the reason of an error), can be
/// previewed against a real build, and words the next mail.
#[tokio::test]
async fn project_templates_are_checked_previewed_and_used() {
    let git = GitServer::start();
    let repo = git.repo("worded");
    repo.script_branch("main", FAILING);
    let mut sink = SmtpSink::new();
    sink.start();
    let farm = notify_farm(Some(sink.port)).await;
    let _slave = farm.slave("s").await;
    farm.project("board", &repo.url, "main").await;
    let owner = "/api/projects/board";
    let to = "team@example.org";
    let sub = subscribe(&farm, owner, json!({"email": to, "events": ["failed"]})).await;
    let first = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    sink.wait_count(&farm, 1).await;

    // The site's templates: built-in ones for every event.
    let site: Vec<kiln_shared::notify::Template> = farm.get("/api/templates").await;
    for e in kiln_shared::notify::EVENTS {
        let t = site
            .iter()
            .find(|t| t.event == e)
            .unwrap_or_else(|| panic!("no site template for {e}: {site:?}"));
        assert_eq!(t.source, "builtin", "{t:?}");
        assert!(!t.subject.is_empty() && !t.body.is_empty(), "{t:?}");
    }
    let used: Vec<kiln_shared::notify::Template> = farm.get(&format!("{owner}/templates")).await;
    assert_eq!(
        used.iter()
            .find(|t| t.event == "failed")
            .map(|t| t.source.as_str()),
        Some("builtin"),
        "{used:?}"
    );

    // A syntax error on the body's second line.
    let put = |body: Value| {
        call(
            &farm,
            Method::PUT,
            "/api/projects/board/templates/failed",
            Some(body),
        )
    };
    let (s, v) = put(json!({
        "subject": "{{ project }} failed",
        "body": "Build {{ build.id }} failed.\nSee {{ url }\nBye.\n"
    }))
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["field"], "body", "{v}");
    let e = v["error"].as_str().unwrap_or("");
    assert!(e.contains("line 2"), "the message names line 2: {v}");
    // Unknown fields are refused, in the part they are in.
    let (s, v) =
        put(json!({"subject": "{{ project }} {{ colour_of_the_sky }}", "body": "x"})).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("subject")), "{v}");
    let (s, v) = put(json!({"subject": "x", "body": "ok\n{{ colour_of_the_sky }}\n"})).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("body")), "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("line 2"), "{v}");
    // Nothing was saved.
    let used: Vec<kiln_shared::notify::Template> = farm.get(&format!("{owner}/templates")).await;
    assert_eq!(
        used.iter()
            .find(|t| t.event == "failed")
            .map(|t| t.source.as_str()),
        Some("builtin"),
        "{used:?}"
    );

    // A preview against the past build, and against the last ended one by default.
    let subject = "Kiln custom: {{ project }} #{{ build.id }} is broken";
    let body = "Custom wording for {{ project }}: build {{ build.id }} {{ build.state }}.\n{{ url }}\n{{ log_tail }}\n";
    for with_build in [true, false] {
        let mut req = json!({"event": "failed", "subject": subject, "body": body});
        if with_build {
            req["build"] = json!(first.id);
        }
        let (s, v) = call(
            &farm,
            Method::POST,
            "/api/projects/board/templates/preview",
            Some(req),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["build"], first.id.0, "{v}");
        assert_eq!(
            v["subject"],
            format!("Kiln custom: board #{} is broken", first.id),
            "{v}"
        );
        let text = v["text"].as_str().unwrap_or("");
        assert!(
            text.contains(&format!(
                "Custom wording for board: build {} failed.",
                first.id
            )),
            "{v}"
        );
        assert!(text.contains(FAILING_LINE), "the log's tail: {v}");
        let url = format!("{PUBLIC_URL}/builds/{}", first.id);
        assert!(
            v["html"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("href=\"{url}\"")),
            "{v}"
        );
    }
    let (s, v) = call(
        &farm,
        Method::POST,
        "/api/projects/board/templates/preview",
        Some(json!({"event": "failed", "subject": "x", "body": "{{ colour_of_the_sky }}"})),
    )
    .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("body")), "{v}");

    // Saved, it words the next failure's mail.
    let (s, v) = put(json!({"subject": subject, "body": body})).await;
    assert!((200..300).contains(&s), "{s} {v}");
    let used: Vec<kiln_shared::notify::Template> = farm.get(&format!("{owner}/templates")).await;
    let t = used.iter().find(|t| t.event == "failed").unwrap();
    assert_eq!(
        (t.source.as_str(), t.subject.as_str(), t.body.as_str()),
        ("project", subject, body)
    );
    let second = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    sink.wait_count(&farm, 2).await;
    let ds = wait_deliveries(&farm, owner, sub.id, "2 delivered", |d| delivered(d, 2)).await;
    let mails = sink.stays(2, "one mail per failure").await;
    let old = mail_about(&mails, &first);
    assert!(!old.subject.contains("Kiln custom"), "{}", old.subject);
    let m = mail_about(&mails, &second);
    assert_eq!(
        m.subject,
        format!("Kiln custom: board #{} is broken", second.id)
    );
    assert!(
        m.text.contains(&format!(
            "Custom wording for board: build {} failed.",
            second.id
        )),
        "{}",
        m.text
    );
    check_mail_with(
        &m,
        to,
        "failed",
        "board",
        &second,
        &about(&ds, &second),
        false,
    );

    // Deleted, the built-in one is back.
    let (s, v) = call(
        &farm,
        Method::DELETE,
        "/api/projects/board/templates/failed",
        None,
    )
    .await;
    assert!((200..300).contains(&s), "{s} {v}");
    let used: Vec<kiln_shared::notify::Template> = farm.get(&format!("{owner}/templates")).await;
    assert_eq!(
        used.iter()
            .find(|t| t.event == "failed")
            .map(|t| t.source.as_str()),
        Some("builtin"),
        "{used:?}"
    );

    // The site's own wording (an admin's), used by every project without one of its own.
    let (s, v) = call(
        &farm,
        Method::PUT,
        "/api/templates/failed",
        Some(
            json!({"subject": "Site wording: {{ project }} #{{ build.id }}",
                    "body": "The lab says {{ project }} broke.\n{{ url }}\n"}),
        ),
    )
    .await;
    assert!((200..300).contains(&s), "{s} {v}");
    let used: Vec<kiln_shared::notify::Template> = farm.get(&format!("{owner}/templates")).await;
    assert_eq!(
        used.iter()
            .find(|t| t.event == "failed")
            .map(|t| t.source.as_str()),
        Some("site"),
        "{used:?}"
    );
    let third = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    sink.wait_count(&farm, 3).await;
    wait_deliveries(&farm, owner, sub.id, "3 delivered", |d| delivered(d, 3)).await;
    let mails = sink.stays(3, "one mail per failure").await;
    let m = mail_about(&mails, &third);
    assert_eq!(m.subject, format!("Site wording: board #{}", third.id));
    assert!(m.text.contains("The lab says board broke."), "{}", m.text);
    // A template without the unsubscribe link gets it as a footer.
    assert!(m.text.contains("Stop these mails: "), "{}", m.text);
    assert!(m.text.contains("/unsubscribe#"), "{}", m.text);
}

// ---- unsubscribing ----------------------------------------------------------------------------

/// `POST /api/unsubscribe` without a session (`Origin` as the console's page at public_url
/// sends it).
async fn unsubscribe(farm: &Farm, token: &str) -> (u16, Value) {
    let r = kiln_tests::farm::client(farm.ca.as_deref())
        .post(farm.api("/api/unsubscribe"))
        .header("origin", PUBLIC_URL)
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The token in a mail's link removes that subscription, without signing in; a tampered one
/// does nothing.
#[tokio::test]
async fn the_mail_link_unsubscribes_without_signing_in() {
    let git = GitServer::start();
    let repo = git.repo("unsub");
    repo.script_branch("main", FAILING);
    let mut sink = SmtpSink::new();
    sink.start();
    let farm = notify_farm(Some(sink.port)).await;
    let _slave = farm.slave("s").await;
    farm.project("board", &repo.url, "main").await;
    let owner = "/api/projects/board";
    let team = subscribe(
        &farm,
        owner,
        json!({"email": "team@example.org", "events": ["failed"]}),
    )
    .await;
    let other = subscribe(
        &farm,
        owner,
        json!({"email": "other@example.org", "events": ["failed"]}),
    )
    .await;
    let first = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    let mails = sink.wait_count(&farm, 2).await;
    wait_deliveries(&farm, owner, team.id, "delivered", |d| delivered(d, 1)).await;
    wait_deliveries(&farm, owner, other.id, "delivered", |d| delivered(d, 1)).await;
    let for_team = mails
        .iter()
        .find(|m| m.rcpt == ["team@example.org"])
        .expect("team's mail");
    let for_other = mails
        .iter()
        .find(|m| m.rcpt == ["other@example.org"])
        .expect("other's mail");
    assert_eq!(
        for_team.header("X-Kiln-Build"),
        Some(first.id.to_string().as_str())
    );
    let token = for_team.unsubscribe_token();
    assert!(!token.is_empty());
    assert_ne!(
        token,
        for_other.unsubscribe_token(),
        "one token per subscription"
    );
    assert!(
        for_team
            .text
            .contains(&format!("{PUBLIC_URL}/unsubscribe#{token}")),
        "the body links to the same place:\n{}",
        for_team.text
    );

    // Tampered: refused with a JSON error, nothing removed.
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.len() - 1;
    // A digit: 'A' for a token ending in 'a' decodes to the same hex, and the tamper would not be
    // one.
    chars[last] = if chars[last] == '0' { '1' } else { '0' };
    let tampered: String = chars.into_iter().collect();
    for bad in [tampered.as_str(), "", "not-a-token"] {
        let (s, v) = unsubscribe(&farm, bad).await;
        assert!((400..500).contains(&s), "{bad:?}: {s} {v}");
        assert!(v["error"].is_string(), "{bad:?}: a JSON error: {v}");
    }
    let listed: Vec<Subscription> = farm.get(&format!("{owner}/subscriptions")).await;
    assert_eq!(listed.len(), 2, "{listed:?}");

    let (s, v) = unsubscribe(&farm, &token).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["message"].is_string(), "{v}");
    let listed: Vec<Subscription> = farm.get(&format!("{owner}/subscriptions")).await;
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        [other.id],
        "only the other subscription is left"
    );
    let (s, v) = unsubscribe(&farm, &token).await;
    assert!((400..500).contains(&s), "used again: {s} {v}");

    // The next failure mails only the other address.
    let second = build(
        &farm,
        &repo,
        "board",
        FAILING,
        json!({}),
        BuildState::Failed,
    )
    .await;
    sink.wait_count(&farm, 3).await;
    wait_deliveries(&farm, owner, other.id, "2 delivered", |d| delivered(d, 2)).await;
    let mails = sink
        .stays(3, "nothing more for the unsubscribed address")
        .await;
    let m = mail_about(&mails, &second);
    assert_eq!(m.rcpt, ["other@example.org"]);
}

// ---- validation -------------------------------------------------------------------------------

/// Bad subscriptions are refused with 400 naming the field, and nothing is created.
#[tokio::test]
async fn bad_subscriptions_are_refused_naming_the_field() {
    let git = GitServer::start();
    let repo = git.repo("valid");
    repo.script_branch("main", "true");
    let sink = SmtpSink::new();
    let farm = notify_farm(Some(sink.port)).await;
    farm.project("board", &repo.url, "main").await;
    farm.add_team("crew").await;
    let recipients = ["email", "user", "webhook"];
    let hook = "http://127.0.0.1:9/hook";
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"email": "team@example.org", "user": "admin"}),
            &recipients,
        ),
        (
            json!({"email": "team@example.org", "webhook": hook, "secret": "s"}),
            &recipients,
        ),
        (json!({"events": ["failed"]}), &recipients),
        (
            json!({"email": "team@example.org", "events": ["failed", "exploded"]}),
            &["events"],
        ),
        (
            json!({"email": "team@example.org", "triggers": ["whenever"]}),
            &["triggers"],
        ),
        (
            json!({"webhook": "http://127.0.0.2/hook", "secret": "s"}),
            &["webhook"],
        ),
        (
            json!({"webhook": "http://user:pass@127.0.0.1:9/hook", "secret": "s"}),
            &["webhook"],
        ),
        (
            json!({"webhook": "ftp://127.0.0.1/hook", "secret": "s"}),
            &["webhook"],
        ),
        (json!({ "webhook": hook }), &["secret"]),
        (
            json!({"email": "team@example.org", "secret": "s"}),
            &["secret"],
        ),
        (json!({"email": "not an address"}), &["email"]),
        (
            json!({"email": "team@example.org\r\nBcc: x@example.org"}),
            &["email"],
        ),
        (json!({"user": "nobody-by-that-name"}), &["user"]),
    ];
    let mut wrong = vec![];
    for owner in ["/api/projects/board", "/api/teams/crew"] {
        for (body, fields) in &cases {
            let (s, v) = call(
                &farm,
                Method::POST,
                &format!("{owner}/subscriptions"),
                Some(body.clone()),
            )
            .await;
            let field = v["field"].as_str().unwrap_or("");
            if s != 400 || !fields.contains(&field) || !v["error"].is_string() {
                wrong.push(format!(
                    "{owner} {body}: {s} {v} (wanted 400 naming one of {fields:?})"
                ));
            }
        }
        let listed: Vec<Subscription> = farm.get(&format!("{owner}/subscriptions")).await;
        if !listed.is_empty() {
            wrong.push(format!("{owner}: refused ones were created: {listed:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // What the allow list lets through, and a plain address, are taken.
    let s = subscribe(
        &farm,
        "/api/projects/board",
        json!({"webhook": hook, "secret": "s"}),
    )
    .await;
    assert_eq!(s.webhook.as_deref(), Some(hook));
    assert_eq!(
        sorted(&s.events),
        ["failed", "fixed", "lost", "release", "succeeded"],
        "all build events when absent"
    );
    subscribe(
        &farm,
        "/api/teams/crew",
        json!({"email": "crew@example.org"}),
    )
    .await;

    // Without [notify.smtp] nothing can be mailed: mail subscriptions are refused.
    let plain = notify_farm(None).await;
    plain.project("board", &repo.url, "main").await;
    let (s, v) = plain
        .post(
            "/api/users",
            json!({"username": "mailer", "password": "mailer-password-123",
                   "email": "mailer@example.org", "admin": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    for body in [
        json!({"email": "team@example.org"}),
        json!({"user": "mailer"}),
    ] {
        let (s, v) = call(
            &plain,
            Method::POST,
            "/api/projects/board/subscriptions",
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 400, "{body} without [notify.smtp]: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    subscribe(
        &plain,
        "/api/projects/board",
        json!({"webhook": hook, "secret": "s"}),
    )
    .await;
}
