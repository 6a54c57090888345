//! The dashboard: running and queued builds moving live, slaves online, recent results.

use crate::components::{short, state_badge::StateBadge};
use crate::live::{self, Want};
use crate::routes::Route;
use kiln_shared::api::{Build, Slave};
use kiln_shared::frames::ConsoleEvent;
use kiln_shared::{BuildId, SlaveId};
use std::collections::BTreeMap;
use std::rc::Rc;
use yew::prelude::*;
use yew_router::prelude::*;

#[derive(Default, PartialEq)]
pub struct Queue {
    pub builds: BTreeMap<BuildId, Build>,
    pub slaves: BTreeMap<SlaveId, Slave>,
    pub progress: BTreeMap<BuildId, String>,
    pub connected: bool,
    pub error: Option<String>,
}

pub enum Ev {
    Event(Box<ConsoleEvent>),
    Connected(bool),
}

#[allow(clippy::large_enum_variant)]
enum Ev2 {
    Event(ConsoleEvent),
    Connected(bool),
}

impl Reducible for Queue {
    type Action = Ev;
    fn reduce(self: Rc<Self>, action: Ev) -> Rc<Self> {
        let mut q = Queue {
            builds: self.builds.clone(),
            slaves: self.slaves.clone(),
            progress: self.progress.clone(),
            connected: self.connected,
            error: None,
        };
        let action = match action {
            Ev::Event(e) => Ev2::Event(*e),
            Ev::Connected(c) => Ev2::Connected(c),
        };
        match action {
            Ev2::Connected(c) => q.connected = c,
            Ev2::Event(ConsoleEvent::Build(b)) => {
                if b.state.is_terminal() {
                    q.progress.remove(&b.id);
                }
                q.builds.insert(b.id, b);
            }
            Ev2::Event(ConsoleEvent::Slave(s)) => {
                q.slaves.insert(s.id, s);
            }
            Ev2::Event(ConsoleEvent::Progress {
                build,
                phase,
                percent,
            }) => {
                let p = percent.map(|p| format!(" {p}%")).unwrap_or_default();
                q.progress.insert(build, format!("{phase}{p}"));
            }
            Ev2::Event(ConsoleEvent::Error { message }) => q.error = Some(message),
            Ev2::Event(_) => {}
        }
        Rc::new(q)
    }
}

/// The live queue, for any page that needs it.
#[hook]
pub fn use_queue() -> UseReducerHandle<Queue> {
    let q = use_reducer(Queue::default);
    {
        let q = q.clone();
        use_effect_with((), move |_| {
            let a = q.clone();
            let b = q.clone();
            let live = live::subscribe(
                Want::Queue,
                move |ev| a.dispatch(Ev::Event(Box::new(ev))),
                move |c| b.dispatch(Ev::Connected(c)),
            );
            move || drop(live)
        });
    }
    q
}

pub fn build_row(b: &Build, progress: Option<&String>) -> Html {
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

pub fn table(rows: Vec<Html>, empty: &str) -> Html {
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
            <h1>{"Dashboard"}</h1>
            if !q.connected {
                <p class="warn" role="status">{"Connecting to the master for live updates…"}</p>
            }
            { super::error_box(&q.error) }
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
