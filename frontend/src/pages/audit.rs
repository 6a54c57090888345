//! The audit log (admins): who did what, newest first, 100 at a time ("Older" loads the next
//! page), optionally only one kind of action.

use crate::api::{self, ApiErr};
use crate::components::when;
use kiln_shared::api::AuditEntry;
use yew::prelude::*;

/// Entries per page.
const PAGE: usize = 100;

/// Actions the filter suggests (any can be typed).
const ACTIONS: [&str; 25] = [
    "login",
    "login_refused",
    "logout",
    "password_changed",
    "user_created",
    "team_created",
    "member_set",
    "member_removed",
    "mapping_added",
    "mapping_removed",
    "token_created",
    "token_revoked",
    "project_created",
    "project_changed",
    "project_deleted",
    "build_requested",
    "build_cancelled",
    "slave_created",
    "slave_drained",
    "slave_disabled",
    "slave_enabled",
    "slave_revoked",
    "slave_token_rotated",
    "registration_token_created",
    "registration_token_revoked",
];

/// `GET /api/audit` for one page: the newest entries older than `before`, of `action` only
/// when one is given.
fn audit_path(action: &str, before: Option<i64>) -> String {
    let mut path = format!("/api/audit?limit={PAGE}");
    if let Some(b) = before {
        path.push_str(&format!("&before={b}"));
    }
    let action = action.trim();
    if !action.is_empty() {
        path.push_str(&format!(
            "&action={}",
            kiln_shared::api::percent_encode(action)
        ));
    }
    path
}

/// A page shorter than asked for is the last one.
fn has_more(page_len: usize) -> bool {
    page_len >= PAGE
}

/// An entry's detail in one line (`{}` shows as nothing).
fn detail(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        v => v.to_string(),
    }
}

#[derive(Clone, PartialEq, Default)]
struct View {
    entries: Vec<AuditEntry>,
    more: bool,
    loading: bool,
    err: Option<String>,
}

/// Loads a page into `view`: after what it holds (`older`), or afresh.
fn fetch(view: UseStateHandle<View>, action: String, older: bool) {
    let current = (*view).clone();
    let before = if older {
        current.entries.last().map(|e| e.id)
    } else {
        None
    };
    view.set(View {
        loading: true,
        err: None,
        ..if older {
            current.clone()
        } else {
            View::default()
        }
    });
    wasm_bindgen_futures::spawn_local(async move {
        let r: Result<Vec<AuditEntry>, ApiErr> = api::get(&audit_path(&action, before)).await;
        view.set(match r {
            Ok(page) => {
                let more = has_more(page.len());
                let mut entries = if older { current.entries } else { vec![] };
                entries.extend(page);
                View {
                    entries,
                    more,
                    loading: false,
                    err: None,
                }
            }
            Err(e) => View {
                loading: false,
                err: Some(e.message),
                ..if older { current } else { View::default() }
            },
        });
    });
}

#[function_component(Audit)]
pub fn audit() -> Html {
    let view = use_state(View::default);
    let action = use_state(String::new);
    let input = use_node_ref();
    {
        let view = view.clone();
        use_effect_with((*action).clone(), move |a| fetch(view, a.clone(), false));
    }
    let onsubmit = {
        let (action, input) = (action.clone(), input.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            action.set(super::input_value(&input).trim().to_string());
        })
    };
    let older = {
        let (view, action) = (view.clone(), action.clone());
        Callback::from(move |_: MouseEvent| fetch(view.clone(), (*action).clone(), true))
    };
    html! {
        <main id="audit">
            <h1 tabindex="-1">{"Audit log"}</h1>
            <form {onsubmit} class="inline" role="search" aria-label="Filter the audit log">
                <label for="a-action">{"Action"}</label>
                <input id="a-action" name="action" ref={input} list="audit-actions" placeholder="all actions" />
                <datalist id="audit-actions">
                    { for ACTIONS.iter().map(|a| html! { <option value={*a} /> }) }
                </datalist>
                <button type="submit">{"Show"}</button>
            </form>
            { super::error_box(&view.err) }
            if view.entries.is_empty() && !view.loading && view.err.is_none() {
                <p class="muted">{"Nothing recorded."}</p>
            }
            if !view.entries.is_empty() {
                <table id="audit-list">
                    <thead><tr><th>{"When"}</th><th>{"Who"}</th><th>{"Action"}</th><th>{"What"}</th><th>{"From"}</th><th>{"Detail"}</th></tr></thead>
                    <tbody>
                    { for view.entries.iter().map(|e| html! {
                        <tr key={e.id} data-audit={e.id.to_string()}>
                            <td>{when(Some(e.at))}</td>
                            <td>{e.actor.clone().unwrap_or_default()}</td>
                            <td class="mono">{&e.action}</td>
                            <td>{e.target.clone().unwrap_or_default()}</td>
                            <td class="mono">{e.address.clone().unwrap_or_default()}</td>
                            <td class="mono wrap">{detail(&e.detail)}</td>
                        </tr>
                    }) }
                    </tbody>
                </table>
            }
            if view.loading { <p class="muted" role="status">{"Loading…"}</p> }
            if view.more && !view.loading {
                <button id="audit-older" onclick={older}>{"Older"}</button>
            }
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_go_back_from_the_oldest_entry_shown() {
        assert_eq!(audit_path("", None), "/api/audit?limit=100");
        assert_eq!(
            audit_path(" login_refused ", Some(42)),
            "/api/audit?limit=100&before=42&action=login_refused"
        );
        assert_eq!(audit_path("a&b", None), "/api/audit?limit=100&action=a%26b");
        assert!(has_more(100) && !has_more(99) && !has_more(0));
    }

    #[test]
    fn details_show_in_one_line() {
        assert_eq!(detail(&serde_json::json!({})), "");
        assert_eq!(detail(&serde_json::Value::Null), "");
        assert_eq!(
            detail(&serde_json::json!({"provider": "local"})),
            r#"{"provider":"local"}"#
        );
    }
}
