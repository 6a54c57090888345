//! What this tab follows on its one socket, and how many subscribers each topic has. Pure
//! bookkeeping: a topic is subscribed when its first subscriber comes and unsubscribed once its
//! last one is gone. Forgetting waits for [`Registry::sweep`], which the glue runs a moment
//! after the last release: a page change that drops and takes the same topic (the queue, from
//! the dashboard to a build page) then sends nothing and keeps the topic's data.

use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildId;
use std::collections::BTreeMap;

/// One subscription of the console protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Builds, slaves and progress: a snapshot, then changes.
    Queue,
    /// One build's log lines, then its end.
    Log(BuildId),
}

impl Topic {
    /// The topic an event belongs to; `None` for what concerns the connection itself (`Error`,
    /// `Resync`).
    pub fn of(event: &ConsoleEvent) -> Option<Topic> {
        match event {
            ConsoleEvent::Build(_) | ConsoleEvent::Slave(_) | ConsoleEvent::Progress { .. } => {
                Some(Topic::Queue)
            }
            ConsoleEvent::LogLines { build, .. }
            | ConsoleEvent::LogEnd { build }
            | ConsoleEvent::EarlierLines { build, .. } => Some(Topic::Log(*build)),
            ConsoleEvent::Error { .. } | ConsoleEvent::Resync => None,
        }
    }

    /// The request that subscribes to this topic; a log from line `from_seq` on (the queue
    /// always starts with a snapshot).
    pub fn subscribe(self, from_seq: u64) -> ConsoleRequest {
        self.subscribe_at(LogStart::At(from_seq))
    }

    /// The request that subscribes to this topic, a log from `start`.
    pub fn subscribe_at(self, start: LogStart) -> ConsoleRequest {
        match (self, start) {
            (Topic::Queue, _) => ConsoleRequest::SubscribeQueue,
            (Topic::Log(build), LogStart::At(from_seq)) => {
                ConsoleRequest::SubscribeLog { build, from_seq }
            }
            (Topic::Log(build), LogStart::Tail(lines)) => {
                ConsoleRequest::SubscribeLogTail { build, lines }
            }
        }
    }

    pub fn unsubscribe(self) -> ConsoleRequest {
        match self {
            Topic::Queue => ConsoleRequest::UnsubscribeQueue,
            Topic::Log(build) => ConsoleRequest::UnsubscribeLog { build },
        }
    }
}

/// Where a log subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStart {
    /// At this line (numbered from 0).
    At(u64),
    /// At the last this many lines stored when the master gets the request.
    Tail(u32),
}

/// Subscriber counts by topic. A topic whose count fell to zero stays until the next sweep.
#[derive(Debug, Default)]
pub struct Registry {
    subscribers: BTreeMap<Topic, usize>,
}

impl Registry {
    /// Counts one more subscriber of `topic`; `true` when the topic is new, so the caller
    /// subscribes to it. A topic kept for the sweep is revived: it is still subscribed.
    pub fn acquire(&mut self, topic: Topic) -> bool {
        match self.subscribers.get_mut(&topic) {
            Some(count) => {
                *count += 1;
                false
            }
            None => {
                self.subscribers.insert(topic, 1);
                true
            }
        }
    }

    /// One subscriber of `topic` fewer (dropping its handle).
    pub fn release(&mut self, topic: Topic) {
        if let Some(count) = self.subscribers.get_mut(&topic) {
            *count = count.saturating_sub(1);
        }
    }

    /// Forgets the topics nobody follows any more and returns them, for the caller to
    /// unsubscribe and drop their data.
    pub fn sweep(&mut self) -> Vec<Topic> {
        let gone: Vec<Topic> = self
            .subscribers
            .iter()
            .filter(|(_, count)| **count == 0)
            .map(|(topic, _)| *topic)
            .collect();
        for topic in &gone {
            self.subscribers.remove(topic);
        }
        gone
    }

    /// Whether the socket is subscribed to `topic` (also while it waits for the sweep).
    pub fn is_subscribed(&self, topic: Topic) -> bool {
        self.subscribers.contains_key(&topic)
    }

