//! The shell: the session (who is signed in), the header (navigation, the person's name, Sign
//! out), the login gate, the router, and the tab's one live connection (`LiveProvider`), which
//! every page shares.

use crate::live::{use_live, LiveProvider};
use crate::pages;
use crate::routes::Route;
use crate::session::{self, use_session, Session, SessionProvider};
use crate::title;
use yew::prelude::*;
use yew_router::history::{BrowserHistory, History};
use yew_router::prelude::*;

fn switch(route: Route) -> Html {
    html! { <Gate {route} /> }
}

/// The page of `route`, for someone signed in.
fn page(route: Route) -> Html {
    match route {
        Route::Dashboard => html! { <pages::dashboard::Dashboard /> },
        Route::Projects => html! { <pages::projects::Projects /> },
        Route::Project { name } => html! { <pages::project::ProjectPage {name} /> },
        Route::Build { id } => html! { <pages::build::BuildPage {id} /> },
        Route::Slaves => html! { <pages::slaves::Slaves /> },
        Route::Teams => html! { <pages::teams::Teams /> },
        Route::Team { name } => html! { <pages::team::TeamPage {name} /> },
        Route::Tokens => html! { <pages::tokens::Tokens /> },
        Route::Users => html! { <pages::users::Users /> },
        Route::Audit => html! { <pages::audit::Audit /> },
        Route::Account => html! { <pages::account::Account /> },
        Route::Login => html! { <pages::login::Login /> },
        Route::Unsubscribe => html! { <pages::unsubscribe::UnsubscribePage /> },
        Route::NotFound => {
            html! { <main><h1 tabindex="-1">{"Not found"}</h1><p>{"No such page."}</p></main> }
        }
    }
}

#[derive(Properties, PartialEq)]
struct GateProps {
    route: Route,
}

/// The login gate: pages need a session; without one, the login page (which brings the person
/// back here once signed in).
#[function_component(Gate)]
fn gate(p: &GateProps) -> Html {
    let session = use_session();
    // The tab's title (a build page names itself once it knows the build).
    use_effect_with(p.route.clone(), |route| {
        if !matches!(route, Route::Build { .. }) {
            title::set_title(&title::route_title(route));
        }
    });
    use_focus_after_navigation(p.route.clone());
    if p.route.public() {
        return page(p.route.clone());
    }
    match &session.state {
        Session::Checking => html! { <main><p class="muted" role="status">{"Loading…"}</p></main> },
        Session::Unknown(why) => {
            let reload = Callback::from(|_: MouseEvent| {
                if let Some(w) = web_sys::window() {
                    let _ = w.location().reload();
                }
            });
            html! {
                <main class="narrow">
                    <h1 tabindex="-1">{"Cannot reach the master"}</h1>
                    <p class="error" role="alert">{why}</p>
                    <button onclick={reload}>{"Try again"}</button>
                </main>
            }
        }
        Session::SignedOut => html! { <ToLogin /> },
        Session::SignedIn(me) if p.route.admin_only() && !me.admin => html! {
            <main>
                <h1 tabindex="-1">{"Admins only"}</h1>
                <p class="error" role="alert">{"This page is for site admins."}</p>
            </main>
        },
        Session::SignedIn(_) => page(p.route.clone()),
    }
}

/// After a navigation (not the first page shown), focus moves to the new page's `h1`, once the
/// page has one (some show it when what they show has loaded: a few tries for two seconds).
#[hook]
fn use_focus_after_navigation(route: Route) {
    let first = use_mut_ref(|| true);
    use_effect_with(route, move |_| {
        let was_first = std::mem::replace(&mut *first.borrow_mut(), false);
        if !was_first {
            wasm_bindgen_futures::spawn_local(async {
                for _ in 0..40 {
                    if title::focus_h1() {
                        return;
                    }
                    gloo_timers::future::TimeoutFuture::new(50).await;
                }
            });
        }
    });
}

/// "Skip to content": the first thing in the page; moves focus to the page's heading.
#[function_component(SkipLink)]
fn skip_link() -> Html {
    let onclick = Callback::from(|e: MouseEvent| {
        e.prevent_default();
        title::focus_h1();
    });
    html! { <a class="skip-link" href="#content" {onclick}>{"Skip to content"}</a> }
}

/// Sends the browser to the login page, remembering the page it was on.
#[function_component(ToLogin)]
fn to_login() -> Html {
    use_effect_with((), |_| {
        let here = web_sys::window()
            .map(|w| w.location())
            .map(|l| {
                format!(
                    "{}{}{}",
                    l.pathname().unwrap_or_default(),
                    l.search().unwrap_or_default(),
                    l.hash().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        BrowserHistory::new().replace(session::login_url(&here));
    });
    html! { <main><p class="muted" role="status">{"Sign in to go on…"}</p></main> }
}

/// The header: the brand, the navigation and who is signed in (with Sign out); below it, a
/// notice while the person's password is one an admin set.
#[function_component(Header)]
fn header() -> Html {
    let session = use_session();
    let live = use_live();
    let route = use_route::<Route>();
    // Signed out (or the session ended): the live connection would only be refused.
    let signed_out = session.state == Session::SignedOut;
    use_effect_with(signed_out, move |out| {
        if *out {
            live.suspend();
        }
    });
    let me = session.me();
    let sign_out = Callback::from(|_: MouseEvent| session::sign_out());
    html! {
        <>
            <header class="top">
                <Link<Route> to={Route::Dashboard} classes="brand">{"Kiln"}</Link<Route>>
                if let Some(me) = &me {
                    <nav aria-label="main">
                        <Link<Route> to={Route::Dashboard}>{"Dashboard"}</Link<Route>>
                        <Link<Route> to={Route::Projects}>{"Projects"}</Link<Route>>
                        <Link<Route> to={Route::Slaves}>{"Slaves"}</Link<Route>>
                        <Link<Route> to={Route::Teams}>{"Teams"}</Link<Route>>
                        <Link<Route> to={Route::Tokens}>{"Tokens"}</Link<Route>>
                        if me.admin {
                            <Link<Route> to={Route::Users}>{"Users"}</Link<Route>>
                            <Link<Route> to={Route::Audit}>{"Audit"}</Link<Route>>
                        }
                    </nav>
                    <div class="who">
                        <span class="visually-hidden">{"Signed in as "}</span>
                        <span id="user-name" title="Your account">
                            <Link<Route> to={Route::Account}>{&me.username}</Link<Route>>
                        </span>
                        <button id="sign-out" class="quiet" onclick={sign_out}>{"Sign out"}</button>
                    </div>
                }
            </header>
            if let Some(me) = &me {
                if me.must_change_password && route != Some(Route::Account) {
                    <p class="notice" role="status" id="change-password-notice">
                        {"Your password was set by an admin. "}
                        <Link<Route> to={Route::Account}>{"Change it now"}</Link<Route>>
                        {"."}
                    </p>
                }
            }
        </>
    }
}

#[function_component(App)]
pub fn app() -> Html {
    html! {
        <BrowserRouter>
        <SessionProvider>
        <LiveProvider>
            <SkipLink />
            <Header />
            <div id="content">
                <Switch<Route> render={switch} />
            </div>
        </LiveProvider>
        </SessionProvider>
        </BrowserRouter>
    }
}
