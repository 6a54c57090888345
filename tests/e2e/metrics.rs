//! `GET /metrics`: a build run through a real slave shows in the counters, a queued build in the
//! queue by its waiting reason; the text is read by a Prometheus text-format parser, with the
//! admin's API token and with the scrape token of `[metrics] token_file`.

use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer};
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;
use std::time::{Duration, Instant};

const SCRAPE_TOKEN: &str = "kiln-scrape-token-0123456789abcdef";

/// `GET /metrics` with `bearer` (none: no `Authorization`): status, content type, body.
async fn get_metrics(farm: &Farm, bearer: Option<&str>) -> (u16, String, String) {
    let mut req = farm.http.get(farm.api("/metrics"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("GET /metrics");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.text().await.unwrap())
}

/// Parses the exposition; every line that is not a comment must be a sample, and every sample
/// must belong to a family declared with `# TYPE`.
fn parse(text: &str) -> Scrape {
    let mut families = vec![];
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type { metric_name, .. } => {
                families.push(metric_name.trim_end_matches("_bucket").to_string())
            }
            LineInfo::Sample { metric_name, .. } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        metric_name
                            .strip_suffix(s)
                            .filter(|f| families.iter().any(|x| x == f))
                    })
                    .unwrap_or(metric_name);
                assert!(
                    families.iter().any(|f| f == family),
                    "a sample of no declared family: {line}"
                );
            }
            LineInfo::Doc { .. } | LineInfo::Empty => {}
            LineInfo::Ignored => assert!(line.starts_with('#'), "not a sample: {line}"),
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the Prometheus text format")
}

/// The value of the counter or gauge `name` with exactly `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name && x.labels.len() == labels.len())
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .find_map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Scrapes with the admin's token until `pred` holds (the counters follow the build's end by
/// a moment); panics with the last text after 30 s.
async fn wait_metrics(farm: &Farm, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, text) = get_metrics(farm, Some(&farm.token)).await;
        assert_eq!(status, 200, "{text}");
        let s = parse(&text);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never showed {what}:\n{text}"
        );
        tokio::time::sleep(farm.poll).await;
    }
}

