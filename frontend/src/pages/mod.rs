pub mod account;
pub mod audit;
pub mod build;
pub mod dashboard;
pub mod login;
pub mod notifications;
pub mod project;
pub mod projects;
pub mod slaves;
pub mod team;
pub mod teams;
pub mod tokens;
pub mod unsubscribe;
pub mod users;

use crate::api::{self, ApiErr};
use kiln_shared::api::Role;
use serde::de::DeserializeOwned;
use yew::prelude::*;

/// Something loaded from the API.
#[derive(Clone, PartialEq)]
pub enum Loaded<T> {
    Loading,
    Ok(T),
    Err(ApiErr),
}

/// GETs `path` into `state`.
pub fn load<T: DeserializeOwned + 'static>(path: String, state: UseStateHandle<Loaded<T>>) {
    wasm_bindgen_futures::spawn_local(async move {
        state.set(match api::get::<T>(&path).await {
            Ok(v) => Loaded::Ok(v),
            Err(e) => Loaded::Err(e),
        });
    });
}

/// Every error reaches the user: a visible, announced message.
pub fn error_box(e: &Option<String>) -> Html {
    match e {
        Some(m) => html! { <p class="error" role="alert">{m}</p> },
        None => html! {},
    }
}

/// The server's validation message next to the form field it concerns.
pub fn field_error(err: &Option<ApiErr>, field: &str) -> Html {
    match err {
        Some(e) if e.field.as_deref() == Some(field) => {
            html! { <span class="field-error" role="alert" id={format!("{field}-error")}>{&e.message}</span> }
        }
        _ => html! {},
    }
}

/// [`field_error`] for a page with several forms: the message's id is `{prefix}{field}-error`.
pub fn field_error_id(err: &Option<ApiErr>, prefix: &str, field: &str) -> Html {
    match err {
        Some(e) if e.field.as_deref() == Some(field) => {
            html! { <span class="field-error" role="alert" id={format!("{prefix}{field}-error")}>{&e.message}</span> }
        }
        _ => html! {},
    }
}

/// `aria-invalid="true"` on the field the server's error names.
pub fn invalid(err: &Option<ApiErr>, field: &str) -> Option<AttrValue> {
    match err {
        Some(e) if e.field.as_deref() == Some(field) => Some(AttrValue::from("true")),
        _ => None,
    }
}

pub fn loading_or_error<T>(l: &Loaded<T>) -> Html {
    match l {
        Loaded::Loading => html! { <p class="muted">{"Loading…"}</p> },
        Loaded::Err(e) if e.status == 401 => html! {
            <p class="error" role="alert">{"Your session has ended. "}<a href="/login">{"Sign in again"}</a></p>
        },
        Loaded::Err(e) => html! { <p class="error" role="alert">{&e.message}</p> },
        Loaded::Ok(_) => html! {},
    }
}

/// The roles a team member can hold (admin is a property of the account, not a team role).
pub const TEAM_ROLES: [Role; 3] = [Role::Viewer, Role::Builder, Role::Maintainer];

/// The `<option>`s of `roles`, with `selected` chosen (none: the browser's first).
pub fn role_options(roles: &[Role], selected: Option<Role>) -> Html {
    html! {
        { for roles.iter().map(|r| html! {
            <option value={r.as_str()} selected={Some(*r) == selected}>{r.as_str()}</option>
        }) }
    }
}

/// The value of the `<select>` behind `r`.
pub fn select_value(r: &NodeRef) -> String {
    r.cast::<web_sys::HtmlSelectElement>()
        .map(|s| s.value())
        .unwrap_or_default()
}

/// The value of the `<input>` behind `r`.
pub fn input_value(r: &NodeRef) -> String {
    r.cast::<web_sys::HtmlInputElement>()
        .map(|i| i.value())
        .unwrap_or_default()
}

/// The value of the `<textarea>` behind `r`.
pub fn textarea_value(r: &NodeRef) -> String {
    r.cast::<web_sys::HtmlTextAreaElement>()
        .map(|t| t.value())
        .unwrap_or_default()
}

/// Asks before something that cannot be undone.
pub fn confirm(question: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.confirm_with_message(question).ok())
        .unwrap_or(false)
}
