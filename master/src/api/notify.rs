//! Notification routes (`docs/notifications.md`): subscriptions of projects and teams, their
//! deliveries, templates with preview, and unsubscribing from a mail's link.

use crate::auth::{access, Principal};
use crate::db::accounts;
use crate::db::notify::{self as db, Owner, SubscriptionRow};
use crate::error::{ApiError, ApiResult};
use crate::notify::{content, template, unsubscribe};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_shared::api::Role;
use kiln_shared::notify::{
    is_event, Delivery, NewSubscription, PreviewTemplate, PutTemplate, Rendered, Subscription,
    Template, Unsubscribe, Unsubscribed, EVENTS, TRIGGERS,
};
use kiln_shared::BuildId;
use serde_json::json;
use std::sync::Arc;

/// The most deliveries a listing shows.
const DELIVERIES: i64 = 100;
const MAX_SUBJECT: usize = 1_000;
const MAX_BODY: usize = 100_000;
const MAX_SECRET: usize = 1_024;

/// A project's or a team's subscriptions, as a person reaches them.
struct Scope {
    owner: Owner,
    /// "project 'board'" or "team 'boards'", for messages.
    what: String,
    role: Role,
}

async fn project_scope(st: &AppState, who: &Principal, name: &str) -> ApiResult<Scope> {
    let a = access::project(st, who, name, Role::Viewer, "viewing").await?;
    Ok(Scope {
        owner: Owner::Project(a.project.id),
        what: format!("project '{name}'"),
        role: a.role,
    })
}

/// Team `name` for `who`: 404 unless they are in it (or an admin).
async fn team_scope(st: &AppState, who: &Principal, name: &str) -> ApiResult<Scope> {
    let missing = || ApiError::NotFound(format!("no team named '{name}'"));
    let team = accounts::team_by_name(&st.db, name)
        .await?
        .ok_or_else(missing)?;
    let role = if who.user.admin {
        Role::Admin
    } else {
        accounts::role_in_team(&st.db, who.user.id, team.id)
            .await?
            .ok_or_else(missing)?
    };
    Ok(Scope {
        owner: Owner::Team(team.id),
        what: format!("team '{name}'"),
        role: role.min(who.cap),
    })
}

impl Scope {
    fn manages(&self) -> bool {
        self.role >= Role::Maintainer
    }

    fn require_maintainer(&self, doing: &str) -> ApiResult<()> {
        if self.manages() {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "{doing} needs the maintainer role on {}; you have {}",
            self.what,
            self.role.as_str()
        )))
    }

    /// Whether `who` may see subscription `s` (all of them as a maintainer, else their own).
    fn sees(&self, who: &Principal, s: &SubscriptionRow) -> bool {
        self.manages() || s.user_id == Some(who.user.id)
    }

    /// Subscription `id` of this scope, if `who` may see it (404 otherwise).
    async fn subscription(
        &self,
        st: &AppState,
        who: &Principal,
        id: i64,
    ) -> ApiResult<SubscriptionRow> {
        let s = db::subscription(&st.db, id).await?;
        let (p, t) = match self.owner {
            Owner::Project(p) => (Some(p), None),
            Owner::Team(t) => (None, Some(t)),
        };
        match s {
            Some(s) if s.project_id == p && s.team_id == t && self.sees(who, &s) => Ok(s),
            _ => Err(ApiError::NotFound(format!(
                "{} has no subscription {id}",
                self.what
            ))),
        }
    }
}

fn check_list(
    field: &'static str,
    given: Option<&[String]>,
    known: &[&str],
    default: &[&str],
) -> ApiResult<Vec<String>> {
    let Some(given) = given else {
        return Ok(default.iter().map(|s| s.to_string()).collect());
    };
    if given.is_empty() {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field} is empty; leave it out for all, or name some of: {}",
                known.join(", ")
            ),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for g in given {
        if !known.contains(&g.as_str()) {
            return Err(ApiError::invalid(
                field,
                format!("'{g}' is not one of the {field}: {}", known.join(", ")),
            ));
        }
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    Ok(out)
}

fn need_mail(st: &AppState, field: &'static str) -> ApiResult<()> {
    if st.notify.mail.is_some() {
        return Ok(());
    }
    Err(ApiError::invalid(
        field,
        "mail is not configured on this master (an admin sets [notify.smtp]); a webhook works",
    ))
}

