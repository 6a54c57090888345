//! `/api/slaves`: registering build machines and seeing them.

use crate::auth::{self, AdminUser, Principal};
use crate::db::slaves;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kiln_shared::api::{
    validate_name, NewRegistrationToken, NewSlave, RegisterSlave, RegistrationToken, Slave,
    SlaveCreated, TokenRotated,
};
use kiln_shared::frames::MasterFrame;
use kiln_shared::SlaveId;
use serde_json::json;
use std::sync::Arc;

/// `GET /api/slaves`: anyone signed in (the console shows where builds run).
/// Builds of projects hidden from the person are left out of each slave's `builds`.
pub async fn list(State(st): State<Arc<AppState>>, who: Principal) -> ApiResult<Json<Vec<Slave>>> {
    let rows = slaves::list(&st.db).await?;
    let mut out: Vec<Slave> = rows.into_iter().map(|r| st.slave_api(r)).collect();
    crate::auth::access::hide_builds(&st, &who, &mut out).await?;
    Ok(Json(out))
}

/// `POST /api/slaves/{name}/drain`: the slave takes no new builds, finishes the ones it holds,
/// then its daemon exits.
pub async fn drain(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Slave>)> {
    let row = find(&st, &name).await?;
    let id = SlaveId(row.id);
    // Here, or through the master that holds its session.
    let delivered = st.hub.send(id, MasterFrame::Drain)
        || (slaves::is_online(&st.db, id).await? && st.hub.send_anywhere(id, MasterFrame::Drain));
    if !delivered {
        return Err(ApiError::Conflict(format!(
            "slave '{name}' is not connected; stop its daemon on the machine instead"
        )));
    }
    st.hub.set_draining(id);
    st.slave_changed(id).await;
    who.audit(
        &st,
        "slave_drained",
        Some(format!("slave {name}")),
        json!({}),
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(st.slave_api(row))))
}

/// Names the routes under /api/slaves/ use, which no slave may take.
const RESERVED: [&str; 2] = ["register", "registration-tokens"];

fn check_slave_name(name: &str) -> ApiResult<()> {
    validate_name("slave name", name).map_err(|m| ApiError::invalid("name", m))?;
    if RESERVED.contains(&name) {
        return Err(ApiError::invalid(
            "name",
            format!("'{name}' is reserved; choose another slave name"),
        ));
    }
    Ok(())
}

