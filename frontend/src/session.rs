//! Who is signed in: [`SessionProvider`] (at the app root) asks `GET /api/me` once at start and
//! shares the answer through Yew's context; pages read it with [`use_session`] / [`use_me`]. The
//! session itself is Kiln's HttpOnly cookie, which the console never sees: it keeps only `Me`
//! and its CSRF token (handed to `api`). A 401 from any `/api/` call makes the session
//! [`Session::SignedOut`], and the app shell sends the person to `/login?next=<where they were>`.
//!
//! The rules (where to go after sign-in, who may press which button) are plain functions at the
//! end, tested natively.

use crate::api::{self, ApiErr};
use kiln_shared::api::{Me, Role, Team};
use std::rc::Rc;
use yew::prelude::*;

/// What the console knows of the session.
#[derive(Clone, Debug, PartialEq)]
pub enum Session {
    /// `GET /api/me` has not answered yet.
    Checking,
    /// Not signed in (never was, signed out, or the session ended).
    SignedOut,
    SignedIn(Rc<Me>),
    /// The master could not be asked (network, 5xx): nothing is known.
    Unknown(String),
}

/// The session as pages see it, and the ways to change it.
#[derive(Clone, PartialEq)]
pub struct SessionCtx {
    pub state: Session,
    set: Callback<Session>,
}

impl SessionCtx {
    pub fn me(&self) -> Option<Rc<Me>> {
        match &self.state {
            Session::SignedIn(me) => Some(me.clone()),
            _ => None,
        }
    }

    /// Someone signed in (or `Me` was read again): keep it and its CSRF token.
    pub fn signed_in(&self, me: Me) {
        api::set_csrf(me.csrf_token.clone());
        self.set.emit(Session::SignedIn(Rc::new(me)));
    }

    /// Reads `GET /api/me` again (after a password change, say).
    pub fn refresh(&self) {
        let ctx = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Ok(me) = api::get::<Me>("/api/me").await {
                ctx.signed_in(me);
            }
        });
    }
}

/// Asks the master whether the session still holds; a 401 signs the console out (through the
/// `api` layer's handler). The live connection calls this when the master refuses it.
pub fn check() {
    wasm_bindgen_futures::spawn_local(async {
        let _ = api::get::<Me>("/api/me").await;
    });
}

/// Signs out: ends the session on the master, then loads the login page afresh, so nothing
/// of the previous person (live data, pages) stays in the tab.
pub fn sign_out() {
    wasm_bindgen_futures::spawn_local(async {
        // Whatever the answer (even "already signed out"), the login page is where this ends.
        let _ = api::logout().await;
        api::set_csrf(None);
        if let Some(w) = web_sys::window() {
            let _ = w.location().assign("/login");
        }
    });
}

#[derive(Properties, PartialEq)]
pub struct ProviderProps {
    pub children: Html,
}

#[function_component(SessionProvider)]
pub fn session_provider(props: &ProviderProps) -> Html {
    let state = use_state(|| Session::Checking);
    let set = {
        let setter = state.setter();
        Callback::from(move |s: Session| setter.set(s))
    };
    {
        let set = set.clone();
        use_effect_with((), move |_| {
            let on_401 = set.clone();
            api::on_unauthorized(move || on_401.emit(Session::SignedOut));
            wasm_bindgen_futures::spawn_local(async move {
                match api::get::<Me>("/api/me").await {
                    Ok(me) => {
                        api::set_csrf(me.csrf_token.clone());
                        set.emit(Session::SignedIn(Rc::new(me)));
                    }
                    Err(ApiErr { status: 401, .. }) => set.emit(Session::SignedOut),
                    Err(e) => set.emit(Session::Unknown(e.message)),
                }
            });
        });
    }
    let ctx = SessionCtx {
        state: (*state).clone(),
        set,
    };
    html! {
        <ContextProvider<SessionCtx> context={ctx}>
            { props.children.clone() }
        </ContextProvider<SessionCtx>>
    }
}

#[hook]
pub fn use_session() -> SessionCtx {
    use_context::<SessionCtx>().expect("pages are rendered inside <SessionProvider> (app.rs)")
}

/// The signed-in person (pages behind the login gate always have one).
#[hook]
pub fn use_me() -> Option<Rc<Me>> {
    use_session().me()
}

// ---- The rules, without I/O ----------------------------------------------------------------

