//! Slaves: online or not, architecture, tags, tools (backends, KVM, free disk; tool versions in
//! the cell's title), current build, last heartbeat; for admins (only they
//! see these controls): add a
//! slave (its token is shown once), drain, disable, enable or revoke one, and enrol a board with
//! a registration token (the one command to run on it is shown once; the tokens are listed and
//! can be revoked).

use super::{field_error, load, loading_or_error, Loaded};
use crate::api::{self, ApiErr};
use crate::components::when;
use crate::live::use_queue;
use crate::routes::Route;
use crate::session::{is_admin, use_me};
use chrono::{DateTime, Utc};
use kiln_shared::api::{NewRegistrationToken, NewSlave, RegistrationToken, Slave, SlaveCreated};
use wasm_bindgen::prelude::wasm_bindgen;
use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;
use yew_router::prelude::*;

/// Its backends and what its machine offers them, in a few words; the versions in the title.
fn tools(s: &Slave) -> String {
    let mut t = s.backends.join(", ");
    if let Some(c) = &s.capabilities {
        if c.kvm {
            t.push_str(" · KVM");
        }
        t.push_str(" · ");
        t.push_str(&crate::components::human_size(c.free_disk_bytes));
        t.push_str(" free");
    }
    t
}

fn tool_versions(s: &Slave) -> String {
    s.capabilities
        .iter()
        .flat_map(|c| c.tools.iter())
        .map(|(k, v)| format!("{k} {v}\n"))
        .collect()
}

#[function_component(Slaves)]
pub fn slaves() -> Html {
    let q = use_queue();
    let admin = is_admin(use_me().as_deref());
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
                        tags: vec![],
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
            <h1 tabindex="-1">{"Slaves"}</h1>
            { super::error_box(&err) }
            <table>
                <thead><tr><th>{"Name"}</th><th>{"Status"}</th><th>{"Arch"}</th><th>{"Tags"}</th><th>{"Tools"}</th><th>{"Building"}</th><th>{"Last heartbeat"}</th>
                    if admin { <th>{"Actions"}</th> }</tr></thead>
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
                        <td class="tools" title={tool_versions(s)}>{tools(s)}</td>
                        <td>{ for s.builds.iter().map(|b| html! { <Link<Route> to={Route::Build { id: b.0 }}>{format!("#{b} ")}</Link<Route>> }) }</td>
                        <td>{when(s.last_seen)}</td>
                        if admin {
                        <td class="row-actions">
                            if s.online && !s.draining { <button onclick={act(s.name.clone(), "drain")}>{"Drain"}</button> }
                            if s.enabled { <button onclick={act(s.name.clone(), "disable")}>{"Disable"}</button> }
                            else { <button onclick={act(s.name.clone(), "enable")}>{"Enable"}</button> }
                            <button class="danger" onclick={act(s.name.clone(), "revoke")}>{"Revoke"}</button>
                        </td>
                        }
                    </tr>
                }) }
                </tbody>
            </table>
            if admin {
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
                    <p class="muted">{format!("Put it in slave.token (mode 0600) in the slave's work dir, then run: kiln-slave --master {} --name {} --work-dir DIR",
                        web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default(), c.name)}</p>
                </div>
            }
            <Enrol />
            }
        </main>
    }
}

const REGISTRATIONS: &str = "/api/slaves/registration-tokens";

/// What "Valid for" offers: (label, `expires_in_s`); the second is preselected.
const VALIDITY: [(&str, i64); 3] = [("1 hour", 3600), ("1 day", 86_400), ("7 days", 604_800)];

/// The request the enrol form makes, from the fields as typed: an empty name or tag list is
/// left out (any name, no tags); a `uses` or validity that is no whole number is refused at its
/// field before anything is sent (the master checks the ranges).
fn enrol_request(
    name: &str,
    tags: &str,
    valid_for: &str,
    uses: &str,
) -> Result<NewRegistrationToken, ApiErr> {
    let invalid = |field: &str, message: String| ApiErr {
        status: 400,
        message,
        field: Some(field.into()),
    };
    let name = name.trim();
    let tags: Vec<String> = tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    let expires_in_s = valid_for.trim().parse::<i64>().map_err(|_| {
        invalid(
            "expires_in_s",
            format!("'{valid_for}' is not a number of seconds"),
        )
    })?;
    let uses = uses.trim().parse::<i32>().map_err(|_| {
        invalid(
            "uses",
            format!(
                "'{}' is not a whole number of uses (1 to 1000)",
                uses.trim()
            ),
        )
    })?;
    Ok(NewRegistrationToken {
        name: (!name.is_empty()).then(|| name.to_string()),
        tags: (!tags.is_empty()).then_some(tags),
        expires_in_s,
        uses,
    })
}

/// Whether a registration token can still register a slave, in words.
fn status(t: &RegistrationToken, now: DateTime<Utc>) -> &'static str {
    if t.revoked {
        "revoked"
    } else if t.expires_at <= now {
        "expired"
    } else if t.uses_left <= 0 {
        "used up"
    } else {
        "valid"
    }
}

