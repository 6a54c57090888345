//! The Kiln web console: a Yew single-page app. `api` talks REST, `live` holds the one WebSocket
//! (`/ws/console`, shared bincode frames), `pages` are the routes, `components` the pieces.

mod api;
mod app;
mod components;
mod live;
mod pages;
mod routes;

fn main() {
    yew::Renderer::<app::App>::new().render();
}
