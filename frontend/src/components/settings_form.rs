//! A project's settings (schedule, time zone, priority, time-out, retention, tags, …), edited in
//! place with PATCH; the server's errors appear next to the field they concern.

use crate::api::{self, ApiErr};
use crate::pages::field_error;
use kiln_shared::api::{Catalog, Project};
use serde_json::{json, Map, Value};
use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub project: Project,
    pub on_saved: Callback<Project>,
}

/// Text fields: (field, label, current value, placeholder, is a number).
fn text_fields(p: &Project) -> Vec<(&'static str, &'static str, String, &'static str, bool)> {
    let n = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_default();
    vec![
        (
            "schedule",
            "Schedule",
            p.schedule.clone().unwrap_or_default(),
            "daily 02:30, or cron: 0 3 * * 1-5",
            false,
        ),
        (
            "timezone",
            "Time zone",
            p.timezone.clone().unwrap_or_default(),
            "the master's (e.g. Europe/Berlin)",
            false,
        ),
        ("priority", "Priority", p.priority.to_string(), "0", true),
        (
            "timeout_minutes",
            "Time-out (minutes)",
            n(p.timeout_minutes),
            "none",
            true,
        ),
        (
            "keep_builds",
            "Keep the newest N builds",
            n(p.keep_builds),
            "all",
            true,
        ),
        (
            "keep_days",
            "Keep builds for N days",
            n(p.keep_days),
            "forever",
            true,
        ),
        (
            "max_running",
            "At most N running at once",
            n(p.max_running),
            "no limit",
            true,
        ),
        (
            "tags",
            "Required slave tags (comma-separated)",
            p.tags.join(", "),
            "none",
            false,
        ),
    ]
}

#[function_component(SettingsForm)]
pub fn settings_form(p: &Props) -> Html {
    let refs: Vec<NodeRef> = (0..8).map(|_| NodeRef::default()).collect();
    let refs = use_memo((), move |_| refs);
    let only_changed = use_node_ref();
    let emulation = use_node_ref();
    let arch = use_node_ref();
    // What users may choose from comes from the master (configuration or slaves), not the code.
    let catalog = use_state(|| None::<Catalog>);
    {
        let catalog = catalog.clone();
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(c) = api::get::<Catalog>("/api/catalog").await {
                    catalog.set(Some(c));
                }
            });
        });
    }
    let err = use_state(|| None::<ApiErr>);
    let saved = use_state(|| false);
    let fields = text_fields(&p.project);
    let onsubmit = {
        let (refs, only_changed, err, saved) = (
            refs.clone(),
            only_changed.clone(),
            err.clone(),
            saved.clone(),
        );
        let (emulation, arch) = (emulation.clone(), arch.clone());
        let (name, on_saved) = (p.project.name.clone(), p.on_saved.clone());
        let fields = fields.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let mut body = Map::new();
            for ((field, _, _, _, number), r) in fields.iter().zip(refs.iter()) {
                let v = r
                    .cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default();
                let v = v.trim();
                let value = if *field == "tags" {
                    json!(v
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .collect::<Vec<_>>())
                } else if v.is_empty() {
                    if *field == "priority" {
                        json!(0)
                    } else {
                        Value::Null
                    }
                } else if *number {
                    match v.parse::<i64>() {
                        Ok(n) => json!(n),
                        Err(_) => {
                            err.set(Some(ApiErr {
                                status: 400,
                                message: format!("'{v}' is not a whole number"),
                                field: Some(field.to_string()),
                            }));
                            return;
                        }
                    }
                } else {
                    json!(v)
                };
                body.insert(field.to_string(), value);
            }
            let oc = only_changed
                .cast::<HtmlInputElement>()
                .map(|i| i.checked())
                .unwrap_or(false);
            body.insert("only_if_changed".into(), json!(oc));
            let em = emulation
                .cast::<HtmlInputElement>()
                .map(|i| i.checked())
                .unwrap_or(false);
            body.insert("allow_emulation".into(), json!(em));
            if let Some(sel) = arch.cast::<HtmlSelectElement>() {
                let a = sel.value();
                body.insert(
                    "architecture".into(),
                    if a.is_empty() { Value::Null } else { json!(a) },
                );
            }
            let (err, saved, name, on_saved) =
                (err.clone(), saved.clone(), name.clone(), on_saved.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::patch::<_, Project>(
                    &format!("/api/projects/{name}"),
                    &Value::Object(body),
                )
                .await
                {
                    Ok(p) => {
                        err.set(None);
                        saved.set(true);
                        on_saved.emit(p);
                    }
                    Err(e) => {
                        saved.set(false);
                        err.set(Some(e));
                    }
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    html! {
        <details class="settings">
            <summary>{"Settings"}</summary>
            <form {onsubmit} class="form" novalidate=true id="settings">
                { for fields.iter().zip(refs.iter()).map(|((field, label, value, ph, _), r)| html! {
                    <>
                        <label for={format!("set-{field}")}>{*label}</label>
                        <input id={format!("set-{field}")} name={*field} ref={r.clone()} value={value.clone()}
                            placeholder={*ph} aria-describedby={format!("{field}-error")} />
                        { field_error(&err, field) }
                    </>
                }) }
                <label for="set-architecture">{"Architecture"}</label>
                <select id="set-architecture" ref={arch}>
                    <option value="" selected={p.project.architecture.is_none()}>{"any"}</option>
                    { for catalog.as_ref().map(|c| c.architectures.clone()).unwrap_or_default().into_iter()
                        .chain(p.project.architecture.clone())
                        .collect::<std::collections::BTreeSet<_>>().into_iter().map(|a| html! {
                        <option value={a.clone()} selected={p.project.architecture.as_deref() == Some(a.as_str())}>{a.clone()}</option>
                    }) }
                </select>
                { field_error(&err, "architecture") }
                <label class="check">
                    <input type="checkbox" id="set-allow_emulation" ref={emulation} checked={p.project.allow_emulation} />
                    {" Slaves that emulate this architecture (qemu-user) may build it"}
                </label>
                <label class="check">
                    <input type="checkbox" id="set-only_if_changed" ref={only_changed} checked={p.project.only_if_changed} />
                    {" Scheduled builds only when the branch moved since the last good build"}
                </label>
                <button type="submit">{"Save settings"}</button>
                if *saved { <p class="muted" role="status">{"Saved."}</p> }
                { crate::pages::error_box(&general) }
            </form>
        </details>
    }
}
