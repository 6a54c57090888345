//! The dashboard: running and queued builds moving live, slaves online, recent results.

use crate::components::live_status::LiveStatus;
use crate::components::{short, state_badge::StateBadge};
use crate::live::use_queue;
use crate::routes::Route;
use kiln_shared::api::{Build, Slave};
use yew::prelude::*;
use yew_router::prelude::*;

fn build_row(b: &Build, progress: Option<&String>) -> Html {
    html! {
        <tr key={b.id.0}>
            <td><Link<Route> to={Route::Build { id: b.id.0 }}>{format!("#{}", b.id)}</Link<Route>></td>
            <td><Link<Route> to={Route::Project { name: b.project.clone() }}>{&b.project}</Link<Route>></td>
            <td><StateBadge state={b.state} /></td>
            <td>{ progress.cloned().or(b.waiting_reason.clone()).unwrap_or_default() }</td>
            <td class="mono">{short(&b.commit)}</td>
            <td>{b.slave.clone().unwrap_or_default()}</td>
        </tr>
    }
}

fn table(rows: Vec<Html>, empty: &str) -> Html {
    if rows.is_empty() {
        return html! { <p class="muted">{empty}</p> };
    }
    html! {
        <table>
            <thead><tr><th>{"Build"}</th><th>{"Project"}</th><th>{"State"}</th><th>{"Doing / waiting for"}</th><th>{"Commit"}</th><th>{"Slave"}</th></tr></thead>
            <tbody>{ for rows }</tbody>
        </table>
    }
}

#[function_component(Dashboard)]
pub fn dashboard() -> Html {
    let q = use_queue();
    let active: Vec<Html> = q
        .builds
        .values()
        .rev()
        .filter(|b| b.state.is_active())
        .map(|b| build_row(b, q.progress.get(&b.id)))
        .collect();
    let queued: Vec<Html> = q
        .builds
        .values()
        .filter(|b| b.state == kiln_shared::BuildState::Queued)
        .map(|b| build_row(b, None))
        .collect();
    let recent: Vec<Html> = q
        .builds
        .values()
        .rev()
        .filter(|b| b.state.is_terminal())
        .take(10)
        .map(|b| build_row(b, None))
        .collect();
    let online: Vec<&Slave> = q.slaves.values().filter(|s| s.online).collect();
    html! {
        <main id="dashboard">
            <h1 tabindex="-1">{"Dashboard"}</h1>
            <LiveStatus />
            <h2>{"Running"}</h2>
            { table(active, "Nothing is running.") }
            <h2>{"Queued"}</h2>
            { table(queued, "The queue is empty.") }
            <h2>{format!("Slaves online ({})", online.len())}</h2>
            <ul class="slaves">
                { for online.iter().map(|s| html! {
                    <li key={s.id.0}>{format!("{} ({}){}", s.name, s.arch.clone().unwrap_or_default(),
                        if s.builds.is_empty() { String::from(" idle") } else { format!(" building #{}", s.builds[0]) })}</li>
                }) }
            </ul>
            <h2>{"Recent results"}</h2>
            { table(recent, "No build has finished yet.") }
        </main>
    }
}
