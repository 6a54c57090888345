//! The build state machine. Every change of state in the master goes through
//! [`BuildState::can_become`], and is recorded with a time and a reason.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    /// Waiting for a slave.
    Queued,
    /// Claimed for a slave; the slave has not yet reported that it started.
    Dispatched,
    /// The slave fetched the branch and is running the backend.
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// The slave stopped answering while it held the build.
    Lost,
}

impl BuildState {
    pub const ALL: [BuildState; 7] = [
        BuildState::Queued,
        BuildState::Dispatched,
        BuildState::Running,
        BuildState::Succeeded,
        BuildState::Failed,
        BuildState::Cancelled,
        BuildState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Dispatched => "dispatched",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Cancelled => "cancelled",
            BuildState::Lost => "lost",
        }
    }

    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BuildState::Succeeded | BuildState::Failed | BuildState::Cancelled | BuildState::Lost
        )
    }

    /// Held by a slave (dispatched or running).
    pub fn is_active(self) -> bool {
        matches!(self, BuildState::Dispatched | BuildState::Running)
    }

    /// The allowed arrows of the state machine.
    pub fn can_become(self, next: BuildState) -> bool {
        use BuildState::*;
        match (self, next) {
            (Queued, Dispatched | Cancelled | Failed) => true,
            // A dispatch that could not be delivered goes back to the queue.
            (Dispatched, Queued | Running) => true,
            (Dispatched | Running, Succeeded | Failed | Cancelled | Lost) => true,
            _ => false,
        }
    }
}

impl fmt::Display for BuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown build state '{0}' (known: queued, dispatched, running, succeeded, failed, cancelled, lost)")]
pub struct UnknownState(pub String);

impl FromStr for BuildState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BuildState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for st in BuildState::ALL {
            assert_eq!(st.as_str().parse::<BuildState>().unwrap(), st);
        }
        assert!("ERROR".parse::<BuildState>().is_err());
    }

    #[test]
    fn terminal_states_never_change() {
        for from in BuildState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in BuildState::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn queued_cannot_jump_to_success() {
        assert!(!BuildState::Queued.can_become(BuildState::Succeeded));
        assert!(BuildState::Running.can_become(BuildState::Lost));
    }
}
