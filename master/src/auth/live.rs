//! Access checks for long-lived connections (the console's WebSocket): each message it sends or
//! answers is checked against the person's session (or token) and their view of the project, so
//! an ended session, a revoked token or a removal from a team takes effect on an open console at
//! once. The verdicts are kept per connection while nothing that could change them happened
//! ([`LiveAccess`]).

use super::principal::{Principal, Via};
use crate::db::{access, accounts};
use crate::error::ApiResult;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use kiln_shared::BuildId;
use std::collections::HashMap;

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

/// How long a connection's verdicts may stand without a new reading even while the access epoch
/// stands still: a bound on trust should a change ever go unheard.
const REREAD_SECS: i64 = 60;

/// Most verdicts one connection keeps (then it starts again).
const MAX_VERDICTS: usize = 10_000;

#[derive(PartialEq, Eq, Hash)]
enum Key {
    Build(i64),
    Project(String),
}

/// What one long-lived connection knows of its person's access. Verdicts are read from the
/// database once and kept while the access epoch ([`crate::db::access`]) stands still, until
/// the session's own time-outs (or the token's expiry) and at most [`REREAD_SECS`]: a console
/// following a busy log costs no query per line, and a sign-out, a revoked token or a removal
/// from a team still takes effect on its next event.
#[derive(Default)]
pub struct LiveAccess {
    epoch: u64,
    /// Signed in until then, as last read; `None`: not read since the epoch moved.
    signed_in_until: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
    verdicts: HashMap<Key, bool>,
}

impl LiveAccess {
    /// `by_person`: the check is for a message the person sent (it counts as use of the
    /// session, so it is always read and touched); events the master pushes do not keep an
    /// idle session alive.
    pub async fn check(
        &mut self,
        st: &AppState,
        p: &Principal,
        about: About<'_>,
        by_person: bool,
    ) -> ApiResult<Verdict> {
        let now = st.clock.now();
        // Read before the database, so a change committed meanwhile moves it past what is kept.
        let epoch = access::current();
        let fresh = self.epoch == epoch
            && self.signed_in_until.is_some_and(|u| now < u)
            && self
                .read_at
                .is_some_and(|r| now - r < chrono::Duration::seconds(REREAD_SECS));
        if by_person || !fresh {
            self.verdicts.clear();
            self.signed_in_until = None;
            self.epoch = epoch;
            self.read_at = Some(now);
            match signed_in_until(st, p, now, by_person).await? {
                Some(until) => self.signed_in_until = Some(until),
                None => return Ok(Verdict::SignedOut),
            }
        }
        let key = match about {
            About::Farm => return Ok(Verdict::Visible),
            About::Build(b) => Key::Build(b.0),
            About::Project(name) => Key::Project(name.to_string()),
        };
        if let Some(&visible) = self.verdicts.get(&key) {
            return Ok(if visible {
                Verdict::Visible
            } else {
                Verdict::Hidden
            });
        }
        let (build, project) = match &key {
            Key::Build(b) => (Some(*b), None),
            Key::Project(name) => (None, Some(name.as_str())),
        };
        let row: Option<(bool, bool)> = sqlx::query_as(
            "SELECT p.id IS NOT NULL,
                    u.admin OR COALESCE(p.visibility = 'public'
                        OR p.team_id IN (SELECT team_id FROM team_members WHERE user_id = u.id),
                        false)
               FROM users u
               LEFT JOIN projects p
                 ON p.id = COALESCE((SELECT project_id FROM builds WHERE id = $2),
                                    (SELECT id FROM projects WHERE name = $3))
              WHERE u.id = $1",
        )
        .bind(p.user.id)
        .bind(build)
        .bind(project)
        .fetch_optional(&st.db)
        .await?;
        let Some((found, visible)) = row else {
            return Ok(Verdict::SignedOut);
        };
        // What does not exist yet is not kept: a build or project made later is read then.
        if found {
            if self.verdicts.len() >= MAX_VERDICTS {
                self.verdicts.clear();
            }
            self.verdicts.insert(key, visible);
        }
        Ok(if visible {
            Verdict::Visible
        } else {
            Verdict::Hidden
        })
    }
}

/// Until when the person's session (or token) stands, read now; `None` when it has ended.
async fn signed_in_until(
    st: &AppState,
    p: &Principal,
    now: DateTime<Utc>,
    by_person: bool,
) -> ApiResult<Option<DateTime<Utc>>> {
    Ok(match &p.via {
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
            .map(|s| s.ends_at(a.session_idle_secs, a.session_max_secs))
        }
        Via::Token { id } => accounts::token_by_id(&st.db, *id)
            .await?
            .map(|t| t.expires_at.unwrap_or(DateTime::<Utc>::MAX_UTC))
            .filter(|&until| until > now),
    })
}
