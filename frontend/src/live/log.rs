//! One followed build log: its lines in a shared buffer, and whether it has ended. Lines are
//! appended exactly once and in order (see `dedup`), whatever a resubscription resends.

use super::dedup::{self, Chunk};
use super::topics::LogStart;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildId;
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

/// How many of its last lines a log opens with: a huge log shows its end at once.
pub const TAIL_LINES: u32 = 2_000;
/// How many lines "load earlier lines" asks for at a time.
pub const EARLIER_LINES: u32 = 2_000;

/// What a page sees of a followed log: the lines `start..start + lines.len()`; the ones before
/// `start` are loaded on demand ([`FollowedLog::request_earlier`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveLog {
    pub lines: LogBuf,
    /// Changes whenever lines were added (a cheap way to say "the buffer changed").
    pub version: u64,
    /// The master said the log is complete.
    pub ended: bool,
    /// The sequence number of the first line held (0: the whole log from its start).
    pub start: u64,
    /// Earlier lines were asked for and have not arrived yet.
    pub loading_earlier: bool,
}

impl LiveLog {
    /// The sequence number of the first line this console lacks.
    pub fn next_seq(&self) -> u64 {
        self.start + self.lines.0.borrow().len() as u64
    }
}

/// What an event did to a followed log.
#[derive(Debug, PartialEq, Eq)]
pub enum LogChange {
    Appended,
    /// Earlier lines were put before the first one (this many), or their request was answered.
    Prepended(u64),
    Ended,
    Unchanged,
    /// Lines are missing: ask for the log again from this line.
    AskFrom(u64),
}

/// A followed log, where its subscription started, and the line it was last asked for from, so
/// a gap is asked about once.
#[derive(Debug)]
pub struct FollowedLog {
    pub view: LiveLog,
    asked_from: Option<u64>,
    /// Where the log was first asked for (its tail, or a line); asked again that way until the
    /// first lines arrive, from the line it lacks after.
    start: LogStart,
    /// Lines arrived: the buffer's first line is fixed (only earlier lines go before it).
    anchored: bool,
}

impl Default for FollowedLog {
    fn default() -> Self {
        FollowedLog::starting(LogStart::Tail(TAIL_LINES))
    }
}

impl FollowedLog {
    pub fn starting(start: LogStart) -> FollowedLog {
        FollowedLog {
            view: LiveLog::default(),
            asked_from: None,
            start,
            anchored: false,
        }
    }

    /// Records that the log is (again) asked for, and says from where: its first start until
    /// lines arrived, then the line it lacks. Gaps seen before the answer arrives are that
    /// answer's business and are not asked about again; an earlier-lines request in flight is
    /// forgotten (its answer may be lost with the socket).
    pub fn asked(&mut self) -> LogStart {
        self.view.loading_earlier = false;
        if !self.anchored {
            self.asked_from = None;
            return self.start;
        }
        let from = self.view.next_seq();
        self.asked_from = Some(from);
        LogStart::At(from)
    }

    /// The request for the lines before the first one held, unless there are none or one is on
    /// its way already.
    pub fn request_earlier(&mut self, build: BuildId) -> Option<ConsoleRequest> {
        if !self.anchored || self.view.start == 0 || self.view.loading_earlier {
            return None;
        }
        self.view.loading_earlier = true;
        Some(ConsoleRequest::EarlierLog {
            build,
            before_seq: self.view.start,
            lines: EARLIER_LINES,
        })
    }

