//! `/unsubscribe#<token>`: where a mail's unsubscribe link leads. Public (no sign-in): the
//! token (after `#`, so it reaches no server's access log) is posted to `POST /api/unsubscribe`
//! when the person presses "Stop these messages" (not on opening: mail scanners open links),
//! and the master's answer is shown.

use crate::api;
use kiln_shared::notify::{Unsubscribe, Unsubscribed};
use yew::prelude::*;

/// The token of a location's hash (`#abc` → `abc`); none when empty.
pub fn token_of(hash: &str) -> Option<String> {
    let t = hash.strip_prefix('#').unwrap_or(hash).trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[derive(Clone, PartialEq)]
enum State {
    Ready,
    Busy,
    Done(String),
    Failed(String),
}

#[function_component(UnsubscribePage)]
pub fn unsubscribe_page() -> Html {
    let token = use_state(|| {
        web_sys::window()
            .and_then(|w| w.location().hash().ok())
            .and_then(|h| token_of(&h))
    });
    let state = use_state(|| State::Ready);
    let onclick = {
        let (token, state) = (token.clone(), state.clone());
        Callback::from(move |_: MouseEvent| {
            let Some(t) = (*token).clone() else {
                return;
            };
            let state = state.clone();
            state.set(State::Busy);
            wasm_bindgen_futures::spawn_local(async move {
                let body = Unsubscribe { token: t };
                state.set(
                    match api::post::<_, Unsubscribed>("/api/unsubscribe", &body).await {
                        Ok(u) => State::Done(u.message),
                        Err(e) => State::Failed(e.message),
                    },
                );
            });
        })
    };
    html! {
        <main class="narrow" id="unsubscribe">
            <h1 tabindex="-1">{"Unsubscribe"}</h1>
            if token.is_none() {
                <p class="error" role="alert" id="unsubscribe-error">
                    {"This link carries no token. Open the unsubscribe link of the mail as it is, \
                      including what follows the #."}</p>
            } else {
                if let State::Done(m) = &*state {
                    <p role="status" id="unsubscribe-done">{m}</p>
                } else {
                    <p>{"Kiln sent you notifications about builds. Press the button to stop the messages \
                        this link came with."}</p>
                    <button type="button" id="unsubscribe-button" disabled={*state == State::Busy}
                        {onclick}>{"Stop these messages"}</button>
                    if let State::Failed(m) = &*state {
                        <p class="error" role="alert" id="unsubscribe-error">{m}</p>
                    }
                }
            }
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_what_follows_the_hash() {
        assert_eq!(token_of("#abc.DEF-1"), Some("abc.DEF-1".to_string()));
        assert_eq!(token_of("#"), None);
        assert_eq!(token_of(""), None);
    }
}
