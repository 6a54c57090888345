//! Projects: the list with each one's last build, and the form that creates one (the server's
//! validation errors shown next to the field they concern).

use super::{field_error, load, loading_or_error, Loaded};
use crate::api;
use crate::components::state_badge::StateBadge;
use crate::routes::Route;
use kiln_shared::api::{CreateProject, Project};
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

#[function_component(Projects)]
pub fn projects() -> Html {
    let list = use_state(|| Loaded::<Vec<Project>>::Loading);
    let err = use_state(|| None::<api::ApiErr>);
    let (name, url, branch) = (use_node_ref(), use_node_ref(), use_node_ref());
    let nav = use_navigator();
    {
        let list = list.clone();
        use_effect_with((), move |_| load("/api/projects".into(), list));
    }
    let onsubmit = {
        let (name, url, branch, err) = (name.clone(), url.clone(), branch.clone(), err.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let v = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let b = v(&branch);
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
            <h1>{"Projects"}</h1>
            { loading_or_error(&*list) }
            if let Loaded::Ok(ps) = &*list {
                if ps.is_empty() { <p class="muted">{"No project yet: create one below."}</p> }
                <ul class="cards">
                    { for ps.iter().map(|p| html! {
                        <li key={p.name.clone()}>
                            <Link<Route> to={Route::Project { name: p.name.clone() }}>{&p.name}</Link<Route>>
                            <span class="muted">{format!(" {} ({})", p.branch_url, p.branch)}</span>
                            if let Some(s) = p.last_state { {" "}<StateBadge state={s} /> }
                        </li>
                    }) }
                </ul>
            }
            <h2>{"New project"}</h2>
            <form {onsubmit} class="form" novalidate=true>
                <label for="p-name">{"Name"}</label>
                <input id="p-name" name="name" ref={name} required=true aria-describedby="name-error" />
                { field_error(&err, "name") }
                <label for="p-url">{"Branch URL"}</label>
                <input id="p-url" name="branch_url" ref={url} placeholder="https://git.example.org/board-image.git" required=true aria-describedby="branch_url-error" />
                { field_error(&err, "branch_url") }
                <label for="p-branch">{"Branch"}</label>
                <input id="p-branch" name="branch" ref={branch} placeholder="main" aria-describedby="branch-error" />
                { field_error(&err, "branch") }
                <button type="submit">{"Create project"}</button>
                { super::error_box(&general) }
            </form>
        </main>
    }
}
