//! The console's URLs (yew-router 0.20 syntax: `:param`).

use yew_router::prelude::*;

#[derive(Clone, Routable, PartialEq)]
pub enum Route {
    #[at("/")]
    Dashboard,
    #[at("/projects")]
    Projects,
    #[at("/projects/:name")]
    Project { name: String },
    #[at("/builds/:id")]
    Build { id: i64 },
    #[at("/slaves")]
    Slaves,
    #[at("/login")]
    Login,
    #[not_found]
    #[at("/404")]
    NotFound,
}
