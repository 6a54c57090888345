//! What Prometheus scrapes from `GET /metrics` (`docs/operations.md`, "Monitoring"): counters
//! and histograms kept in this master's memory (builds started and finished, how long builds and
//! dispatch rounds take, the WebSockets open), and gauges read at scrape time from the database
//! (the queue by waiting reason, the bytes stored), the hub (slaves online) and the pool.
//!
//! The text is written by hand rather than with the `prometheus-client` crate: that crate
//! encodes OpenMetrics (its own `_total` suffixes and `# EOF`), and its scrape-time gauges are a
//! synchronous `Collector`, while ours come from async database queries. A dozen families, two
//! of them histograms with fixed buckets, are simpler as the small writer below (the Prometheus
//! text format 0.0.4, tested here and parsed by a real parser in `tests/e2e/metrics.rs`).
//!
//! Counters and histograms are per master process: they start at zero when it starts, which
//! Prometheus' `rate()` and `increase()` handle.

use crate::state::AppState;
use anyhow::Context;
use kiln_shared::config::Config;
use kiln_shared::BuildState;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The states a build ends in, the `state` label of the ended builds' metrics.
pub const END_STATES: [BuildState; 4] = [
    BuildState::Succeeded,
    BuildState::Failed,
    BuildState::Cancelled,
    BuildState::Lost,
];

/// Buckets of `kiln_build_duration_seconds`: 10 s to 8 h.
const BUILD_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
];
/// Buckets of `kiln_dispatch_duration_seconds`: 1 ms to 10 s.
const DISPATCH_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label of a waiting build whose reason the dispatcher has not written yet (it was queued
/// or put back since the last round).
pub const NOT_YET_EXPLAINED: &str = "not yet seen by the dispatcher";

/// A histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<HistogramState>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct HistogramState {
    /// Observations per bucket (not cumulative); one more than `bounds` for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            inner: Mutex::new(HistogramState {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            }),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        let mut s = self.inner.lock().expect("histogram poisoned");
        s.counts[i] += 1;
        s.sum += v;
    }

    fn snapshot(&self) -> HistogramState {
        self.inner.lock().expect("histogram poisoned").clone()
    }
}

/// Kind of a WebSocket (`kiln_websocket_connections{kind}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsKind {
    Slave,
    Console,
}

/// The metrics this master keeps in memory, and who may read them besides site admins.
pub struct Metrics {
    started: AtomicU64,
    finished: [AtomicU64; 4],
    build_duration: [Histogram; 4],
    dispatch_duration: Histogram,
    ws_slave: AtomicU64,
    ws_console: AtomicU64,
    /// sha256 of the token in `[metrics] token_file`, read at start.
    token_sha256: Option<[u8; 32]>,
}

fn end_index(s: BuildState) -> Option<usize> {
    END_STATES.iter().position(|e| *e == s)
}

impl Metrics {
    /// Zeroed metrics; the scrape token of `[metrics] token_file`, if configured, is read now
    /// (relative to the data dir).
    pub fn new(cfg: &Config) -> anyhow::Result<Metrics> {
        let token_sha256 = match &cfg.metrics.token_file {
            Some(f) => {
                let path = cfg.path(f);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "config key metrics.token_file: cannot read {}",
                        path.display()
                    )
                })?;
                let token = text.trim();
                if token.len() < 16 {
                    anyhow::bail!(
                        "config key metrics.token_file: {} holds {} characters; a scrape token needs at least 16 (e.g. `openssl rand -hex 32`)",
                        path.display(),
                        token.len()
                    );
                }
                Some(Sha256::digest(token.as_bytes()).into())
            }
            None => None,
        };
        Ok(Metrics {
            token_sha256,
            ..Metrics::default()
        })
    }

    /// Whether `token` is the scrape token of `[metrics] token_file` (compared in constant
    /// time, as sha256 digests of the same length).
    pub fn is_scrape_token(&self, token: &str) -> bool {
        let Some(want) = &self.token_sha256 else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        crate::auth::constant_time_eq(&got, want)
    }

    /// A build became running on its slave.
    pub fn build_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// A build ended in `state`; `ran` is how long it ran (from its start, or its dispatch when
    /// it never started), `None` for a build that never left the queue.
    pub fn build_ended(&self, state: BuildState, ran: Option<Duration>) {
        let Some(i) = end_index(state) else {
            return;
        };
        // The duration first: a scrape that sees the build counted sees its duration too.
        if let Some(d) = ran {
            self.build_duration[i].observe(d.as_secs_f64());
        }
        self.finished[i].fetch_add(1, Ordering::Release);
    }

    /// One dispatch round took `d`.
    pub fn dispatch_round(&self, d: Duration) {
        self.dispatch_duration.observe(d.as_secs_f64());
    }

    /// Counts a WebSocket of `kind` as open until the guard drops.
    pub fn websocket(&self, kind: WsKind) -> WsGuard<'_> {
        self.ws(kind).fetch_add(1, Ordering::Relaxed);
        WsGuard(self, kind)
    }

    fn ws(&self, kind: WsKind) -> &AtomicU64 {
        match kind {
            WsKind::Slave => &self.ws_slave,
            WsKind::Console => &self.ws_console,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: AtomicU64::new(0),
            finished: Default::default(),
            build_duration: std::array::from_fn(|_| Histogram::new(BUILD_BUCKETS)),
            dispatch_duration: Histogram::new(DISPATCH_BUCKETS),
            ws_slave: AtomicU64::new(0),
            ws_console: AtomicU64::new(0),
            token_sha256: None,
        }
    }
}

