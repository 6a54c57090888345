//! A project's settings (branch, schedule, time zone, priority, time-out, retention, tags,
//! team, visibility, …), edited in place with PATCH; the server's errors appear next to the
//! field they concern. Shown to maintainers of the project (and admins).
//!
//! The form keeps what is typed: a live update of the project never replaces an edit in
//! progress; a field whose server value changed meanwhile says so next to it. Save sends the
//! fields that differ from what was loaded, exactly as on screen, and then the form shows what
//! the server stored. The comparison and the request body are pure (`Values`, `patch_body`,
//! `server_changes`) and tested natively.

use crate::api::{self, ApiErr};
use crate::pages::{field_error, invalid};
use crate::session::{team_choices, use_me};
use kiln_shared::api::{Catalog, Project, Team, Visibility};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub project: Project,
    pub on_saved: Callback<Project>,
}

/// How a field's text becomes JSON.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// Required text.
    Text,
    /// Text; empty is `null`.
    OptText,
    /// A whole number; empty is 0.
    Number,
    /// A whole number; empty is `null`.
    OptNumber,
    /// Comma-separated list.
    Tags,
    /// "true" / "false" (a check box).
    Bool,
}

const KINDS: [(&str, Kind); 15] = [
    ("branch_url", Kind::Text),
    ("branch", Kind::Text),
    ("schedule", Kind::OptText),
    ("timezone", Kind::OptText),
    ("priority", Kind::Number),
    ("timeout_minutes", Kind::OptNumber),
    ("keep_builds", Kind::OptNumber),
    ("keep_days", Kind::OptNumber),
    ("max_running", Kind::OptNumber),
    ("tags", Kind::Tags),
    ("architecture", Kind::OptText),
    ("team", Kind::OptText),
    ("visibility", Kind::Text),
    ("allow_emulation", Kind::Bool),
    ("only_if_changed", Kind::Bool),
];

/// The form's fields as text, by field name (what the inputs hold).
pub type Values = BTreeMap<&'static str, String>;

/// What the form shows for `p`.
pub fn values_of(p: &Project) -> Values {
    let n = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_default();
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    BTreeMap::from([
        ("branch_url", p.branch_url.clone()),
        ("branch", p.branch.clone()),
        ("schedule", s(&p.schedule)),
        ("timezone", s(&p.timezone)),
        ("priority", p.priority.to_string()),
        ("timeout_minutes", n(p.timeout_minutes)),
        ("keep_builds", n(p.keep_builds)),
        ("keep_days", n(p.keep_days)),
        ("max_running", n(p.max_running)),
        ("tags", p.tags.join(", ")),
        ("architecture", s(&p.architecture)),
        ("team", s(&p.team)),
        ("visibility", p.visibility.as_str().to_string()),
        ("allow_emulation", p.allow_emulation.to_string()),
        ("only_if_changed", p.only_if_changed.to_string()),
    ])
}

/// The JSON of a field's text, or why it has none.
fn json_of(kind: Kind, v: &str) -> Result<Value, String> {
    let v = v.trim();
    Ok(match kind {
        Kind::Text => json!(v),
        Kind::OptText if v.is_empty() => Value::Null,
        Kind::OptText => json!(v),
        Kind::Number | Kind::OptNumber if v.is_empty() => {
            if kind == Kind::Number {
                json!(0)
            } else {
                Value::Null
            }
        }
        Kind::Number | Kind::OptNumber => match v.parse::<i64>() {
            Ok(n) => json!(n),
            Err(_) => return Err(format!("'{v}' is not a whole number")),
        },
        Kind::Tags => json!(v
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()),
        Kind::Bool => json!(v == "true"),
    })
}

/// The PATCH body: every field whose value on screen means something else than what was
/// loaded, as on screen. An unreadable field: `Err((field, message))`.
pub fn patch_body(
    loaded: &Values,
    edited: &Values,
) -> Result<Map<String, Value>, (String, String)> {
    let mut body = Map::new();
    for (field, kind) in KINDS {
        let empty = String::new();
        let now = edited.get(field).unwrap_or(&empty);
        let was = loaded.get(field).unwrap_or(&empty);
        let now_json = json_of(kind, now).map_err(|m| (field.to_string(), m))?;
        if json_of(kind, was).ok() != Some(now_json.clone()) {
            body.insert(field.to_string(), now_json);
        }
    }
    Ok(body)
}

