//! The live queue: every build and slave this console has heard of, and what each running build
//! is doing now. A pure reducer of `ConsoleEvent`s (events in, state out), so the dashboard, the
//! slaves, project and build pages all read one state, and it is tested natively.

use kiln_shared::api::{Build, Slave};
use kiln_shared::frames::ConsoleEvent;
use kiln_shared::{BuildId, SlaveId};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Queue {
    pub builds: BTreeMap<BuildId, Build>,
    pub slaves: BTreeMap<SlaveId, Slave>,
    /// The last `Progress` of each active build, as shown ("mmdebstrap 40%").
    pub progress: BTreeMap<BuildId, String>,
}

impl Queue {
    /// Applies one event of the queue topic; returns whether the state changed. Events of other
    /// topics change nothing.
    pub fn apply(&mut self, event: ConsoleEvent) -> bool {
        match event {
            ConsoleEvent::Build(build) => self.put_build(build),
            ConsoleEvent::Slave(slave) => {
                self.slaves.insert(slave.id, slave);
                true
            }
            ConsoleEvent::Progress {
                build,
                phase,
                percent,
            } => {
                // A late progress report must not reappear next to an ended or requeued build.
                if self
                    .builds
                    .get(&build)
                    .is_some_and(|b| !b.state.is_active())
                {
                    return false;
                }
                let percent = percent.map(|p| format!(" {p}%")).unwrap_or_default();
                self.progress.insert(build, format!("{phase}{percent}"));
                true
            }
            _ => false,
        }
    }

