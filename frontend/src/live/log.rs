//! One followed build log: its lines in a shared buffer, and whether it has ended. Lines are
//! appended exactly once and in order (see `dedup`), whatever a resubscription resends.

use super::dedup::{self, Chunk};
use kiln_shared::frames::ConsoleEvent;
use std::cell::RefCell;
use std::rc::Rc;

/// A log's lines, shared with the view and appended in place (a 100,000-line log is never
/// copied); equal only to itself.
#[derive(Clone, Debug, Default)]
pub struct LogBuf(pub Rc<RefCell<Vec<String>>>);

impl PartialEq for LogBuf {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// What a page sees of a followed log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveLog {
    pub lines: LogBuf,
    /// Changes whenever lines were appended (a cheap way to say "the buffer changed").
    pub version: u64,
    /// The master said the log is complete.
    pub ended: bool,
}

impl LiveLog {
    /// The sequence number of the first line this console lacks.
    pub fn next_seq(&self) -> u64 {
        self.lines.0.borrow().len() as u64
    }
}

/// What an event did to a followed log.
#[derive(Debug, PartialEq, Eq)]
pub enum LogChange {
    Appended,
    Ended,
    Unchanged,
    /// Lines are missing: ask for the log again from this line.
    AskFrom(u64),
}

/// A followed log and the line it was last asked for from, so a gap is asked about once.
#[derive(Debug, Default)]
pub struct FollowedLog {
    pub view: LiveLog,
    asked_from: Option<u64>,
}

impl FollowedLog {
    /// Records that the log was (again) asked for from its next line: gaps seen before the
    /// answer arrives are that answer's business and are not asked about again.
    pub fn asked(&mut self) -> u64 {
        let from = self.view.next_seq();
        self.asked_from = Some(from);
        from
    }

    /// Applies `LogLines` or `LogEnd` of this log.
    pub fn apply(&mut self, event: ConsoleEvent) -> LogChange {
        match event {
            ConsoleEvent::LogLines {
                first_seq, lines, ..
            } => {
                let next = self.view.next_seq();
                match dedup::sort_out(next, first_seq, lines) {
                    Chunk::Fresh(new) => {
                        self.view.lines.0.borrow_mut().extend(new);
                        self.view.version += 1;
                        self.asked_from = None;
                        LogChange::Appended
                    }
                    Chunk::Duplicate => LogChange::Unchanged,
                    Chunk::Gap { .. } if self.asked_from == Some(next) => LogChange::Unchanged,
                    Chunk::Gap { missing } => {
                        self.asked_from = Some(missing.start);
                        LogChange::AskFrom(missing.start)
                    }
                }
            }
            ConsoleEvent::LogEnd { .. } if !self.view.ended => {
                self.view.ended = true;
                LogChange::Ended
            }
            _ => LogChange::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::BuildId;

    fn chunk(from: u64, to: u64) -> ConsoleEvent {
        ConsoleEvent::LogLines {
            build: BuildId(1),
            first_seq: from,
            lines: (from..to).map(|i| format!("l{i}")).collect(),
        }
    }

    fn text(log: &FollowedLog) -> Vec<String> {
        log.view.lines.0.borrow().clone()
    }

    #[test]
    fn lines_are_appended_once_and_the_version_moves_only_then() {
        let mut log = FollowedLog::default();
        log.asked();
        assert_eq!(log.apply(chunk(0, 3)), LogChange::Appended);
        assert_eq!(log.view.version, 1);
        assert_eq!(log.apply(chunk(1, 3)), LogChange::Unchanged);
        assert_eq!(log.view.version, 1);
        assert_eq!(log.apply(chunk(2, 5)), LogChange::Appended);
        assert_eq!(text(&log), ["l0", "l1", "l2", "l3", "l4"]);
        assert_eq!(log.view.next_seq(), 5);
    }

    #[test]
    fn a_gap_is_asked_about_once_until_lines_arrive() {
        let mut log = FollowedLog::default();
        log.asked();
        log.apply(chunk(0, 3));
        assert_eq!(log.apply(chunk(5, 6)), LogChange::AskFrom(3));
        assert_eq!(
            log.apply(chunk(6, 7)),
            LogChange::Unchanged,
            "already asked"
        );
        assert_eq!(log.apply(chunk(3, 7)), LogChange::Appended);
        assert_eq!(log.apply(chunk(9, 10)), LogChange::AskFrom(7), "a new gap");
    }

    #[test]
    fn a_gap_right_after_a_resubscription_waits_for_its_answer() {
        let mut log = FollowedLog::default();
        log.asked();
        log.apply(chunk(0, 3));
        assert_eq!(log.asked(), 3);
        assert_eq!(log.apply(chunk(8, 9)), LogChange::Unchanged);
    }

    #[test]
    fn the_end_is_reported_once() {
        let mut log = FollowedLog::default();
        assert_eq!(
            log.apply(ConsoleEvent::LogEnd { build: BuildId(1) }),
            LogChange::Ended
        );
        assert!(log.view.ended);
        assert_eq!(
            log.apply(ConsoleEvent::LogEnd { build: BuildId(1) }),
            LogChange::Unchanged
        );
    }

    #[test]
    fn buffers_are_equal_only_to_themselves() {
        let a = LogBuf::default();
        assert_eq!(a, a.clone());
        assert_ne!(a, LogBuf::default());
    }
}
