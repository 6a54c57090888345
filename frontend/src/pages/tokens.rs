//! API tokens: the signed-in person's own, for scripts and the command line
//! (`Authorization: Bearer <token>`). Each carries a role (at most the owner's) and may expire;
//! the token itself is shown once, when made; any can be revoked.

use super::{field_error, load, loading_or_error, role_options, Loaded};
use crate::api::{self, ApiErr};
use crate::components::when;
use crate::session::{highest_role, use_me};
use chrono::{DateTime, Duration, Utc};
use kiln_shared::api::{ApiToken, ApiTokenCreated, NewApiToken, Role};
use yew::prelude::*;

const TOKENS: &str = "/api/tokens";

/// What "Expires" offers: (label, days; 0 = never); the default is the third.
const EXPIRY: [(&str, i64); 5] = [
    ("in 7 days", 7),
    ("in 30 days", 30),
    ("in 90 days", 90),
    ("in a year", 365),
    ("never", 0),
];

/// The request the form makes: a name, a role (empty: the owner's own) and an expiry in days
/// from `now` (0: never).
fn token_request(
    name: &str,
    role: &str,
    days: &str,
    now: DateTime<Utc>,
) -> Result<NewApiToken, ApiErr> {
    let invalid = |field: &str, message: String| ApiErr {
        status: 400,
        message,
        field: Some(field.into()),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid(
            "name",
            "name the token after what will use it (e.g. ci-nightly)".into(),
        ));
    }
    let role = match role {
        "" => None,
        r => Some(Role::parse(r).ok_or_else(|| invalid("role", format!("'{r}' is not a role")))?),
    };
    let days: i64 = days
        .trim()
        .parse()
        .map_err(|_| invalid("expires_at", format!("'{days}' is not a number of days")))?;
    Ok(NewApiToken {
        name: name.to_string(),
        role,
        expires_at: (days > 0).then(|| now + Duration::days(days)),
    })
}

/// The roles a token of someone whose highest role is `highest` may carry.
fn roles_up_to(highest: Role) -> Vec<Role> {
    [Role::Viewer, Role::Builder, Role::Maintainer, Role::Admin]
        .into_iter()
        .filter(|r| *r <= highest)
        .collect()
}

