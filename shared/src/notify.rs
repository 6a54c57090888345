//! Notifications (issue 17): the JSON bodies of the subscription, delivery and template routes
//! (`docs/notifications.md` documents them), shared by the master and the console.

use crate::BuildId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a subscription can be told about, in the order a build's ending picks the one that
/// reaches a recipient (one message per recipient per ending: the first that matches).
pub const EVENTS: [&str; 6] = [
    "release",
    "fixed",
    "succeeded",
    "failed",
    "lost",
    "slave_offline",
];

/// Which builds count (a build's `trigger`; a `rebuild` counts as `manual`).
pub const TRIGGERS: [&str; 3] = ["schedule", "manual", "release"];

/// Events a template can be written for (`slave_offline` included).
pub fn is_event(e: &str) -> bool {
    EVENTS.contains(&e)
}

/// The trigger a build counts as, from its `trigger` column.
pub fn trigger_of(build_trigger: &str) -> &'static str {
    match build_trigger {
        "schedule" => "schedule",
        "release" => "release",
        _ => "manual",
    }
}

/// `POST /api/projects/{name}/subscriptions` (and `/api/teams/{name}/subscriptions`): exactly
/// one of `email`, `user` and `webhook`; `secret` with (and only with) `webhook`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// All of [`EVENTS`] but `slave_offline` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// All of [`TRIGGERS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<String>>,
}

/// A subscription as the API shows it (a webhook's secret never leaves the master).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: i64,
    /// The project it belongs to, or
    pub project: Option<String>,
    /// the team (all the team's projects).
    pub team: Option<String>,
    pub email: Option<String>,
    pub user: Option<String>,
    pub webhook: Option<String>,
    pub events: Vec<String>,
    pub triggers: Vec<String>,
    pub created_by: Option<String>,
    #[serde(with = "crate::ts")]
    pub created_at: DateTime<Utc>,
}

/// One message to one recipient (a mail or a webhook POST) and how its delivery went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub subscription: Option<i64>,
    pub build: Option<BuildId>,
    /// The slave an `slave_offline` message is about.
    pub slave: Option<String>,
    pub event: String,
    /// `email` or `webhook`.
    pub kind: String,
    /// The address or the webhook URL.
    pub recipient: String,
    /// `pending`, `delivered` or `failed` (given up after `notify.retry_for_secs`).
    pub state: String,
    pub attempts: i32,
    /// The webhook's last HTTP status, or the SMTP server's last reply code.
    pub response_code: Option<i32>,
    pub last_error: Option<String>,
    #[serde(with = "crate::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::ts::option")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::ts::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::ts::option")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The delivery this one sends again (the console's "redeliver").
    pub redelivery_of: Option<i64>,
}

/// A template for one event: where it comes from and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub event: String,
    /// `builtin` (Kiln's default), `site` (an admin's) or `project`.
    pub source: String,
    pub subject: String,
    pub body: String,
}

/// `PUT /api/templates/{event}`, `PUT /api/projects/{name}/templates/{event}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutTemplate {
    pub subject: String,
    pub body: String,
}

/// `POST /api/projects/{name}/templates/preview`: renders a template (as typed, not saved)
/// against a real build of the project (`build`, else its last ended one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewTemplate {
    pub event: String,
    pub subject: String,
    pub body: String,
    #[serde(default)]
    pub build: Option<BuildId>,
}

/// What a template renders to: the mail's subject and plain-text body, and the HTML
/// alternative made from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub build: Option<BuildId>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `POST /api/unsubscribe`: the token from a mail's unsubscribe link (which carries it after
/// `#`, so that it reaches no server's access log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    pub token: String,
}

/// The answer to an unsubscribe: what no longer reaches whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    pub message: String,
}