    /// A build event replaces what was known of that build, with one exception: a terminal
    /// state never changes again, so an ended build is not brought back by an older event that
    /// arrives after a fresh snapshot (the master may deliver events queued before the snapshot
    /// was read after it).
    fn put_build(&mut self, build: Build) -> bool {
        if let Some(known) = self.builds.get(&build.id) {
            if known.state.is_terminal() && !build.state.is_terminal() {
                return false;
            }
        }
        if !build.state.is_active() {
            self.progress.remove(&build.id);
        }
        self.builds.insert(build.id, build);
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use kiln_shared::BuildState;

    pub(crate) fn build(id: i64, state: BuildState) -> Build {
        Build {
            id: BuildId(id),
            project: "board".into(),
            state,
            reason: state.is_terminal().then(|| "because".into()),
            commit: None,
            requested_commit: None,
            release: None,
            trigger: "manual".into(),
            priority: 0,
            waiting_reason: None,
            rebuild_of: None,
            branch_url: "https://git.example.org/board.git".into(),
            branch: "main".into(),
            path: None,
            slave: None,
            retry_of: None,
            log_lines: 0,
            created_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            dispatched_at: None,
            started_at: None,
            finished_at: None,
            release_notes: None,
        }
    }

    pub(crate) fn slave(id: i64, online: bool) -> Slave {
        Slave {
            id: SlaveId(id),
            name: format!("board-{id}"),
            online,
            enabled: true,
            draining: false,
            arch: Some("arm64".into()),
            tags: vec![],
            backends: vec!["script".into()],
            capacity: 1,
            emulates: vec![],
            version: None,
            last_seen: None,
            builds: vec![],
            capabilities: None,
        }
    }

    fn progress(id: i64, phase: &str, percent: Option<u8>) -> ConsoleEvent {
        ConsoleEvent::Progress {
            build: BuildId(id),
            phase: phase.into(),
            percent,
        }
    }

    #[test]
    fn a_build_event_replaces_the_build_by_id() {
        let mut q = Queue::default();
        assert!(q.apply(ConsoleEvent::Build(build(1, BuildState::Queued))));
        assert!(q.apply(ConsoleEvent::Build(build(2, BuildState::Queued))));
        assert!(q.apply(ConsoleEvent::Build(build(1, BuildState::Running))));
        assert_eq!(q.builds.len(), 2);
        assert_eq!(q.builds[&BuildId(1)].state, BuildState::Running);
        assert_eq!(q.builds[&BuildId(2)].state, BuildState::Queued);
    }

    #[test]
    fn a_slave_event_replaces_the_slave_by_id() {
        let mut q = Queue::default();
        q.apply(ConsoleEvent::Slave(slave(7, true)));
        q.apply(ConsoleEvent::Slave(slave(8, true)));
        q.apply(ConsoleEvent::Slave(slave(7, false)));
        assert_eq!(q.slaves.len(), 2);
        assert!(!q.slaves[&SlaveId(7)].online);
        assert!(q.slaves[&SlaveId(8)].online);
    }

    #[test]
    fn progress_shows_for_an_active_build_and_goes_when_it_ends() {
        let mut q = Queue::default();
        q.apply(ConsoleEvent::Build(build(1, BuildState::Running)));
        assert!(q.apply(progress(1, "mmdebstrap", Some(40))));
        assert_eq!(q.progress[&BuildId(1)], "mmdebstrap 40%");
        q.apply(progress(1, "uploading", None));
        assert_eq!(q.progress[&BuildId(1)], "uploading");
        q.apply(ConsoleEvent::Build(build(1, BuildState::Succeeded)));
        assert!(q.progress.is_empty());
        assert!(
            !q.apply(progress(1, "late", Some(99))),
            "a late report after the end is ignored"
        );
        assert!(q.progress.is_empty());
    }

    #[test]
    fn progress_goes_when_a_dispatch_returns_to_the_queue() {
        let mut q = Queue::default();
        q.apply(ConsoleEvent::Build(build(1, BuildState::Dispatched)));
        q.apply(progress(1, "fetching", None));
        q.apply(ConsoleEvent::Build(build(1, BuildState::Queued)));
        assert!(q.progress.is_empty());
    }

    #[test]
    fn progress_of_a_build_not_seen_yet_is_kept() {
        let mut q = Queue::default();
        assert!(q.apply(progress(5, "fetching", None)));
        assert_eq!(q.progress[&BuildId(5)], "fetching");
    }

    #[test]
    fn an_ended_build_is_not_brought_back_by_an_older_event() {
        let mut q = Queue::default();
        q.apply(ConsoleEvent::Build(build(1, BuildState::Cancelled)));
        assert!(!q.apply(ConsoleEvent::Build(build(1, BuildState::Running))));
        assert_eq!(q.builds[&BuildId(1)].state, BuildState::Cancelled);
    }

    #[test]
    fn a_resync_snapshot_replaces_what_changed_while_the_console_lagged() {
        // Before the lag: one build running with progress, one queued, a slave online.
        let mut q = Queue::default();
        q.apply(ConsoleEvent::Build(build(1, BuildState::Running)));
        q.apply(progress(1, "mmdebstrap", Some(10)));
        q.apply(ConsoleEvent::Build(build(2, BuildState::Queued)));
        q.apply(ConsoleEvent::Slave(slave(7, true)));
        // Missed while lagging: 1 succeeded, 2 started, a build 3 was queued, the slave left.
        // The snapshot after the resubscription says so.
        let snapshot = vec![
            ConsoleEvent::Slave(slave(7, false)),
            ConsoleEvent::Build(build(3, BuildState::Queued)),
            ConsoleEvent::Build(build(2, BuildState::Running)),
            ConsoleEvent::Build(build(1, BuildState::Succeeded)),
        ];
        for ev in snapshot {
            q.apply(ev);
        }
        let states: Vec<(i64, BuildState)> = q.builds.values().map(|b| (b.id.0, b.state)).collect();
        assert_eq!(
            states,
            vec![
                (1, BuildState::Succeeded),
                (2, BuildState::Running),
                (3, BuildState::Queued)
            ]
        );
        assert!(q.progress.is_empty(), "the ended build's progress is gone");
        assert!(!q.slaves[&SlaveId(7)].online);
    }

    #[test]
    fn events_of_other_topics_change_nothing() {
        let mut q = Queue::default();
        assert!(!q.apply(ConsoleEvent::LogEnd { build: BuildId(1) }));
        assert!(!q.apply(ConsoleEvent::Resync));
        assert_eq!(q, Queue::default());
    }
}