#[function_component(Tokens)]
pub fn tokens() -> Html {
    let me = use_me();
    let highest = me.as_deref().map(highest_role).unwrap_or(Role::Viewer);
    let list = use_state(|| Loaded::<Vec<ApiToken>>::Loading);
    let created = use_state(|| None::<ApiTokenCreated>);
    let err = use_state(|| None::<ApiErr>);
    let list_err = use_state(|| None::<String>);
    let (name, role, expiry) = (use_node_ref(), use_node_ref(), use_node_ref());
    {
        let list = list.clone();
        use_effect_with((), move |_| load(TOKENS.into(), list));
    }
    let onsubmit = {
        let (name, role, expiry) = (name.clone(), role.clone(), expiry.clone());
        let (list, created, err) = (list.clone(), created.clone(), err.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let body = match token_request(
                &super::input_value(&name),
                &super::select_value(&role),
                &super::select_value(&expiry),
                Utc::now(),
            ) {
                Ok(b) => b,
                Err(e) => {
                    err.set(Some(e));
                    return;
                }
            };
            let (list, created, err, name) =
                (list.clone(), created.clone(), err.clone(), name.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, ApiTokenCreated>(TOKENS, &body).await {
                    Ok(c) => {
                        err.set(None);
                        created.set(Some(c));
                        if let Some(i) = name.cast::<web_sys::HtmlInputElement>() {
                            i.set_value("");
                        }
                        load(TOKENS.into(), list);
                    }
                    Err(e) => err.set(Some(e)),
                }
            });
        })
    };
    let revoke = |t: &ApiToken| {
        let (list, created, list_err, id) = (list.clone(), created.clone(), list_err.clone(), t.id);
        let question = format!("Revoke token '{}'? What uses it stops working.", t.name);
        Callback::from(move |_: MouseEvent| {
            if !super::confirm(&question) {
                return;
            }
            let (list, created, list_err) = (list.clone(), created.clone(), list_err.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::delete(&format!("{TOKENS}/{id}")).await {
                    Ok(()) => {
                        list_err.set(None);
                        if created.as_ref().is_some_and(|c| c.token.id == id) {
                            created.set(None);
                        }
                        load(TOKENS.into(), list);
                    }
                    Err(e) => list_err.set(Some(e.message)),
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if e.field.is_none() => Some(e.message.clone()),
        _ => None,
    };
    let now = Utc::now();
    html! {
        <main id="tokens">
            <h1 tabindex="-1">{"API tokens"}</h1>
            <p class="muted">{"For scripts and the command line: send one as "}
                <code>{"Authorization: Bearer <token>"}</code>{". A token acts as you, with at most the role it carries."}</p>
            { super::error_box(&list_err) }
            { loading_or_error(&*list) }
            if let Loaded::Ok(ts) = &*list {
                if ts.is_empty() {
                    <p class="muted">{"You have no API token."}</p>
                } else {
                    <table id="token-list">
                        <thead><tr><th>{"Name"}</th><th>{"Role"}</th><th>{"Made"}</th><th>{"Expires"}</th><th>{"Last used"}</th><th>{"Actions"}</th></tr></thead>
                        <tbody>
                        { for ts.iter().map(|t| html! {
                            <tr key={t.id} data-token={t.id.to_string()}>
                                <td>{&t.name}</td>
                                <td>{t.role.as_str()}</td>
                                <td>{when(Some(t.created_at))}</td>
                                <td>{ match t.expires_at {
                                    None => "never".to_string(),
                                    Some(e) if e <= now => format!("expired {}", when(Some(e))),
                                    Some(e) => when(Some(e)),
                                } }</td>
                                <td>{ if t.last_used.is_some() { when(t.last_used) } else { "never".into() } }</td>
                                <td class="row-actions">
                                    <button class="danger" onclick={revoke(t)}
                                        aria-label={format!("Revoke token {}", t.name)}>{"Revoke"}</button>
                                </td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                }
            }
            <h2>{"New token"}</h2>
            <form {onsubmit} class="form" novalidate=true id="new-token">
                <label for="tok-name">{"Name"}</label>
                <input aria-invalid={crate::pages::invalid(&err, "name")} id="tok-name" name="name" ref={name} placeholder="ci-nightly" aria-describedby="name-error" />
                { field_error(&err, "name") }
                <label for="tok-role">{"Role"}</label>
                <select aria-invalid={crate::pages::invalid(&err, "role")} id="tok-role" name="role" ref={role} aria-describedby="role-error">
                    <option value="" selected=true>{format!("your own ({})", highest.as_str())}</option>
                    { role_options(&roles_up_to(highest), None) }
                </select>
                { field_error(&err, "role") }
                <label for="tok-expires">{"Expires"}</label>
                <select aria-invalid={crate::pages::invalid(&err, "expires_at")} id="tok-expires" name="expires_at" ref={expiry} aria-describedby="expires_at-error">
                    { for EXPIRY.iter().enumerate().map(|(i, (label, days))| html! {
                        <option value={days.to_string()} selected={i == 2}>{*label}</option>
                    }) }
                </select>
                { field_error(&err, "expires_at") }
                <button type="submit">{"Make token"}</button>
                { super::error_box(&general) }
            </form>
            if let Some(c) = &*created {
                <div class="token" role="status" id="token-created">
                    <p>{format!("Token '{}' made. Copy it now: it is shown only once.", c.token.name)}</p>
                    <pre class="mono"><code id="token-secret">{&c.secret}</code></pre>
                    <p class="muted">{"Use it as: "}<code class="mono">{format!("Authorization: Bearer {}", c.secret)}</code></p>
                </div>
            }
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_form_sends_a_name_a_role_and_an_expiry() {
        let now = Utc::now();
        let r = token_request(" ci ", "builder", "30", now).unwrap();
        assert_eq!(r.name, "ci");
        assert_eq!(r.role, Some(Role::Builder));
        assert_eq!(r.expires_at, Some(now + Duration::days(30)));
        // The owner's own role, never expiring: both left out.
        let r = token_request("cli", "", "0", now).unwrap();
        assert_eq!((r.role, r.expires_at), (None, None));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "cli", "role": null, "expires_at": null})
        );
    }

    #[test]
    fn a_bad_token_form_is_refused_at_its_field() {
        let now = Utc::now();
        let field = |r: Result<NewApiToken, ApiErr>| r.unwrap_err().field.unwrap();
        assert_eq!(field(token_request("  ", "", "7", now)), "name");
        assert_eq!(field(token_request("x", "root", "7", now)), "role");
        assert_eq!(field(token_request("x", "", "soon", now)), "expires_at");
    }

    #[test]
    fn a_token_offers_no_role_above_its_owners() {
        assert_eq!(roles_up_to(Role::Viewer), vec![Role::Viewer]);
        assert_eq!(
            roles_up_to(Role::Maintainer),
            vec![Role::Viewer, Role::Builder, Role::Maintainer]
        );
        assert_eq!(roles_up_to(Role::Admin).len(), 4);
        for (_, days) in EXPIRY {
            assert!((0..=365).contains(&days));
        }
    }
}