/// The fields whose server value is no longer what the form loaded: (field, the new value).
pub fn server_changes(loaded: &Values, server: &Values) -> Vec<(&'static str, String)> {
    KINDS
        .iter()
        .filter_map(|(field, kind)| {
            let (was, now) = (loaded.get(field)?, server.get(field)?);
            (json_of(*kind, was).ok() != json_of(*kind, now).ok()).then(|| (*field, now.clone()))
        })
        .collect()
}

/// Whether the person changed anything (then live updates must leave the form alone).
pub fn is_dirty(loaded: &Values, edited: &Values) -> bool {
    patch_body(loaded, edited).map_or(true, |b| !b.is_empty())
}

/// Text fields: (field, label, placeholder).
const TEXT_FIELDS: [(&str, &str, &str); 10] = [
    (
        "branch_url",
        "Repository URL",
        "https://git.example.org/board.git",
    ),
    ("branch", "Branch", "main"),
    ("schedule", "Schedule", "daily 02:30, or cron: 0 3 * * 1-5"),
    ("timezone", "Time zone", "the master's (e.g. Europe/Berlin)"),
    ("priority", "Priority", "0"),
    ("timeout_minutes", "Time-out (minutes)", "none"),
    ("keep_builds", "Keep the newest N builds", "all"),
    ("keep_days", "Keep builds for N days", "forever"),
    ("max_running", "At most N running at once", "no limit"),
    ("tags", "Required slave tags (comma-separated)", "none"),
];

/// The form's state: what was loaded from the server and what is on screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Form {
    pub loaded: Values,
    pub edited: Values,
}

pub enum Action {
    /// The person changed a field.
    Edit(&'static str, String),
    /// The server has this now (a live update or a reload): taken only while nothing is edited.
    Server(Values),
    /// What the server stored after a save: shown as it is.
    Saved(Values),
}

impl Form {
    pub fn new(v: Values) -> Self {
        Form {
            loaded: v.clone(),
            edited: v,
        }
    }

