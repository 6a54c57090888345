//! Access checks for long-lived connections (the console's WebSocket): before each message it
//! sends or answers, the person's session (or token) and their view of the project are read
//! from the database again, so an ended session, a revoked token or a removal from a team takes
//! effect on an open console at once.

use super::principal::{Principal, Via};
use crate::db::accounts;
use crate::error::ApiResult;
use crate::state::AppState;
use kiln_shared::BuildId;

/// What a message is about.
pub enum About<'a> {
    /// The farm itself (slaves): anyone signed in.
    Farm,
    Build(BuildId),
    Project(&'a str),
}

pub enum Verdict {
    /// The session ended or the token was revoked: close the connection.
    SignedOut,
    Hidden,
    Visible,
}

/// `by_person`: the check is for a message the person sent (it counts as use of the session);
/// events the master pushes do not keep an idle session alive.
pub async fn check(
    st: &AppState,
    p: &Principal,
    about: About<'_>,
    by_person: bool,
) -> ApiResult<Verdict> {
    let now = st.clock.now();
    let signed_in = match &p.via {
        Via::Session { id_sha256, .. } => {
            let a = &st.cfg.auth;
            accounts::live_session(
                &st.db,
                id_sha256,
                now,
                a.session_idle_secs,
                a.session_max_secs,
                by_person,
            )
            .await?
            .is_some()
        }
        Via::Token { id } => accounts::token_by_id(&st.db, *id)
            .await?
            .is_some_and(|t| !matches!(t.expires_at, Some(e) if e <= now)),
    };
    if !signed_in {
        return Ok(Verdict::SignedOut);
    }
    let (build, project) = match about {
        About::Farm => return Ok(Verdict::Visible),
        About::Build(b) => (Some(b.0), None),
        About::Project(name) => (None, Some(name)),
    };
    let row: Option<(bool,)> = sqlx::query_as(
        "SELECT u.admin OR EXISTS (
                SELECT 1 FROM projects p
                 WHERE p.id = COALESCE((SELECT project_id FROM builds WHERE id = $2),
                                       (SELECT id FROM projects WHERE name = $3))
                   AND (p.visibility = 'public'
                        OR p.team_id IN (SELECT team_id FROM team_members WHERE user_id = u.id)))
           FROM users u WHERE u.id = $1",
    )
    .bind(p.user.id)
    .bind(build)
    .bind(project)
    .fetch_optional(&st.db)
    .await?;
    Ok(match row {
        None => Verdict::SignedOut,
        Some((true,)) => Verdict::Visible,
        Some((false,)) => Verdict::Hidden,
    })
}
