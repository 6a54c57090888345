//! Login with the admin token (until the login issue replaces it).

use crate::api;
use crate::routes::Route;
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

#[function_component(Login)]
pub fn login() -> Html {
    let input = use_node_ref();
    let error = use_state(|| None::<String>);
    let nav = use_navigator();
    let onsubmit = {
        let input = input.clone();
        let error = error.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let token = input
                .cast::<HtmlInputElement>()
                .map(|i| i.value())
                .unwrap_or_default();
            let error = error.clone();
            let nav = nav.clone();
            wasm_bindgen_futures::spawn_local(async move {
                api::set_token(token.trim());
                match api::get::<serde_json::Value>("/api/projects").await {
                    Ok(_) => {
                        if let Some(n) = nav {
                            n.push(&Route::Dashboard);
                        }
                    }
                    Err(e) => {
                        api::clear_token();
                        error.set(Some(e.message));
                    }
                }
            });
        })
    };
    html! {
        <main class="narrow">
            <h1>{"Log in"}</h1>
            <form {onsubmit}>
                <label for="token">{"Admin token"}</label>
                <input id="token" name="token" type="password" ref={input} autocomplete="current-password" required=true />
                <p class="muted">{"It is in admin.token in the master's data dir."}</p>
                <button type="submit">{"Log in"}</button>
            </form>
            { super::error_box(&error) }
        </main>
    }
}