    pub fn apply(&self, action: Action) -> Form {
        match action {
            Action::Edit(field, value) => {
                let mut f = self.clone();
                f.edited.insert(field, value);
                f
            }
            Action::Server(v) if !is_dirty(&self.loaded, &self.edited) => Form::new(v),
            Action::Server(_) => self.clone(),
            Action::Saved(v) => Form::new(v),
        }
    }
}

impl Reducible for Form {
    type Action = Action;
    fn reduce(self: std::rc::Rc<Self>, action: Action) -> std::rc::Rc<Self> {
        std::rc::Rc::new(self.apply(action))
    }
}

#[function_component(SettingsForm)]
pub fn settings_form(p: &Props) -> Html {
    let form = {
        let v = values_of(&p.project);
        use_reducer(move || Form::new(v))
    };
    {
        // A live update (or a reload) of the project: taken unless the person is editing.
        let form = form.dispatcher();
        use_effect_with(p.project.clone(), move |project| {
            form.dispatch(Action::Server(values_of(project)));
        });
    }
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
    let ed = |f: &str| form.edited.get(f).cloned().unwrap_or_default();
    // The teams it may move to (its own team stays offered: keeping it needs no right).
    let loaded_team = form.loaded.get("team").cloned().unwrap_or_default();
    let choices = me.as_deref().map(|me| team_choices(me, &teams));
    let allow_none = choices.as_ref().is_some_and(|c| c.none) || loaded_team.is_empty();
    let team_names: std::collections::BTreeSet<String> = choices
        .map(|c| c.teams)
        .unwrap_or_default()
        .into_iter()
        .chain(
            [loaded_team.clone(), ed("team")]
                .into_iter()
                .filter(|t| !t.is_empty()),
        )
        .collect();
    let architectures: std::collections::BTreeSet<String> = catalog
        .as_ref()
        .map(|c| c.architectures.clone())
        .unwrap_or_default()
        .into_iter()
        .chain([ed("architecture")].into_iter().filter(|a| !a.is_empty()))
        .collect();
    let err = use_state(|| None::<ApiErr>);
    let saved = use_state(|| None::<&'static str>);
    // Fields changed on the server while the person edits.
    let changed: BTreeMap<&'static str, String> = if is_dirty(&form.loaded, &form.edited) {
        server_changes(&form.loaded, &values_of(&p.project))
            .into_iter()
            .collect()
    } else {
        BTreeMap::new()
    };
    let edit = |field: &'static str| {
        let (form, saved) = (form.dispatcher(), saved.clone());
        Callback::from(move |e: Event| {
            let t = e.target();
            let value = if let Some(i) = t
                .clone()
                .and_then(|t| wasm_bindgen::JsCast::dyn_into::<HtmlInputElement>(t).ok())
            {
                if i.type_() == "checkbox" {
                    i.checked().to_string()
                } else {
                    i.value()
                }
            } else if let Some(s) =
                t.and_then(|t| wasm_bindgen::JsCast::dyn_into::<HtmlSelectElement>(t).ok())
            {
                s.value()
            } else {
                return;
            };
            saved.set(None);
            form.dispatch(Action::Edit(field, value));
        })
    };
    let typing = |field: &'static str| {
        let on = edit(field);
        Callback::from(move |e: InputEvent| on.emit(e.into()))
    };
    let onsubmit = {
        let (form, err, saved) = (form.clone(), err.clone(), saved.clone());
        let (name, on_saved) = (p.project.name.clone(), p.on_saved.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = match patch_body(&form.loaded, &form.edited) {
                Ok(b) => b,
                Err((field, message)) => {
                    err.set(Some(ApiErr {
                        status: 400,
                        message,
                        field: Some(field),
                    }));
                    return;
                }
            };
            if body.is_empty() {
                err.set(None);
                saved.set(Some("Nothing to save: no field changed."));
                return;
            }
            let (err, saved, name, on_saved) =
                (err.clone(), saved.clone(), name.clone(), on_saved.clone());
            let form = form.dispatcher();
            wasm_bindgen_futures::spawn_local(async move {
                match api::patch::<_, Project>(
                    &format!("/api/projects/{}", api::seg(&name)),
                    &Value::Object(body),
                )
                .await
                {
                    Ok(p) => {
                        err.set(None);
                        saved.set(Some("Saved."));
                        form.dispatch(Action::Saved(values_of(&p)));
                        on_saved.emit(p);
                    }
                    Err(e) => {
                        saved.set(None);
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
    let server_note = |field: &str| match changed.get(field) {
        Some(v) => html! {
            <span class="server-changed" role="status" id={format!("{field}-server")}>
                {"changed on the server since you opened this: "}
                <strong>{ if v.is_empty() { "(empty)".to_string() } else { v.clone() } }</strong>
            </span>
        },
        None => html! {},
    };
    let described = |field: &str| format!("{field}-error {field}-server");
    let vis = ed("visibility");
    html! {
        <details class="settings">
            <summary>{"Settings"}</summary>
            <form {onsubmit} class="form" novalidate=true id="settings">
                { for TEXT_FIELDS.iter().map(|(field, label, ph)| html! {
                    <>
                        <label for={format!("set-{field}")}>{*label}</label>
                        <input id={format!("set-{field}")} name={*field} value={ed(field)}
                            oninput={typing(field)}
                            placeholder={*ph} aria-describedby={described(field)}
                            aria-invalid={invalid(&err, field)} />
                        { field_error(&err, field) }
                        { server_note(field) }
                    </>
                }) }
                <label for="set-architecture">{"Architecture"}</label>
                <select id="set-architecture" onchange={edit("architecture")}
                    aria-describedby={described("architecture")} aria-invalid={invalid(&err, "architecture")}>
                    <option value="" selected={ed("architecture").is_empty()}>{"any"}</option>
                    { for architectures.iter().map(|a| html! {
                        <option value={a.clone()} selected={ed("architecture") == *a}>{a.clone()}</option>
                    }) }
                </select>
                { field_error(&err, "architecture") }
                { server_note("architecture") }
                <label for="set-team">{"Team"}</label>
                <select id="set-team" onchange={edit("team")} aria-describedby={described("team")}
                    aria-invalid={invalid(&err, "team")}>
                    if allow_none {
                        <option value="" selected={ed("team").is_empty()}>{"no team"}</option>
                    }
                    { for team_names.iter().map(|t| html! {
                        <option value={t.clone()} selected={ed("team") == *t}>{t.clone()}</option>
                    }) }
                </select>
                { field_error(&err, "team") }
                { server_note("team") }
                <label for="set-visibility">{"Visibility"}</label>
                <select id="set-visibility" onchange={edit("visibility")} aria-describedby={described("visibility")}
                    aria-invalid={invalid(&err, "visibility")}>
                    <option value="private" selected={vis != Visibility::Public.as_str()}>{"private: the team only"}</option>
                    <option value="public" selected={vis == Visibility::Public.as_str()}>{"public: everyone signed in may view it"}</option>
                </select>
                { field_error(&err, "visibility") }
                { server_note("visibility") }
                <label class="check">
                    <input type="checkbox" id="set-allow_emulation" onchange={edit("allow_emulation")}
                        checked={ed("allow_emulation") == "true"} />
                    {" Slaves that emulate this architecture (qemu-user) may build it"}
                </label>
                { server_note("allow_emulation") }
                <label class="check">
                    <input type="checkbox" id="set-only_if_changed" onchange={edit("only_if_changed")}
                        checked={ed("only_if_changed") == "true"} />
                    {" Scheduled builds only when the branch moved since the last good build"}
                </label>
                { server_note("only_if_changed") }
                <button type="submit">{"Save settings"}</button>
                if let Some(s) = *saved { <p class="muted" role="status" id="settings-saved">{s}</p> }
                { crate::pages::error_box(&general) }
            </form>
        </details>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        serde_json::from_value(json!({
            "name": "board", "branch_url": "https://git.example/board.git", "branch": "main",
            "architecture": null, "tags": ["arm"], "lost_retries": 1, "schedule": null,
            "timezone": null, "only_if_changed": false, "priority": 0, "timeout_minutes": 30,
            "keep_builds": null, "keep_days": null, "max_running": null, "allow_emulation": false,
            "next_run": null, "disk_bytes": 0, "created_at": "2026-01-01T00:00:00Z",
            "last_build": null, "last_state": null, "team": "boards", "visibility": "private"
        }))
        .unwrap()
    }

    #[test]
    fn nothing_edited_sends_nothing() {
        let v = values_of(&project());
        assert_eq!(patch_body(&v, &v).unwrap(), Map::new());
        assert!(!is_dirty(&v, &v));
        // The same meaning written differently is no change.
        let mut e = v.clone();
        e.insert("tags", " arm ,".into());
        e.insert("timeout_minutes", " 30".into());
        assert!(!is_dirty(&v, &e));
    }

    #[test]
    fn save_sends_exactly_the_fields_that_differ_as_on_screen() {
        let v = values_of(&project());
        let mut e = v.clone();
        e.insert("branch", "release-2".into());
        e.insert("timeout_minutes", "".into());
        e.insert("tags", "arm, big".into());
        e.insert("allow_emulation", "true".into());
        e.insert("priority", "".into());
        let body = patch_body(&v, &e).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"branch": "release-2", "timeout_minutes": null, "tags": ["arm", "big"],
                   "allow_emulation": true})
        );
        e.insert("keep_days", "seven".into());
        assert_eq!(
            patch_body(&v, &e).unwrap_err(),
            (
                "keep_days".to_string(),
                "'seven' is not a whole number".to_string()
            )
        );
    }

    #[test]
    fn a_live_update_never_replaces_an_edit_in_progress() {
        let p = project();
        let form = Form::new(values_of(&p));
        let mut newer = p.clone();
        newer.schedule = Some("daily 03:00".into());
        // Nothing typed yet: the form follows the server.
        let f = form.apply(Action::Server(values_of(&newer)));
        assert_eq!(f.edited["schedule"], "daily 03:00");
        // Typing, then an update: the typed value stays, the change is pointed out.
        let f = form.apply(Action::Edit("branch", "dev".into()));
        let f = f.apply(Action::Server(values_of(&newer)));
        assert_eq!(f.edited["branch"], "dev");
        assert_eq!(f.edited["schedule"], "");
        assert_eq!(
            server_changes(&f.loaded, &values_of(&newer)),
            vec![("schedule", "daily 03:00".to_string())]
        );
        // Saving sends the typed field only (the server's schedule stays), then shows what
        // the server stored.
        assert_eq!(
            Value::Object(patch_body(&f.loaded, &f.edited).unwrap()),
            json!({"branch": "dev"})
        );
        let mut stored = newer.clone();
        stored.branch = "dev".into();
        let f = f.apply(Action::Saved(values_of(&stored)));
        assert_eq!(f.edited, values_of(&stored));
        assert!(!is_dirty(&f.loaded, &f.edited));
    }
}