/// Registers a slave and returns its token, once; only the hash is kept.
pub async fn create(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    Json(req): Json<NewSlave>,
) -> ApiResult<(StatusCode, Json<SlaveCreated>)> {
    check_slave_name(&req.name)?;
    for t in &req.tags {
        validate_name("tag", t).map_err(|m| ApiError::invalid("tags", m))?;
    }
    let created = insert_slave(&st.db, req.name, req.tags).await?;
    st.slave_changed(created.id).await;
    who.audit(
        &st,
        "slave_created",
        Some(format!("slave {}", created.name)),
        json!({}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A new slave row with a fresh token (only its hash is stored); the token is in the answer.
async fn insert_slave(
    db: impl sqlx::PgExecutor<'_>,
    name: String,
    tags: Vec<String>,
) -> ApiResult<SlaveCreated> {
    let token = auth::new_token("kiln_s_");
    let id = slaves::insert(db, &name, &auth::sha256_hex(&token), &tags)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("a slave named '{name}' already exists")))?;
    Ok(SlaveCreated {
        id: SlaveId(id),
        name,
        token,
        tags,
    })
}

async fn find(st: &AppState, name: &str) -> ApiResult<slaves::SlaveRow> {
    slaves::by_name(&st.db, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no slave named '{name}'")))
}

/// `POST /api/slaves/{name}/disable`: the slave gets no new builds; it stays connected (and may
/// connect) and finishes the builds it holds. Enabling it puts it back to work at once; revoking
/// is what disconnects it.
pub async fn disable(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    Path(name): Path<String>,
) -> ApiResult<Json<Slave>> {
    let row = find(&st, &name).await?;
    let id = SlaveId(row.id);
    slaves::set_enabled(&st.db, id, false).await?;
    st.slave_changed(id).await;
    // A round now re-explains the builds that were waiting for this slave.
    st.hub.wake();
    who.audit(
        &st,
        "slave_disabled",
        Some(format!("slave {name}")),
        json!({}),
    )
    .await;
    Ok(Json(st.slave_api(find(&st, &name).await?)))
}

/// `POST /api/slaves/{name}/enable`: a connected slave takes queued builds again at once.
pub async fn enable(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    Path(name): Path<String>,
) -> ApiResult<Json<Slave>> {
    let row = find(&st, &name).await?;
    slaves::set_enabled(&st.db, SlaveId(row.id), true).await?;
    st.slave_changed(SlaveId(row.id)).await;
    st.hub.wake();
    who.audit(
        &st,
        "slave_enabled",
        Some(format!("slave {name}")),
        json!({}),
    )
    .await;
    Ok(Json(st.slave_api(find(&st, &name).await?)))
}

/// `POST /api/slaves/{name}/revoke` (and `DELETE /api/slaves/{name}`): revokes its token and
/// forgets it; its connection is closed now and its uploads refused at once. Its builds keep
/// their history; those it was running are lost ("slave revoked") and requeued.
pub async fn revoke(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let row = find(&st, &name).await?;
    let id = SlaveId(row.id);
    // The token goes first, so the slave cannot come back in the moment after its connection
    // closes; the slave's row locked before its builds are read, so no dispatcher claims one
    // for it meanwhile (a claim refers to the row, and one after the delete fails).
    let mut tx = st.db.begin().await?;
    slaves::lock(&mut *tx, id).await?;
    let held = crate::db::builds::active_for_slave(&mut *tx, id).await?;
    slaves::delete(&mut *tx, id).await?;
    tx.commit().await?;
    st.hub.disconnect(id);
    for (b, _) in held {
        st.lose_build(b, &format!("slave revoked ('{name}')"))
            .await?;
    }
    who.audit(
        &st,
        "slave_revoked",
        Some(format!("slave {name}")),
        json!({}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

fn registration_api(r: slaves::RegistrationRow) -> RegistrationToken {
    RegistrationToken {
        id: r.id,
        name: r.name,
        tags: r.tags,
        uses_left: r.uses_left,
        expires_at: r.expires_at,
        revoked: r.revoked,
        created_at: r.created_at,
        token: None,
        command: None,
    }
}

/// The master's URL as the client reached it (for the command shown with a new token).
fn master_url(st: &AppState, headers: &axum::http::HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| st.cfg.master.listen.clone());
    let scheme = if st.cfg.master.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

/// `POST /api/slaves/registration-tokens`: a token to hand to whoever sets up a board, valid
/// `expires_in_s` seconds for `uses` registrations; shown once, with the command to run.
pub async fn create_registration(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    headers: axum::http::HeaderMap,
    Json(req): Json<NewRegistrationToken>,
) -> ApiResult<(StatusCode, Json<RegistrationToken>)> {
    if let Some(n) = &req.name {
        validate_name("slave name", n).map_err(|m| ApiError::invalid("name", m))?;
    }
    let tags = req.tags.clone().unwrap_or_default();
    for t in &tags {
        validate_name("tag", t).map_err(|m| ApiError::invalid("tags", m))?;
    }
    if !(60..=30 * 24 * 3600).contains(&req.expires_in_s) {
        return Err(ApiError::invalid(
            "expires_in_s",
            "expires_in_s must be between 60 (a minute) and 2592000 (30 days)",
        ));
    }
    if !(1..=1000).contains(&req.uses) {
        return Err(ApiError::invalid("uses", "uses must be between 1 and 1000"));
    }
    let token = auth::new_token("kiln_r_");
    let expires = st.clock.now() + chrono::Duration::seconds(req.expires_in_s);
    let row = slaves::insert_registration(
        &st.db,
        &auth::sha256_hex(&token),
        req.name.as_deref(),
        &tags,
        req.uses,
        expires,
    )
    .await?;
    let mut out = registration_api(row);
    out.command = Some(format!(
        "echo {token} | kiln-slave register --master {} --registration-token - --name {} --work-dir /var/lib/kiln-slave{}",
        master_url(&st, &headers),
        req.name.as_deref().unwrap_or("<name>"),
        if st.cfg.master.tls.is_some() { " --ca-sha256 <the CA's fingerprint>" } else { "" }
    ));
    out.token = Some(token);
    who.audit(
        &st,
        "registration_token_created",
        Some(format!("registration token {}", out.id)),
        json!({}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(out)))
}

/// `GET /api/slaves/registration-tokens` (never the tokens themselves).
pub async fn list_registrations(
    State(st): State<Arc<AppState>>,
    _: AdminUser,
) -> ApiResult<Json<Vec<RegistrationToken>>> {
    let rows = slaves::list_registrations(&st.db).await?;
    Ok(Json(rows.into_iter().map(registration_api).collect()))
}

/// `DELETE /api/slaves/registration-tokens/{id}`: no more registrations with it.
pub async fn revoke_registration(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    if slaves::revoke_registration(&st.db, id).await? {
        who.audit(
            &st,
            "registration_token_revoked",
            Some(format!("registration token {id}")),
            json!({}),
        )
        .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no registration token {id}")))
    }
}

/// `POST /api/slaves/register` with a registration token as the bearer: exchanges one use of
/// it for a new slave and that slave's own token (shown once).
pub async fn register(
    State(st): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    Json(req): Json<RegisterSlave>,
) -> ApiResult<(StatusCode, Json<SlaveCreated>)> {
    check_slave_name(&req.name)?;
    let presented = auth::bearer(&headers).ok_or_else(|| {
        ApiError::Unauthorized(
            "send the registration token as 'Authorization: Bearer <token>'".into(),
        )
    })?;
    let mut tx = st.db.begin().await?;
    let reg = match slaves::take_registration(
        &mut tx,
        &auth::sha256_hex(presented),
        &req.name,
        st.clock.now(),
    )
    .await?
    {
        Ok(r) => r,
        Err(why) => {
            let message = match why {
                slaves::Unusable::Unknown => {
                    "unknown registration token; ask an admin for a new one".to_string()
                }
                slaves::Unusable::Revoked => {
                    "this registration token was revoked; ask an admin for a new one".to_string()
                }
                slaves::Unusable::Expired(at) => {
                    format!("this registration token expired at {at}; ask an admin for a new one")
                }
                slaves::Unusable::UsedUp => {
                    "this registration token has been used up; ask an admin for a new one"
                        .to_string()
                }
                slaves::Unusable::OtherName(n) => format!(
                    "this registration token is for the slave '{n}', not '{}'",
                    req.name
                ),
            };
            return Err(ApiError::Unauthorized(message));
        }
    };
    let created = insert_slave(&mut *tx, req.name, reg.tags).await?;
    tx.commit().await?;
    tracing::info!(slave = %created.name, registration = reg.id, "slave registered");
    crate::audit::record(
        &st,
        None,
        "slave_registered",
        Some(format!("slave {}", created.name)),
        None,
        json!({ "registration_token": reg.id, "tags": created.tags }),
    )
    .await;
    st.slave_changed(created.id).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `POST /api/slaves/{name}/rotate-token`: a new token; the old one keeps working for
/// `master.token_grace_secs`, and a connected slave receives the new one over its connection.
pub async fn rotate_token(
    State(st): State<Arc<AppState>>,
    AdminUser(who): AdminUser,
    Path(name): Path<String>,
) -> ApiResult<Json<TokenRotated>> {
    let row = find(&st, &name).await?;
    let id = SlaveId(row.id);
    let token = auth::new_token("kiln_s_");
    let until =
        st.clock.now() + chrono::Duration::seconds(i64::from(st.cfg.master.token_grace_secs));
    slaves::rotate_token(&st.db, id, &auth::sha256_hex(&token), until).await?;
    st.hub.send_anywhere(
        id,
        MasterFrame::TokenRotated {
            token: token.clone(),
        },
    );
    who.audit(
        &st,
        "slave_token_rotated",
        Some(format!("slave {name}")),
        json!({}),
    )
    .await;
    Ok(Json(TokenRotated {
        token,
        previous_valid_until: until,
    }))
}
