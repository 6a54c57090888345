//! One team: its members and their roles, its projects; for admins: add a member, change a
//! member's role, remove one, and the group mappings (members of a group at a sign-in provider
//! get a role on the team when they sign in); for its maintainers and admins, the team's
//! notification subscriptions (all its projects' builds).

use super::{field_error, load, loading_or_error, role_options, Loaded, TEAM_ROLES};
use crate::api::{self, seg, ApiErr};
use crate::components::subscriptions::Subscriptions;
use crate::routes::Route;
use crate::session::{is_admin, use_me};
use kiln_shared::api::{Mapping, Me, NewMapping, Providers, Role, SetMember, Team};
use web_sys::HtmlSelectElement;
use yew::prelude::*;
use yew_router::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub name: String,
}

/// The team named `name` out of `GET /api/teams` (there is no route for one team).
fn find(teams: Vec<Team>, name: &str) -> Result<Team, ApiErr> {
    teams
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| ApiErr {
            status: 404,
            message: format!("no team named '{name}'"),
            field: None,
        })
}

fn load_team(name: String, team: UseStateHandle<Loaded<Team>>) {
    wasm_bindgen_futures::spawn_local(async move {
        team.set(
            match api::get::<Vec<Team>>("/api/teams")
                .await
                .and_then(|ts| find(ts, &name))
            {
                Ok(t) => Loaded::Ok(t),
                Err(e) => Loaded::Err(e),
            },
        );
    });
}

/// Whether `me` is a maintainer of the team (who may edit its subscriptions, with admins).
fn maintains(me: Option<&Me>, team: &str) -> bool {
    me.is_some_and(|m| {
        m.teams
            .iter()
            .any(|t| t.team == team && t.role >= Role::Maintainer)
    })
}

/// A membership from the add-member form: a user name, and a team role.
fn member_request(user: &str, role: &str) -> Result<(String, SetMember), ApiErr> {
    let user = user.trim();
    if user.is_empty() {
        return Err(ApiErr {
            status: 400,
            message: "enter the user name of the person to add".into(),
            field: Some("username".into()),
        });
    }
    let role = Role::parse(role)
        .filter(|r| TEAM_ROLES.contains(r))
        .ok_or_else(|| ApiErr {
            status: 400,
            message: format!("'{role}' is not a team role"),
            field: Some("role".into()),
        })?;
    Ok((user.to_string(), SetMember { role }))
}

