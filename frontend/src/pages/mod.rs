pub mod build;
pub mod dashboard;
pub mod login;
pub mod project;
pub mod projects;
pub mod slaves;

use crate::api::{self, ApiErr};
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

pub fn loading_or_error<T>(l: &Loaded<T>) -> Html {
    match l {
        Loaded::Loading => html! { <p class="muted">{"Loading…"}</p> },
        Loaded::Err(e) if e.status == 401 => html! {
            <p class="error" role="alert">{"Your token was refused. "}<a href="/login">{"Log in again"}</a></p>
        },
        Loaded::Err(e) => html! { <p class="error" role="alert">{&e.message}</p> },
        Loaded::Ok(_) => html! {},
    }
}
