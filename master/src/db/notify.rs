//! Notifications: subscriptions, templates and the outbox (`0010_notifications.sql`).

use chrono::{DateTime, Utc};
use kiln_shared::notify::{Delivery, Subscription};
use kiln_shared::BuildId;
use sqlx::{FromRow, PgConnection, PgExecutor};

// ---- subscriptions ---------------------------------------------------------------------------

/// Whose a subscription is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Project(i64),
    Team(i64),
}

impl Owner {
    fn ids(self) -> (Option<i64>, Option<i64>) {
        match self {
            Owner::Project(p) => (Some(p), None),
            Owner::Team(t) => (None, Some(t)),
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct SubscriptionRow {
    pub id: i64,
    pub project_id: Option<i64>,
    pub team_id: Option<i64>,
    pub project: Option<String>,
    pub team: Option<String>,
    pub email: Option<String>,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub webhook: Option<String>,
    pub events: Vec<String>,
    pub triggers: Vec<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl SubscriptionRow {
    pub fn into_api(self) -> Subscription {
        Subscription {
            id: self.id,
            project: self.project,
            team: self.team,
            email: self.email,
            user: self.username,
            webhook: self.webhook,
            events: self.events,
            triggers: self.triggers,
            created_by: self.created_by,
            created_at: self.created_at,
        }
    }

    /// The recipient as the unsubscribe token binds it.
    pub fn recipient(&self) -> String {
        match (&self.email, self.user_id, &self.webhook) {
            (Some(e), _, _) => format!("email:{}", e.to_lowercase()),
            (_, Some(u), _) => format!("user:{u}"),
            (_, _, Some(w)) => format!("webhook:{w}"),
            _ => String::new(),
        }
    }
}

const SUBSCRIPTION: &str =
    "SELECT s.id, s.project_id, s.team_id, p.name AS project, t.name AS team,
        s.email, s.user_id, u.username, s.webhook, s.events, s.triggers, s.created_by, s.created_at
   FROM subscriptions s
   LEFT JOIN projects p ON p.id = s.project_id
   LEFT JOIN teams t ON t.id = s.team_id
   LEFT JOIN users u ON u.id = s.user_id";

/// The subscriptions of a project or a team, oldest first.
pub async fn subscriptions(
    db: impl PgExecutor<'_>,
    owner: Owner,
) -> sqlx::Result<Vec<SubscriptionRow>> {
    let (p, t) = owner.ids();
    sqlx::query_as(&format!(
        "{SUBSCRIPTION} WHERE s.project_id IS NOT DISTINCT FROM $1
            AND s.team_id IS NOT DISTINCT FROM $2 ORDER BY s.id"
    ))
    .bind(p)
    .bind(t)
    .fetch_all(db)
    .await
}

pub async fn subscription(
    db: impl PgExecutor<'_>,
    id: i64,
) -> sqlx::Result<Option<SubscriptionRow>> {
    sqlx::query_as(&format!("{SUBSCRIPTION} WHERE s.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

pub struct NewSubscription<'a> {
    pub owner: Owner,
    pub email: Option<&'a str>,
    pub user_id: Option<i64>,
    pub webhook: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub events: &'a [String],
    pub triggers: &'a [String],
    pub created_by: &'a str,
}

pub async fn insert_subscription(
    db: impl PgExecutor<'_>,
    s: NewSubscription<'_>,
) -> sqlx::Result<i64> {
    let (p, t) = s.owner.ids();
    sqlx::query_scalar(
        "INSERT INTO subscriptions (project_id, team_id, email, user_id, webhook, secret, events,
                                    triggers, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(p)
    .bind(t)
    .bind(s.email)
    .bind(s.user_id)
    .bind(s.webhook)
    .bind(s.secret)
    .bind(s.events)
    .bind(s.triggers)
    .bind(s.created_by)
    .fetch_one(db)
    .await
}

pub async fn delete_subscription(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
    sqlx::query("DELETE FROM subscriptions WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .map(|r| r.rows_affected() > 0)
}

// ---- templates -------------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    pub project_id: Option<i64>,
    pub event: String,
    pub subject: String,
    pub body: String,
}

/// The site's (`project` `None`) and, with a project, that project's templates.
pub async fn templates(
    db: impl PgExecutor<'_>,
    project: Option<i64>,
) -> sqlx::Result<Vec<TemplateRow>> {
    sqlx::query_as(
        "SELECT project_id, event, subject, body FROM notify_templates
          WHERE project_id IS NULL OR project_id = $1",
    )
    .bind(project)
    .fetch_all(db)
    .await
}

pub async fn put_template(
    db: impl PgExecutor<'_>,
    project: Option<i64>,
    event: &str,
    subject: &str,
    body: &str,
    by: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO notify_templates (project_id, event, subject, body, updated_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (COALESCE(project_id, 0), event)
         DO UPDATE SET subject = $3, body = $4, updated_by = $5, updated_at = now()",
    )
    .bind(project)
    .bind(event)
    .bind(subject)
    .bind(body)
    .bind(by)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn delete_template(
    db: impl PgExecutor<'_>,
    project: Option<i64>,
    event: &str,
) -> sqlx::Result<bool> {
    sqlx::query(
        "DELETE FROM notify_templates WHERE project_id IS NOT DISTINCT FROM $1 AND event = $2",
    )
    .bind(project)
    .bind(event)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

// ---- who is told about an ending -------------------------------------------------------------

/// A subscription that may hear about a build of a project, with its recipient resolved.
#[derive(Debug, Clone, FromRow)]
pub struct Audience {
    pub subscription_id: i64,
    pub events: Vec<String>,
    pub triggers: Vec<String>,
    /// `email` or `webhook`.
    pub kind: String,
    /// The address (lower-cased) or URL; `None`: a user without an address, or one who may
    /// no longer see the project.
    pub recipient: Option<String>,
}

/// The subscriptions of project `project` and of its team, each with where its messages go. A
/// user's subscription reaches their account's address only while they may see the project.
pub async fn audience_of_project(
    db: &mut PgConnection,
    project: i64,
) -> sqlx::Result<Vec<Audience>> {
    sqlx::query_as(
        "SELECT s.id AS subscription_id, s.events, s.triggers,
                CASE WHEN s.webhook IS NOT NULL THEN 'webhook' ELSE 'email' END AS kind,
                CASE
                  WHEN s.webhook IS NOT NULL THEN s.webhook
                  WHEN s.email IS NOT NULL THEN lower(s.email)
                  WHEN u.admin OR p.visibility = 'public'
                       OR EXISTS (SELECT 1 FROM team_members m
                                   WHERE m.team_id = p.team_id AND m.user_id = u.id)
                    THEN lower(u.email)
                END AS recipient
           FROM projects p
           JOIN subscriptions s ON s.project_id = p.id OR s.team_id = p.team_id
           LEFT JOIN users u ON u.id = s.user_id
          WHERE p.id = $1
          ORDER BY s.id",
    )
    .bind(project)
    .fetch_all(&mut *db)
    .await
}

/// Every subscription to `slave_offline` (users: admins only), with its recipient.
pub async fn audience_of_slaves(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Audience>> {
    sqlx::query_as(
        "SELECT s.id AS subscription_id, s.events, s.triggers,
                CASE WHEN s.webhook IS NOT NULL THEN 'webhook' ELSE 'email' END AS kind,
                CASE
                  WHEN s.webhook IS NOT NULL THEN s.webhook
                  WHEN s.email IS NOT NULL THEN lower(s.email)
                  WHEN u.admin THEN lower(u.email)
                END AS recipient
           FROM subscriptions s LEFT JOIN users u ON u.id = s.user_id
          WHERE 'slave_offline' = ANY (s.events)
          ORDER BY s.id",
    )
    .fetch_all(db)
    .await
}

/// The state of the project's ended build (succeeded or failed) before build `build`.
pub async fn previous_outcome(
    db: &mut PgConnection,
    project: i64,
    build: BuildId,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT state FROM builds
          WHERE project_id = $1 AND id <> $2 AND state IN ('succeeded', 'failed')
            AND finished_at <= (SELECT finished_at FROM builds WHERE id = $2)
          ORDER BY finished_at DESC, id DESC LIMIT 1",
    )
    .bind(project)
    .bind(build.0)
    .fetch_optional(&mut *db)
    .await
}

pub struct NewNotification<'a> {
    pub subscription_id: i64,
    pub build: Option<BuildId>,
    pub slave: Option<&'a str>,
    pub event: &'a str,
    pub kind: &'a str,
    pub recipient: &'a str,
    pub occasion: &'a str,
}

/// Queues one message; nothing when this recipient already has one for this occasion.
pub async fn insert_notification(
    db: impl PgExecutor<'_>,
    n: NewNotification<'_>,
) -> sqlx::Result<bool> {
    sqlx::query(
        "INSERT INTO notifications (subscription_id, build_id, slave_name, event, kind, recipient,
                                    occasion)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (occasion, kind, recipient) WHERE redelivery_of IS NULL DO NOTHING",
    )
    .bind(n.subscription_id)
    .bind(n.build.map(|b| b.0))
    .bind(n.slave)
    .bind(n.event)
    .bind(n.kind)
    .bind(n.recipient)
    .bind(n.occasion)
    .execute(db)
    .await
    .map(|r| r.rows_affected() > 0)
}

// ---- the outbox ------------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub subscription_id: Option<i64>,
    pub build_id: Option<i64>,
    pub slave_name: Option<String>,
    pub event: String,
    pub kind: String,
    pub recipient: String,
    pub state: String,
    pub attempts: i32,
    pub response_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub redelivery_of: Option<i64>,
    pub subject: Option<String>,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub payload: Option<serde_json::Value>,
    /// The webhook's secret (from its subscription), for signing.
    pub secret: Option<String>,
}

impl NotificationRow {
    pub fn into_api(self) -> Delivery {
        Delivery {
            id: self.id,
            subscription: self.subscription_id,
            build: self.build_id.map(BuildId),
            slave: self.slave_name,
            event: self.event,
            kind: self.kind,
            recipient: self.recipient,
            next_attempt_at: (self.state == "pending").then_some(self.next_attempt_at),
            state: self.state,
            attempts: self.attempts,
            response_code: self.response_code,
            last_error: self.last_error,
            created_at: self.created_at,
            last_attempt_at: self.last_attempt_at,
            delivered_at: self.delivered_at,
            redelivery_of: self.redelivery_of,
        }
    }
}

const NOTIFICATION: &str = "SELECT n.id, n.subscription_id, n.build_id, n.slave_name, n.event,
        n.kind, n.recipient, n.state, n.attempts, n.response_code, n.last_error, n.created_at,
        n.last_attempt_at, n.next_attempt_at, n.delivered_at, n.redelivery_of, n.subject,
        n.body_text, n.body_html, n.payload, s.secret
   FROM notifications n LEFT JOIN subscriptions s ON s.id = n.subscription_id";

pub async fn notification(
    db: impl PgExecutor<'_>,
    id: i64,
) -> sqlx::Result<Option<NotificationRow>> {
    sqlx::query_as(&format!("{NOTIFICATION} WHERE n.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A subscription's deliveries, newest first.
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    subscription: i64,
    limit: i64,
) -> sqlx::Result<Vec<NotificationRow>> {
    sqlx::query_as(&format!(
        "{NOTIFICATION} WHERE n.subscription_id = $1 ORDER BY n.id DESC LIMIT $2"
    ))
    .bind(subscription)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Claims the oldest due message of `kind`: counts the attempt and moves its next attempt
/// `lease` ahead, so that another worker (another master) does not take it meanwhile, and a
/// worker that dies while sending leaves it to be taken again after the lease.
pub async fn claim_due(
    db: impl PgExecutor<'_>,
    kind: &str,
    lease: chrono::Duration,
) -> sqlx::Result<Option<NotificationRow>> {
    sqlx::query_as(
        "WITH due AS (
            SELECT id FROM notifications
             WHERE kind = $1 AND state = 'pending' AND next_attempt_at <= now()
             ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
         ), n AS (
            UPDATE notifications n SET attempts = n.attempts + 1, last_attempt_at = now(),
                   next_attempt_at = now() + $2
              FROM due WHERE n.id = due.id RETURNING n.*
         )
         SELECT n.id, n.subscription_id, n.build_id, n.slave_name, n.event, n.kind, n.recipient,
                n.state, n.attempts, n.response_code, n.last_error, n.created_at,
                n.last_attempt_at, n.next_attempt_at, n.delivered_at, n.redelivery_of,
                n.subject, n.body_text, n.body_html, n.payload, s.secret
           FROM n LEFT JOIN subscriptions s ON s.id = n.subscription_id",
    )
    .bind(kind)
    .bind(lease)
    .fetch_optional(db)
    .await
}

/// When the next message of `kind` is due, if any is pending.
pub async fn next_due(db: impl PgExecutor<'_>, kind: &str) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM notifications WHERE kind = $1 AND state = 'pending'",
    )
    .bind(kind)
    .fetch_one(db)
    .await
}

/// Keeps what a message renders to, so that every attempt sends the same.
pub async fn set_content(
    db: impl PgExecutor<'_>,
    id: i64,
    subject: Option<&str>,
    text: Option<&str>,
    html: Option<&str>,
    payload: Option<&serde_json::Value>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notifications SET subject = $2, body_text = $3, body_html = $4, payload = $5
          WHERE id = $1",
    )
    .bind(id)
    .bind(subject)
    .bind(text)
    .bind(html)
    .bind(payload)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn delivered(db: impl PgExecutor<'_>, id: i64, code: Option<i32>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notifications SET state = 'delivered', delivered_at = now(), response_code = $2,
                last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .bind(code)
    .execute(db)
    .await
    .map(|_| ())
}

/// An attempt failed: try again at `retry_at`, or (`None`) give up.
pub async fn attempt_failed(
    db: impl PgExecutor<'_>,
    id: i64,
    code: Option<i32>,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE notifications SET response_code = $2, last_error = $3,
                state = CASE WHEN $4::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = COALESCE($4, next_attempt_at)
          WHERE id = $1",
    )
    .bind(id)
    .bind(code)
    .bind(error)
    .bind(retry_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// Queues message `id` again as a new delivery with the same content.
pub async fn redeliver(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO notifications (subscription_id, build_id, slave_name, event, kind, recipient,
                                    subject, body_text, body_html, payload, redelivery_of,
                                    occasion)
         SELECT subscription_id, build_id, slave_name, event, kind, recipient, subject,
                body_text, body_html, payload, id, occasion
           FROM notifications WHERE id = $1
         RETURNING id",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

// ---- the unsubscribe key ---------------------------------------------------------------------

/// The key unsubscribe tokens are signed with: made once, kept in the database (so every
/// master of a farm checks the same tokens).
pub async fn unsubscribe_key(db: &sqlx::PgPool) -> sqlx::Result<Vec<u8>> {
    use rand::RngCore;
    let mut fresh = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    sqlx::query("INSERT INTO notify_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
        .bind(&fresh)
        .execute(db)
        .await?;
    sqlx::query_scalar("SELECT key FROM notify_key WHERE id = 1")
        .fetch_one(db)
        .await
}