/// Whether user `u` may see what `scope` covers (a user subscription must not leak builds).
async fn user_sees(st: &AppState, scope: &Scope, u: &accounts::UserRow) -> ApiResult<bool> {
    if u.admin {
        return Ok(true);
    }
    Ok(match scope.owner {
        Owner::Project(p) => {
            let Some(row) = crate::db::projects::get_by_id(&st.db, p).await? else {
                return Ok(false);
            };
            row.visibility == "public"
                || match row.team_id {
                    Some(t) => accounts::role_in_team(&st.db, u.id, t).await?.is_some(),
                    None => false,
                }
        }
        Owner::Team(t) => accounts::role_in_team(&st.db, u.id, t).await?.is_some(),
    })
}

async fn list(st: &AppState, who: &Principal, scope: Scope) -> ApiResult<Json<Vec<Subscription>>> {
    let rows = db::subscriptions(&st.db, scope.owner).await?;
    Ok(Json(
        rows.into_iter()
            .filter(|s| scope.sees(who, s))
            .map(SubscriptionRow::into_api)
            .collect(),
    ))
}

async fn create(
    st: &AppState,
    who: &Principal,
    scope: Scope,
    req: NewSubscription,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let given = [
        req.email.is_some(),
        req.user.is_some(),
        req.webhook.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 {
        return Err(ApiError::invalid(
            "email",
            "name exactly one recipient: \"email\", \"user\" or \"webhook\"",
        ));
    }
    if req.secret.is_some() && req.webhook.is_none() {
        return Err(ApiError::invalid(
            "secret",
            "a secret goes with a webhook only",
        ));
    }
    let build_events: Vec<&str> = EVENTS
        .iter()
        .copied()
        .filter(|e| *e != "slave_offline")
        .collect();
    let events = check_list("events", req.events.as_deref(), &EVENTS, &build_events)?;
    let triggers = check_list("triggers", req.triggers.as_deref(), &TRIGGERS, &TRIGGERS)?;
    if events.iter().any(|e| e == "slave_offline") && !who.is_admin() {
        return Err(ApiError::Forbidden(
            "subscribing to slave_offline needs a site admin".into(),
        ));
    }
    let mut user_id = None;
    if let Some(name) = &req.user {
        let u = accounts::user_by_name(&st.db, name)
            .await?
            .ok_or_else(|| ApiError::invalid("user", format!("no user named '{name}'")))?;
        if !scope.manages() && u.id != who.user.id {
            return Err(ApiError::Forbidden(format!(
                "subscribing someone else needs the maintainer role on {}; you may subscribe yourself ({{\"user\": \"{}\"}})",
                scope.what,
                who.name()
            )));
        }
        if !user_sees(st, &scope, &u).await? {
            return Err(ApiError::invalid(
                "user",
                format!(
                    "'{name}' cannot see {}, so cannot be told about it",
                    scope.what
                ),
            ));
        }
        if u.email.as_deref().is_none_or(|e| e.trim().is_empty()) {
            return Err(ApiError::invalid(
                "user",
                format!("'{name}' has no mail address in their account"),
            ));
        }
        need_mail(st, "user")?;
        user_id = Some(u.id);
    } else {
        scope.require_maintainer("subscribing an address or a webhook")?;
    }
    if let Some(e) = &req.email {
        let e = e.trim();
        if e.len() > 254 || e.parse::<lettre::Address>().is_err() {
            return Err(ApiError::invalid(
                "email",
                format!("'{e}' is not a mail address like list@example.org"),
            ));
        }
        need_mail(st, "email")?;
    }
    if let Some(w) = &req.webhook {
        st.notify
            .policy
            .check_url(w)
            .map_err(|m| ApiError::invalid("webhook", m))?;
        match req.secret.as_deref() {
            None | Some("") => {
                return Err(ApiError::invalid(
                    "secret",
                    "a webhook needs a secret: its deliveries are signed with it",
                ))
            }
            Some(s) if s.len() > MAX_SECRET || s.chars().any(char::is_control) => {
                return Err(ApiError::invalid(
                    "secret",
                    format!("a secret is at most {MAX_SECRET} bytes without control characters"),
                ))
            }
            Some(_) => {}
        }
    }
    let id = db::insert_subscription(
        &st.db,
        db::NewSubscription {
            owner: scope.owner,
            email: req.email.as_deref().map(str::trim),
            user_id,
            webhook: req.webhook.as_deref(),
            secret: req.secret.as_deref(),
            events: &events,
            triggers: &triggers,
            created_by: who.name(),
        },
    )
    .await?;
    let row = db::subscription(&st.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("subscription {id} vanished")))?;
    who.audit(
        st,
        "subscription_created",
        Some(scope.what.clone()),
        json!({ "id": id, "email": row.email, "user": row.username, "webhook": row.webhook,
                "events": events, "triggers": triggers }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(row.into_api())))
}