    /// Applies `LogLines`, `EarlierLines` or `LogEnd` of this log.
    pub fn apply(&mut self, event: ConsoleEvent) -> LogChange {
        match event {
            ConsoleEvent::LogLines {
                first_seq, lines, ..
            } if !self.anchored => {
                if lines.is_empty() {
                    return LogChange::Unchanged;
                }
                // The first lines say where the subscription started (a tail's first line).
                self.anchored = true;
                self.view.start = first_seq;
                self.view.lines.0.borrow_mut().extend(lines);
                self.view.version += 1;
                self.asked_from = None;
                LogChange::Appended
            }
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
            ConsoleEvent::EarlierLines {
                first_seq,
                before_seq,
                lines,
                ..
            } => {
                // Only the answer for the lines right before the first one held counts.
                if !self.anchored || before_seq != self.view.start {
                    return LogChange::Unchanged;
                }
                self.view.loading_earlier = false;
                let n = lines.len() as u64;
                let added = if n > 0 && first_seq.checked_add(n) == Some(before_seq) {
                    self.view.lines.0.borrow_mut().splice(0..0, lines);
                    self.view.start = first_seq;
                    n
                } else {
                    0
                };
                self.view.version += 1;
                LogChange::Prepended(added)
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

    fn from_start() -> FollowedLog {
        FollowedLog::starting(LogStart::At(0))
    }

    fn earlier(first: u64, before: u64) -> ConsoleEvent {
        ConsoleEvent::EarlierLines {
            build: BuildId(1),
            first_seq: first,
            before_seq: before,
            lines: (first..before).map(|i| format!("l{i}")).collect(),
        }
    }

    #[test]
    fn lines_are_appended_once_and_the_version_moves_only_then() {
        let mut log = from_start();
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
        let mut log = from_start();
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
        let mut log = from_start();
        log.asked();
        log.apply(chunk(0, 3));
        assert_eq!(log.asked(), LogStart::At(3));
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
    fn a_tail_opens_where_its_first_lines_start_and_resubscribes_from_the_line_it_lacks() {
        let mut log = FollowedLog::default();
        assert_eq!(log.asked(), LogStart::Tail(TAIL_LINES));
        // No lines yet (a reconnect before the answer): the tail again.
        assert_eq!(log.apply(chunk(5, 5)), LogChange::Unchanged);
        assert_eq!(log.asked(), LogStart::Tail(TAIL_LINES));
        assert_eq!(log.apply(chunk(98_000, 98_003)), LogChange::Appended);
        assert_eq!((log.view.start, log.view.next_seq()), (98_000, 98_003));
        // Live lines follow; a gap is asked for from the line lacked, never from the start.
        assert_eq!(log.apply(chunk(98_003, 98_005)), LogChange::Appended);
        assert_eq!(log.apply(chunk(98_009, 98_010)), LogChange::AskFrom(98_005));
        assert_eq!(log.asked(), LogStart::At(98_005));
        assert_eq!(text(&log)[0], "l98000");
    }

    #[test]
    fn earlier_lines_go_before_the_first_one_once_and_only_when_they_fit() {
        let mut log = FollowedLog::default();
        assert_eq!(log.request_earlier(BuildId(1)), None, "nothing held yet");
        log.asked();
        log.apply(chunk(5_000, 5_010));
        let ask = log.request_earlier(BuildId(1));
        assert_eq!(
            ask,
            Some(ConsoleRequest::EarlierLog {
                build: BuildId(1),
                before_seq: 5_000,
                lines: EARLIER_LINES
            })
        );
        assert!(log.view.loading_earlier);
        assert_eq!(log.request_earlier(BuildId(1)), None, "one at a time");
        // A stale answer (for another first line) changes nothing.
        assert_eq!(log.apply(earlier(10, 20)), LogChange::Unchanged);
        assert_eq!(
            log.apply(earlier(3_000, 5_000)),
            LogChange::Prepended(2_000)
        );
        assert_eq!((log.view.start, log.view.next_seq()), (3_000, 5_010));
        assert!(!log.view.loading_earlier);
        let t = text(&log);
        assert_eq!((t[0].as_str(), t[2_000].as_str()), ("l3000", "l5000"));
        // The same answer again does not fit before the new first line.
        assert_eq!(log.apply(earlier(3_000, 5_000)), LogChange::Unchanged);
        // Down to the first line; then there is nothing earlier to ask for.
        log.request_earlier(BuildId(1));
        assert_eq!(log.apply(earlier(0, 3_000)), LogChange::Prepended(3_000));
        assert_eq!(log.view.start, 0);
        assert_eq!(log.request_earlier(BuildId(1)), None);
        assert_eq!(
            text(&log),
            (0..5_010).map(|i| format!("l{i}")).collect::<Vec<_>>()
        );
        // Live lines still append after the prepends.
        assert_eq!(log.apply(chunk(5_010, 5_011)), LogChange::Appended);
    }

    #[test]
    fn an_earlier_request_lost_with_the_socket_can_be_made_again() {
        let mut log = FollowedLog::default();
        log.asked();
        log.apply(chunk(100, 110));
        assert!(log.request_earlier(BuildId(1)).is_some());
        assert_eq!(
            log.asked(),
            LogStart::At(110),
            "resubscribed after a reconnect"
        );
        assert!(log.request_earlier(BuildId(1)).is_some());
    }

    #[test]
    fn buffers_are_equal_only_to_themselves() {
        let a = LogBuf::default();
        assert_eq!(a, a.clone());
        assert_ne!(a, LogBuf::default());
    }
}