    /// Every subscribed topic, in order: what to subscribe again after a reconnect or a `Resync`.
    pub fn topics(&self) -> impl Iterator<Item = Topic> + '_ {
        self.subscribers.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG_7: Topic = Topic::Log(BuildId(7));

    #[test]
    fn only_the_first_subscriber_subscribes() {
        let mut r = Registry::default();
        assert!(r.acquire(Topic::Queue));
        assert!(!r.acquire(Topic::Queue));
        assert!(r.acquire(LOG_7));
        assert_eq!(r.topics().collect::<Vec<_>>(), vec![Topic::Queue, LOG_7]);
    }

    #[test]
    fn the_topic_goes_only_with_its_last_subscriber() {
        let mut r = Registry::default();
        r.acquire(LOG_7);
        r.acquire(LOG_7);
        r.release(LOG_7);
        assert!(r.sweep().is_empty(), "one subscriber is left");
        assert!(r.is_subscribed(LOG_7));
        r.release(LOG_7);
        assert_eq!(r.sweep(), vec![LOG_7]);
        assert!(!r.is_subscribed(LOG_7));
        assert!(r.sweep().is_empty(), "unsubscribed once");
        assert!(r.acquire(LOG_7), "a later subscriber subscribes again");
    }

    #[test]
    fn a_topic_dropped_and_taken_before_the_sweep_stays_subscribed() {
        // Dashboard -> build page: the dashboard's queue handle is dropped, the build page takes
        // one, in the same render.
        let mut r = Registry::default();
        r.acquire(Topic::Queue);
        r.release(Topic::Queue);
        assert!(!r.acquire(Topic::Queue), "no second SubscribeQueue");
        assert!(r.sweep().is_empty(), "no UnsubscribeQueue");
        assert!(r.is_subscribed(Topic::Queue));
    }

    #[test]
    fn releasing_more_than_acquired_does_not_underflow() {
        let mut r = Registry::default();
        r.release(Topic::Queue);
        r.acquire(Topic::Queue);
        r.release(Topic::Queue);
        r.release(Topic::Queue);
        assert_eq!(r.sweep(), vec![Topic::Queue]);
    }

    #[test]
    fn events_belong_to_their_topic() {
        let log = ConsoleEvent::LogLines {
            build: BuildId(7),
            first_seq: 0,
            lines: vec![],
        };
        assert_eq!(Topic::of(&log), Some(LOG_7));
        assert_eq!(
            Topic::of(&ConsoleEvent::LogEnd { build: BuildId(7) }),
            Some(LOG_7)
        );
        let progress = ConsoleEvent::Progress {
            build: BuildId(7),
            phase: "x".into(),
            percent: None,
        };
        assert_eq!(Topic::of(&progress), Some(Topic::Queue));
        assert_eq!(Topic::of(&ConsoleEvent::Resync), None);
        let earlier = ConsoleEvent::EarlierLines {
            build: BuildId(7),
            first_seq: 0,
            before_seq: 3,
            lines: vec![],
        };
        assert_eq!(Topic::of(&earlier), Some(LOG_7));
        assert_eq!(
            Topic::of(&ConsoleEvent::Error {
                message: "m".into()
            }),
            None
        );
    }

    #[test]
    fn requests_name_the_topic() {
        assert_eq!(
            LOG_7.subscribe(42),
            ConsoleRequest::SubscribeLog {
                build: BuildId(7),
                from_seq: 42
            }
        );
        assert_eq!(
            LOG_7.unsubscribe(),
            ConsoleRequest::UnsubscribeLog { build: BuildId(7) }
        );
        assert_eq!(
            LOG_7.subscribe_at(LogStart::Tail(2000)),
            ConsoleRequest::SubscribeLogTail {
                build: BuildId(7),
                lines: 2000
            }
        );
        assert_eq!(Topic::Queue.subscribe(42), ConsoleRequest::SubscribeQueue);
        assert_eq!(Topic::Queue.unsubscribe(), ConsoleRequest::UnsubscribeQueue);
    }
}
