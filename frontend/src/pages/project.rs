//! One project: its settings, build history, Build now, Release build…, the latest good image.
//! What the person may do follows their role on it (`project.role`): builders start builds,
//! maintainers also change the settings, who is notified of its builds and in which words
//! (`notifications`), and delete the project; others get a "Notify me" switch; other buttons
//! are not shown.

use super::notifications::{NotifyMe, ProjectNotifications};
use super::{load, loading_or_error, Loaded};
use crate::api;
use crate::components::settings_form::SettingsForm;
use crate::components::{duration, human_size, short, state_badge::StateBadge, when};
use crate::live::use_queue;
use crate::routes::Route;
use crate::session::{effective_role, is_admin, may_build, may_maintain, use_me};
use kiln_shared::api::{Artifact, Build, Project, RequestBuild};
use kiln_shared::BuildState;
use yew::prelude::*;
use yew_router::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub name: String,
}

#[function_component(ProjectPage)]
pub fn project_page(p: &Props) -> Html {
    let project = use_state(|| Loaded::<Project>::Loading);
    let history = use_state(|| Loaded::<Vec<Build>>::Loading);
    let good = use_state(|| None::<(Build, Vec<Artifact>)>);
    let err = use_state(|| None::<String>);
    let q = use_queue();
    let nav = use_navigator();
    let me = use_me();
    let role = match &*project {
        Loaded::Ok(pr) => effective_role(me.as_deref(), pr.role),
        _ => None,
    };
    {
        let (project, history, good, name) = (
            project.clone(),
            history.clone(),
            good.clone(),
            p.name.clone(),
        );
        use_effect_with(p.name.clone(), move |_| {
            load(format!("/api/projects/{name}"), project);
            load(
                format!("/api/builds?project={name}&limit=200"),
                history.clone(),
            );
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(bs) = api::get::<Vec<Build>>(&format!(
                    "/api/builds?project={name}&state=succeeded&limit=1"
                ))
                .await
                {
                    if let Some(b) = bs.into_iter().next() {
                        let arts =
                            api::get::<Vec<Artifact>>(&format!("/api/builds/{}/artifacts", b.id))
                                .await
                                .unwrap_or_default();
                        good.set(Some((b, arts)));
                    }
                }
            });
        });
    }
    let build_now = {
        let (name, err, nav) = (p.name.clone(), err.clone(), nav.clone());
        Callback::from(move |_: MouseEvent| {
            let (name, err, nav) = (name.clone(), err.clone(), nav.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let body = RequestBuild::default();
                match api::post::<_, Build>(&format!("/api/projects/{name}/builds"), &body).await {
                    Ok(b) => {
                        if let Some(n) = nav {
                            n.push(&Route::Build { id: b.id.0 });
                        }
                    }
                    Err(e) => err.set(Some(e.message)),
                }
            });
        })
    };
    let release_open = use_state(|| false);
    let delete = {
        let (name, err, nav) = (p.name.clone(), err.clone(), nav.clone());
        Callback::from(move |_: MouseEvent| {
            if !super::confirm(&format!(
                "Delete project '{name}' with all its builds, logs and artifacts?"
            )) {
                return;
            }
            let (name, err, nav) = (name.clone(), err.clone(), nav.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::delete(&format!("/api/projects/{}", api::seg(&name))).await {
                    Ok(()) => {
                        if let Some(n) = nav {
                            n.push(&Route::Projects);
                        }
                    }
                    Err(e) => err.set(Some(e.message)),
                }
            });
        })
    };
    {
        // A build of the project changed (started, ended): the project's facts may have too
        // (last state, disk); the settings form keeps whatever is being typed.
        let key: Vec<(i64, BuildState)> = q
            .builds
            .values()
            .filter(|b| b.project == p.name)
            .map(|b| (b.id.0, b.state))
            .collect();
        let (project, name) = (project.clone(), p.name.clone());
        use_effect_with(key, move |key| {
            if !key.is_empty() {
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(pr) =
                        api::get::<Project>(&format!("/api/projects/{}", api::seg(&name))).await
                    {
                        project.set(Loaded::Ok(pr));
                    }
                });
            }
        });
    }
    // Live: builds of this project as they change, over what was loaded.
    let rows: Vec<Build> = match &*history {
        Loaded::Ok(list) => {
            let mut map: std::collections::BTreeMap<i64, Build> =
                list.iter().map(|b| (b.id.0, b.clone())).collect();
            for b in q.builds.values().filter(|b| b.project == p.name) {
                map.insert(b.id.0, b.clone());
            }
            map.into_values().rev().collect()
        }
        _ => vec![],
    };
    html! {
        <main id="project">
            <h1 tabindex="-1">{&p.name}</h1>
            { loading_or_error(&*project) }
            if let Loaded::Ok(pr) = &*project {
                <dl class="facts">
                    <dt>{"Branch"}</dt><dd class="mono">{format!("{} ({})", pr.branch_url, pr.branch)}</dd>
                    <dt>{"Architecture"}</dt><dd>{pr.architecture.clone().unwrap_or_else(|| "any".into())}</dd>
                    <dt>{"Tags"}</dt><dd>{pr.tags.join(", ")}</dd>
                    <dt>{"Schedule"}</dt><dd>{pr.schedule.clone().unwrap_or_else(|| "none".into())}
                        { pr.next_run.map(|t| format!(" — next run {}", when(Some(t)))).unwrap_or_default() }</dd>
                    <dt>{"Disk"}</dt><dd>{human_size(pr.disk_bytes.max(0) as u64)}</dd>
                    <dt>{"Team"}</dt><dd id="project-team">
                        { match &pr.team {
                            Some(t) => html! { <Link<Route> to={Route::Team { name: t.clone() }}>{t}</Link<Route>> },
                            None => html! { <span class="muted">{"none"}</span> },
                        } }
                    </dd>
                    <dt>{"Visibility"}</dt><dd id="project-visibility">{pr.visibility.as_str()}</dd>
                    <dt>{"Your role"}</dt><dd id="project-role">{role.map(|r| r.as_str()).unwrap_or("viewer")}</dd>
                </dl>
                if may_maintain(role) {
                    <SettingsForm project={pr.clone()} on_saved={{
                        let project = project.clone();
                        Callback::from(move |p: Project| project.set(Loaded::Ok(p)))
                    }} />
                    <ProjectNotifications project={p.name.clone()} admin={is_admin(me.as_deref())} />
                } else if let Some(me) = &me {
                    <NotifyMe project={p.name.clone()} username={me.username.clone()} />
                }
                <div class="actions">
                    if may_build(role) {
                        <button id="build-now" onclick={build_now}>{"Build now"}</button>
                        <button id="release-build" aria-expanded={(*release_open).to_string()} aria-controls="release-form"
                            onclick={{ let o = release_open.clone(); Callback::from(move |_: MouseEvent| o.set(!*o)) }}>{"Release build…"}</button>
                    }
                    if may_maintain(role) {
                        <button id="delete-project" class="danger" onclick={delete}>{"Delete project"}</button>
                    }
                </div>
                if may_build(role) && *release_open {
                    <ReleaseForm project={p.name.clone()} branch={pr.branch.clone()} />
                }
            }
            { super::error_box(&err) }
            if let Some((b, arts)) = &*good {
                <section class="good">
                    <h2>{"Latest good image"}</h2>
                    <p><Link<Route> to={Route::Build { id: b.id.0 }}>{format!("#{}", b.id)}</Link<Route>>
                       {format!(" {} {}", short(&b.commit), when(b.finished_at))}</p>
                    <ul>{ for arts.iter().filter(|a| a.name != "SHA256SUMS").map(|a| html! {
                        <li><a href={format!("/api/builds/{}/artifacts/{}", b.id, api::seg(&a.name))} download={a.name.clone()}>{&a.name}</a></li>
                    }) }</ul>
                </section>
            }
            <h2>{"History"}</h2>
            { loading_or_error(&*history) }
            <table>
                <thead><tr><th>{"Build"}</th><th>{"State"}</th><th>{"Duration"}</th><th>{"Commit"}</th><th>{"Slave"}</th><th>{"Asked by"}</th></tr></thead>
                <tbody>
                { for rows.iter().map(|b| html! {
                    <tr key={b.id.0}>
                        <td><Link<Route> to={Route::Build { id: b.id.0 }}>{format!("#{}", b.id)}</Link<Route>>
                            { b.release.as_ref().map(|r| html!{ <span class="tag">{format!(" release {r}")}</span> }).unwrap_or_default() }</td>
                        <td><StateBadge state={b.state} /></td>
                        <td>{ if b.state == BuildState::Queued { String::new() } else { duration(b.started_at.or(b.dispatched_at), b.finished_at.or(Some(chrono::Utc::now()))) } }</td>
                        <td class="mono">{short(&b.commit)}</td>
                        <td>{b.slave.clone().unwrap_or_default()}</td>
                        <td>{&b.trigger}</td>
                    </tr>
                }) }
                </tbody>
            </table>
        </main>
    }
}