/// See [`Metrics::websocket`].
pub struct WsGuard<'a>(&'a Metrics, WsKind);

impl Drop for WsGuard<'_> {
    fn drop(&mut self) {
        self.0.ws(self.1).fetch_sub(1, Ordering::Relaxed);
    }
}

/// The Prometheus text format, one family after another.
#[derive(Default)]
pub struct Text(String);

/// `\`, `"` and line feeds escaped, as label values need.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Text {
    /// `# HELP` and `# TYPE` of a family (`kind`: counter, gauge or histogram).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(v));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let s = h.snapshot();
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, n) in s.counts.iter().enumerate() {
            cumulative += n;
            let le = h.bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, s.sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Every family this master exports, by name (the dashboard's test checks its queries
/// against this list).
pub const FAMILIES: &[&str] = &[
    "kiln_builds_started_total",
    "kiln_builds_finished_total",
    "kiln_build_duration_seconds",
    "kiln_dispatch_duration_seconds",
    "kiln_queue_length",
    "kiln_slaves_online",
    "kiln_slaves_online_by_tag",
    "kiln_log_bytes_stored",
    "kiln_artifact_bytes_stored",
    "kiln_websocket_connections",
    "kiln_access_changes_total",
    "kiln_db_pool_connections",
    "kiln_db_pool_max",
    "kiln_database_up",
];

/// The whole exposition: in-process metrics, then what the hub, the pool and (while it answers)
/// the database say now.
pub async fn render(st: &AppState) -> String {
    let m = &st.metrics;
    let mut t = Text::default();
    t.family(
        "kiln_builds_started_total",
        "counter",
        "Builds that started running on a slave, since this master started.",
    );
    t.sample(
        "kiln_builds_started_total",
        &[],
        m.started.load(Ordering::Relaxed) as f64,
    );
    t.family(
        "kiln_builds_finished_total",
        "counter",
        "Builds that ended, by final state, since this master started.",
    );
    for (i, s) in END_STATES.iter().enumerate() {
        // Acquire: every build counted here has its duration in the histogram read below.
        let n = m.finished[i].load(Ordering::Acquire);
        t.sample(
            "kiln_builds_finished_total",
            &[("state", s.as_str())],
            n as f64,
        );
    }
    t.family(
        "kiln_build_duration_seconds",
        "histogram",
        "How long builds ran (from their start on a slave to their end), observed as they end, by final state.",
    );
    for (i, s) in END_STATES.iter().enumerate() {
        t.histogram(
            "kiln_build_duration_seconds",
            &[("state", s.as_str())],
            &m.build_duration[i],
        );
    }
    t.family(
        "kiln_dispatch_duration_seconds",
        "histogram",
        "How long one dispatch round took (read the queue and the load, plan, claim, assign, explain).",
    );
    t.histogram("kiln_dispatch_duration_seconds", &[], &m.dispatch_duration);

    let connected = st.hub.connected();
    t.family(
        "kiln_slaves_online",
        "gauge",
        "Slaves connected to this master now.",
    );
    t.sample("kiln_slaves_online", &[], connected.len() as f64);
    let mut by_tag: std::collections::BTreeMap<&str, u64> = Default::default();
    for (_, s) in &connected {
        for tag in &s.tags {
            *by_tag.entry(tag.as_str()).or_default() += 1;
        }
    }
    t.family(
        "kiln_slaves_online_by_tag",
        "gauge",
        "Slaves connected now, by tag (a slave counts once under each of its tags).",
    );
    for (tag, n) in by_tag {
        t.sample("kiln_slaves_online_by_tag", &[("tag", tag)], n as f64);
    }
    t.family(
        "kiln_websocket_connections",
        "gauge",
        "WebSockets open now, by kind (slave sessions, web consoles).",
    );
    for (kind, k) in [("slave", WsKind::Slave), ("console", WsKind::Console)] {
        let n = m.ws(k).load(Ordering::Relaxed);
        t.sample("kiln_websocket_connections", &[("kind", kind)], n as f64);
    }
    t.family(
        "kiln_access_changes_total",
        "counter",
        "Times access may have changed (a sign-out, a revoked token, a team or visibility change, \
         here or heard from the database): open consoles read their access again.",
    );
    t.sample(
        "kiln_access_changes_total",
        &[],
        crate::db::access::current() as f64,
    );
    let size = st.db.size();
    let idle = u32::try_from(st.db.num_idle())
        .unwrap_or(u32::MAX)
        .min(size);
    t.family(
        "kiln_db_pool_connections",
        "gauge",
        "Connections of the master's database pool, by state.",
    );
    t.sample(
        "kiln_db_pool_connections",
        &[("state", "idle")],
        f64::from(idle),
    );
    t.sample(
        "kiln_db_pool_connections",
        &[("state", "used")],
        f64::from(size - idle),
    );
    t.family(
        "kiln_db_pool_max",
        "gauge",
        "The most connections the master's database pool opens (database.max_connections).",
    );
    t.sample(
        "kiln_db_pool_max",
        &[],
        f64::from(st.db.options().get_max_connections()),
    );

    // From the database, unless it is away (then these families are left out, and
    // `kiln_database_up` says why).
    let from_db = if st.database.trouble().is_none() {
        database_gauges(st).await
    } else {
        Err(sqlx::Error::PoolTimedOut)
    };
    t.family(
        "kiln_database_up",
        "gauge",
        "1 when the database answered this scrape's queries, else 0 (and the queue and storage gauges are absent).",
    );
    match from_db {
        Ok(g) => {
            t.sample("kiln_database_up", &[], 1.0);
            t.family(
                "kiln_queue_length",
                "gauge",
                "Queued builds, by project and by why they wait (the dispatcher's waiting reason).",
            );
            for (project, reason, n) in &g.queue {
                let reason = reason.as_deref().unwrap_or(NOT_YET_EXPLAINED);
                t.sample(
                    "kiln_queue_length",
                    &[("project", project), ("reason", reason)],
                    *n as f64,
                );
            }
            t.family(
                "kiln_log_bytes_stored",
                "gauge",
                "Bytes of build logs stored, by project (the same accounting as a project's disk_bytes).",
            );
            for (project, logs, _) in &g.storage {
                t.sample(
                    "kiln_log_bytes_stored",
                    &[("project", project)],
                    *logs as f64,
                );
            }
            t.family(
                "kiln_artifact_bytes_stored",
                "gauge",
                "Bytes of artifacts stored, by project (what master.limits.project_storage_bytes holds to).",
            );
            for (project, _, artifacts) in &g.storage {
                t.sample(
                    "kiln_artifact_bytes_stored",
                    &[("project", project)],
                    *artifacts as f64,
                );
            }
        }
        Err(e) => {
            tracing::debug!("metrics: the database gauges are left out: {e}");
            t.sample("kiln_database_up", &[], 0.0);
        }
    }
    t.into_string()
}

struct DatabaseGauges {
    queue: Vec<(String, Option<String>, i64)>,
    storage: Vec<(String, i64, i64)>,
}

async fn database_gauges(st: &AppState) -> sqlx::Result<DatabaseGauges> {
    Ok(DatabaseGauges {
        queue: crate::db::builds::queued_by_reason(&st.db).await?,
        storage: crate::db::projects::stored_bytes(&st.db).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_numbers_written_as_prometheus_reads_them() {
        let mut t = Text::default();
        t.family("x_total", "counter", "a \\ help\nline");
        t.sample("x_total", &[("reason", "a \"b\" \\ c\nd"), ("p", "q")], 3.0);
        t.sample("y", &[], 0.25);
        t.sample("z", &[], f64::INFINITY);
        assert_eq!(
            t.into_string(),
            "# HELP x_total a \\\\ help\\nline\n# TYPE x_total counter\n\
             x_total{reason=\"a \\\"b\\\" \\\\ c\\nd\",p=\"q\"} 3\ny 0.25\nz +Inf\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 1.0, 2.0, 7.0] {
            h.observe(v);
        }
        let mut t = Text::default();
        t.histogram("d_seconds", &[("state", "failed")], &h);
        assert_eq!(
            t.into_string(),
            "d_seconds_bucket{state=\"failed\",le=\"1\"} 2\n\
             d_seconds_bucket{state=\"failed\",le=\"5\"} 3\n\
             d_seconds_bucket{state=\"failed\",le=\"+Inf\"} 4\n\
             d_seconds_sum{state=\"failed\"} 10.5\n\
             d_seconds_count{state=\"failed\"} 4\n"
        );
    }

    #[test]
    fn ended_builds_count_by_state_and_websockets_by_guard() {
        let m = Metrics::default();
        m.build_started();
        m.build_ended(BuildState::Succeeded, Some(Duration::from_secs(42)));
        m.build_ended(BuildState::Cancelled, None);
        m.build_ended(BuildState::Running, None);
        assert_eq!(m.started.load(Ordering::Relaxed), 1);
        let finished: Vec<u64> = m
            .finished
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(finished, [1, 0, 1, 0]);
        assert_eq!(m.build_duration[0].snapshot().sum, 42.0);
        assert_eq!(m.build_duration[2].snapshot().counts.iter().sum::<u64>(), 0);
        {
            let _a = m.websocket(WsKind::Console);
            let _b = m.websocket(WsKind::Console);
            assert_eq!(m.ws_console.load(Ordering::Relaxed), 2);
        }
        assert_eq!(m.ws_console.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_scrape_token_is_read_at_start_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.token"),
            "a-long-enough-scrape-token\n",
        )
        .unwrap();
        let cfg = Config::parse("[metrics]\ntoken_file = \"metrics.token\"\n", dir.path()).unwrap();
        let m = Metrics::new(&cfg).unwrap();
        assert!(m.is_scrape_token("a-long-enough-scrape-token"));
        assert!(!m.is_scrape_token("a-long-enough-scrape-token2"));
        assert!(!m.is_scrape_token(""));
        assert!(!Metrics::default().is_scrape_token("a-long-enough-scrape-token"));
        std::fs::write(dir.path().join("metrics.token"), "short\n").unwrap();
        let e = Metrics::new(&cfg).err().unwrap().to_string();
        assert!(e.contains("metrics.token_file"), "{e}");
        std::fs::remove_file(dir.path().join("metrics.token")).unwrap();
        let e = Metrics::new(&cfg).err().unwrap().to_string();
        assert!(e.contains("metrics.token_file"), "{e}");
    }

    /// `docs/grafana-dashboard.json` is a dashboard whose every query names only families
    /// exported here.
    #[test]
    fn the_grafana_dashboard_queries_only_exported_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/grafana-dashboard.json"
        );
        let text = std::fs::read_to_string(path).expect("docs/grafana-dashboard.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
        assert!(
            v["schemaVersion"].as_u64().is_some_and(|s| s >= 36),
            "schemaVersion"
        );
        assert!(text.contains("${DS_PROMETHEUS}"), "the datasource variable");
        assert_eq!(
            metric_names("sum by (le) (rate(kiln_a_bucket{x=\"kiln_b\"}[5m])) / kiln_c"),
            ["kiln_a_bucket", "kiln_c"]
        );
        let mut exprs = vec![];
        collect_exprs(&v, &mut exprs);
        assert!(exprs.len() >= 8, "{exprs:?}");
        let mut named = std::collections::BTreeSet::new();
        for e in &exprs {
            let names = metric_names(e);
            assert!(!names.is_empty(), "a query naming no metric: {e}");
            for n in names {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s).filter(|f| FAMILIES.contains(f)))
                    .unwrap_or(&n);
                assert!(
                    FAMILIES.contains(&family),
                    "the dashboard queries {n}, which the master does not export: {e}"
                );
                named.insert(family.to_string());
            }
        }
        for f in [
            "kiln_queue_length",
            "kiln_builds_started_total",
            "kiln_builds_finished_total",
            "kiln_build_duration_seconds",
            "kiln_dispatch_duration_seconds",
            "kiln_slaves_online",
            "kiln_log_bytes_stored",
            "kiln_artifact_bytes_stored",
            "kiln_websocket_connections",
            "kiln_db_pool_connections",
        ] {
            assert!(named.contains(f), "no panel shows {f}");
        }
    }

    fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
            _ => {}
        }
    }

    /// The `kiln_…` identifiers of a PromQL expression (label names and values, inside `{}` and
    /// quotes, are skipped).
    fn metric_names(expr: &str) -> Vec<String> {
        let mut out = vec![];
        let (mut depth, mut quoted) = (0, false);
        let mut word = String::new();
        fn flush(w: &mut String, out: &mut Vec<String>) {
            if w.starts_with("kiln_") {
                out.push(std::mem::take(w));
            }
            w.clear();
        }
        for c in expr.chars() {
            if quoted {
                quoted = c != '"';
                continue;
            }
            match c {
                '"' => quoted = true,
                '{' => {
                    flush(&mut word, &mut out);
                    depth += 1;
                }
                '}' => depth -= 1,
                c if depth == 0 && (c.is_ascii_alphanumeric() || c == '_' || c == ':') => {
                    word.push(c)
                }
                _ => flush(&mut word, &mut out),
            }
        }
        flush(&mut word, &mut out);
        out
    }
}
