//! What a message says: the facts of its build (or slave) from the database and the stored
//! log, the template in force (the project's, else the site's, else Kiln's built-in), and the
//! webhook's JSON body (`docs/notifications.md`, "Webhooks").

use super::template::{self, ArtifactFacts, BuildFacts, Context, SlaveFacts};
use crate::db::builds::BuildRow;
use crate::db::notify::{self as db, NotificationRow};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use kiln_shared::BuildId;
use serde_json::{json, Value};

/// A template's subject and body, and where they come from.
pub struct Chosen {
    pub source: &'static str,
    pub subject: String,
    pub body: String,
}

/// The template used for `event` of project `project` (`None`: the site's).
pub async fn template_for(
    st: &AppState,
    project: Option<i64>,
    event: &str,
) -> sqlx::Result<Chosen> {
    let rows = db::templates(&st.db, project).await?;
    let find = |p: Option<i64>| rows.iter().find(|r| r.event == event && r.project_id == p);
    let chosen = match (project.and_then(|p| find(Some(p))), find(None)) {
        (Some(r), _) => Chosen {
            source: "project",
            subject: r.subject.clone(),
            body: r.body.clone(),
        },
        (None, Some(r)) => Chosen {
            source: "site",
            subject: r.subject.clone(),
            body: r.body.clone(),
        },
        (None, None) => {
            let (subject, body) = template::builtin(event);
            Chosen {
                source: "builtin",
                subject: subject.into(),
                body: body.into(),
            }
        }
    };
    Ok(chosen)
}

