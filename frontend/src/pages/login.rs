//! Sign in: a link per sign-in provider the master offers (`GET /auth/providers`; a plain
//! navigation to the provider's `login_url`, which comes back here signed in) and, when local
//! accounts are on, a user name and password form (`POST /auth/local/login`). Afterwards the
//! browser goes where it was (`?next=`, a path on this site only). A provider that refused
//! sends the browser back here with `?error=`, shown at the top.

use super::{loading_or_error, Loaded};
use crate::api;
use crate::session::{self, query_param, use_session};
use kiln_shared::api::Providers;
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::history::{BrowserHistory, History};
use yew_router::prelude::*;

#[function_component(Login)]
pub fn login() -> Html {
    let session = use_session();
    let providers = use_state(|| Loaded::<Providers>::Loading);
    let err = use_state(|| None::<String>);
    let busy = use_state(|| false);
    let (user, pass) = (use_node_ref(), use_node_ref());
    let query = use_location()
        .map(|l| l.query_str().to_string())
        .unwrap_or_default();
    let next = session::safe_next(query_param(&query, "next").as_deref());
    let refused = query_param(&query, "error").filter(|e| !e.trim().is_empty());
    {
        let providers = providers.clone();
        use_effect_with((), move |_| {
            super::load("/auth/providers".into(), providers)
        });
    }
    let onsubmit = {
        let (user, pass, err, busy) = (user.clone(), pass.clone(), err.clone(), busy.clone());
        let (session, next) = (session.clone(), next.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if *busy {
                return;
            }
            let v = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let (username, password) = (v(&user).trim().to_string(), v(&pass));
            if username.is_empty() || password.is_empty() {
                err.set(Some("Enter your user name and password.".into()));
                return;
            }
            let (err, busy, session, next, pass) = (
                err.clone(),
                busy.clone(),
                session.clone(),
                next.clone(),
                pass.clone(),
            );
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                match api::login(&username, &password).await {
                    Ok(me) => {
                        err.set(None);
                        session.signed_in(me);
                        BrowserHistory::new().push(next);
                    }
                    Err(e) => {
                        // 401 wrong password, 429 too many attempts: the master's words.
                        err.set(Some(e.message));
                        if let Some(i) = pass.cast::<HtmlInputElement>() {
                            i.set_value("");
                            let _ = i.focus();
                        }
                    }
                }
                busy.set(false);
            });
        })
    };
    html! {
        <main class="narrow" id="login">
            <h1 tabindex="-1">{"Sign in"}</h1>
            if let Some(why) = &refused {
                <p class="error" role="alert" id="login-refused">{format!("Sign-in refused: {why}")}</p>
            }
            if let Some(me) = session.me() {
                <p class="muted" role="status">{format!("You are signed in as {}. ", me.username)}
                    <a href={next.clone()}>{"Go on"}</a></p>
            }
            { loading_or_error(&*providers) }
            if let Loaded::Ok(p) = &*providers {
                if !p.providers.is_empty() {
                    <ul class="providers" aria-label="Sign-in providers">
                        { for p.providers.iter().map(|pr| html! {
                            <li key={pr.id.clone()}>
                                <a class="button" data-provider={pr.id.clone()}
                                    href={session::provider_href(&pr.login_url, &next)}>
                                    {format!("Sign in with {}", pr.display_name)}
                                </a>
                            </li>
                        }) }
                    </ul>
                }
                if p.local {
                    if !p.providers.is_empty() { <p class="muted">{"Or with a Kiln account:"}</p> }
                    <form {onsubmit} class="form" aria-label="Sign in with a Kiln account" novalidate=true>
                        <label for="username">{"User name"}</label>
                        <input id="username" name="username" ref={user} autocomplete="username"
                            autocapitalize="none" spellcheck="false" required=true />
                        <label for="password">{"Password"}</label>
                        <input id="password" name="password" type="password" ref={pass}
                            autocomplete="current-password" required=true />
                        <button type="submit" disabled={*busy}>{"Sign in"}</button>
                    </form>
                }
                if !p.local && p.providers.is_empty() {
                    <p class="error" role="alert">{"This master offers no way to sign in: \
                        an admin must turn on local accounts or configure a provider ([auth] in its config)."}</p>
                }
            }
            { super::error_box(&err) }
        </main>
    }
}
