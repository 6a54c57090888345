//! Teams: the ones the person is in (admins: all of them), with their members and projects;
//! admins create teams here. A team's own page (`team.rs`) manages its members and the group
//! mappings that fill it at sign-in.

use super::{field_error, load, loading_or_error, Loaded};
use crate::api::{self, ApiErr};
use crate::routes::Route;
use crate::session::{is_admin, use_me};
use kiln_shared::api::{NewTeam, Team};
use yew::prelude::*;
use yew_router::prelude::*;

#[function_component(Teams)]
pub fn teams() -> Html {
    let me = use_me();
    let admin = is_admin(me.as_deref());
    let list = use_state(|| Loaded::<Vec<Team>>::Loading);
    let err = use_state(|| None::<ApiErr>);
    let name = use_node_ref();
    let nav = use_navigator();
    {
        let list = list.clone();
        use_effect_with((), move |_| load("/api/teams".into(), list));
    }
    let onsubmit = {
        let (name, err) = (name.clone(), err.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = NewTeam {
                name: super::input_value(&name).trim().to_string(),
            };
            let (err, nav) = (err.clone(), nav.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, Team>("/api/teams", &body).await {
                    Ok(t) => {
                        if let Some(n) = nav {
                            n.push(&Route::Team { name: t.name });
                        }
                    }
                    Err(e) => err.set(Some(e)),
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    let my_role = |team: &str| {
        me.as_ref()
            .and_then(|m| m.teams.iter().find(|t| t.team == team))
            .map(|t| t.role.as_str().to_string())
            .unwrap_or_else(|| "—".into())
    };
    html! {
        <main id="teams">
            <h1 tabindex="-1">{"Teams"}</h1>
            <p class="muted">{"A project belongs to a team; its members hold their role on it: \
                viewers see it, builders also start and cancel builds, maintainers also change its settings."}</p>
            { loading_or_error(&*list) }
            if let Loaded::Ok(ts) = &*list {
                if ts.is_empty() {
                    <p class="muted">{ if admin { "No team yet: create one below." } else { "You are in no team yet: an admin adds you to one." } }</p>
                } else {
                    <table id="team-list">
                        <thead><tr><th>{"Team"}</th><th>{"Members"}</th><th>{"Projects"}</th><th>{"Your role"}</th></tr></thead>
                        <tbody>
                        { for ts.iter().map(|t| html! {
                            <tr key={t.name.clone()} data-team={t.name.clone()}>
                                <td><Link<Route> to={Route::Team { name: t.name.clone() }}>{&t.name}</Link<Route>></td>
                                <td>{t.members.len()}</td>
                                <td class="wrap">{ for t.projects.iter().map(|p| html! {
                                    <><Link<Route> to={Route::Project { name: p.clone() }}>{p}</Link<Route>>{" "}</>
                                }) }</td>
                                <td>{my_role(&t.name)}</td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                }
            }
            if admin {
                <h2>{"New team"}</h2>
                <form {onsubmit} class="form" novalidate=true id="new-team">
                    <label for="t-name">{"Name"}</label>
                    <input aria-invalid={crate::pages::invalid(&err, "name")} id="t-name" name="name" ref={name} required=true aria-describedby="name-error" />
                    { field_error(&err, "name") }
                    <button type="submit">{"Create team"}</button>
                    { super::error_box(&general) }
                </form>
            }
        </main>
    }
}
