//! Slaves: online or not, architecture, tags, current build, last heartbeat; for admins: add a
//! slave (its token is shown once) and drain one.

use crate::api;
use crate::components::when;
use crate::live::use_queue;
use crate::routes::Route;
use kiln_shared::api::{NewSlave, Slave, SlaveCreated};
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

#[function_component(Slaves)]
pub fn slaves() -> Html {
    let q = use_queue();
    let created = use_state(|| None::<SlaveCreated>);
    let err = use_state(|| None::<String>);
    let name = use_node_ref();
    let onsubmit = {
        let (name, created, err) = (name.clone(), created.clone(), err.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let n = name
                .cast::<HtmlInputElement>()
                .map(|i| i.value())
                .unwrap_or_default();
            let (created, err) = (created.clone(), err.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, SlaveCreated>(
                    "/api/slaves",
                    &NewSlave {
                        name: n.trim().into(),
                    },
                )
                .await
                {
                    Ok(c) => {
                        err.set(None);
                        created.set(Some(c))
                    }
                    Err(e) => err.set(Some(e.message)),
                }
            });
        })
    };
    // drain / disable / enable: POST /api/slaves/{name}/{what}; revoke: DELETE, after asking.
    let act = |name: String, what: &'static str| {
        let err = err.clone();
        Callback::from(move |_: MouseEvent| {
            let (err, name) = (err.clone(), name.clone());
            if what == "revoke" {
                let ok = web_sys::window()
                    .and_then(|w| {
                        w.confirm_with_message(&format!(
                            "Revoke slave '{name}'? Its token stops working."
                        ))
                        .ok()
                    })
                    .unwrap_or(false);
                if !ok {
                    return;
                }
            }
            wasm_bindgen_futures::spawn_local(async move {
                let r = if what == "revoke" {
                    api::delete(&format!("/api/slaves/{name}")).await
                } else {
                    api::post::<_, Slave>(
                        &format!("/api/slaves/{name}/{what}"),
                        &serde_json::json!({}),
                    )
                    .await
                    .map(|_| ())
                };
                match r {
                    Err(e) => err.set(Some(e.message)),
                    Ok(()) if what == "revoke" => {
                        if let Some(w) = web_sys::window() {
                            let _ = w.location().reload();
                        }
                    }
                    Ok(()) => {}
                }
            });
        })
    };
    html! {
        <main id="slaves">
            <h1>{"Slaves"}</h1>
            { super::error_box(&err) }
            <table>
                <thead><tr><th>{"Name"}</th><th>{"Status"}</th><th>{"Arch"}</th><th>{"Tags"}</th><th>{"Building"}</th><th>{"Last heartbeat"}</th><th></th></tr></thead>
                <tbody>
                { for q.slaves.values().map(|s| html! {
                    <tr key={s.id.0} data-slave={s.name.clone()}>
                        <td>{&s.name}</td>
                        <td>
                            <span class={classes!("badge", if s.online { "online" } else { "offline" })} data-online={s.online.to_string()}>
                                { if s.online { if s.draining { "online, draining" } else { "online" } } else { "offline" } }
                            </span>
                            if !s.enabled { {" "}<span class="badge failed">{"disabled"}</span> }
                        </td>
                        <td>{s.arch.clone().unwrap_or_default()}{ if s.emulates.is_empty() { String::new() } else { format!(" (+{})", s.emulates.join(", ")) } }</td>
                        <td>{s.tags.join(", ")}</td>
                        <td>{ for s.builds.iter().map(|b| html! { <Link<Route> to={Route::Build { id: b.0 }}>{format!("#{b} ")}</Link<Route>> }) }</td>
                        <td>{when(s.last_seen)}</td>
                        <td class="row-actions">
                            if s.online && !s.draining { <button onclick={act(s.name.clone(), "drain")}>{"Drain"}</button> }
                            if s.enabled { <button onclick={act(s.name.clone(), "disable")}>{"Disable"}</button> }
                            else { <button onclick={act(s.name.clone(), "enable")}>{"Enable"}</button> }
                            <button class="danger" onclick={act(s.name.clone(), "revoke")}>{"Revoke"}</button>
                        </td>
                    </tr>
                }) }
                </tbody>
            </table>
            <h2>{"Add a slave"}</h2>
            <form {onsubmit} class="form">
                <label for="s-name">{"Name"}</label>
                <input id="s-name" ref={name} required=true />
                <button type="submit">{"Add slave"}</button>
            </form>
            if let Some(c) = &*created {
                <div class="token" role="status">
                    <p>{format!("Slave '{}' registered. Its token, shown only now:", c.name)}</p>
                    <pre class="mono">{&c.token}</pre>
                    <p class="muted">{format!("kiln-slave --master {} --token <token> --name {} --work-dir /var/tmp/kiln",
                        web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default(), c.name)}</p>
                </div>
            }
        </main>
    }
}