pub use crate::login::public_url;

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn human_size(n: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

/// Without terminal escapes (colours) and other control characters but tabs.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Everything a template may say about `build`, for a message about `event`.
pub async fn build_context(
    st: &AppState,
    build: &BuildRow,
    event: &str,
) -> anyhow::Result<Context> {
    let base = public_url(st);
    let id = BuildId(build.id);
    let requested_by: Option<String> =
        sqlx::query_scalar("SELECT requested_by FROM builds WHERE id = $1")
            .bind(build.id)
            .fetch_one(&st.db)
            .await?;
    let artifacts = crate::db::artifacts::list(&st.db, id)
        .await?
        .into_iter()
        .map(|a| ArtifactFacts {
            url: format!("{base}/api/builds/{}/artifacts/{}", build.id, seg(&a.name)),
            size_human: human_size(a.size),
            name: a.name,
            size: a.size,
            sha256: a.sha256,
        })
        .collect();
    let log_tail = if matches!(event, "failed" | "lost") {
        let n = u64::from(st.cfg.notify.log_tail_lines);
        match st
            .storage
            .lines_before(id, build.log_lines.max(0) as u64, n, 16 * 1024)
            .await
        {
            Ok((_, lines)) => lines
                .iter()
                .map(|l| plain(l))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => {
                tracing::warn!(build = %id, "cannot read the log's last lines: {e}");
                String::new()
            }
        }
    } else {
        String::new()
    };
    let from = build.started_at.unwrap_or(build.created_at);
    let secs = build
        .finished_at
        .map_or(0, |f| (f - from).num_seconds().max(0));
    Ok(Context {
        event: event.into(),
        project: build.project.clone(),
        build: Some(BuildFacts {
            id: build.id,
            state: build.state.clone(),
            reason: build.reason.clone(),
            trigger: build.trigger.clone(),
            release: build.release.clone(),
            release_notes: build.release_notes.clone(),
            commit: build.commit_sha.clone(),
            branch: build.branch.clone(),
            branch_url: build.branch_url.clone(),
            slave: build.slave.clone(),
            requested_by,
            created_at: rfc3339(build.created_at),
            started_at: build.started_at.map(rfc3339),
            finished_at: build.finished_at.map(rfc3339),
            duration: human_duration(secs),
            duration_secs: secs,
        }),
        slave: None,
        artifacts,
        url: format!("{base}/builds/{}", build.id),
        log_url: format!("{base}/api/builds/{}/log", build.id),
        log_tail,
        public_url: base,
        unsubscribe_url: String::new(),
    })
}

fn slave_context(st: &AppState, name: &str, last_seen: Option<DateTime<Utc>>) -> Context {
    let base = public_url(st);
    Context {
        event: "slave_offline".into(),
        slave: Some(SlaveFacts {
            name: name.into(),
            last_seen: last_seen.map(rfc3339),
        }),
        url: format!("{base}/slaves"),
        public_url: base,
        ..Context::default()
    }
}

/// The webhook body (without `timestamp` and `delivery`, added at each attempt).
pub fn payload(ctx: &Context) -> Value {
    if let Some(s) = &ctx.slave {
        return json!({
            "version": 1,
            "event": ctx.event,
            "slave": { "name": s.name, "last_seen": s.last_seen },
        });
    }
    let b = ctx.build.as_ref();
    json!({
        "version": 1,
        "event": ctx.event,
        "project": ctx.project,
        "build": b.map(|b| json!({
            "id": b.id,
            "state": b.state,
            "reason": b.reason,
            "trigger": b.trigger,
            "release": b.release,
            "release_notes": b.release_notes,
            "commit": b.commit,
            "branch": b.branch,
            "branch_url": b.branch_url,
            "slave": b.slave,
            "requested_by": b.requested_by,
            "created_at": b.created_at,
            "started_at": b.started_at,
            "finished_at": b.finished_at,
            "duration_secs": b.duration_secs,
        })),
        "artifacts": ctx.artifacts.iter().map(|a| json!({
            "name": a.name, "size": a.size, "sha256": a.sha256, "url": a.url,
        })).collect::<Vec<_>>(),
        "url": ctx.url,
        "log_url": ctx.log_url,
    })
}

/// The facts of the message `row` is about.
pub async fn context_of(st: &AppState, row: &NotificationRow) -> anyhow::Result<Context> {
    if let Some(b) = row.build_id {
        let build = crate::db::builds::get(&st.db, BuildId(b))
            .await?
            .ok_or_else(|| anyhow::anyhow!("build {b} is gone"))?;
        return build_context(st, &build, &row.event).await;
    }
    let name = row.slave_name.clone().unwrap_or_default();
    let last_seen: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT last_seen FROM slaves WHERE name = $1")
            .bind(&name)
            .fetch_optional(&st.db)
            .await?
            .flatten();
    Ok(slave_context(st, &name, last_seen))
}

/// Where the recipient of `row` stops these messages ("" when its subscription is gone).
pub async fn unsubscribe_url(st: &AppState, row: &NotificationRow) -> sqlx::Result<String> {
    let Some(sub) = row.subscription_id else {
        return Ok(String::new());
    };
    Ok(match db::subscription(&st.db, sub).await? {
        Some(s) => {
            let token = st.notify.unsubscribe.token(s.id, &s.recipient());
            format!("{}/unsubscribe#{token}", public_url(st))
        }
        None => String::new(),
    })
}

/// What mail `row` says: its project's (or the site's, or the built-in) template rendered; a
/// template that no longer renders falls back to the built-in one rather than lose the mail.
pub async fn render_mail(
    st: &AppState,
    row: &NotificationRow,
    unsubscribe_url: &str,
) -> anyhow::Result<template::Rendered> {
    let mut ctx = context_of(st, row).await?;
    ctx.unsubscribe_url = unsubscribe_url.to_string();
    let project = match row.build_id {
        Some(b) => {
            sqlx::query_scalar("SELECT project_id FROM builds WHERE id = $1")
                .bind(b)
                .fetch_optional(&st.db)
                .await?
        }
        None => None,
    };
    let t = template_for(st, project, &row.event).await?;
    let rendered = match template::render(&t.subject, &t.body, &ctx) {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!(
                notification = row.id,
                "the {} template for {} does not render ({e}); sending the built-in one",
                t.source,
                row.event
            );
            let (subject, body) = template::builtin(&row.event);
            template::render(subject, body, &ctx).map_err(|e| anyhow::anyhow!("{e}"))
        }
    };
    rendered.map(|r| with_unsubscribe_link(r, &ctx.unsubscribe_url))
}

/// Every mail carries its unsubscribe link: a template that leaves it out gets it as a
/// footer.
fn with_unsubscribe_link(mut r: template::Rendered, url: &str) -> template::Rendered {
    if url.is_empty() || r.text.contains(url) {
        return r;
    }
    if !r.text.ends_with('\n') {
        r.text.push('\n');
    }
    r.text
        .push_str(&format!("\n-- \nStop these mails: {url}\n"));
    r.html = template::html_of(&r.text);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_without_its_unsubscribe_link_gets_one() {
        let r = |text: &str| template::Rendered {
            subject: "s".into(),
            text: text.into(),
            html: template::html_of(text),
        };
        let url = "https://k.example/unsubscribe#1.ab";
        let added = with_unsubscribe_link(r("Build failed."), url);
        assert!(added.text.ends_with(&format!("Stop these mails: {url}\n")));
        assert!(added.html.contains(&format!("href=\"{url}\"")));
        let kept = with_unsubscribe_link(r(&format!("Bye: {url}\n")), url);
        assert_eq!(kept.text, format!("Bye: {url}\n"));
        assert_eq!(with_unsubscribe_link(r("x"), "").text, "x");
    }

    #[test]
    fn log_lines_lose_their_colours() {
        assert_eq!(
            plain("\u{1b}[1;31mred\u{1b}[0m text\tx\u{7}"),
            "red text\tx"
        );
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(192), "3m 12s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(seg("a b/ü"), "a%20b%2F%C3%BC");
    }
}
