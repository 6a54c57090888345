//! The workers that empty the outbox: one for mail, one for webhooks (a slow receiver does not
//! hold mail back). Each takes the oldest due row, renders it on its first attempt and keeps
//! what it rendered, sends it, and marks it delivered (or when to try again) before it takes
//! the next. Rows are claimed with a lease in the database, so a master that dies while sending
//! leaves the row to be taken again, by itself after a restart or by another master.

use super::content;
use crate::db::notify::{self as db, NotificationRow};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Starts both workers.
pub fn spawn(st: Arc<AppState>) -> [tokio::task::JoinHandle<()>; 2] {
    [
        tokio::spawn(run(st.clone(), "email")),
        tokio::spawn(run(st, "webhook")),
    ]
}

/// How long a claimed row is left alone while it is being sent.
fn lease(st: &AppState) -> chrono::Duration {
    let send = st.cfg.notify.webhook_timeout_secs.max(30);
    chrono::Duration::seconds((send + 30) as i64)
}

/// When to try again after `attempts` failed ones, or `None` to give up.
pub fn retry_at(
    cfg: &kiln_shared::config::NotifyConfig,
    created: DateTime<Utc>,
    attempts: i32,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let shift = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let delay_ms = cfg
        .retry_first_ms
        .saturating_mul(1u64 << shift)
        .min(cfg.retry_max_delay_secs.saturating_mul(1000));
    let at = now + chrono::Duration::milliseconds(delay_ms as i64);
    let give_up = created + chrono::Duration::seconds(cfg.retry_for_secs as i64);
    (now < give_up).then_some(at.min(give_up))
}

async fn run(st: Arc<AppState>, kind: &'static str) {
    let wake = match kind {
        "email" => &st.notify.wake_mail,
        _ => &st.notify.wake_webhooks,
    };
    loop {
        let claimed = db::claim_due(&st.db, kind, lease(&st)).await;
        match claimed {
            Ok(Some(row)) => {
                if let Err(e) = attempt(&st, &row).await {
                    tracing::warn!(notification = row.id, "notification attempt: {e}");
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("reading the {kind} outbox: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let wait = match db::next_due(&st.db, kind).await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(60)),
            Ok(None) => Duration::from_secs(60),
            Err(_) => Duration::from_secs(1),
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Records how an attempt went.
async fn outcome(
    st: &AppState,
    row: &NotificationRow,
    delivered: bool,
    code: Option<i32>,
    error: Option<String>,
    permanent: bool,
) -> sqlx::Result<()> {
    if delivered {
        tracing::info!(
            notification = row.id,
            kind = row.kind,
            event = row.event,
            attempts = row.attempts,
            "notification delivered"
        );
        return db::delivered(&st.db, row.id, code).await;
    }
    let error = error.unwrap_or_else(|| "failed".into());
    let retry = if permanent {
        None
    } else {
        retry_at(&st.cfg.notify, row.created_at, row.attempts, Utc::now())
    };
    tracing::warn!(
        notification = row.id,
        kind = row.kind,
        attempts = row.attempts,
        retry = ?retry,
        "notification not delivered: {error}"
    );
    db::attempt_failed(&st.db, row.id, code, &error, retry).await
}

async fn attempt(st: &AppState, row: &NotificationRow) -> anyhow::Result<()> {
    match row.kind.as_str() {
        "email" => send_mail(st, row).await,
        _ => send_webhook(st, row).await,
    }
}

async fn send_mail(st: &AppState, row: &NotificationRow) -> anyhow::Result<()> {
    let Some(mailer) = &st.notify.mail else {
        outcome(
            st,
            row,
            false,
            None,
            Some("mail is not configured on this master ([notify.smtp])".into()),
            false,
        )
        .await?;
        return Ok(());
    };
    let unsubscribe = content::unsubscribe_url(st, row).await?;
    let (subject, text, html) = match (&row.subject, &row.body_text, &row.body_html) {
        (Some(s), Some(t), Some(h)) => (s.clone(), t.clone(), h.clone()),
        _ => match content::render_mail(st, row, &unsubscribe).await {
            Ok(r) => {
                db::set_content(
                    &st.db,
                    row.id,
                    Some(&r.subject),
                    Some(&r.text),
                    Some(&r.html),
                    None,
                )
                .await?;
                (r.subject, r.text, r.html)
            }
            Err(e) => {
                outcome(
                    st,
                    row,
                    false,
                    None,
                    Some(format!("cannot write the mail: {e}")),
                    false,
                )
                .await?;
                return Ok(());
            }
        },
    };
    let mut headers: Vec<(&'static str, String)> = vec![
        ("Auto-Submitted", "auto-generated".into()),
        ("X-Kiln-Event", row.event.clone()),
    ];
    if let Some(b) = row.build_id {
        headers.push(("X-Kiln-Build", b.to_string()));
        let project: Option<String> = sqlx::query_scalar(
            "SELECT p.name FROM builds b JOIN projects p ON p.id = b.project_id WHERE b.id = $1",
        )
        .bind(b)
        .fetch_optional(&st.db)
        .await?;
        if let Some(p) = project {
            headers.push(("X-Kiln-Project", p));
        }
    }
    if !unsubscribe.is_empty() {
        headers.push(("List-Unsubscribe", format!("<{unsubscribe}>")));
    }
    let sent = mailer
        .send(row.id, &row.recipient, &subject, &text, &html, &headers)
        .await;
    outcome(
        st,
        row,
        sent.delivered,
        sent.code,
        sent.error,
        sent.permanent,
    )
    .await?;
    Ok(())
}

async fn send_webhook(st: &AppState, row: &NotificationRow) -> anyhow::Result<()> {
    let Some(secret) = &row.secret else {
        outcome(
            st,
            row,
            false,
            None,
            Some("the subscription was removed".into()),
            true,
        )
        .await?;
        return Ok(());
    };
    let payload = match &row.payload {
        Some(p) => p.clone(),
        None => match content::context_of(st, row).await {
            Ok(ctx) => {
                let p = content::payload(&ctx);
                db::set_content(&st.db, row.id, None, None, None, Some(&p)).await?;
                p
            }
            Err(e) => {
                outcome(
                    st,
                    row,
                    false,
                    None,
                    Some(format!("cannot write the body: {e}")),
                    false,
                )
                .await?;
                return Ok(());
            }
        },
    };
    let o = super::webhook::send(
        &st.notify.policy,
        &row.recipient,
        secret,
        &row.event,
        row.id,
        &payload,
        Duration::from_secs(st.cfg.notify.webhook_timeout_secs),
    )
    .await;
    outcome(
        st,
        row,
        o.delivered,
        o.status.map(i32::from),
        o.error,
        false,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_stop() {
        let cfg = kiln_shared::config::NotifyConfig {
            retry_first_ms: 1000,
            retry_max_delay_secs: 5,
            retry_for_secs: 60,
            ..Default::default()
        };
        let t0 = Utc::now();
        let after = |n, now| retry_at(&cfg, t0, n, now).map(|t| (t - now).num_milliseconds());
        assert_eq!(after(1, t0), Some(1000));
        assert_eq!(after(2, t0), Some(2000));
        assert_eq!(after(3, t0), Some(4000));
        assert_eq!(after(4, t0), Some(5000));
        assert_eq!(after(40, t0), Some(5000));
        // Never past the give-up time, and nothing after it.
        let late = t0 + chrono::Duration::seconds(58);
        assert_eq!(after(9, late), Some(2000));
        assert_eq!(after(9, t0 + chrono::Duration::seconds(60)), None);
    }
}
