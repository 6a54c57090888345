//! The deliveries of one subscription (`GET …/subscriptions/{id}/deliveries`, newest first):
//! when, which event, which build, how it went (state, attempts, the last response code and
//! error), and a Redeliver button (`POST /api/deliveries/{id}/redeliver`) that sends the same
//! message again as a new delivery.

use crate::api;
use crate::components::when;
use crate::pages::{error_box, loading_or_error, Loaded};
use crate::routes::Route;
use kiln_shared::notify::Delivery;
use yew::prelude::*;
use yew_router::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    /// `…/subscriptions/{id}/deliveries`.
    pub path: AttrValue,
    /// Who the subscription reaches (the table's name for screen readers).
    pub recipient: AttrValue,
    /// Whether the person may send a delivery again (maintainers).
    #[prop_or_default]
    pub redeliver: bool,
}

/// The CSS class of a delivery's state badge (unknown states look neutral).
pub fn state_class(state: &str) -> &'static str {
    match state {
        "delivered" => "badge delivered",
        "failed" => "badge failed",
        _ => "badge pending",
    }
}

#[function_component(Deliveries)]
pub fn deliveries(p: &Props) -> Html {
    let list = use_state(|| Loaded::<Vec<Delivery>>::Loading);
    let err = use_state(|| None::<String>);
    let note = use_state(|| None::<String>);
    {
        let (list, path) = (list.clone(), p.path.to_string());
        use_effect_with(p.path.clone(), move |_| crate::pages::load(path, list));
    }
    let reload = {
        let (list, path) = (list.clone(), p.path.to_string());
        Callback::from(move |_: MouseEvent| crate::pages::load(path.clone(), list.clone()))
    };
    let redeliver = |id: i64| {
        let (list, err, note, path) = (list.clone(), err.clone(), note.clone(), p.path.to_string());
        Callback::from(move |_: MouseEvent| {
            let (list, err, note, path) = (list.clone(), err.clone(), note.clone(), path.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::post::<_, Delivery>(
                    &format!("/api/deliveries/{id}/redeliver"),
                    &serde_json::json!({}),
                )
                .await
                {
                    Ok(d) => {
                        err.set(None);
                        note.set(Some(format!(
                            "Delivery {id} is sent again as delivery {}.",
                            d.id
                        )));
                        crate::pages::load(path, list);
                    }
                    Err(e) => {
                        note.set(None);
                        err.set(Some(e.message));
                    }
                }
            });
        })
    };
    html! {
        <div class="deliveries">
            { loading_or_error(&*list) }
            { error_box(&err) }
            if let Some(n) = &*note { <p class="muted" role="status">{n}</p> }
            if let Loaded::Ok(ds) = &*list {
                if ds.is_empty() {
                    <p class="muted">{"Nothing was sent to this recipient yet."}</p>
                } else {
                    <table class="delivery-list" aria-label={format!("Deliveries to {}", p.recipient)}>
                        <thead><tr><th>{"Time"}</th><th>{"Event"}</th><th>{"Build"}</th><th>{"State"}</th>
                            <th>{"Attempts"}</th><th>{"Response"}</th><th>{"Last error"}</th>
                            if p.redeliver { <th>{"Actions"}</th> }</tr></thead>
                        <tbody>
                        { for ds.iter().map(|d| html! {
                            <tr key={d.id} data-delivery={d.id.to_string()} data-state={d.state.clone()}>
                                <td title={d.last_attempt_at.map(|t| format!("last attempt {}", when(Some(t))))}>
                                    {when(Some(d.created_at))}</td>
                                <td>{&d.event}
                                    if d.redelivery_of.is_some() { <span class="muted">{" (again)"}</span> }</td>
                                <td>{ match (&d.build, &d.slave) {
                                    (Some(b), _) => html! { <Link<Route> to={Route::Build { id: b.0 }}>{format!("#{b}")}</Link<Route>> },
                                    (None, Some(s)) => html! { <span>{format!("slave {s}")}</span> },
                                    _ => html! {},
                                } }</td>
                                <td><span class={state_class(&d.state)}>{&d.state}</span></td>
                                <td>{d.attempts}</td>
                                <td>{d.response_code.map(|c| c.to_string()).unwrap_or_default()}</td>
                                <td class="wrap">{d.last_error.clone().unwrap_or_default()}</td>
                                if p.redeliver {
                                    <td class="row-actions">
                                        <button type="button" class="secondary" onclick={redeliver(d.id)}
                                            aria-label={format!("Redeliver delivery {}", d.id)}>{"Redeliver"}</button>
                                    </td>
                                }
                            </tr>
                        }) }
                        </tbody>
                    </table>
                }
            }
            <button type="button" class="secondary" onclick={reload}
                aria-label={format!("Reload the deliveries to {}", p.recipient)}>{"Reload"}</button>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_badge() {
        assert_eq!(state_class("delivered"), "badge delivered");
        assert_eq!(state_class("failed"), "badge failed");
        assert_eq!(state_class("pending"), "badge pending");
        assert_eq!(state_class("whatever"), "badge pending");
    }
}
