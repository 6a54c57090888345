//! What the tab says: each page's `document.title` ("#15 failed · board · Kiln"), the favicon a
//! build page colours by its build's state, and moving focus to the page's `h1` after a
//! navigation (so screen readers and keyboards start at the new page). The text is pure and
//! tested natively; the rest touches the document.

use crate::routes::Route;
use kiln_shared::BuildState;
use wasm_bindgen::JsCast;

pub const SUFFIX: &str = "Kiln";

/// The title of a page that needs nothing loaded to name it. `Build` pages name themselves
/// (`build_title`) once the build is known; until then, this.
pub fn route_title(route: &Route) -> String {
    let page = match route {
        Route::Dashboard => "Dashboard".to_string(),
        Route::Projects => "Projects".to_string(),
        Route::Project { name } => name.clone(),
        Route::Build { id } => format!("#{id}"),
        Route::Slaves => "Slaves".to_string(),
        Route::Teams => "Teams".to_string(),
        Route::Team { name } => format!("{name} (team)"),
        Route::Tokens => "API tokens".to_string(),
        Route::Users => "Users".to_string(),
        Route::Audit => "Audit log".to_string(),
        Route::Account => "Your account".to_string(),
        Route::Login => "Sign in".to_string(),
        Route::Unsubscribe => "Unsubscribe".to_string(),
        Route::NotFound => "Not found".to_string(),
    };
    format!("{page} · {SUFFIX}")
}

/// "#15 failed · board · Kiln".
pub fn build_title(id: i64, state: BuildState, project: &str) -> String {
    format!("#{id} {} · {project} · {SUFFIX}", state.as_str())
}

/// The favicon's colour for a build in `state` (None: Kiln's own).
pub fn favicon_colour(state: Option<BuildState>) -> &'static str {
    match state {
        None => "#b3441e",
        Some(BuildState::Succeeded) => "#166b2b",
        Some(BuildState::Failed) => "#cc0000",
        Some(BuildState::Queued) => "#888888",
        Some(BuildState::Dispatched) | Some(BuildState::Running) => "#0b4f9c",
        Some(_) => "#8a5a00",
    }
}

/// A data URL of a round SVG favicon of `colour` (CSP: `img-src 'self' data:`).
pub fn favicon_url(colour: &str) -> String {
    let svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><circle cx='8' cy='8' r='7' fill='{colour}'/></svg>"
    );
    format!(
        "data:image/svg+xml,{}",
        svg.replace('#', "%23")
            .replace('<', "%3C")
            .replace('>', "%3E")
    )
}

pub fn set_title(title: &str) {
    if let Some(d) = web_sys::window().and_then(|w| w.document()) {
        d.set_title(title);
    }
}

/// Points `<link rel="icon">` (made if missing) at the favicon of `state`.
pub fn set_favicon(state: Option<BuildState>) {
    let Some(d) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let link = match d.query_selector("link[rel='icon']").ok().flatten() {
        Some(l) => l,
        None => {
            let Ok(l) = d.create_element("link") else {
                return;
            };
            let _ = l.set_attribute("rel", "icon");
            if let Some(h) = d.head() {
                let _ = h.append_child(&l);
            }
            l
        }
    };
    let _ = link.set_attribute("id", "favicon");
    let _ = link.set_attribute("data-state", state.map(|s| s.as_str()).unwrap_or("none"));
    let _ = link.set_attribute("href", &favicon_url(favicon_colour(state)));
}

/// Moves focus to the page's `h1` (made focusable with `tabindex="-1"`); false if the page
/// has none yet (it is still loading).
pub fn focus_h1() -> bool {
    let Some(d) = web_sys::window().and_then(|w| w.document()) else {
        return false;
    };
    match d
        .query_selector("main h1")
        .ok()
        .flatten()
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    {
        Some(h) => {
            let _ = h.set_attribute("tabindex", "-1");
            let _ = h.focus();
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_its_own_title() {
        assert_eq!(route_title(&Route::Projects), "Projects · Kiln");
        assert_eq!(route_title(&Route::Slaves), "Slaves · Kiln");
        assert_eq!(route_title(&Route::Login), "Sign in · Kiln");
        assert_eq!(
            route_title(&Route::Project {
                name: "board".into()
            }),
            "board · Kiln"
        );
        let all = [
            Route::Dashboard,
            Route::Projects,
            Route::Slaves,
            Route::Teams,
            Route::Tokens,
            Route::Users,
            Route::Audit,
            Route::Account,
            Route::Login,
            Route::Unsubscribe,
            Route::NotFound,
        ];
        let titles: std::collections::BTreeSet<_> = all.iter().map(route_title).collect();
        assert_eq!(titles.len(), all.len(), "no two pages share a title");
    }

    #[test]
    fn a_build_title_says_how_it_went() {
        assert_eq!(
            build_title(15, BuildState::Failed, "board"),
            "#15 failed · board · Kiln"
        );
        assert_eq!(
            build_title(3, BuildState::Running, "board"),
            "#3 running · board · Kiln"
        );
    }

    #[test]
    fn the_favicon_is_a_data_url_coloured_by_state() {
        let ok = favicon_url(favicon_colour(Some(BuildState::Succeeded)));
        let bad = favicon_url(favicon_colour(Some(BuildState::Failed)));
        assert!(ok.starts_with("data:image/svg+xml,"));
        assert_ne!(ok, bad);
        assert!(!ok.contains('#') && !ok.contains('<'), "{ok}");
    }
}
