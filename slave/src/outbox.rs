//! What each build held by this slave still owes the master, kept until acknowledged.
//!
//! Jobs push log lines, their start and their outcome here; the connection drains it into frames.
//! Nothing is dropped until the master acknowledges it, so after a reconnect the connection just
//! rewinds `sent` to `acked` and sends again; the master skips what it already has.

use kiln_shared::frames::{HeldBuild, HeldPhase, Outcome, SlaveFrame};
use kiln_shared::BuildId;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest piece a single stored log line may be; longer output is split, never cut.
pub const MAX_LINE: usize = 16 * 1024;

pub struct Slot {
    pub phase: HeldPhase,
    /// The master has stored every line before this.
    acked: u64,
    /// Lines `acked..total`.
    pending: VecDeque<String>,
    total: u64,
    /// Lines before this were sent on the current connection.
    sent: u64,
    commit: Option<String>,
    started_sent: bool,
    outcome: Option<Outcome>,
    finished_sent: bool,
    /// Stops the build's processes.
    pub cancel: CancellationToken,
    /// Why it was cancelled, when the master asked.
    pub cancel_reason: Option<String>,
    /// The master no longer wants to hear about this build.
    pub forgotten: bool,
    /// Latest progress not yet sent (only the newest matters).
    progress: Option<(String, Option<u8>)>,
}

#[derive(Default)]
struct Inner {
    slots: BTreeMap<BuildId, Slot>,
}

#[derive(Clone, Default)]
pub struct Outbox {
    inner: Arc<Mutex<Inner>>,
    pub changed: Arc<Notify>,
}

