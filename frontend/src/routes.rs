//! The console's URLs (yew-router 0.20 syntax: `:param`).

use yew_router::prelude::*;

#[derive(Clone, Debug, Routable, PartialEq)]
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
    #[at("/teams")]
    Teams,
    #[at("/teams/:name")]
    Team { name: String },
    /// The signed-in person's API tokens.
    #[at("/tokens")]
    Tokens,
    /// Admins: accounts.
    #[at("/users")]
    Users,
    /// Admins: who did what.
    #[at("/audit")]
    Audit,
    /// The signed-in person: teams, password.
    #[at("/account")]
    Account,
    /// `?next=<path>` (where to go after sign-in), `?error=<why>` (a provider refused).
    #[at("/login")]
    Login,
    /// A mail's unsubscribe link (`#<token>`): public, no sign-in needed.
    #[at("/unsubscribe")]
    Unsubscribe,
    #[not_found]
    #[at("/404")]
    NotFound,
}

impl Route {
    /// Pages only admins may open.
    pub fn admin_only(&self) -> bool {
        matches!(self, Route::Users | Route::Audit)
    }

    /// Pages shown without a session (the login gate lets them through).
    pub fn public(&self) -> bool {
        matches!(self, Route::Login | Route::Unsubscribe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_pages_have_their_urls() {
        for (path, route) in [
            ("/teams", Route::Teams),
            (
                "/teams/boards",
                Route::Team {
                    name: "boards".into(),
                },
            ),
            ("/tokens", Route::Tokens),
            ("/users", Route::Users),
            ("/audit", Route::Audit),
            ("/account", Route::Account),
            ("/login", Route::Login),
            ("/unsubscribe", Route::Unsubscribe),
        ] {
            assert_eq!(Route::recognize(path), Some(route.clone()), "{path}");
            assert_eq!(route.to_path(), path);
        }
        assert!(Route::Users.admin_only() && Route::Audit.admin_only());
        assert!(!Route::Teams.admin_only() && !Route::Tokens.admin_only());
        assert!(Route::Login.public() && Route::Unsubscribe.public());
        assert!(!Route::Dashboard.public() && !Route::Account.public());
    }
}
