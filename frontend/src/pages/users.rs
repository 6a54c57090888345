//! Users (admins): every account, how it signs in, its teams; add a local account (with a
//! password, or a one-time password shown once that the person must change).

use super::{field_error, load, loading_or_error, Loaded};
use crate::api::{self, ApiErr};
use crate::components::when;
use crate::routes::Route;
use kiln_shared::api::{NewUser, User, UserCreated};
use web_sys::HtmlInputElement;
use yew::prelude::*;
use yew_router::prelude::*;

const USERS: &str = "/api/users";

/// The request the form makes: empty e-mail and password are left out (no e-mail; a one-time
/// password made by the master).
fn new_user_request(
    username: &str,
    email: &str,
    password: &str,
    admin: bool,
) -> Result<NewUser, ApiErr> {
    let username = username.trim();
    if username.is_empty() {
        return Err(ApiErr {
            status: 400,
            message: "enter a user name".into(),
            field: Some("username".into()),
        });
    }
    let email = email.trim();
    Ok(NewUser {
        username: username.to_string(),
        password: (!password.is_empty()).then(|| password.to_string()),
        email: (!email.is_empty()).then(|| email.to_string()),
        admin: Some(admin),
    })
}

#[function_component(Users)]
pub fn users() -> Html {
    let list = use_state(|| Loaded::<Vec<User>>::Loading);
    let created = use_state(|| None::<UserCreated>);
    let err = use_state(|| None::<ApiErr>);
    let (username, email, password, admin) = (
        use_node_ref(),
        use_node_ref(),
        use_node_ref(),
        use_node_ref(),
    );
    {
        let list = list.clone();
        use_effect_with((), move |_| load(USERS.into(), list));
    }
    let onsubmit = {
        let (username, email, password, admin) = (
            username.clone(),
            email.clone(),
            password.clone(),
            admin.clone(),
        );
        let (list, created, err) = (list.clone(), created.clone(), err.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let is_admin = admin
                .cast::<HtmlInputElement>()
                .map(|i| i.checked())
                .unwrap_or(false);
            let body = match new_user_request(
                &super::input_value(&username),
                &super::input_value(&email),
                &super::input_value(&password),
                is_admin,
            ) {
                Ok(b) => b,
                Err(e) => {
                    err.set(Some(e));
                    return;
                }
            };
            let (list, created, err) = (list.clone(), created.clone(), err.clone());
            let fields = [username.clone(), email.clone(), password.clone()];
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, UserCreated>(USERS, &body).await {
                    Ok(c) => {
                        err.set(None);
                        created.set(Some(c));
                        for f in &fields {
                            if let Some(i) = f.cast::<HtmlInputElement>() {
                                i.set_value("");
                            }
                        }
                        load(USERS.into(), list);
                    }
                    Err(e) => err.set(Some(e)),
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    html! {
        <main id="users">
            <h1 tabindex="-1">{"Users"}</h1>
            { loading_or_error(&*list) }
            if let Loaded::Ok(us) = &*list {
                <table id="user-list">
                    <thead><tr><th>{"User"}</th><th>{"E-mail"}</th><th>{"Admin"}</th><th>{"Signs in with"}</th><th>{"Teams"}</th><th>{"Since"}</th><th>{"Last sign-in"}</th></tr></thead>
                    <tbody>
                    { for us.iter().map(|u| html! {
                        <tr key={u.username.clone()} data-user={u.username.clone()}>
                            <td>{&u.username}</td>
                            <td>{u.email.clone().unwrap_or_default()}</td>
                            <td>{ if u.admin { "admin" } else { "" } }</td>
                            <td>{u.logins.join(", ")}</td>
                            <td class="wrap">{ for u.teams.iter().map(|t| html! {
                                <><Link<Route> to={Route::Team { name: t.team.clone() }}>{&t.team}</Link<Route>>
                                  {format!(" ({}) ", t.role.as_str())}</>
                            }) }</td>
                            <td>{when(Some(u.created_at))}</td>
                            <td>{ if u.last_login.is_some() { when(u.last_login) } else { "never".into() } }</td>
                        </tr>
                    }) }
                    </tbody>
                </table>
                <p class="muted">{"People who sign in with a provider get their account at their first sign-in. \
                    Add people to teams on a team's page."}</p>
            }
            <h2>{"Add a local account"}</h2>
            <form {onsubmit} class="form" novalidate=true id="new-user">
                <label for="u-name">{"User name"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "username")} id="u-name" name="username" ref={username} autocapitalize="none" autocomplete="off" aria-describedby="username-error" />
                { field_error(&err, "username") }
                <label for="u-email">{"E-mail (optional)"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "email")} id="u-email" name="email" type="email" ref={email} autocomplete="off" aria-describedby="email-error" />
                { field_error(&err, "email") }
                <label for="u-password">{"Password (optional)"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "password")} id="u-password" name="password" type="password" ref={password} autocomplete="new-password" aria-describedby="password-error u-password-hint" />
                <span class="muted hint" id="u-password-hint">{"Left empty: a one-time password is made, shown once, and must be changed at first sign-in."}</span>
                { field_error(&err, "password") }
                <label class="check">
                    <input type="checkbox" id="u-admin" name="admin" ref={admin} />
                    {" Site admin (users, teams, slaves, every project)"}
                </label>
                <button type="submit">{"Add user"}</button>
                { super::error_box(&general) }
            </form>
            if let Some(c) = &*created {
                <div class="token" role="status" id="user-created">
                    <p>{format!("User '{}' added.", c.user.username)}</p>
                    if let Some(pw) = &c.password {
                        <p>{"Their one-time password, shown only now (they must change it when they sign in):"}</p>
                        <pre class="mono"><code id="one-time-password">{pw}</code></pre>
                    }
                </div>
            }
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_form_leaves_out_what_was_not_typed() {
        let r = new_user_request(" ann ", " ", "", false).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"username": "ann", "password": null, "email": null, "admin": false})
        );
        let r = new_user_request("bob", "bob@example.org", " long passphrase ", true).unwrap();
        // A password is taken as typed (spaces count).
        assert_eq!(r.password.as_deref(), Some(" long passphrase "));
        assert_eq!(r.email.as_deref(), Some("bob@example.org"));
        assert_eq!(r.admin, Some(true));
        assert_eq!(
            new_user_request("  ", "", "", false)
                .unwrap_err()
                .field
                .as_deref(),
            Some("username")
        );
    }
}
