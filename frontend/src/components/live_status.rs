//! The notice shown while live updates are not flowing: the live connection is (re)connecting,
//! or the master refused it or cannot be understood.

use crate::live::use_connection;
use yew::prelude::*;

#[function_component(LiveStatus)]
pub fn live_status() -> Html {
    let connection = use_connection();
    // Once it has been up, a down connection is a lost one, not one still starting.
    let was_up = use_mut_ref(|| false);
    if connection.connected {
        *was_up.borrow_mut() = true;
    }
    let lost = *was_up.borrow();
    html! {
        <>
            if !connection.connected {
                <p class="warn" role="status" id="live-status">
                    { if lost { "Disconnected, reconnecting…" } else { "Connecting to the master for live updates…" } }
                </p>
            }
            if let Some(error) = &connection.error {
                <p class="error" role="alert">{error}</p>
            }
        </>
    }
}
