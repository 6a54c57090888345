//! The notice shown while live updates are not flowing: the live connection is (re)connecting,
//! or the master refused it or cannot be understood.

use crate::live::use_connection;
use yew::prelude::*;

#[function_component(LiveStatus)]
pub fn live_status() -> Html {
    let connection = use_connection();
    html! {
        <>
            if !connection.connected {
                <p class="warn" role="status" id="live-status">{"Connecting to the master for live updates…"}</p>
            }
            if let Some(error) = &connection.error {
                <p class="error" role="alert">{error}</p>
            }
        </>
    }
}