#[function_component(TeamPage)]
pub fn team_page(p: &Props) -> Html {
    let me = use_me();
    let admin = is_admin(me.as_deref());
    let team = use_state(|| Loaded::<Team>::Loading);
    let err = use_state(|| None::<String>);
    let add_err = use_state(|| None::<ApiErr>);
    let (m_user, m_role) = (use_node_ref(), use_node_ref());
    {
        let (team, name) = (team.clone(), p.name.clone());
        use_effect_with(p.name.clone(), move |_| load_team(name, team));
    }
    let path = format!("/api/teams/{}", seg(&p.name));
    // PUT a member's role; the answer is the team as it is now.
    let set_member = {
        let (team, path) = (team.clone(), path.clone());
        move |user: String, role: SetMember, err: Callback<Option<ApiErr>>| {
            let (team, path) = (team.clone(), path.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::put::<_, Team>(&format!("{path}/members/{}", seg(&user)), &role).await {
                    Ok(t) => {
                        err.emit(None);
                        team.set(Loaded::Ok(t));
                    }
                    Err(e) => err.emit(Some(e)),
                }
            });
        }
    };
    let on_add = {
        let (m_user, m_role, add_err, set_member) = (
            m_user.clone(),
            m_role.clone(),
            add_err.clone(),
            set_member.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            match member_request(&super::input_value(&m_user), &super::select_value(&m_role)) {
                Ok((user, role)) => {
                    let add_err = add_err.clone();
                    let m_user = m_user.clone();
                    set_member(
                        user,
                        role,
                        Callback::from(move |e: Option<ApiErr>| {
                            if e.is_none() {
                                if let Some(i) = m_user.cast::<web_sys::HtmlInputElement>() {
                                    i.set_value("");
                                }
                            }
                            add_err.set(e)
                        }),
                    );
                }
                Err(e) => add_err.set(Some(e)),
            }
        })
    };
    let change_role = |user: String| {
        let (err, set_member) = (err.clone(), set_member.clone());
        Callback::from(move |e: Event| {
            let Some(role) = e
                .target_dyn_into::<HtmlSelectElement>()
                .and_then(|s| Role::parse(&s.value()))
            else {
                return;
            };
            let err = err.clone();
            set_member(
                user.clone(),
                SetMember { role },
                Callback::from(move |e: Option<ApiErr>| err.set(e.map(|e| e.message))),
            );
        })
    };
    let remove = |user: String| {
        let (err, team, path, name) = (err.clone(), team.clone(), path.clone(), p.name.clone());
        Callback::from(move |_: MouseEvent| {
            if !super::confirm(&format!("Remove {user} from team {name}?")) {
                return;
            }
            let (err, team, path, name, user) = (
                err.clone(),
                team.clone(),
                path.clone(),
                name.clone(),
                user.clone(),
            );
            wasm_bindgen_futures::spawn_local(async move {
                match api::delete(&format!("{path}/members/{}", seg(&user))).await {
                    Ok(()) => {
                        err.set(None);
                        load_team(name, team);
                    }
                    Err(e) => err.set(Some(e.message)),
                }
            });
        })
    };
    let add_general = match &*add_err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    html! {
        <main id="team">
            <p><Link<Route> to={Route::Teams}>{"← Teams"}</Link<Route>></p>
            <h1 tabindex="-1">{format!("Team {}", p.name)}</h1>
            { loading_or_error(&*team) }
            { super::error_box(&err) }
            if let Loaded::Ok(t) = &*team {
                <h2>{"Members"}</h2>
                if t.members.is_empty() {
                    <p class="muted">{"No member yet."}</p>
                } else {
                    <table id="members">
                        <thead><tr><th>{"User"}</th><th>{"Role"}</th><th>{"From"}</th>
                            if admin { <th>{"Actions"}</th> }</tr></thead>
                        <tbody>
                        { for t.members.iter().map(|m| html! {
                            <tr key={m.username.clone()} data-member={m.username.clone()}>
                                <td>{&m.username}</td>
                                <td>
                                    if admin {
                                        <select aria-label={format!("Role of {}", m.username)} onchange={change_role(m.username.clone())}>
                                            { role_options(&TEAM_ROLES, Some(m.role)) }
                                        </select>
                                    } else {
                                        {m.role.as_str()}
                                    }
                                </td>
                                <td>{ if m.source == "manual" { "added by an admin".to_string() } else { format!("group mapping ({})", m.source) } }</td>
                                if admin {
                                    <td class="row-actions">
                                        <button class="danger" onclick={remove(m.username.clone())}
                                            aria-label={format!("Remove {} from the team", m.username)}>{"Remove"}</button>
                                    </td>
                                }
                            </tr>
                        }) }
                        </tbody>
                    </table>
                }
                if admin {
                    <h3>{"Add a member"}</h3>
                    <form onsubmit={on_add} class="form" novalidate=true id="add-member">
                        <label for="m-user">{"User name"}</label>
                        <input aria-invalid={crate::pages::invalid(&add_err, "username")} id="m-user" name="username" ref={m_user} autocapitalize="none" aria-describedby="username-error" />
                        { field_error(&add_err, "username") }
                        <label for="m-role">{"Role"}</label>
                        <select aria-invalid={crate::pages::invalid(&add_err, "role")} id="m-role" name="role" ref={m_role} aria-describedby="role-error">
                            { role_options(&TEAM_ROLES, Some(Role::Builder)) }
                        </select>
                        { field_error(&add_err, "role") }
                        <button type="submit">{"Add member"}</button>
                        { super::error_box(&add_general) }
                    </form>
                }
                <h2>{"Projects"}</h2>
                if t.projects.is_empty() {
                    <p class="muted">{"No project belongs to this team."}</p>
                } else {
                    <ul class="cards">
                        { for t.projects.iter().map(|pr| html! {
                            <li key={pr.clone()}><Link<Route> to={Route::Project { name: pr.clone() }}>{pr}</Link<Route>></li>
                        }) }
                    </ul>
                }
                if admin || maintains(me.as_deref(), &t.name) {
                    <section id="notifications" aria-labelledby="notifications-title">
                        <h2 id="notifications-title">{"Notifications"}</h2>
                        <Subscriptions base={path.clone()} {admin} level={3} />
                    </section>
                }
                if admin { <Mappings team={t.name.clone()} /> }
            }
        </main>
    }
}

