//! A project's settings (schedule, time zone, priority, time-out, retention, tags, team,
//! visibility, …), edited in place with PATCH; the server's errors appear next to the field
//! they concern. Shown to maintainers of the project (and admins).

use crate::api::{self, ApiErr};
use crate::pages::field_error;
use crate::session::{team_choices, use_me};
use kiln_shared::api::{Catalog, Project, Team, Visibility};
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
    let (team, visibility) = (use_node_ref(), use_node_ref());
    let me = use_me();
    let teams = use_state(Vec::<Team>::new);
    // What users may choose from comes from the master (configuration or slaves), not the code.
    let catalog = use_state(|| None::<Catalog>);
    {
        let (catalog, teams) = (catalog.clone(), teams.clone());
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(c) = api::get::<Catalog>("/api/catalog").await {
                    catalog.set(Some(c));
                }
                if let Ok(ts) = api::get::<Vec<Team>>("/api/teams").await {
                    teams.set(ts);
                }
            });
        });
    }
    // The teams it may move to (its own team stays offered: keeping it needs no right).
    let choices = me.as_deref().map(|me| team_choices(me, &teams));
    let allow_none = choices.as_ref().is_some_and(|c| c.none) || p.project.team.is_none();
    let team_names: std::collections::BTreeSet<String> = choices
        .map(|c| c.teams)
        .unwrap_or_default()
        .into_iter()
        .chain(p.project.team.clone())
        .collect();
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
        let (team, visibility) = (team.clone(), visibility.clone());
        let current_team = p.project.team.clone().unwrap_or_default();
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
            // The team only when it changed: moving a project needs rights keeping it does not.
            if let Some(sel) = team.cast::<HtmlSelectElement>() {
                let t = sel.value();
                if t != current_team {
                    body.insert(
                        "team".into(),
                        if t.is_empty() { Value::Null } else { json!(t) },
                    );
                }
            }
            if let Some(sel) = visibility.cast::<HtmlSelectElement>() {
                let v = if sel.value() == Visibility::Public.as_str() {
                    Visibility::Public
                } else {
                    Visibility::Private
                };
                body.insert("visibility".into(), json!(v));
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
                <label for="set-team">{"Team"}</label>
                <select id="set-team" ref={team} aria-describedby="team-error">
                    if allow_none {
                        <option value="" selected={p.project.team.is_none()}>{"no team"}</option>
                    }
                    { for team_names.iter().map(|t| html! {
                        <option value={t.clone()} selected={p.project.team.as_deref() == Some(t.as_str())}>{t.clone()}</option>
                    }) }
                </select>
                { field_error(&err, "team") }
                <label for="set-visibility">{"Visibility"}</label>
                <select id="set-visibility" ref={visibility} aria-describedby="visibility-error">
                    <option value="private" selected={p.project.visibility == Visibility::Private}>{"private: the team only"}</option>
                    <option value="public" selected={p.project.visibility == Visibility::Public}>{"public: everyone signed in may view it"}</option>
                </select>
                { field_error(&err, "visibility") }
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
