//! Which events a build's ending fires, most specific first: a recipient subscribed to several
//! of them gets one message, about the first (`docs/notifications.md`, "Events").

use kiln_shared::BuildState;

/// The events fired by a build ending in `state`; `release`: it is a release build;
/// `previous`: the state of the project's ended (succeeded or failed) build before it.
pub fn fired(state: BuildState, release: bool, previous: Option<&str>) -> Vec<&'static str> {
    match state {
        BuildState::Succeeded => {
            let mut e = Vec::with_capacity(3);
            if release {
                e.push("release");
            }
            if previous == Some("failed") {
                e.push("fixed");
            }
            e.push("succeeded");
            e
        }
        BuildState::Failed => vec!["failed"],
        BuildState::Lost => vec!["lost"],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_and_their_events() {
        assert_eq!(fired(BuildState::Succeeded, false, None), ["succeeded"]);
        assert_eq!(
            fired(BuildState::Succeeded, false, Some("failed")),
            ["fixed", "succeeded"]
        );
        assert_eq!(
            fired(BuildState::Succeeded, true, Some("failed")),
            ["release", "fixed", "succeeded"]
        );
        assert_eq!(
            fired(BuildState::Succeeded, false, Some("succeeded")),
            ["succeeded"]
        );
        assert_eq!(fired(BuildState::Failed, true, None), ["failed"]);
        assert_eq!(fired(BuildState::Lost, false, None), ["lost"]);
        assert!(fired(BuildState::Cancelled, false, Some("failed")).is_empty());
    }
}