#[derive(Properties, PartialEq)]
struct MappingsProps {
    team: String,
}

/// The group mappings of a team (admins): who gets which role on it at sign-in.
#[function_component(Mappings)]
fn mappings(p: &MappingsProps) -> Html {
    let list = use_state(|| Loaded::<Vec<Mapping>>::Loading);
    let providers = use_state(|| None::<Providers>);
    let err = use_state(|| None::<ApiErr>);
    let list_err = use_state(|| None::<String>);
    let (provider, group, role) = (use_node_ref(), use_node_ref(), use_node_ref());
    let path = format!("/api/teams/{}/mappings", seg(&p.team));
    {
        let (list, providers, path) = (list.clone(), providers.clone(), path.clone());
        use_effect_with(p.team.clone(), move |_| {
            load(path, list);
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(ps) = api::get::<Providers>("/auth/providers").await {
                    providers.set(Some(ps));
                }
            });
        });
    }
    let onsubmit = {
        let (provider, group, role, err, list, path) = (
            provider.clone(),
            group.clone(),
            role.clone(),
            err.clone(),
            list.clone(),
            path.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(r) = Role::parse(&super::select_value(&role)) else {
                return;
            };
            let body = NewMapping {
                provider: super::select_value(&provider),
                group: super::input_value(&group).trim().to_string(),
                role: r,
            };
            let (err, list, path, group) = (err.clone(), list.clone(), path.clone(), group.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, Mapping>(&path, &body).await {
                    Ok(_) => {
                        err.set(None);
                        if let Some(i) = group.cast::<web_sys::HtmlInputElement>() {
                            i.set_value("");
                        }
                        load(path, list);
                    }
                    Err(e) => err.set(Some(e)),
                }
            });
        })
    };
    let remove = |m: &Mapping| {
        let (list, list_err, path, id) = (list.clone(), list_err.clone(), path.clone(), m.id);
        let what = format!("Remove the mapping of group {} ({})?", m.group, m.provider);
        Callback::from(move |_: MouseEvent| {
            if !super::confirm(&what) {
                return;
            }
            let (list, list_err, path) = (list.clone(), list_err.clone(), path.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::delete(&format!("{path}/{id}")).await {
                    Ok(()) => {
                        list_err.set(None);
                        load(path, list);
                    }
                    Err(e) => list_err.set(Some(e.message)),
                }
            });
        })
    };
    let display = |id: &str| {
        providers
            .as_ref()
            .and_then(|ps| ps.providers.iter().find(|p| p.id == id))
            .map(|p| format!("{} ({id})", p.display_name))
            .unwrap_or_else(|| id.to_string())
    };
    let general = match &*err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    html! {
        <section id="mappings" aria-labelledby="mappings-title">
            <h2 id="mappings-title">{"Group mappings"}</h2>
            <p class="muted">{"Members of a group at a sign-in provider get a role on this team when they sign in \
                (and, for Launchpad, at each refresh)."}</p>
            { super::error_box(&list_err) }
            { loading_or_error(&*list) }
            if let Loaded::Ok(ms) = &*list {
                if ms.is_empty() {
                    <p class="muted">{"No mapping."}</p>
                } else {
                    <table id="mapping-list">
                        <thead><tr><th>{"Provider"}</th><th>{"Group"}</th><th>{"Role"}</th><th>{"Actions"}</th></tr></thead>
                        <tbody>
                        { for ms.iter().map(|m| html! {
                            <tr key={m.id} data-mapping={m.id.to_string()}>
                                <td>{display(&m.provider)}</td>
                                <td class="mono">{&m.group}</td>
                                <td>{m.role.as_str()}</td>
                                <td class="row-actions">
                                    <button class="danger" onclick={remove(m)}
                                        aria-label={format!("Remove the mapping of group {}", m.group)}>{"Remove"}</button>
                                </td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                }
            }
            { match &*providers {
                Some(ps) if ps.providers.is_empty() => html! {
                    <p class="muted">{"No sign-in provider is configured on this master ([auth] in its config): \
                        mappings need one."}</p>
                },
                Some(ps) => html! {
                    <>
                    <h3>{"Add a mapping"}</h3>
                    <form {onsubmit} class="form" novalidate=true id="add-mapping">
                        <label for="g-provider">{"Provider"}</label>
                        <select aria-invalid={crate::pages::invalid(&err, "provider")} id="g-provider" name="provider" ref={provider} aria-describedby="provider-error">
                            { for ps.providers.iter().map(|pr| html! {
                                <option value={pr.id.clone()}>{format!("{} ({})", pr.display_name, pr.id)}</option>
                            }) }
                        </select>
                        { field_error(&err, "provider") }
                        <label for="g-group">{"Group"}</label>
                        <input aria-invalid={crate::pages::invalid(&err, "group")} id="g-group" name="group" ref={group} placeholder="kiln-maintainers" aria-describedby="group-error" />
                        { field_error(&err, "group") }
                        <label for="g-role">{"Role"}</label>
                        <select aria-invalid={crate::pages::invalid(&err, "role")} id="g-role" name="role" ref={role} aria-describedby="role-error">
                            { role_options(&TEAM_ROLES, Some(Role::Viewer)) }
                        </select>
                        { field_error(&err, "role") }
                        <button type="submit">{"Add mapping"}</button>
                        { super::error_box(&general) }
                    </form>
                    </>
                },
                None => html! {},
            } }
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_added_with_a_team_role() {
        let (user, body) = member_request("  bob ", "maintainer").unwrap();
        assert_eq!(user, "bob");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"role": "maintainer"})
        );
        assert_eq!(
            member_request(" ", "viewer").unwrap_err().field.as_deref(),
            Some("username")
        );
        // Admin is a property of the account, not a team role.
        assert_eq!(
            member_request("bob", "admin").unwrap_err().field.as_deref(),
            Some("role")
        );
    }

    #[test]
    fn team_maintainers_manage_its_subscriptions() {
        let me = |role: Role| Me {
            username: "ann".into(),
            admin: false,
            email: None,
            teams: vec![kiln_shared::api::TeamRole {
                team: "boards".into(),
                role,
            }],
            csrf_token: None,
            via: "session".into(),
            must_change_password: false,
            token_role: None,
        };
        assert!(maintains(Some(&me(Role::Maintainer)), "boards"));
        assert!(!maintains(Some(&me(Role::Builder)), "boards"));
        assert!(!maintains(Some(&me(Role::Maintainer)), "others"));
        assert!(!maintains(None, "boards"));
    }

    #[test]
    fn a_team_is_found_by_its_name_or_reported_missing() {
        let t = Team {
            name: "boards".into(),
            members: vec![],
            projects: vec![],
            created_at: chrono::Utc::now(),
        };
        assert_eq!(find(vec![t.clone()], "boards").unwrap(), t);
        assert_eq!(find(vec![t], "other").unwrap_err().status, 404);
    }
}
