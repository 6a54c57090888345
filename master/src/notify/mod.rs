//! Notifications (issue 17; `docs/notifications.md`): who hears about a build's ending or a
//! slave going offline, and how the message leaves.
//!
//! - [`events`]: which events an ending fires, and which one a recipient gets;
//! - [`queue_build_end`] / [`queue_slave_offline`]: the outbox rows, written in the caller's
//!   transaction (a build's ending) so that none is lost;
//! - [`content`]: what a message says (templates, the build's facts);
//! - [`outbox`]: the workers that send (mail through [`mail`], webhooks through [`webhook`]);
//! - [`unsubscribe`]: the tokens in mails' unsubscribe links.

pub mod content;
pub mod events;
pub mod mail;
pub mod outbox;
pub mod template;
pub mod unsubscribe;
pub mod webhook;

use crate::db::builds::BuildRow;
use crate::db::notify::{self as db, NewNotification};
use kiln_shared::config::Config;
use kiln_shared::BuildId;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use tokio::sync::Notify;

/// What the workers share with the rest of the master.
pub struct Notifier {
    /// Mail, when `[notify.smtp]` is configured.
    pub mail: Option<mail::Mailer>,
    pub policy: webhook::Policy,
    /// Signs unsubscribe links (from the database, see [`db::unsubscribe_key`]).
    pub unsubscribe: unsubscribe::Keys,
    /// Wakes the mail worker and the webhook worker.
    pub wake_mail: Notify,
    pub wake_webhooks: Notify,
}

impl Notifier {
    pub async fn new(cfg: &Config, pool: &sqlx::PgPool) -> anyhow::Result<Notifier> {
        let mail = match &cfg.notify.smtp {
            Some(s) => Some(mail::Mailer::new(cfg, s)?),
            None => None,
        };
        Ok(Notifier {
            mail,
            policy: webhook::Policy::try_from_config(&cfg.notify)
                .map_err(|e| anyhow::anyhow!("config key notify.webhook_allow: {e}"))?,
            unsubscribe: unsubscribe::Keys::new(db::unsubscribe_key(pool).await?),
            wake_mail: Notify::new(),
            wake_webhooks: Notify::new(),
        })
    }

    /// Tells the workers that rows were queued.
    pub fn wake(&self) {
        self.wake_mail.notify_one();
        self.wake_webhooks.notify_one();
    }
}

/// One message per recipient: for each (kind, recipient), the first of `fired` that one of
/// its subscriptions asks for (`wants`), with that subscription.
fn pick<'a>(
    audience: &'a [db::Audience],
    fired: &[&'static str],
    wants: impl Fn(&db::Audience) -> bool,
) -> BTreeMap<(&'a str, &'a str), (&'static str, i64)> {
    let mut out: BTreeMap<(&str, &str), (usize, &'static str, i64)> = BTreeMap::new();
    for a in audience.iter().filter(|a| wants(a)) {
        let Some(recipient) = a.recipient.as_deref() else {
            continue;
        };
        let Some(rank) = fired.iter().position(|e| a.events.iter().any(|x| x == e)) else {
            continue;
        };
        let key = (a.kind.as_str(), recipient);
        match out.get(&key) {
            Some((r, _, _)) if *r <= rank => {}
            _ => {
                out.insert(key, (rank, fired[rank], a.subscription_id));
            }
        }
    }
    out.into_iter()
        .map(|(k, (_, event, sub))| (k, (event, sub)))
        .collect()
}

/// In the transaction that ended `build` (its row as it ended): queues one message per
/// recipient that asked for one of the events the ending fires. Returns how many.
pub async fn queue_build_end(tx: &mut PgConnection, build: &BuildRow) -> sqlx::Result<usize> {
    if !build.state().is_terminal() || build.state() == kiln_shared::BuildState::Cancelled {
        return Ok(0);
    }
    // Most projects have no subscription: one query, then nothing.
    let audience = db::audience_of_project(tx, build.project_id).await?;
    if audience.is_empty() {
        return Ok(0);
    }
    let previous = match build.state() {
        kiln_shared::BuildState::Succeeded => {
            db::previous_outcome(tx, build.project_id, BuildId(build.id)).await?
        }
        _ => None,
    };
    let fired = events::fired(build.state(), build.release.is_some(), previous.as_deref());
    let trigger = kiln_shared::notify::trigger_of(&build.trigger);
    let chosen = pick(&audience, &fired, |a| {
        a.triggers.iter().any(|t| t == trigger)
    });
    let occasion = format!("build:{}", build.id);
    queue_chosen(tx, chosen, Some(BuildId(build.id)), None, &occasion).await
}

/// A slave went offline (and stayed away): queues a message for each `slave_offline`
/// subscriber. `since` names the occasion (when the master last heard from it).
pub async fn queue_slave_offline(
    pool: &sqlx::PgPool,
    slave: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<usize> {
    let audience = db::audience_of_slaves(pool).await?;
    let chosen = pick(&audience, &["slave_offline"], |_| true);
    let occasion = format!("slave:{slave}:{}", since.timestamp_millis());
    let mut conn = pool.acquire().await?;
    queue_chosen(&mut conn, chosen, None, Some(slave), &occasion).await
}

/// Queues one row per chosen recipient for `occasion` (about `build` or `slave`); returns how
/// many were new.
async fn queue_chosen(
    db: &mut PgConnection,
    chosen: BTreeMap<(&str, &str), (&'static str, i64)>,
    build: Option<BuildId>,
    slave: Option<&str>,
    occasion: &str,
) -> sqlx::Result<usize> {
    let mut n = 0;
    for ((kind, recipient), (event, sub)) in chosen {
        let queued = db::insert_notification(
            &mut *db,
            NewNotification {
                subscription_id: sub,
                build,
                slave,
                event,
                kind,
                recipient,
                occasion,
            },
        )
        .await?;
        n += usize::from(queued);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(id: i64, kind: &str, to: &str, events: &[&str]) -> db::Audience {
        db::Audience {
            subscription_id: id,
            events: events.iter().map(|e| e.to_string()).collect(),
            triggers: vec!["manual".into()],
            kind: kind.into(),
            recipient: Some(to.into()),
        }
    }

    #[test]
    fn one_message_per_recipient_the_first_event_it_asked_for() {
        let audience = [
            a(1, "email", "team@x", &["succeeded"]),
            a(2, "email", "team@x", &["release", "failed"]),
            a(3, "webhook", "https://h/x", &["failed"]),
            a(4, "email", "other@x", &["lost"]),
        ];
        let got = pick(&audience, &["release", "succeeded"], |_| true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[&("email", "team@x")], ("release", 2));
        let got = pick(&audience, &["failed"], |_| true);
        assert_eq!(got.len(), 2);
        assert_eq!(got[&("email", "team@x")], ("failed", 2));
        assert_eq!(got[&("webhook", "https://h/x")], ("failed", 3));
    }
}
