//! One build: state, timings, commit, slave, why it failed or waits; the live log; artifacts with
//! size, sha256 and download; for a succeeded build, what its image carries (disk layout, apt
//! sources, packages, changes since an earlier build: `components::record`); Cancel and Rebuild
//! (for builders of its project: the page looks the project up for the person's role on it).

use super::{load, loading_or_error, Loaded};
use crate::api;
use crate::components::live_status::LiveStatus;
use crate::components::log_view::{target_line, LogView};
use crate::components::record;
use crate::components::{duration, elapsed, human_size, state_badge::StateBadge, when, CopyButton};
use crate::live::{use_log, use_queue, LogStart, TAIL_LINES};
use crate::routes::Route;
use crate::session::{effective_role, may_build, use_me};
use crate::title;
use kiln_shared::api::{Artifact, Build, Project};
use kiln_shared::{BuildId, BuildState};
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
    // What a succeeded build's image carries (`components::record`).
    let rec = use_mut_ref(record::Record::default);
    let rec_update = use_force_update();
    {
        let (rec, rec_update) = (rec.clone(), rec_update.clone());
        let succeeded = b
            .as_ref()
            .filter(|b| b.state == BuildState::Succeeded)
            .map(|b| b.project.clone());
        use_effect_with((p.id, succeeded), move |(id, project)| {
            if let Some(project) = project {
                record::load(*id, project, &rec, &rec_update);
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
    // The tab says how it goes: title, favicon (back to Kiln's own when the page goes), and
    // a notification when it ends, if asked for.
    let state = b.as_ref().map(|b| b.state);
    let project_name = b.as_ref().map(|b| b.project.clone());
    use_effect_with((p.id, state, project_name), |(id, state, project)| {
        match (state, project) {
            (Some(s), Some(pr)) => title::set_title(&title::build_title(*id, *s, pr)),
            _ => title::set_title(&title::route_title(&Route::Build { id: *id })),
        }
        title::set_favicon(*state);
    });
    use_effect_with((), |_| || title::set_favicon(None));
    let notify = use_state(|| false);
    let last_state = use_mut_ref(|| None::<BuildState>);
    {
        let (notify, last_state) = (notify.clone(), last_state.clone());
        let what = b.as_ref().map(|b| (b.state, b.project.clone()));
        use_effect_with(what, move |what| {
            if let Some((s, project)) = what {
                let before = last_state.borrow_mut().replace(*s);
                let ended_now = s.is_terminal() && before.is_some_and(|b| !b.is_terminal());
                if ended_now && *notify {
                    notify_ended(id.0, *s, project);
                }
            }
        });
    }
    let toggle_notify = {
        let (notify, err) = (notify.clone(), err.clone());
        Callback::from(move |_: MouseEvent| {
            if *notify {
                notify.set(false);
                return;
            }
            let (notify, err) = (notify.clone(), err.clone());
            wasm_bindgen_futures::spawn_local(async move {
                if ask_notification_permission().await {
                    notify.set(true);
                } else {
                    err.set(Some(
                        "This browser does not allow notifications from this site.".into(),
                    ));
                }
            });
        })
    };
    // A running build's elapsed time ticks every second.
    let tick = use_force_update();
    {
        let active = b
            .as_ref()
            .is_some_and(|b| !b.state.is_terminal() && b.started_at.is_some());
        use_effect_with(active, move |active| {
            let interval = active
                .then(|| gloo_timers::callback::Interval::new(1000, move || tick.force_update()));
            move || drop(interval)
        });
    }
    let phase = q.progress.get(&id).cloned();
    let promote_name = use_node_ref();
    let promote_err = use_state(|| None::<api::ApiErr>);
    let promote = {
        let (promote_name, promote_err, nav) =
            (promote_name.clone(), promote_err.clone(), nav.clone());
        let what = b.as_ref().map(|b| (b.project.clone(), b.commit.clone()));
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some((project, Some(commit))) = what.clone() else {
                return;
            };
            let name = super::input_value(&promote_name).trim().to_string();
            let (promote_err, nav) = (promote_err.clone(), nav.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let body = serde_json::json!({"release": name, "commit": commit});
                match api::post::<_, Build>(
                    &format!("/api/projects/{}/builds", api::seg(&project)),
                    &body,
                )
                .await
                {
                    Ok(nb) => {
                        if let Some(n) = nav {
                            n.push(&Route::Build { id: nb.id.0 });
                        }
                    }
                    Err(e) => promote_err.set(Some(e)),
                }
            });
        })
    };
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
                <h1 tabindex="-1">{format!("Build #{} ", b.id)}<StateBadge state={b.state} /></h1>
                <p class="visually-hidden" aria-live="polite" id="build-announce">
                    {format!("Build #{} {}", b.id, b.state.as_str())}
                </p>
                <dl class="facts">
                    <dt>{"Project"}</dt><dd><Link<Route> to={Route::Project { name: b.project.clone() }}>{&b.project}</Link<Route>></dd>
                    if let Some(r) = &b.release { <dt>{"Release"}</dt><dd>{r}</dd> }
                    if let Some(n) = &b.release_notes { <dt>{"Notes"}</dt><dd class="notes" id="notes">{n}</dd> }
                    <dt>{"Commit"}</dt><dd class="mono">{b.commit.clone().or(b.requested_commit.clone()).unwrap_or_else(|| "not fetched yet".into())}</dd>
                    <dt>{"Slave"}</dt><dd>{b.slave.clone().unwrap_or_default()}</dd>
                    <dt>{"Asked"}</dt><dd>{format!("{} ({})", when(Some(b.created_at)), b.trigger)}</dd>
                    <dt>{"Started"}</dt><dd>{when(b.started_at)}</dd>
                    if b.state.is_terminal() || b.started_at.is_none() {
                        <dt>{"Duration"}</dt><dd>{duration(b.started_at, b.finished_at)}</dd>
                    } else {
                        <dt>{"Running for"}</dt>
                        <dd id="elapsed">{elapsed(b.started_at.map(|t| (chrono::Utc::now() - t).num_seconds()).unwrap_or(0))}</dd>
                    }
                    if !b.state.is_terminal() {
                        if let Some(ph) = &phase { <dt>{"Phase"}</dt><dd id="phase">{ph}</dd> }
                    }
                    if let Some(r) = &b.reason { <dt>{"Reason"}</dt><dd class="reason" id="reason">{r}</dd> }
                    if let Some(w) = &b.waiting_reason { <dt>{"Waiting"}</dt><dd>{w}</dd> }
                </dl>
                <div class="actions">
                    if !b.state.is_terminal() {
                        <button id="notify" type="button" class="secondary" aria-pressed={notify.to_string()} onclick={toggle_notify}>
                            { if *notify { "Notifying you when it ends (turn off)" } else { "Notify me when it ends" } }
                        </button>
                    }
                    if may_build(role) {
                        if !b.state.is_terminal() { <button id="cancel" onclick={action("cancel")}>{"Cancel"}</button> }
                        if b.commit.is_some() { <button id="rebuild" onclick={action("rebuild")}>{"Rebuild"}</button> }
                    }
                </div>
                if may_build(role) && b.state == BuildState::Succeeded && b.commit.is_some() {
                    <form class="inline" id="promote" onsubmit={promote}>
                        <label for="promote-name">{"Promote to release"}</label>
                        <input id="promote-name" ref={promote_name} placeholder="v1.2" required=true
                            aria-describedby="release-error" aria-invalid={super::invalid(&promote_err, "release")} />
                        <button type="submit">{"Promote to release"}</button>
                        { super::field_error(&promote_err, "release") }
                        { super::error_box(&promote_err.as_ref().filter(|e| e.field.as_deref() != Some("release")).map(|e| e.message.clone())) }
                    </form>
                }
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
                                <td>{human_size(a.size.max(0) as u64)}</td>
                                <td><span class="mono sha">{&a.sha256}</span>{" "}<CopyButton text={a.sha256.clone()} label={format!("the sha256 of {}", a.name)} /></td>
                            </tr>
                        }) }</tbody>
                    </table>
                }
            }
            if b.as_ref().is_some_and(|b| b.state == BuildState::Succeeded) {
                { record::view(p.id, &rec, &rec_update) }
            }
            <h2>{"Log"}</h2>
            <LogView lines={log.lines.clone()} version={log.version} start={log.start}
                loading_earlier={log.loading_earlier} on_earlier={handle.load_earlier.clone()}
                raw_href={format!("/api/builds/{id}/log")} />
            if log.ended { <p class="muted">{"End of log."}</p> }
        </main>
    }
}

/// Asks the browser for notifications; true if allowed.
async fn ask_notification_permission() -> bool {
    use web_sys::{Notification, NotificationPermission};
    // Browsers without the API (or a context without it) have no `Notification` at all.
    if !js_sys::Reflect::has(&js_sys::global(), &"Notification".into()).unwrap_or(false) {
        return false;
    }
    if Notification::permission() == NotificationPermission::Granted {
        return true;
    }
    match Notification::request_permission() {
        Ok(promise) => {
            let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
            Notification::permission() == NotificationPermission::Granted
        }
        Err(_) => false,
    }
}

/// "Build #15 failed" (board), as a system notification.
fn notify_ended(id: i64, state: BuildState, project: &str) {
    if !js_sys::Reflect::has(&js_sys::global(), &"Notification".into()).unwrap_or(false) {
        return;
    }
    let opts = web_sys::NotificationOptions::new();
    opts.set_body(&format!("{project}: the build {}", state.as_str()));
    opts.set_tag(&format!("kiln-build-{id}"));
    let _ =
        web_sys::Notification::new_with_options(&format!("Build #{id} {}", state.as_str()), &opts);
}
