//! The shell: navigation, the login gate, the router, and the tab's one live connection
//! (`LiveProvider`), which every page shares.

use crate::live::LiveProvider;
use crate::pages;
use crate::routes::Route;
use yew::prelude::*;
use yew_router::prelude::*;

fn switch(route: Route) -> Html {
    if crate::api::token().is_none() && route != Route::Login {
        return html! { <Redirect<Route> to={Route::Login} /> };
    }
    match route {
        Route::Dashboard => html! { <pages::dashboard::Dashboard /> },
        Route::Projects => html! { <pages::projects::Projects /> },
        Route::Project { name } => html! { <pages::project::ProjectPage {name} /> },
        Route::Build { id } => html! { <pages::build::BuildPage {id} /> },
        Route::Slaves => html! { <pages::slaves::Slaves /> },
        Route::Login => html! { <pages::login::Login /> },
        Route::NotFound => html! { <main><h1>{"Not found"}</h1><p>{"No such page."}</p></main> },
    }
}

#[function_component(App)]
pub fn app() -> Html {
    html! {
        <LiveProvider>
        <BrowserRouter>
            <header class="top">
                <Link<Route> to={Route::Dashboard} classes="brand">{"Kiln"}</Link<Route>>
                <nav aria-label="main">
                    <Link<Route> to={Route::Dashboard}>{"Dashboard"}</Link<Route>>
                    <Link<Route> to={Route::Projects}>{"Projects"}</Link<Route>>
                    <Link<Route> to={Route::Slaves}>{"Slaves"}</Link<Route>>
                </nav>
            </header>
            <Switch<Route> render={switch} />
        </BrowserRouter>
        </LiveProvider>
    }
}
