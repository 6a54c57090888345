//! Notifications on a project's page: maintainers get the "Notifications" part of its settings
//! (who is told what, each recipient's deliveries, the templates); everyone else who sees the
//! project a "Notify me" switch that subscribes or unsubscribes themselves
//! (`{"user": "<me>"}`: mail to their account's address).

use crate::api::{self, seg};
use crate::components::subscriptions::Subscriptions;
use crate::components::templates_editor::Templates;
use kiln_shared::notify::{NewSubscription, Subscription};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub project: AttrValue,
    /// Site admins may subscribe to `slave_offline` too.
    pub admin: bool,
}

/// The maintainers' part: subscriptions and templates, folded like the settings.
#[function_component(ProjectNotifications)]
pub fn project_notifications(p: &Props) -> Html {
    let base = format!("/api/projects/{}", seg(&p.project));
    // Loaded the first time it is opened (most visits never open it).
    let opened = use_state(|| false);
    let ontoggle = {
        let opened = opened.clone();
        Callback::from(move |e: Event| {
            if let Some(d) = e.target_dyn_into::<web_sys::Element>() {
                if d.has_attribute("open") {
                    opened.set(true);
                }
            }
        })
    };
    html! {
        <details class="notify-settings" id="notifications" {ontoggle}>
            <summary>{"Notifications"}</summary>
            if *opened {
                <Subscriptions base={base} admin={p.admin} level={2} />
                <Templates project={p.project.clone()} level={2} />
            }
        </details>
    }
}

/// The subscription of `me` among what the project's subscriptions route shows them.
pub fn mine<'a>(subs: &'a [Subscription], me: &str) -> Option<&'a Subscription> {
    subs.iter().find(|s| s.user.as_deref() == Some(me))
}

#[derive(Properties, PartialEq)]
pub struct NotifyMeProps {
    pub project: AttrValue,
    /// The signed-in person's user name.
    pub username: AttrValue,
}

/// "Notify me": a switch (`aria-pressed`) for the person's own subscription to the project.
#[function_component(NotifyMe)]
pub fn notify_me(p: &NotifyMeProps) -> Html {
    // None: not known yet; Some(None): not subscribed; Some(Some(id)): subscribed.
    let sub = use_state(|| None::<Option<i64>>);
    let err = use_state(|| None::<String>);
    let busy = use_state(|| false);
    let path = format!("/api/projects/{}/subscriptions", seg(&p.project));
    {
        let (sub, err, path, me) = (sub.clone(), err.clone(), path.clone(), p.username.clone());
        use_effect_with(p.project.clone(), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                match api::get::<Vec<Subscription>>(&path).await {
                    Ok(subs) => sub.set(Some(mine(&subs, &me).map(|s| s.id))),
                    Err(e) => err.set(Some(e.message)),
                }
            });
        });
    }
    let onclick = {
        let (sub, err, busy, path, me) = (
            sub.clone(),
            err.clone(),
            busy.clone(),
            path.clone(),
            p.username.clone(),
        );
        Callback::from(move |_: MouseEvent| {
            let Some(now) = *sub else {
                return;
            };
            let (sub, err, busy, path, me) = (
                sub.clone(),
                err.clone(),
                busy.clone(),
                path.clone(),
                me.clone(),
            );
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                let r = match now {
                    Some(id) => api::delete(&format!("{path}/{id}")).await.map(|()| None),
                    None => {
                        let body = NewSubscription {
                            user: Some(me.to_string()),
                            ..Default::default()
                        };
                        api::post::<_, Subscription>(&path, &body)
                            .await
                            .map(|s| Some(s.id))
                    }
                };
                busy.set(false);
                match r {
                    Ok(s) => {
                        err.set(None);
                        sub.set(Some(s));
                    }
                    Err(e) => err.set(Some(e.message)),
                }
            });
        })
    };
    let on = matches!(*sub, Some(Some(_)));
    html! {
        <div class="notify-me">
            <button type="button" id="notify-me" class="secondary" aria-pressed={on.to_string()}
                aria-describedby="notify-me-what" disabled={sub.is_none() || *busy} {onclick}>
                {"Notify me"}
            </button>
            <span class="muted" id="notify-me-what">{ if on {
                "You get a mail when a build of this project ends (to your account's address)."
            } else {
                "Off: press to get a mail when a build of this project ends."
            } }</span>
            { super::error_box(&err) }
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn my_subscription_is_the_one_of_my_user() {
        let s = |id: i64, user: Option<&str>, email: Option<&str>| Subscription {
            id,
            project: Some("board".into()),
            team: None,
            email: email.map(Into::into),
            user: user.map(Into::into),
            webhook: None,
            events: vec!["failed".into()],
            triggers: vec![],
            created_by: None,
            created_at: chrono::Utc::now(),
        };
        let subs = vec![
            s(1, None, Some("ann@example.org")),
            s(2, Some("bob"), None),
            s(3, Some("ann"), None),
        ];
        assert_eq!(mine(&subs, "ann").map(|s| s.id), Some(3));
        assert_eq!(mine(&subs, "carl"), None);
    }
}
