//! One build: state, timings, commit, slave, why it failed or waits; the live log; artifacts with
//! size, sha256 and download; Cancel and Rebuild (for builders of its project: the page looks
//! the project up for the person's role on it).

use super::{load, loading_or_error, Loaded};
use crate::api;
use crate::components::live_status::LiveStatus;
use crate::components::log_view::{target_line, LogView};
use crate::components::{duration, state_badge::StateBadge, when};
use crate::live::{use_log, use_queue, LogStart, TAIL_LINES};
use crate::routes::Route;
use crate::session::{effective_role, may_build, use_me};
use kiln_shared::api::{Artifact, Build, Project};
use kiln_shared::BuildId;
use yew::prelude::*;
use yew_router::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub id: i64,
}

#[function_component(BuildPage)]
pub fn build_page(p: &Props) -> Html {
    let id = BuildId(p.id);
    let build = use_state(|| Loaded::<Build>::Loading);
    let arts = use_state(|| Loaded::<Vec<Artifact>>::Loading);
    let err = use_state(|| None::<String>);
    let q = use_queue();
    // The log opens at its tail; a link to a line (`#L42`) opens it a little before that line.
    let start = match target_line() {
        Some(line) => LogStart::At((line as u64).saturating_sub(1 + u64::from(TAIL_LINES) / 2)),
        None => LogStart::Tail(TAIL_LINES),
    };
    let handle = use_log(id, start);
    let log = handle.log;
    let nav = use_navigator();
    {
        let (build, arts) = (build.clone(), arts.clone());
        use_effect_with(p.id, move |_| {
            load(format!("/api/builds/{id}"), build);
            load(format!("/api/builds/{id}/artifacts"), arts);
        });
    }
    // The live state wins over what was loaded.
    let b: Option<Build> = q.builds.get(&id).cloned().or(match &*build {
        Loaded::Ok(b) => Some(b.clone()),
        _ => None,
    });
    // The person's role on the build's project decides which buttons show.
    let project = use_state(|| None::<Project>);
    {
        let project = project.clone();
        use_effect_with(b.as_ref().map(|b| b.project.clone()), move |name| {
            if let Some(name) = name.clone() {
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(p) =
                        api::get::<Project>(&format!("/api/projects/{}", api::seg(&name))).await
                    {
                        project.set(Some(p));
                    }
                });
            }
        });
    }
    let me = use_me();
    let role = effective_role(me.as_deref(), project.as_ref().and_then(|p| p.role));
    {
        // Artifacts appear when the build ends (its state, or the end of its log, says so).
        let arts = arts.clone();
        let ended = log.ended || b.as_ref().is_some_and(|b| b.state.is_terminal());
        use_effect_with(ended, move |ended| {
            if *ended {
                load(format!("/api/builds/{id}/artifacts"), arts);
            }
        });
    }
    let action = |what: &'static str| {
        let (err, nav) = (err.clone(), nav.clone());
        Callback::from(move |_: MouseEvent| {
            let (err, nav) = (err.clone(), nav.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, Build>(
                    &format!("/api/builds/{id}/{what}"),
                    &serde_json::json!({}),
                )
                .await
                {
                    Ok(nb) if what == "rebuild" => {
                        if let Some(n) = nav {
                            n.push(&Route::Build { id: nb.id.0 });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => err.set(Some(e.message)),
                }
            });
        })
    };
    html! {
        <main id="build">
            <LiveStatus />
            { loading_or_error(&*build) }
            if let Some(b) = &b {
                <h1>{format!("Build #{} ", b.id)}<StateBadge state={b.state} /></h1>
                <dl class="facts">
                    <dt>{"Project"}</dt><dd><Link<Route> to={Route::Project { name: b.project.clone() }}>{&b.project}</Link<Route>></dd>
                    if let Some(r) = &b.release { <dt>{"Release"}</dt><dd>{r}</dd> }
                    <dt>{"Commit"}</dt><dd class="mono">{b.commit.clone().or(b.requested_commit.clone()).unwrap_or_else(|| "not fetched yet".into())}</dd>
                    <dt>{"Slave"}</dt><dd>{b.slave.clone().unwrap_or_default()}</dd>
                    <dt>{"Asked"}</dt><dd>{format!("{} ({})", when(Some(b.created_at)), b.trigger)}</dd>
                    <dt>{"Started"}</dt><dd>{when(b.started_at)}</dd>
                    <dt>{"Duration"}</dt><dd>{duration(b.started_at, b.finished_at)}</dd>
                    if let Some(r) = &b.reason { <dt>{"Reason"}</dt><dd class="reason" id="reason">{r}</dd> }
                    if let Some(w) = &b.waiting_reason { <dt>{"Waiting"}</dt><dd>{w}</dd> }
                </dl>
                <div class="actions">
                    if may_build(role) {
                        if !b.state.is_terminal() { <button id="cancel" onclick={action("cancel")}>{"Cancel"}</button> }
                        if b.commit.is_some() { <button id="rebuild" onclick={action("rebuild")}>{"Rebuild"}</button> }
                    }
                </div>
            }
            { super::error_box(&err) }
            <h2>{"Artifacts"}</h2>
            if let Loaded::Ok(list) = &*arts {
                if list.is_empty() { <p class="muted">{"None yet."}</p> }
                else {
                    <table id="artifacts">
                        <thead><tr><th>{"File"}</th><th>{"Size"}</th><th>{"sha256"}</th></tr></thead>
                        <tbody>{ for list.iter().map(|a| html! {
                            <tr key={a.name.clone()}>
                                <td><a class="download" href={format!("/api/builds/{id}/artifacts/{}", api::seg(&a.name))} download={a.name.clone()}>{&a.name}</a></td>
                                <td>{format!("{:.1} MB", a.size as f64 / 1e6)}</td>
                                <td class="mono sha">{&a.sha256}</td>
                            </tr>
                        }) }</tbody>
                    </table>
                }
            }
            <h2>{"Log"}</h2>
            <LogView lines={log.lines.clone()} version={log.version} start={log.start}
                loading_earlier={log.loading_earlier} on_earlier={handle.load_earlier.clone()}
                raw_href={format!("/api/builds/{id}/log")} />
            if log.ended { <p class="muted">{"End of log."}</p> }
        </main>
    }
}
