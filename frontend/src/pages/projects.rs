//! Projects: the list with each one's last build, team and visibility, and the form that
//! creates one (admins, and maintainers of a team: the project goes into one of their teams),
//! the server's validation errors shown next to the field they concern.

use super::{field_error, load, loading_or_error, Loaded};
use crate::api;
use crate::components::state_badge::StateBadge;
use crate::routes::Route;
use crate::session::{may_create_project, team_choices, use_me, TeamChoices};
use kiln_shared::api::{CreateProject, Project, Team, Visibility};
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

#[function_component(Projects)]
pub fn projects() -> Html {
    let list = use_state(|| Loaded::<Vec<Project>>::Loading);
    let err = use_state(|| None::<api::ApiErr>);
    let (name, url, branch) = (use_node_ref(), use_node_ref(), use_node_ref());
    let (team, visibility) = (use_node_ref(), use_node_ref());
    let teams = use_state(|| Loaded::<Vec<Team>>::Loading);
    let me = use_me();
    let may_create = me.as_deref().is_some_and(may_create_project);
    let nav = use_navigator();
    {
        let (list, teams) = (list.clone(), teams.clone());
        use_effect_with(may_create, move |may_create| {
            load("/api/projects".into(), list);
            if *may_create {
                load("/api/teams".into(), teams);
            }
        });
    }
    let choices = match (&*teams, me.as_deref()) {
        (Loaded::Ok(ts), Some(me)) => team_choices(me, ts),
        _ => TeamChoices {
            none: false,
            teams: vec![],
        },
    };
    let onsubmit = {
        let (name, url, branch, err) = (name.clone(), url.clone(), branch.clone(), err.clone());
        let (team, visibility) = (team.clone(), visibility.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let v = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let b = v(&branch);
            let t = super::select_value(&team);
            let public = super::select_value(&visibility) == Visibility::Public.as_str();
            let body = CreateProject {
                name: v(&name).trim().to_string(),
                branch_url: v(&url).trim().to_string(),
                branch: (!b.trim().is_empty()).then(|| b.trim().to_string()),
                architecture: None,
                tags: None,
                lost_retries: None,
                schedule: None,
                timezone: None,
                only_if_changed: None,
                priority: None,
                timeout_minutes: None,
                keep_builds: None,
                keep_days: None,
                max_running: None,
                allow_emulation: None,
                backend: None,
                path: None,
                team: (!t.is_empty()).then_some(t),
                visibility: Some(if public {
                    Visibility::Public
                } else {
                    Visibility::Private
                }),
            };
            let (err, nav) = (err.clone(), nav.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, Project>("/api/projects", &body).await {
                    Ok(p) => {
                        if let Some(n) = nav {
                            n.push(&Route::Project { name: p.name });
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
    html! {
        <main id="projects">
            <h1 tabindex="-1">{"Projects"}</h1>
            { loading_or_error(&*list) }
            if let Loaded::Ok(ps) = &*list {
                if ps.is_empty() {
                    <p class="muted">{ if may_create { "No project yet: create one below." } else { "No project you may see yet." } }</p>
                }
                <ul class="cards">
                    { for ps.iter().map(|p| html! {
                        <li key={p.name.clone()}>
                            <Link<Route> to={Route::Project { name: p.name.clone() }}>{&p.name}</Link<Route>>
                            <span class="muted">{format!(" {} ({})", p.branch_url, p.branch)}</span>
                            <span class="muted">{format!(" — {}, {}", p.team.as_deref().unwrap_or("no team"), p.visibility.as_str())}</span>
                            if let Some(s) = p.last_state { {" "}<StateBadge state={s} /> }
                        </li>
                    }) }
                </ul>
            }
            if may_create {
            <h2>{"New project"}</h2>
            <form {onsubmit} class="form" novalidate=true id="new-project">
                <label for="p-name">{"Name"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "name")} id="p-name" name="name" ref={name} required=true aria-describedby="name-error" />
                { field_error(&err, "name") }
                <label for="p-url">{"Branch URL"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "branch_url")} id="p-url" name="branch_url" ref={url} placeholder="https://git.example.org/board-image.git" required=true aria-describedby="branch_url-error" />
                { field_error(&err, "branch_url") }
                <label for="p-branch">{"Branch"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "branch")} id="p-branch" name="branch" ref={branch} placeholder="main" aria-describedby="branch-error" />
                { field_error(&err, "branch") }
                <label for="p-team">{"Team"}</label>
                <select aria-invalid={crate::pages::invalid(&err, "team")} id="p-team" name="team" ref={team} aria-describedby="team-error">
                    if choices.none { <option value="">{"no team (only admins see it unless public)"}</option> }
                    { for choices.teams.iter().map(|t| html! { <option value={t.clone()}>{t}</option> }) }
                </select>
                { field_error(&err, "team") }
                <label for="p-visibility">{"Visibility"}</label>
                <select aria-invalid={crate::pages::invalid(&err, "visibility")} id="p-visibility" name="visibility" ref={visibility} aria-describedby="visibility-error">
                    <option value="private" selected=true>{"private: the team only"}</option>
                    <option value="public">{"public: everyone signed in may view it"}</option>
                </select>
                { field_error(&err, "visibility") }
                <button type="submit">{"Create project"}</button>
                { super::error_box(&general) }
            </form>
            }
        </main>
    }
}
