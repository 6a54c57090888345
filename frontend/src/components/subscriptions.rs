//! Who is told about a project's (or a team's) builds: the subscriptions under `base`
//! (`/api/projects/{name}` or `/api/teams/{name}`) with their recipient, events and triggers,
//! a Delete button and a Deliveries disclosure each, and the form that adds one (an e-mail
//! address, a user, or a webhook URL with its secret). Shown to the maintainers of the project
//! or team (and admins); the server's refusal appears at the field it names.
//!
//! The form's request body and the recipient's wording are pure (`new_subscription`,
//! `recipient`) and tested natively.

use super::deliveries::Deliveries;
use crate::api::{self, ApiErr};
use crate::pages::{error_box, field_error_id, invalid, loading_or_error, Loaded};
use kiln_shared::notify::{NewSubscription, Subscription, EVENTS, TRIGGERS};
use std::collections::BTreeSet;
use yew::prelude::*;

/// The kinds of recipient the form offers: (value, label).
pub const KINDS: [(&str, &str); 3] = [
    ("email", "E-mail address"),
    ("user", "User"),
    ("webhook", "Webhook URL"),
];

/// The event only admins may subscribe to.
pub const ADMIN_EVENT: &str = "slave_offline";

/// The events the form offers to `admin` (or not), in the order a build's ending picks them.
pub fn offered_events(admin: bool) -> Vec<&'static str> {
    EVENTS
        .iter()
        .copied()
        .filter(|e| admin || *e != ADMIN_EVENT)
        .collect()
}

/// What the form's check boxes start with: every build event (not `slave_offline`).
pub fn default_events() -> BTreeSet<String> {
    EVENTS
        .iter()
        .filter(|e| **e != ADMIN_EVENT)
        .map(|e| e.to_string())
        .collect()
}

pub fn default_triggers() -> BTreeSet<String> {
    TRIGGERS.iter().map(|t| t.to_string()).collect()
}

fn refused(field: &str, message: &str) -> ApiErr {
    ApiErr {
        status: 400,
        message: message.to_string(),
        field: Some(field.to_string()),
    }
}

/// The `POST …/subscriptions` body of the form: `kind` (one of [`KINDS`]), what was typed for
/// it (`secret` only counts for a webhook) and the boxes ticked (sent in the order of
/// `EVENTS` / `TRIGGERS`). What cannot be right is refused here, at its field.
pub fn new_subscription(
    kind: &str,
    recipient: &str,
    secret: &str,
    events: &BTreeSet<String>,
    triggers: &BTreeSet<String>,
) -> Result<NewSubscription, ApiErr> {
    let recipient = recipient.trim().to_string();
    let mut body = NewSubscription::default();
    match kind {
        "email" if recipient.is_empty() => {
            return Err(refused("email", "enter the e-mail address to send to"))
        }
        "email" => body.email = Some(recipient),
        "user" if recipient.is_empty() => {
            return Err(refused("user", "enter the user name of the person to tell"))
        }
        "user" => body.user = Some(recipient),
        "webhook" if recipient.is_empty() => {
            return Err(refused("webhook", "enter the URL the webhook is posted to"))
        }
        "webhook" if secret.is_empty() => {
            return Err(refused(
                "secret",
                "enter a secret: the receiver checks each request's signature with it",
            ))
        }
        "webhook" => {
            body.webhook = Some(recipient);
            body.secret = Some(secret.to_string());
        }
        other => {
            return Err(refused(
                "kind",
                &format!("'{other}' is no kind of recipient"),
            ))
        }
    }
    let events: Vec<String> = EVENTS
        .iter()
        .filter(|e| events.contains(**e))
        .map(|e| e.to_string())
        .collect();
    if events.is_empty() {
        return Err(refused("events", "choose at least one event"));
    }
    let triggers: Vec<String> = TRIGGERS
        .iter()
        .filter(|t| triggers.contains(**t))
        .map(|t| t.to_string())
        .collect();
    if triggers.is_empty() {
        return Err(refused("triggers", "choose at least one trigger"));
    }
    body.events = Some(events);
    body.triggers = Some(triggers);
    Ok(body)
}

/// Who a subscription reaches: (what kind of recipient, the address, user or URL).
pub fn recipient(s: &Subscription) -> (&'static str, String) {
    if let Some(e) = &s.email {
        ("e-mail", e.clone())
    } else if let Some(u) = &s.user {
        ("user", u.clone())
    } else if let Some(w) = &s.webhook {
        ("webhook", w.clone())
    } else {
        ("unknown", String::new())
    }
}