#[derive(Properties, PartialEq)]
struct ReleaseProps {
    project: String,
    branch: String,
}

/// A release build: its name and the commit it is built from (the branch head, or the commit
/// of one of the project's recent good builds); the server's refusal shows next to the field.
#[function_component(ReleaseForm)]
fn release_form(p: &ReleaseProps) -> Html {
    let name = use_node_ref();
    let commit = use_node_ref();
    let notes = use_node_ref();
    let err = use_state(|| None::<crate::api::ApiErr>);
    let busy = use_state(|| false);
    let good = use_state(Vec::<Build>::new);
    let nav = use_navigator();
    {
        let (good, project) = (good.clone(), p.project.clone());
        use_effect_with(p.project.clone(), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(bs) = api::get::<Vec<Build>>(&format!(
                    "/api/builds?project={}&state=succeeded&limit=20",
                    api::seg(&project)
                ))
                .await
                {
                    good.set(bs);
                }
            });
        });
    }
    // One choice per commit (several good builds of one commit are one choice).
    let mut seen = std::collections::BTreeSet::new();
    let commits: Vec<&Build> = good
        .iter()
        .filter(|b| b.commit.as_ref().is_some_and(|c| seen.insert(c.clone())))
        .collect();
    let onsubmit = {
        let (name, commit, notes, err, busy, nav) = (
            name.clone(),
            commit.clone(),
            notes.clone(),
            err.clone(),
            busy.clone(),
            nav.clone(),
        );
        let project = p.project.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let release = super::input_value(&name).trim().to_string();
            let c = super::select_value(&commit);
            let n = super::textarea_value(&notes).trim().to_string();
            let body = RequestBuild {
                release: Some(release),
                commit: (!c.is_empty()).then_some(c),
                priority: None,
                notes: (!n.is_empty()).then_some(n),
            };
            let (project, err, busy, nav) =
                (project.clone(), err.clone(), busy.clone(), nav.clone());
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, Build>(
                    &format!("/api/projects/{}/builds", api::seg(&project)),
                    &body,
                )
                .await
                {
                    Ok(b) => {
                        if let Some(n) = nav {
                            n.push(&Route::Build { id: b.id.0 });
                        }
                    }
                    Err(e) => {
                        busy.set(false);
                        err.set(Some(e));
                    }
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if !matches!(e.field.as_deref(), Some("release" | "commit" | "notes")) => {
            Some(e.message.clone())
        }
        _ => None,
    };
    html! {
        <form id="release-form" class="form release" {onsubmit} novalidate=true aria-label="Release build">
            <h2>{"Release build"}</h2>
            <label for="release-name">{"Release name"}</label>
            <input id="release-name" ref={name} placeholder="v1.2" required=true
                aria-describedby="release-error" aria-invalid={super::invalid(&err, "release")} />
            { super::field_error(&err, "release") }
            <label for="release-commit">{"Commit"}</label>
            <select id="release-commit" ref={commit} aria-describedby="commit-error"
                aria-invalid={super::invalid(&err, "commit")}>
                <option value="" selected=true>{format!("the head of {}", p.branch)}</option>
                { for commits.iter().map(|b| {
                    let c = b.commit.clone().unwrap_or_default();
                    html! {
                        <option value={c.clone()}>{format!("{} (build #{}, {})", short(&b.commit), b.id, when(b.finished_at))}</option>
                    }
                }) }
            </select>
            { super::field_error(&err, "commit") }
            <label for="release-notes">{"Notes (optional)"}</label>
            <textarea id="release-notes" ref={notes} rows="3" placeholder="What this release is for"
                aria-describedby="notes-error" aria-invalid={super::invalid(&err, "notes")} />
            { super::field_error(&err, "notes") }
            <button type="submit" id="release-submit" disabled={*busy}>{"Start the release build"}</button>
            { super::error_box(&general) }
        </form>
    }
}