async fn delete(st: &AppState, who: &Principal, scope: Scope, id: i64) -> ApiResult<StatusCode> {
    let s = scope.subscription(st, who, id).await?;
    db::delete_subscription(&st.db, s.id).await?;
    who.audit(
        st,
        "subscription_deleted",
        Some(scope.what.clone()),
        json!({ "id": id }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn deliveries(
    st: &AppState,
    who: &Principal,
    scope: Scope,
    id: i64,
) -> ApiResult<Json<Vec<Delivery>>> {
    let s = scope.subscription(st, who, id).await?;
    let rows = db::deliveries(&st.db, s.id, DELIVERIES).await?;
    Ok(Json(rows.into_iter().map(|r| r.into_api()).collect()))
}

pub async fn list_project(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Subscription>>> {
    let scope = project_scope(&st, &who, &name).await?;
    list(&st, &who, scope).await
}

pub async fn create_project(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    Json(req): Json<NewSubscription>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let scope = project_scope(&st, &who, &name).await?;
    create(&st, &who, scope, req).await
}

pub async fn delete_project(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let scope = project_scope(&st, &who, &name).await?;
    delete(&st, &who, scope, id).await
}

pub async fn deliveries_project(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<Json<Vec<Delivery>>> {
    let scope = project_scope(&st, &who, &name).await?;
    deliveries(&st, &who, scope, id).await
}

pub async fn list_team(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Subscription>>> {
    let scope = team_scope(&st, &who, &name).await?;
    list(&st, &who, scope).await
}

pub async fn create_team(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    Json(req): Json<NewSubscription>,
) -> ApiResult<(StatusCode, Json<Subscription>)> {
    let scope = team_scope(&st, &who, &name).await?;
    create(&st, &who, scope, req).await
}

pub async fn delete_team(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    let scope = team_scope(&st, &who, &name).await?;
    delete(&st, &who, scope, id).await
}

pub async fn deliveries_team(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((name, id)): Path<(String, i64)>,
) -> ApiResult<Json<Vec<Delivery>>> {
    let scope = team_scope(&st, &who, &name).await?;
    deliveries(&st, &who, scope, id).await
}

/// `POST /api/deliveries/{id}/redeliver`: maintainers of the subscription's project or team.
pub async fn redeliver(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    let missing = || ApiError::NotFound(format!("no delivery {id}"));
    let n = db::notification(&st.db, id).await?.ok_or_else(missing)?;
    let sub = match n.subscription_id {
        Some(s) => db::subscription(&st.db, s).await?,
        None => None,
    };
    // Messages whose subscription is gone are an admin's; so are slaves' going offline.
    let scope = match (&sub, n.build_id) {
        (Some(s), Some(_)) => match (&s.project, &s.team) {
            (Some(p), _) => project_scope(&st, &who, p).await,
            (_, Some(t)) => team_scope(&st, &who, t).await,
            _ => Err(missing()),
        },
        _ if who.user.admin => Ok(Scope {
            owner: Owner::Team(0),
            what: "the site".into(),
            role: Role::Admin.min(who.cap),
        }),
        _ => Err(missing()),
    }
    .map_err(|_| missing())?;
    scope.require_maintainer("redelivering")?;
    let new = db::redeliver(&st.db, id).await?.ok_or_else(missing)?;
    st.notify.wake();
    who.audit(
        &st,
        "delivery_redelivered",
        Some(scope.what.clone()),
        json!({ "delivery": id, "new": new }),
    )
    .await;
    let row = db::notification(&st.db, new).await?.ok_or_else(missing)?;
    Ok((StatusCode::CREATED, Json(row.into_api())))
}

// ---- templates -------------------------------------------------------------------------------

fn check_event(event: &str) -> ApiResult<()> {
    if is_event(event) {
        return Ok(());
    }
    Err(ApiError::NotFound(format!(
        "no event '{event}'; events are {}",
        EVENTS.join(", ")
    )))
}

fn check_template(event: &str, subject: &str, body: &str) -> ApiResult<()> {
    if subject.len() > MAX_SUBJECT {
        return Err(ApiError::invalid(
            "subject",
            format!("a subject template is at most {MAX_SUBJECT} bytes"),
        ));
    }
    if body.len() > MAX_BODY {
        return Err(ApiError::invalid(
            "body",
            format!("a body template is at most {MAX_BODY} bytes"),
        ));
    }
    template::check(event, subject, body).map_err(|e| ApiError::Invalid {
        field: Some(e.field),
        message: format!("the template does not render: {e}"),
    })
}

async fn templates(st: &AppState, project: Option<i64>) -> ApiResult<Json<Vec<Template>>> {
    let mut out = Vec::with_capacity(EVENTS.len());
    for e in EVENTS {
        let t = content::template_for(st, project, e).await?;
        out.push(Template {
            event: e.into(),
            source: t.source.into(),
            subject: t.subject,
            body: t.body,
        });
    }
    Ok(Json(out))
}

async fn project_maintained(
    st: &AppState,
    who: &Principal,
    name: &str,
    doing: &str,
) -> ApiResult<i64> {
    Ok(access::project(st, who, name, Role::Maintainer, doing)
        .await?
        .project
        .id)
}

/// `GET /api/templates`: anyone signed in.
pub async fn site_templates(
    State(st): State<Arc<AppState>>,
    _: Principal,
) -> ApiResult<Json<Vec<Template>>> {
    templates(&st, None).await
}

/// `PUT /api/templates/{event}`: admins.
pub async fn put_site_template(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(event): Path<String>,
    Json(req): Json<PutTemplate>,
) -> ApiResult<Json<Template>> {
    who.require_admin("changing the site's templates")?;
    check_event(&event)?;
    check_template(&event, &req.subject, &req.body)?;
    db::put_template(&st.db, None, &event, &req.subject, &req.body, who.name()).await?;
    who.audit(
        &st,
        "template_changed",
        Some(format!("site template {event}")),
        json!({}),
    )
    .await;
    Ok(Json(Template {
        event,
        source: "site".into(),
        subject: req.subject,
        body: req.body,
    }))
}

/// `DELETE /api/templates/{event}`: admins; back to Kiln's built-in one.
pub async fn delete_site_template(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(event): Path<String>,
) -> ApiResult<StatusCode> {
    who.require_admin("changing the site's templates")?;
    check_event(&event)?;
    db::delete_template(&st.db, None, &event).await?;
    who.audit(
        &st,
        "template_deleted",
        Some(format!("site template {event}")),
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/projects/{name}/templates`: maintainers.
pub async fn project_templates(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<Template>>> {
    let p = project_maintained(&st, &who, &name, "reading the project's templates").await?;
    templates(&st, Some(p)).await
}

/// `PUT /api/projects/{name}/templates/{event}`: maintainers.
pub async fn put_project_template(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((name, event)): Path<(String, String)>,
    Json(req): Json<PutTemplate>,
) -> ApiResult<Json<Template>> {
    let p = project_maintained(&st, &who, &name, "changing the project's templates").await?;
    check_event(&event)?;
    check_template(&event, &req.subject, &req.body)?;
    db::put_template(&st.db, Some(p), &event, &req.subject, &req.body, who.name()).await?;
    who.audit(
        &st,
        "template_changed",
        Some(format!("project {name}")),
        json!({ "event": event }),
    )
    .await;
    Ok(Json(Template {
        event,
        source: "project".into(),
        subject: req.subject,
        body: req.body,
    }))
}

/// `DELETE /api/projects/{name}/templates/{event}`: maintainers; back to the site's one.
pub async fn delete_project_template(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path((name, event)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = project_maintained(&st, &who, &name, "changing the project's templates").await?;
    check_event(&event)?;
    db::delete_template(&st.db, Some(p), &event).await?;
    who.audit(
        &st,
        "template_deleted",
        Some(format!("project {name}")),
        json!({ "event": event }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Renders a template as typed against build `build` (of `project` when given), else the
/// last ended build (of the project), else Kiln's sample facts.
async fn preview(
    st: &AppState,
    project: Option<(i64, &str)>,
    req: PreviewTemplate,
) -> ApiResult<Json<Rendered>> {
    if !is_event(&req.event) {
        return Err(ApiError::invalid(
            "event",
            format!("no event '{}'; events are {}", req.event, EVENTS.join(", ")),
        ));
    }
    let build = match req.build {
        Some(id) => {
            let b = crate::db::builds::get(&st.db, id)
                .await?
                .ok_or_else(|| ApiError::invalid("build", format!("no build {id}")))?;
            if let Some((p, name)) = project {
                if b.project_id != p {
                    return Err(ApiError::invalid(
                        "build",
                        format!("build {id} is not a build of project '{name}'"),
                    ));
                }
            }
            Some(b)
        }
        None => {
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT max(id) FROM builds WHERE state IN ('succeeded', 'failed', 'lost', 'cancelled')
                   AND ($1::bigint IS NULL OR project_id = $1)",
            )
            .bind(project.map(|p| p.0))
            .fetch_one(&st.db)
            .await?;
            match last {
                Some(id) => crate::db::builds::get(&st.db, BuildId(id)).await?,
                None => None,
            }
        }
    };
    if req.event == "slave_offline" || build.is_none() {
        // Slaves' messages (and a project without an ended build) preview with sample facts.
        let ctx = template::sample(&req.event);
        let r = template::render(&req.subject, &req.body, &ctx).map_err(|e| ApiError::Invalid {
            field: Some(e.field),
            message: format!("the template does not render: {e}"),
        })?;
        return Ok(Json(Rendered {
            build: None,
            subject: r.subject,
            text: r.text,
            html: r.html,
        }));
    }
    let b = build.expect("checked above");
    let mut ctx = content::build_context(st, &b, &req.event).await?;
    ctx.unsubscribe_url = format!("{}/unsubscribe#preview", content::public_url(st));
    let r = template::render(&req.subject, &req.body, &ctx).map_err(|e| ApiError::Invalid {
        field: Some(e.field),
        message: format!("the template does not render: {e}"),
    })?;
    Ok(Json(Rendered {
        build: Some(BuildId(b.id)),
        subject: r.subject,
        text: r.text,
        html: r.html,
    }))
}

/// `POST /api/templates/preview`: admins.
pub async fn preview_site(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Json(req): Json<PreviewTemplate>,
) -> ApiResult<Json<Rendered>> {
    who.require_admin("previewing the site's templates")?;
    preview(&st, None, req).await
}

/// `POST /api/projects/{name}/templates/preview`: maintainers.
pub async fn preview_project(
    State(st): State<Arc<AppState>>,
    who: Principal,
    Path(name): Path<String>,
    Json(req): Json<PreviewTemplate>,
) -> ApiResult<Json<Rendered>> {
    let p = project_maintained(&st, &who, &name, "previewing the project's templates").await?;
    preview(&st, Some((p, &name)), req).await
}

// ---- unsubscribing ---------------------------------------------------------------------------

/// `POST /api/unsubscribe`: anyone holding a mail's token; removes that subscription.
pub async fn unsubscribe(
    State(st): State<Arc<AppState>>,
    Json(req): Json<Unsubscribe>,
) -> ApiResult<Json<Unsubscribed>> {
    let invalid = || {
        ApiError::invalid(
            "token",
            "this unsubscribe link is not valid, or its subscription was already removed",
        )
    };
    let id = unsubscribe::Keys::subscription_of(&req.token).ok_or_else(invalid)?;
    let s = db::subscription(&st.db, id).await?.ok_or_else(invalid)?;
    if !st
        .notify
        .unsubscribe
        .verify(&req.token, s.id, &s.recipient())
    {
        return Err(invalid());
    }
    db::delete_subscription(&st.db, s.id).await?;
    let whom = s
        .email
        .clone()
        .or(s.username.clone())
        .or(s.webhook.clone())
        .unwrap_or_default();
    let about = match (&s.project, &s.team) {
        (Some(p), _) => format!("project '{p}'"),
        (_, Some(t)) => format!("the projects of team '{t}'"),
        _ => "Kiln".into(),
    };
    crate::audit::record(
        &st,
        None,
        "unsubscribed",
        Some(about.clone()),
        None,
        json!({ "id": s.id, "recipient": whom }),
    )
    .await;
    Ok(Json(Unsubscribed {
        message: format!("{whom} no longer gets messages about {about}"),
    }))
}
