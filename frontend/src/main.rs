//! The Kiln web console: a Yew single-page app. `session` knows who is signed in (Kiln's
//! session cookie, which the page never sees), `api` talks REST, `live` holds the tab's one
//! WebSocket (`/ws/console`, shared bincode frames) and the live state pages subscribe to,
//! `pages` are the routes, `components` the pieces.

mod api;
mod app;
mod components;
mod live;
mod pages;
mod routes;
mod session;
mod title;

/// Where earlier consoles kept the admin token (localStorage): removed, so none lingers there.
const OLD_TOKEN_KEY: &str = "kiln.token";

fn main() {
    use gloo_storage::Storage;
    gloo_storage::LocalStorage::delete(OLD_TOKEN_KEY);
    yew::Renderer::<app::App>::new().render();
}
