//! A build state as colour *and* text (never colour alone).

use kiln_shared::BuildState;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub state: BuildState,
}

#[function_component(StateBadge)]
pub fn state_badge(p: &Props) -> Html {
    let icon = match p.state {
        BuildState::Queued => "⏳",
        BuildState::Dispatched | BuildState::Running => "▶",
        BuildState::Succeeded => "✔",
        BuildState::Failed => "✘",
        BuildState::Cancelled => "■",
        BuildState::Lost => "?",
    };
    html! {
        <span class={classes!("badge", p.state.as_str())} data-state={p.state.as_str()}>
            <span aria-hidden="true">{icon}{" "}</span>{p.state.as_str()}
        </span>
    }
}