/// A heading of level `level` (2–6), so the component fits under the page's own headings.
pub fn heading(level: u8, id: &str, text: &str) -> Html {
    let tag = format!("h{}", level.clamp(2, 6));
    html! { <@{tag} id={id.to_string()}>{text.to_string()}</@> }
}

/// The fields the form shows an error at (anything else is shown under the form).
const FIELDS: [&str; 6] = ["email", "user", "webhook", "secret", "events", "triggers"];

#[derive(Properties, PartialEq)]
pub struct Props {
    /// `/api/projects/{name}` or `/api/teams/{name}` (path segments already encoded).
    pub base: AttrValue,
    /// Admins may subscribe to `slave_offline` too.
    pub admin: bool,
    /// The level of the section's heading ("Subscriptions"); the form's is one more.
    #[prop_or(2)]
    pub level: u8,
}

#[function_component(Subscriptions)]
pub fn subscriptions(p: &Props) -> Html {
    let list = use_state(|| Loaded::<Vec<Subscription>>::Loading);
    let list_err = use_state(|| None::<String>);
    let open = use_state(BTreeSet::<i64>::new);
    let path = format!("{}/subscriptions", p.base);
    {
        let (list, path) = (list.clone(), path.clone());
        use_effect_with(p.base.clone(), move |_| crate::pages::load(path, list));
    }
    let remove = |s: &Subscription| {
        let (list, list_err, path, id) = (list.clone(), list_err.clone(), path.clone(), s.id);
        let (kind, who) = recipient(s);
        let question = format!("Stop telling {kind} {who} (subscription {id})?");
        Callback::from(move |_: MouseEvent| {
            if !crate::pages::confirm(&question) {
                return;
            }
            let (list, list_err, path) = (list.clone(), list_err.clone(), path.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::delete(&format!("{path}/{id}")).await {
                    Ok(()) => {
                        list_err.set(None);
                        crate::pages::load(path, list);
                    }
                    Err(e) => list_err.set(Some(e.message)),
                }
            });
        })
    };
    let toggle = |id: i64| {
        let open = open.clone();
        Callback::from(move |_: MouseEvent| {
            let mut o = (*open).clone();
            if !o.remove(&id) {
                o.insert(id);
            }
            open.set(o);
        })
    };
    let added = {
        let (list, path) = (list.clone(), path.clone());
        Callback::from(move |_: Subscription| crate::pages::load(path.clone(), list.clone()))
    };
    let level = p.level;
    html! {
        <section id="subscriptions" aria-labelledby="subscriptions-title">
            { heading(level, "subscriptions-title", "Subscriptions") }
            { error_box(&list_err) }
            { loading_or_error(&*list) }
            if let Loaded::Ok(subs) = &*list {
                if subs.is_empty() {
                    <p class="muted" id="no-subscription">{"Nobody is told about these builds yet."}</p>
                } else {
                    <table id="subscription-list">
                        <thead><tr><th>{"Recipient"}</th><th>{"Events"}</th><th>{"Triggers"}</th>
                            <th>{"Added by"}</th><th>{"Actions"}</th></tr></thead>
                        <tbody>
                        { for subs.iter().map(|s| {
                            let (kind, who) = recipient(s);
                            let is_open = open.contains(&s.id);
                            let panel = format!("deliveries-{}", s.id);
                            html! {
                                <>
                                <tr data-subscription={s.id.to_string()}>
                                    <td class="wrap"><span class="muted">{format!("{kind} ")}</span>
                                        <span class="mono recipient">{who.clone()}</span></td>
                                    <td class="events">{s.events.join(", ")}</td>
                                    <td class="triggers">{s.triggers.join(", ")}</td>
                                    <td>{s.created_by.clone().unwrap_or_default()}</td>
                                    <td class="row-actions">
                                        <button type="button" class="secondary deliveries-toggle"
                                            aria-expanded={is_open.to_string()} aria-controls={panel.clone()}
                                            aria-label={format!("Deliveries to {who}")}
                                            onclick={toggle(s.id)}>{"Deliveries"}</button>
                                        <button type="button" class="danger" onclick={remove(s)}
                                            aria-label={format!("Delete the subscription of {who}")}>{"Delete"}</button>
                                    </td>
                                </tr>
                                if is_open {
                                    <tr id={panel} class="deliveries-row">
                                        <td colspan="5">
                                            <Deliveries path={format!("{path}/{}/deliveries", s.id)}
                                                recipient={who.clone()} redeliver=true />
                                        </td>
                                    </tr>
                                }
                                </>
                            }
                        }) }
                        </tbody>
                    </table>
                }
            }
            <AddSubscription path={path.clone()} admin={p.admin} level={level + 1} on_added={added} />
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct AddProps {
    path: String,
    admin: bool,
    level: u8,
    on_added: Callback<Subscription>,
}

/// The add form: the kind of recipient, what identifies it, the events and the triggers.
#[function_component(AddSubscription)]
fn add_subscription(p: &AddProps) -> Html {
    let kind = use_state(|| "email");
    let events = use_state(default_events);
    let triggers = use_state(default_triggers);
    let (who, secret) = (use_node_ref(), use_node_ref());
    let err = use_state(|| None::<ApiErr>);
    let busy = use_state(|| false);
    let done = use_state(|| None::<String>);
    let choose = |k: &'static str| {
        let (kind, err) = (kind.clone(), err.clone());
        Callback::from(move |_: Event| {
            kind.set(k);
            err.set(None);
        })
    };
    let tick = |set: &UseStateHandle<BTreeSet<String>>, v: &'static str| {
        let set = set.clone();
        Callback::from(move |e: Event| {
            let on = e
                .target_dyn_into::<web_sys::HtmlInputElement>()
                .is_some_and(|i| i.checked());
            let mut s = (*set).clone();
            if on {
                s.insert(v.to_string());
            } else {
                s.remove(v);
            }
            set.set(s);
        })
    };
    let onsubmit = {
        let (kind, events, triggers, who, secret, err, busy, done) = (
            kind.clone(),
            events.clone(),
            triggers.clone(),
            who.clone(),
            secret.clone(),
            err.clone(),
            busy.clone(),
            done.clone(),
        );
        let (path, on_added) = (p.path.clone(), p.on_added.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            done.set(None);
            let body = match new_subscription(
                *kind,
                &crate::pages::input_value(&who),
                &crate::pages::input_value(&secret),
                &events,
                &triggers,
            ) {
                Ok(b) => b,
                Err(e) => {
                    err.set(Some(e));
                    return;
                }
            };
            let (path, on_added, err, busy, done, who, secret) = (
                path.clone(),
                on_added.clone(),
                err.clone(),
                busy.clone(),
                done.clone(),
                who.clone(),
                secret.clone(),
            );
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                let r = api::post::<_, Subscription>(&path, &body).await;
                busy.set(false);
                match r {
                    Ok(s) => {
                        err.set(None);
                        for r in [&who, &secret] {
                            if let Some(i) = r.cast::<web_sys::HtmlInputElement>() {
                                i.set_value("");
                            }
                        }
                        let (k, w) = recipient(&s);
                        done.set(Some(format!("Added: {k} {w}.")));
                        on_added.emit(s);
                    }
                    Err(e) => err.set(Some(e)),
                }
            });
        })
    };
    let general = match &*err {
        Some(e) if !FIELDS.contains(&e.field.as_deref().unwrap_or("")) => Some(e.message.clone()),
        _ => None,
    };
    let k = *kind;
    let (label, input_type, placeholder) = match k {
        "user" => ("User name", "text", "alice"),
        "webhook" => ("Webhook URL", "url", "https://ci.example.org/hook"),
        _ => ("E-mail address", "email", "list@example.org"),
    };
    html! {
        <>
        { heading(p.level, "add-subscription-title", "Add a subscription") }
        <form {onsubmit} class="form" novalidate=true id="add-subscription" aria-labelledby="add-subscription-title">
            <fieldset class="choices" id="sub-kind">
                <legend>{"Recipient"}</legend>
                { for KINDS.iter().map(|(v, l)| html! {
                    <label class="check">
                        <input type="radio" name="sub-kind" id={format!("sub-kind-{v}")} value={*v}
                            checked={k == *v} onchange={choose(v)} />
                        {format!(" {l}")}
                    </label>
                }) }
            </fieldset>
            <label for={format!("sub-{k}")}>{label}</label>
            <input id={format!("sub-{k}")} key={k} name={k} ref={who.clone()} type={input_type}
                placeholder={placeholder} autocapitalize="none" spellcheck="false"
                aria-describedby={format!("sub-{k}-error")} aria-invalid={invalid(&err, k)} />
            { field_error_id(&err, "sub-", k) }
            if k == "webhook" {
                <label for="sub-secret">{"Secret"}</label>
                <input id="sub-secret" name="secret" ref={secret.clone()} type="password" autocomplete="off"
                    aria-describedby="sub-secret-hint sub-secret-error" aria-invalid={invalid(&err, "secret")} />
                <span class="hint muted" id="sub-secret-hint">{"Each request is signed with it (X-Kiln-Signature); it is not shown again."}</span>
                { field_error_id(&err, "sub-", "secret") }
            }
            <fieldset class="choices" id="sub-events">
                <legend>{"Events"}</legend>
                { for offered_events(p.admin).into_iter().map(|ev| html! {
                    <label class="check">
                        <input type="checkbox" id={format!("sub-event-{ev}")} name="events" value={ev}
                            checked={events.contains(ev)} onchange={tick(&events, ev)}
                            aria-invalid={invalid(&err, "events")} aria-describedby="sub-events-error" />
                        {format!(" {ev}")}
                    </label>
                }) }
                { field_error_id(&err, "sub-", "events") }
            </fieldset>
            <fieldset class="choices" id="sub-triggers">
                <legend>{"Builds that count (triggers)"}</legend>
                { for TRIGGERS.iter().map(|t| html! {
                    <label class="check">
                        <input type="checkbox" id={format!("sub-trigger-{t}")} name="triggers" value={*t}
                            checked={triggers.contains(*t)} onchange={tick(&triggers, t)}
                            aria-invalid={invalid(&err, "triggers")} aria-describedby="sub-triggers-error" />
                        {format!(" {t}")}
                    </label>
                }) }
                { field_error_id(&err, "sub-", "triggers") }
            </fieldset>
            <button type="submit" id="add-subscription-submit" disabled={*busy}>{"Add subscription"}</button>
            if let Some(d) = &*done { <p class="muted" role="status" id="subscription-added">{d}</p> }
            { error_box(&general) }
        </form>
        </>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_form_sends_one_recipient_with_its_events_and_triggers() {
        let b = new_subscription(
            "email",
            " board-team@example.org ",
            "ignored",
            &set(&["failed"]),
            &default_triggers(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"email": "board-team@example.org", "events": ["failed"],
                               "triggers": ["schedule", "manual", "release"]})
        );
        let b = new_subscription(
            "webhook",
            "http://127.0.0.1:9/hook",
            "s3cret",
            &set(&["release"]),
            &set(&["release", "schedule"]),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::json!({"webhook": "http://127.0.0.1:9/hook", "secret": "s3cret",
                               "events": ["release"], "triggers": ["schedule", "release"]})
        );
        let b =
            new_subscription("user", "ann", "", &default_events(), &default_triggers()).unwrap();
        assert_eq!(b.user.as_deref(), Some("ann"));
        assert_eq!(
            b.events.unwrap(),
            vec!["release", "fixed", "succeeded", "failed", "lost"]
        );
    }

    #[test]
    fn what_cannot_be_right_is_refused_at_its_field() {
        let ev = default_events();
        let tr = default_triggers();
        let field = |r: Result<NewSubscription, ApiErr>| r.unwrap_err().field.unwrap();
        assert_eq!(field(new_subscription("email", " ", "", &ev, &tr)), "email");
        assert_eq!(field(new_subscription("user", "", "", &ev, &tr)), "user");
        assert_eq!(
            field(new_subscription("webhook", "", "x", &ev, &tr)),
            "webhook"
        );
        assert_eq!(
            field(new_subscription("webhook", "https://h/", "", &ev, &tr)),
            "secret"
        );
        assert_eq!(
            field(new_subscription("email", "a@b", "", &set(&[]), &tr)),
            "events"
        );
        assert_eq!(
            field(new_subscription("email", "a@b", "", &ev, &set(&[]))),
            "triggers"
        );
    }

    #[test]
    fn only_admins_are_offered_slave_offline() {
        assert!(offered_events(true).contains(&"slave_offline"));
        assert!(!offered_events(false).contains(&"slave_offline"));
        assert!(!default_events().contains("slave_offline"));
    }
}