// `getSelection()`, bound here because web-sys's `Selection` feature is not among the crate's.
#[wasm_bindgen]
extern "C" {
    type DomSelection;
    #[wasm_bindgen(js_name = getSelection)]
    fn get_selection() -> Option<DomSelection>;
    #[wasm_bindgen(method, js_name = selectAllChildren)]
    fn select_all_children(this: &DomSelection, node: &web_sys::Element);
}

/// "Enrol a board": a registration token made for it and the one command to run there, shown
/// once; below, the registration tokens made so far, each revocable.
#[function_component(Enrol)]
fn enrol() -> Html {
    let list = use_state(|| Loaded::<Vec<RegistrationToken>>::Loading);
    let issued = use_state(|| None::<RegistrationToken>);
    let err = use_state(|| None::<ApiErr>);
    let list_err = use_state(|| None::<String>);
    // Kept in state: a bare `value` would be put back to its default at every render.
    let uses_text = use_state(|| "1".to_string());
    let on_uses = {
        let uses_text = uses_text.clone();
        Callback::from(move |e: InputEvent| {
            if let Some(i) = e.target_dyn_into::<HtmlInputElement>() {
                uses_text.set(i.value());
            }
        })
    };
    let (name, tags, valid, uses) = (
        use_node_ref(),
        use_node_ref(),
        use_node_ref(),
        use_node_ref(),
    );
    {
        let list = list.clone();
        use_effect_with((), move |_| load(REGISTRATIONS.into(), list));
    }
    let onsubmit = {
        let (name, tags, valid, uses) = (name.clone(), tags.clone(), valid.clone(), uses.clone());
        let (list, issued, err) = (list.clone(), issued.clone(), err.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let v = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let valid_for = valid
                .cast::<HtmlSelectElement>()
                .map(|s| s.value())
                .unwrap_or_default();
            let body = match enrol_request(&v(&name), &v(&tags), &valid_for, &v(&uses)) {
                Ok(b) => b,
                Err(e) => {
                    err.set(Some(e));
                    return;
                }
            };
            let (list, issued, err) = (list.clone(), issued.clone(), err.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, RegistrationToken>(REGISTRATIONS, &body).await {
                    Ok(t) => {
                        err.set(None);
                        issued.set(Some(t));
                        load(REGISTRATIONS.into(), list);
                    }
                    Err(e) => err.set(Some(e)),
                }
            });
        })
    };
    let revoke = |id: i64| {
        let (list, issued, list_err) = (list.clone(), issued.clone(), list_err.clone());
        Callback::from(move |_: MouseEvent| {
            let (list, issued, list_err) = (list.clone(), issued.clone(), list_err.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::delete(&format!("{REGISTRATIONS}/{id}")).await {
                    Ok(()) => {
                        list_err.set(None);
                        // Its command no longer works: stop showing it.
                        if issued.as_ref().is_some_and(|t| t.id == id) {
                            issued.set(None);
                        }
                        load(REGISTRATIONS.into(), list);
                    }
                    Err(e) => list_err.set(Some(e.message)),
                }
            });
        })
    };
    // The command selects itself whole when focused or clicked, ready to copy.
    let select_all = Callback::from(|e: FocusEvent| {
        if let (Some(el), Some(sel)) = (e.target_dyn_into::<web_sys::Element>(), get_selection()) {
            sel.select_all_children(&el);
        }
    });
    let general = match &*err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    let now = Utc::now();
    html! {
        <section id="enrol" aria-labelledby="enrol-title">
            <h2 id="enrol-title">{"Enrol a board"}</h2>
            <p class="muted">{"Makes a registration token and the one command to run on the board: \
                it registers the slave and keeps its own token there."}</p>
            <form {onsubmit} class="form" novalidate=true>
                <label for="r-name">{"Slave name (optional)"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "name")} id="r-name" name="name" ref={name} placeholder="any name" aria-describedby="name-error" />
                { field_error(&err, "name") }
                <label for="r-tags">{"Tags (comma-separated, optional)"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "tags")} id="r-tags" name="tags" ref={tags} placeholder="imx8, lab-2" aria-describedby="tags-error" />
                { field_error(&err, "tags") }
                <label for="r-valid">{"Valid for"}</label>
                <select aria-invalid={crate::pages::invalid(&err, "expires_in_s")} id="r-valid" name="expires_in_s" ref={valid} aria-describedby="expires_in_s-error">
                    { for VALIDITY.iter().enumerate().map(|(i, (label, secs))| html! {
                        <option value={secs.to_string()} selected={i == 1}>{*label}</option>
                    }) }
                </select>
                { field_error(&err, "expires_in_s") }
                <label for="r-uses">{"Uses (slaves it may register)"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "uses")} id="r-uses" name="uses" ref={uses} type="number" min="1" max="1000" step="1" value={(*uses_text).clone()} oninput={on_uses} aria-describedby="uses-error" />
                { field_error(&err, "uses") }
                <button type="submit">{"Make registration token"}</button>
                { super::error_box(&general) }
            </form>
            if let Some(t) = &*issued {
                <div class="token" role="status" id="enrol-issued">
                    <p>{"The command to run on the board:"}</p>
                    <pre class="mono"><code id="enrol-command" tabindex="0" aria-label="Command to run on the board"
                        style="user-select: all; -webkit-user-select: all" onfocus={select_all}>
                        {t.command.clone().unwrap_or_default()}
                    </code></pre>
                    <p class="muted">{format!(
                        "Shown only now: the token in it is not kept and cannot be shown again. \
                         It expires at {} and registers at most {} slave{}.",
                        when(Some(t.expires_at)), t.uses_left, if t.uses_left == 1 { "" } else { "s" }
                    )}</p>
                </div>
            }
            <h3>{"Registration tokens"}</h3>
            { super::error_box(&list_err) }
            { loading_or_error(&*list) }
            if let Loaded::Ok(ts) = &*list {
                if ts.is_empty() {
                    <p class="muted">{"No registration token yet."}</p>
                } else {
                    <table id="registrations">
                        <thead><tr><th>{"Name"}</th><th>{"Tags"}</th><th>{"Uses left"}</th><th>{"Expires"}</th><th>{"Status"}</th><th>{"Actions"}</th></tr></thead>
                        <tbody>
                        { for ts.iter().map(|t| {
                            let state = status(t, now);
                            html! {
                                <tr key={t.id} data-registration={t.id.to_string()} data-revoked={t.revoked.to_string()}>
                                    <td>
                                        if let Some(n) = &t.name { {n} } else { <span class="muted">{"any name"}</span> }
                                    </td>
                                    <td>{t.tags.join(", ")}</td>
                                    <td>{t.uses_left}</td>
                                    <td>{when(Some(t.expires_at))}</td>
                                    <td>
                                        <span class={classes!("badge", if state == "valid" { "online" } else if t.revoked { "failed" } else { "offline" })}
                                            data-status={state}>{state}</span>
                                    </td>
                                    <td class="row-actions">
                                        if !t.revoked {
                                            <button class="danger" onclick={revoke(t.id)}
                                                aria-label={format!("Revoke registration token {}", t.name.as_deref().unwrap_or("for any name"))}>
                                                {"Revoke"}
                                            </button>
                                        }
                                    </td>
                                </tr>
                            }
                        }) }
                        </tbody>
                    </table>
                }
            }
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enrol_form_sends_what_was_typed_and_leaves_out_what_was_not() {
        let r = enrol_request(" board-7 ", "imx8, , lab-2 ,", "3600", " 2 ").unwrap();
        assert_eq!(
            r,
            NewRegistrationToken {
                name: Some("board-7".into()),
                tags: Some(vec!["imx8".into(), "lab-2".into()]),
                expires_in_s: 3600,
                uses: 2,
            }
        );
        let r = enrol_request("  ", " , ", "86400", "1").unwrap();
        assert_eq!((&r.name, &r.tags), (&None, &None));
        // The JSON the master takes: absent name and tags are null (it denies unknown fields).
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": null, "tags": null, "expires_in_s": 86400, "uses": 1})
        );
    }

    #[test]
    fn a_count_that_is_no_whole_number_is_refused_at_its_field() {
        for bad in ["", "1.5", "two", "99999999999"] {
            let e = enrol_request("", "", "3600", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("uses"), "{bad:?}");
        }
        let e = enrol_request("", "", "", "1").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("expires_in_s"));
        // Out of range is the master's to say (its message names the limits).
        assert_eq!(enrol_request("", "", "3600", "0").unwrap().uses, 0);
    }

    #[test]
    fn the_validity_choices_are_within_what_the_master_accepts() {
        for (_, s) in VALIDITY {
            assert!((60..=2_592_000).contains(&s));
        }
    }

    #[test]
    fn a_token_status_says_why_it_no_longer_works() {
        let now = Utc::now();
        let t = RegistrationToken {
            id: 1,
            name: None,
            tags: vec![],
            uses_left: 1,
            expires_at: now + chrono::Duration::hours(1),
            revoked: false,
            created_at: now,
            token: None,
            command: None,
        };
        assert_eq!(status(&t, now), "valid");
        let used = RegistrationToken {
            uses_left: 0,
            ..t.clone()
        };
        assert_eq!(status(&used, now), "used up");
        let old = RegistrationToken {
            expires_at: now - chrono::Duration::seconds(1),
            ..used.clone()
        };
        assert_eq!(status(&old, now), "expired");
        let revoked = RegistrationToken {
            revoked: true,
            ..old
        };
        assert_eq!(status(&revoked, now), "revoked");
    }
}