#[tokio::test]
async fn metrics_count_builds_and_explain_the_queue() {
    let git = GitServer::start();
    let repo = git.repo("metered");
    repo.script_branch("main", "echo counted; echo ok > \"$KILN_OUTPUT_DIR/ok\"");
    // The scrape token lives outside the farm's data dir (an absolute token_file).
    let secrets = kiln_tests::tempdir("kiln-metrics-");
    let token_file = secrets.path().join("metrics.token");
    std::fs::write(&token_file, format!("{SCRAPE_TOKEN}\n")).unwrap();
    let farm = Farm::with(FarmOptions {
        extra_toml: format!("[metrics]\ntoken_file = \"{}\"\n", token_file.display()),
        ..Default::default()
    })
    .await;
    // Tagged, for `kiln_slaves_online_by_tag` (a slave counts once under each tag).
    let _slave = farm.slave_with("s1", &["--tags", "fast,linux"]).await;
    farm.project("metered", &repo.url, "main").await;
    let b = farm.request_build("metered", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    // A project whose builds wait for a tag no slave has.
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "waits", "branch_url": repo.url, "branch": "main",
                   "tags": ["nowhere"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let q = farm.request_build("waits", json!({})).await;
    let q = farm
        .wait_build(q.id, Duration::from_secs(30), "explained", |b| {
            b.waiting_reason.is_some()
        })
        .await;
    let reason = q.waiting_reason.clone().unwrap();
    assert!(reason.contains("nowhere"), "{reason}");

    let (status, ct, _) = get_metrics(&farm, Some(&farm.token)).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let s = wait_metrics(&farm, "the succeeded build and the queued one", |s| {
        value(s, "kiln_builds_finished_total", &[("state", "succeeded")]) == Some(1.0)
            && value(
                s,
                "kiln_queue_length",
                &[("project", "waits"), ("reason", &reason)],
            ) == Some(1.0)
    })
    .await;
    for state in ["failed", "cancelled", "lost"] {
        assert_eq!(
            value(&s, "kiln_builds_finished_total", &[("state", state)]),
            Some(0.0),
            "{state}"
        );
    }
    let started = value(&s, "kiln_builds_started_total", &[]).unwrap();
    assert!(started >= 1.0, "started: {started}");
    assert_eq!(value(&s, "kiln_slaves_online", &[]), Some(1.0));
    let mut by_tag: Vec<(String, f64)> = s
        .samples
        .iter()
        .filter(|x| x.metric == "kiln_slaves_online_by_tag")
        .map(|x| match x.value {
            Value::Gauge(v) => (x.labels.get("tag").unwrap_or_default().to_string(), v),
            ref v => panic!("kiln_slaves_online_by_tag is a gauge: {v:?}"),
        })
        .collect();
    by_tag.sort_by(|a, b| a.0.cmp(&b.0));
    // The tags of the slave online, once each; none of the tag only a project asks for.
    assert_eq!(
        by_tag,
        [("fast".to_string(), 1.0), ("linux".to_string(), 1.0)]
    );
    assert_eq!(
        value(&s, "kiln_websocket_connections", &[("kind", "slave")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "kiln_websocket_connections", &[("kind", "console")]),
        Some(0.0)
    );
    assert_eq!(value(&s, "kiln_db_pool_max", &[]), Some(8.0));
    let used = value(&s, "kiln_db_pool_connections", &[("state", "used")]).unwrap();
    let idle = value(&s, "kiln_db_pool_connections", &[("state", "idle")]).unwrap();
    assert!(used + idle <= 8.0, "used {used}, idle {idle}");
    assert_eq!(value(&s, "kiln_database_up", &[]), Some(1.0));
    let logs = value(&s, "kiln_log_bytes_stored", &[("project", "metered")]).unwrap();
    assert!(logs > 0.0, "log bytes: {logs}");
    let stored: i64 = farm.artifacts(b.id).await.iter().map(|a| a.size).sum();
    assert_eq!(
        value(&s, "kiln_artifact_bytes_stored", &[("project", "metered")]),
        Some(stored as f64)
    );
    // The build's duration was observed once, under its state; dispatch rounds were timed.
    let histogram = |name: &str, state: Option<&str>| -> Vec<(f64, f64)> {
        s.samples
            .iter()
            .filter(|x| x.metric == name && x.labels.get("state") == state)
            .find_map(|x| match &x.value {
                Value::Histogram(h) => Some(h.iter().map(|c| (c.less_than, c.count)).collect()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no histogram {name} {state:?}"))
    };
    let duration = histogram("kiln_build_duration_seconds", Some("succeeded"));
    assert_eq!(duration.last(), Some(&(f64::INFINITY, 1.0)), "{duration:?}");
    assert_eq!(
        value(
            &s,
            "kiln_build_duration_seconds_count",
            &[("state", "succeeded")]
        ),
        Some(1.0)
    );
    let dispatch = histogram("kiln_dispatch_duration_seconds", None);
    assert!(dispatch.last().unwrap().1 >= 1.0, "{dispatch:?}");

    // The scrape token of `[metrics] token_file` reads the same families.
    let (status, _, text) = get_metrics(&farm, Some(SCRAPE_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    let by_token = parse(&text);
    assert_eq!(
        value(
            &by_token,
            "kiln_builds_finished_total",
            &[("state", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &by_token,
            "kiln_queue_length",
            &[("project", "waits"), ("reason", &reason)]
        ),
        Some(1.0)
    );

    // A wrong token and no token are refused with a JSON error.
    for bearer in [Some("kiln-scrape-token-0123456789abcdeX"), Some(""), None] {
        let (status, _, text) = get_metrics(&farm, bearer).await;
        assert_eq!(status, 401, "{bearer:?}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(v["code"], "unauthorized", "{v}");
    }
}
