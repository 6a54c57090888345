//! What a slave session knows, without asking the database, about the builds its slave holds.
//!
//! Every frame about a build (a log, a progress report, the start, the end) is checked against
//! the database: the slave must hold the build. A no-op build sends a dozen such frames, and the
//! answer changes only when the build ends or is taken from the slave. So a session remembers
//! "holds build B" with the [`Hub::holdings_version`] of its slave read before it asked; the
//! memory counts while that version is unchanged and for at most [`HOLDINGS_TTL`]. The version
//! moves when one of the slave's builds ends or is queued again on this master
//! ([`Hub::ended_on`]), when another master says one ended or sends the slave a cancel (a
//! build queued again there sends one too), and for every slave when this master may have
//! missed what the others said (a NOTIFY gap, an event too large to carry, which comes as
//! `Resync`). The time limit bounds what a lost notification can cost.
//!
//! [`Hub::holdings_version`]: crate::hub::Hub::holdings_version
//! [`Hub::ended_on`]: crate::hub::Hub::ended_on

use kiln_shared::BuildId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long "holds" is believed without asking again, whatever the version.
pub const HOLDINGS_TTL: Duration = Duration::from_secs(1);
/// Most builds remembered per session (more than a slave's capacity of 64).
const MAX_REMEMBERED: usize = 256;

#[derive(Default)]
pub struct Holdings {
    held: HashMap<BuildId, (u64, Instant)>,
}

impl Holdings {
    /// Whether the session may take "holds `build`" as known, at `version`.
    pub fn knows(&self, build: BuildId, version: u64, now: Instant) -> bool {
        self.held.get(&build).is_some_and(|&(v, at)| {
            v == version && now.saturating_duration_since(at) < HOLDINGS_TTL
        })
    }

    /// The database said the slave holds `build`; `version` was read before asking.
    pub fn remember(&mut self, build: BuildId, version: u64, now: Instant) {
        if self.held.len() >= MAX_REMEMBERED && !self.held.contains_key(&build) {
            self.held.clear();
        }
        self.held.insert(build, (version, now));
    }

    /// The slave does not hold `build` (it ended, or never was its).
    pub fn forget(&mut self, build: BuildId) {
        self.held.remove(&build);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_is_believed_only_at_the_same_version_and_for_a_short_time() {
        let t = Instant::now();
        let (a, b) = (BuildId(1), BuildId(2));
        let mut h = Holdings::default();
        assert!(
            !h.knows(a, 0, t),
            "nothing known before the database said so"
        );
        h.remember(a, 7, t);
        assert!(h.knows(a, 7, t + Duration::from_millis(500)));
        assert!(!h.knows(b, 7, t), "one build's answer is not another's");
        assert!(
            !h.knows(a, 8, t),
            "a build of the slave ended since: ask again"
        );
        assert!(!h.knows(a, 7, t + HOLDINGS_TTL), "too old: ask again");
        h.forget(a);
        assert!(!h.knows(a, 7, t));
    }

    #[test]
    fn it_stays_small() {
        let t = Instant::now();
        let mut h = Holdings::default();
        for i in 0..(MAX_REMEMBERED as i64 * 3) {
            h.remember(BuildId(i), 0, t);
        }
        assert!(h.held.len() <= MAX_REMEMBERED);
        assert!(h.knows(BuildId(MAX_REMEMBERED as i64 * 3 - 1), 0, t));
    }
}
