//! The Kiln web console: a Yew single-page app. `api` talks REST, `live` holds the tab's one
//! WebSocket (`/ws/console`, shared bincode frames) and the live state pages subscribe to, `pages`
//! are the routes, `components` the pieces.

mod api;
mod app;
mod components;
mod live;
mod pages;
mod routes;

fn main() {
    yew::Renderer::<app::App>::new().render();
}