/// Where to go after sign-in: a path on this site (`/builds/3#L40`), never another site
/// (`//evil.example`, `https://…`, `/\evil`) nor the login page again; anything else is `/`.
/// The master applies the same rule to a provider's `return_to`.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && !p.chars().any(|c| c.is_control() || c == '\\')
                && p.len() <= 2048
                && p != "/login"
                && !p.starts_with("/login?")
                && !p.starts_with("/login#") =>
        {
            p.to_string()
        }
        _ => "/".into(),
    }
}

/// The login page, remembering where the person was (`next`), when that is worth coming back to.
pub fn login_url(next: &str) -> String {
    let next = safe_next(Some(next));
    if next == "/" {
        "/login".into()
    } else {
        format!("/login?next={}", kiln_shared::api::percent_encode(&next))
    }
}

/// A provider's sign-in link: a plain navigation to its `login_url`, which brings the browser
/// back to `next` once signed in.
pub fn provider_href(login_url: &str, next: &str) -> String {
    let sep = if login_url.contains('?') { '&' } else { '?' };
    format!(
        "{login_url}{sep}return_to={}",
        kiln_shared::api::percent_encode(&safe_next(Some(next)))
    )
}

/// The value of `key` in a query string (`?next=%2Fbuilds%2F3&error=…`), decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); bad escapes are kept as typed.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if b.get(i + 1).and_then(|&c| hex(c)).is_some()
                && b.get(i + 2).and_then(|&c| hex(c)).is_some() =>
            {
                let (h, l) = (hex(b[i + 1]).unwrap_or(0), hex(b[i + 2]).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The role that counts on a project: the one the master reported for it, or admin for a
/// site admin. `None`: none at all (nothing but viewing what is shown).
pub fn effective_role(me: Option<&Me>, project_role: Option<Role>) -> Option<Role> {
    if me.is_some_and(|m| m.admin) {
        return Some(Role::Admin);
    }
    project_role
}

/// Whether `role` allows what needs `need`.
pub fn may(role: Option<Role>, need: Role) -> bool {
    role.is_some_and(|r| r >= need)
}

/// Build now, Release build, Cancel, Rebuild.
pub fn may_build(role: Option<Role>) -> bool {
    may(role, Role::Builder)
}

/// Editing a project's settings, deleting it.
pub fn may_maintain(role: Option<Role>) -> bool {
    may(role, Role::Maintainer)
}

pub fn is_admin(me: Option<&Me>) -> bool {
    me.is_some_and(|m| m.admin)
}

/// The teams a project may be put in by `me`: admins any team (or none); others the teams
/// where they are maintainers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeamChoices {
    /// "No team" may be chosen (admins only).
    pub none: bool,
    pub teams: Vec<String>,
}

pub fn team_choices(me: &Me, teams: &[Team]) -> TeamChoices {
    if me.admin {
        return TeamChoices {
            none: true,
            teams: teams.iter().map(|t| t.name.clone()).collect(),
        };
    }
    let mut names: Vec<String> = me
        .teams
        .iter()
        .filter(|t| t.role >= Role::Maintainer)
        .map(|t| t.team.clone())
        .collect();
    names.sort();
    names.dedup();
    TeamChoices {
        none: false,
        teams: names,
    }
}

/// Whether the "New project" form is worth showing: admins, and maintainers of some team.
pub fn may_create_project(me: &Me) -> bool {
    me.admin || me.teams.iter().any(|t| t.role >= Role::Maintainer)
}

/// The highest role an API token of `me` may carry (the master refuses more).
pub fn highest_role(me: &Me) -> Role {
    if me.admin {
        return Role::Admin;
    }
    me.teams
        .iter()
        .map(|t| t.role)
        .max()
        .unwrap_or(Role::Viewer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::api::TeamRole;

    fn me(admin: bool, teams: &[(&str, Role)]) -> Me {
        Me {
            username: "ann".into(),
            admin,
            email: None,
            teams: teams
                .iter()
                .map(|(t, r)| TeamRole {
                    team: t.to_string(),
                    role: *r,
                })
                .collect(),
            csrf_token: Some("c".into()),
            via: "session".into(),
            must_change_password: false,
            token_role: None,
        }
    }

    #[test]
    fn after_sign_in_only_a_path_on_this_site_is_followed() {
        for ok in [
            "/",
            "/builds/3",
            "/projects/board-a?x=1#L40",
            "/teams/a%20b",
        ] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "",
            "builds/3",
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/builds\n/3",
            "/a\\b",
            "/login",
            "/login?next=%2F",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(3000)))), "/");
    }

    #[test]
    fn the_login_page_remembers_where_the_person_was() {
        assert_eq!(login_url("/"), "/login");
        assert_eq!(login_url("/login?next=%2Fx"), "/login");
        assert_eq!(login_url("/builds/3"), "/login?next=%2Fbuilds%2F3");
        assert_eq!(
            login_url("/projects/a?b=1#L4"),
            "/login?next=%2Fprojects%2Fa%3Fb%3D1%23L4"
        );
        assert_eq!(login_url("//evil.example"), "/login");
        // And reads it back.
        let url = login_url("/projects/a?b=1#L4");
        let query = url.split_once('?').unwrap().1;
        assert_eq!(
            query_param(query, "next").as_deref(),
            Some("/projects/a?b=1#L4")
        );
    }

    #[test]
    fn provider_links_carry_where_to_come_back_to() {
        assert_eq!(
            provider_href("/auth/oidc/corp/login", "/builds/3"),
            "/auth/oidc/corp/login?return_to=%2Fbuilds%2F3"
        );
        assert_eq!(
            provider_href("/auth/launchpad/login?x=1", "https://evil.example"),
            "/auth/launchpad/login?x=1&return_to=%2F"
        );
    }

    #[test]
    fn query_values_are_decoded() {
        let q = "?next=%2Fbuilds%2F3&error=access+denied%3A%20not%20in%20a%20team&flag";
        assert_eq!(query_param(q, "next").as_deref(), Some("/builds/3"));
        assert_eq!(
            query_param(q, "error").as_deref(),
            Some("access denied: not in a team")
        );
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param("", "next"), None);
        // Broken escapes stay as typed; UTF-8 is decoded.
        assert_eq!(query_param("e=100%", "e").as_deref(), Some("100%"));
        assert_eq!(query_param("e=%zz1", "e").as_deref(), Some("%zz1"));
        assert_eq!(query_param("e=caf%C3%A9", "e").as_deref(), Some("café"));
    }

    #[test]
    fn buttons_follow_the_role_on_the_project() {
        let viewer = me(false, &[("boards", Role::Viewer)]);
        let r = effective_role(Some(&viewer), Some(Role::Viewer));
        assert!(!may_build(r) && !may_maintain(r));
        let r = effective_role(Some(&viewer), Some(Role::Builder));
        assert!(may_build(r) && !may_maintain(r));
        let r = effective_role(Some(&viewer), Some(Role::Maintainer));
        assert!(may_build(r) && may_maintain(r));
        // No role reported: nothing but viewing.
        let r = effective_role(Some(&viewer), None);
        assert!(!may_build(r) && !may_maintain(r));
        // A site admin may do everything, whatever the project says.
        let admin = me(true, &[]);
        let r = effective_role(Some(&admin), None);
        assert!(may_build(r) && may_maintain(r) && r == Some(Role::Admin));
        assert!(is_admin(Some(&admin)) && !is_admin(Some(&viewer)) && !is_admin(None));
    }

    #[test]
    fn projects_go_into_teams_their_creator_maintains() {
        let t = |n: &str| Team {
            name: n.into(),
            members: vec![],
            projects: vec![],
            created_at: chrono::Utc::now(),
        };
        let all = [t("a"), t("b"), t("c")];
        assert_eq!(
            team_choices(&me(true, &[]), &all),
            TeamChoices {
                none: true,
                teams: vec!["a".into(), "b".into(), "c".into()]
            }
        );
        let m = me(
            false,
            &[
                ("c", Role::Maintainer),
                ("a", Role::Builder),
                ("b", Role::Maintainer),
            ],
        );
        assert_eq!(
            team_choices(&m, &all),
            TeamChoices {
                none: false,
                teams: vec!["b".into(), "c".into()]
            }
        );
        assert!(may_create_project(&m));
        assert!(!may_create_project(&me(false, &[("a", Role::Builder)])));
        assert!(may_create_project(&me(true, &[])));
    }

    #[test]
    fn a_token_may_carry_at_most_the_owners_role() {
        assert_eq!(highest_role(&me(true, &[])), Role::Admin);
        assert_eq!(highest_role(&me(false, &[])), Role::Viewer);
        assert_eq!(
            highest_role(&me(false, &[("a", Role::Builder), ("b", Role::Viewer)])),
            Role::Builder
        );
    }
}
