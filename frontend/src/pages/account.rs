//! The signed-in person: their name, teams and roles, and the form that changes their local
//! password (`POST /api/me/password`; their other sessions end). A password an admin set
//! (`must_change_password`) is announced here until it is changed.

use super::field_error;
use crate::api::{self, ApiErr};
use crate::routes::Route;
use crate::session::use_session;
use kiln_shared::api::ChangePassword;
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

/// The request the form makes, once the new password was typed twice alike.
fn password_change(current: &str, new: &str, repeat: &str) -> Result<ChangePassword, ApiErr> {
    let invalid = |field: &str, message: &str| ApiErr {
        status: 400,
        message: message.into(),
        field: Some(field.into()),
    };
    if current.is_empty() {
        return Err(invalid("current", "enter your current password"));
    }
    if new.is_empty() {
        return Err(invalid("new", "enter the new password"));
    }
    if new != repeat {
        return Err(invalid("repeat", "the two new passwords differ"));
    }
    Ok(ChangePassword {
        current: current.into(),
        new: new.into(),
    })
}

#[function_component(Account)]
pub fn account() -> Html {
    let session = use_session();
    let err = use_state(|| None::<ApiErr>);
    let changed = use_state(|| false);
    let (current, new, repeat) = (use_node_ref(), use_node_ref(), use_node_ref());
    let onsubmit = {
        let (current, new, repeat) = (current.clone(), new.clone(), repeat.clone());
        let (err, changed, session) = (err.clone(), changed.clone(), session.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            changed.set(false);
            let body = match password_change(
                &super::input_value(&current),
                &super::input_value(&new),
                &super::input_value(&repeat),
            ) {
                Ok(b) => b,
                Err(e) => {
                    err.set(Some(e));
                    return;
                }
            };
            let (err, changed, session) = (err.clone(), changed.clone(), session.clone());
            let fields = [current.clone(), new.clone(), repeat.clone()];
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, serde_json::Value>("/api/me/password", &body).await {
                    Ok(_) => {
                        err.set(None);
                        changed.set(true);
                        for f in &fields {
                            if let Some(i) = f.cast::<HtmlInputElement>() {
                                i.set_value("");
                            }
                        }
                        // `must_change_password` is over.
                        session.refresh();
                    }
                    Err(e) => err.set(Some(e)),
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    let Some(me) = session.me() else {
        return html! {};
    };
    html! {
        <main id="account">
            <h1 tabindex="-1">{"Your account"}</h1>
            if me.must_change_password {
                <p class="notice" role="status">{"Your password was set by an admin: choose your own below."}</p>
            }
            <dl class="facts">
                <dt>{"User name"}</dt><dd id="account-name">{&me.username}</dd>
                <dt>{"E-mail"}</dt><dd>{me.email.clone().unwrap_or_else(|| "none".into())}</dd>
                <dt>{"Site admin"}</dt><dd>{ if me.admin { "yes" } else { "no" } }</dd>
                <dt>{"Teams"}</dt>
                <dd>
                    if me.teams.is_empty() { <span class="muted">{"none"}</span> }
                    { for me.teams.iter().map(|t| html! {
                        <><Link<Route> to={Route::Team { name: t.team.clone() }}>{&t.team}</Link<Route>>
                          {format!(" ({}) ", t.role.as_str())}</>
                    }) }
                </dd>
            </dl>
            <p><Link<Route> to={Route::Tokens}>{"Your API tokens"}</Link<Route>></p>
            <h2>{"Change password"}</h2>
            <p class="muted">{"For a Kiln account (not one you sign in to with a provider). Your other sessions end."}</p>
            <form {onsubmit} class="form" novalidate=true id="change-password">
                <input type="text" name="username" autocomplete="username" value={me.username.clone()} hidden=true readonly=true />
                <label for="pw-current">{"Current password"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "current")} id="pw-current" name="current" type="password" ref={current} autocomplete="current-password" aria-describedby="current-error" />
                { field_error(&err, "current") }
                <label for="pw-new">{"New password"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "new")} id="pw-new" name="new" type="password" ref={new} autocomplete="new-password" aria-describedby="new-error" />
                { field_error(&err, "new") }
                <label for="pw-repeat">{"New password again"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "repeat")} id="pw-repeat" name="repeat" type="password" ref={repeat} autocomplete="new-password" aria-describedby="repeat-error" />
                { field_error(&err, "repeat") }
                <button type="submit">{"Change password"}</button>
                if *changed { <p class="muted" role="status">{"Password changed."}</p> }
                { super::error_box(&general) }
            </form>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_password_is_typed_twice_alike() {
        let r = password_change("old one", "a new passphrase", "a new passphrase").unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"current": "old one", "new": "a new passphrase"})
        );
        let field = |r: Result<ChangePassword, ApiErr>| r.unwrap_err().field.unwrap();
        assert_eq!(field(password_change("", "x", "x")), "current");
        assert_eq!(field(password_change("o", "", "")), "new");
        assert_eq!(field(password_change("o", "abc", "abd")), "repeat");
    }
}