impl Outbox {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("outbox poisoned"))
    }

    /// Takes a build on; false if it is already held.
    pub fn add(&self, build: BuildId) -> Option<CancellationToken> {
        self.with(|i| {
            if i.slots.contains_key(&build) {
                return None;
            }
            let cancel = CancellationToken::new();
            i.slots.insert(
                build,
                Slot {
                    phase: HeldPhase::Fetching,
                    acked: 0,
                    pending: VecDeque::new(),
                    total: 0,
                    sent: 0,
                    commit: None,
                    started_sent: false,
                    outcome: None,
                    finished_sent: false,
                    cancel: cancel.clone(),
                    cancel_reason: None,
                    forgotten: false,
                    progress: None,
                },
            );
            Some(cancel)
        })
    }

    pub fn count(&self) -> usize {
        self.with(|i| i.slots.len())
    }

    pub fn line(&self, build: BuildId, line: &str) {
        let mut rest = line.trim_end_matches(['\n', '\r']);
        self.with(|i| {
            if let Some(s) = i.slots.get_mut(&build) {
                loop {
                    let mut cut = rest.len().min(MAX_LINE);
                    while !rest.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    s.pending.push_back(rest[..cut].to_string());
                    s.total += 1;
                    rest = &rest[cut..];
                    if rest.is_empty() {
                        break;
                    }
                }
            }
        });
        self.changed.notify_one();
    }

    pub fn set_phase(&self, build: BuildId, phase: HeldPhase) {
        self.with(|i| {
            if let Some(s) = i.slots.get_mut(&build) {
                s.phase = phase;
            }
        });
    }

    /// Reports what the build is doing now; superseded by the next report if not sent yet.
    pub fn progress(&self, build: BuildId, phase: &str, percent: Option<u8>) {
        self.with(|i| {
            if let Some(s) = i.slots.get_mut(&build) {
                s.progress = Some((phase.to_string(), percent));
            }
        });
        self.changed.notify_one();
    }

    pub fn started(&self, build: BuildId, commit: String) {
        self.with(|i| {
            if let Some(s) = i.slots.get_mut(&build) {
                s.commit = Some(commit);
                s.phase = HeldPhase::Running;
            }
        });
        self.changed.notify_one();
    }

    pub fn finished(&self, build: BuildId, outcome: Outcome) {
        self.with(|i| {
            if let Some(s) = i.slots.get_mut(&build) {
                s.outcome = Some(outcome);
                s.phase = HeldPhase::Ended;
                if s.forgotten {
                    i.slots.remove(&build);
                }
            }
        });
        self.changed.notify_one();
    }

    pub fn cancel_reason(&self, build: BuildId) -> Option<String> {
        self.with(|i| i.slots.get(&build).and_then(|s| s.cancel_reason.clone()))
    }

    /// The master asked to stop the build and report it.
    pub fn cancel(&self, build: BuildId, reason: String) {
        self.with(|i| {
            if let Some(s) = i.slots.get_mut(&build) {
                s.cancel_reason = Some(reason);
                s.cancel.cancel();
            }
        });
    }

    /// The master is done with the build: stop it and report nothing more.
    pub fn forget(&self, build: BuildId) {
        self.with(|i| {
            let ended = match i.slots.get_mut(&build) {
                Some(s) => {
                    s.forgotten = true;
                    s.cancel_reason
                        .get_or_insert_with(|| "the master forgot it".into());
                    s.cancel.cancel();
                    s.outcome.is_some()
                }
                None => false,
            };
            if ended {
                i.slots.remove(&build);
            }
        });
    }

    pub fn ack_log(&self, build: BuildId, next_seq: u64) {
        self.with(|i| {
            if let Some(s) = i.slots.get_mut(&build) {
                while s.acked < next_seq.min(s.total) {
                    s.pending.pop_front();
                    s.acked += 1;
                }
                s.sent = s.sent.max(s.acked);
            }
        });
    }

    pub fn ack_finished(&self, build: BuildId) {
        self.with(|i| {
            if i.slots.get(&build).is_some_and(|s| s.outcome.is_some()) {
                i.slots.remove(&build);
            }
        });
    }

    /// A new connection: everything unacknowledged must be sent again.
    pub fn rewind(&self) {
        self.with(|i| {
            for s in i.slots.values_mut() {
                s.sent = s.acked;
                s.started_sent = false;
                s.finished_sent = false;
            }
        });
    }

    pub fn held(&self) -> Vec<HeldBuild> {
        self.with(|i| {
            i.slots
                .iter()
                .filter(|(_, s)| !s.forgotten)
                .map(|(b, s)| HeldBuild {
                    build: *b,
                    phase: s.phase,
                    log_lines: s.total,
                })
                .collect()
        })
    }

    /// Frames not sent yet on this connection, log text split at `chunk_bytes`.
    pub fn drain(&self, chunk_bytes: usize) -> Vec<SlaveFrame> {
        self.with(|i| {
            let mut out = vec![];
            for (&build, s) in i.slots.iter_mut().filter(|(_, s)| !s.forgotten) {
                if let (Some(commit), false) = (&s.commit, s.started_sent) {
                    out.push(SlaveFrame::Started {
                        build,
                        commit: commit.clone(),
                    });
                    s.started_sent = true;
                }
                if let Some((phase, percent)) = s.progress.take() {
                    out.push(SlaveFrame::Progress {
                        build,
                        phase,
                        percent,
                    });
                }
                while s.sent < s.total {
                    let first = s.sent;
                    let mut lines = vec![];
                    let mut bytes = 0;
                    let start = (s.sent - s.acked) as usize;
                    for l in s.pending.iter().skip(start) {
                        if !lines.is_empty() && bytes + l.len() > chunk_bytes {
                            break;
                        }
                        bytes += l.len() + 1;
                        lines.push(l.clone());
                    }
                    s.sent += lines.len() as u64;
                    out.push(SlaveFrame::Log {
                        build,
                        first_seq: first,
                        lines,
                    });
                }
                if let (Some(outcome), false) = (&s.outcome, s.finished_sent) {
                    out.push(SlaveFrame::Finished {
                        build,
                        outcome: outcome.clone(),
                        log_lines: s.total,
                    });
                    s.finished_sent = true;
                }
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_from_ack_after_rewind() {
        let o = Outbox::default();
        let b = BuildId(1);
        o.add(b).unwrap();
        for n in 0..5 {
            o.line(b, &format!("l{n}"));
        }
        let f = o.drain(1 << 20);
        assert!(matches!(&f[0], SlaveFrame::Log { first_seq: 0, lines, .. } if lines.len() == 5));
        assert!(
            o.drain(1 << 20).is_empty(),
            "nothing twice on one connection"
        );
        o.ack_log(b, 3);
        o.rewind();
        let f = o.drain(1 << 20);
        assert!(
            matches!(&f[0], SlaveFrame::Log { first_seq: 3, lines, .. } if lines == &["l3", "l4"])
        );
    }

    #[test]
    fn finished_follows_logs_and_waits_for_ack() {
        let o = Outbox::default();
        let b = BuildId(2);
        o.add(b).unwrap();
        o.started(b, "abc".into());
        o.line(b, "x");
        o.finished(b, Outcome::Succeeded);
        let f = o.drain(1024);
        assert!(matches!(f[0], SlaveFrame::Started { .. }));
        assert!(matches!(f[1], SlaveFrame::Log { .. }));
        assert!(matches!(f[2], SlaveFrame::Finished { log_lines: 1, .. }));
        assert_eq!(o.count(), 1);
        o.ack_finished(b);
        assert_eq!(o.count(), 0);
    }

    #[test]
    fn long_lines_are_split_not_cut() {
        let o = Outbox::default();
        let b = BuildId(3);
        o.add(b).unwrap();
        o.line(b, &"é".repeat(MAX_LINE));
        let f = o.drain(1 << 30);
        let SlaveFrame::Log { lines, .. } = &f[0] else {
            panic!()
        };
        assert_eq!(lines.concat(), "é".repeat(MAX_LINE));
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
    }

    #[test]
    fn chunks_respect_size() {
        let o = Outbox::default();
        let b = BuildId(4);
        o.add(b).unwrap();
        for _ in 0..100 {
            o.line(b, &"x".repeat(99));
        }
        let f = o.drain(1000);
        assert_eq!(f.len(), 10);
    }
}
