//! The live layer's state without any I/O: which topics this tab follows, what each one holds
//! (the queue, the logs), and whether the socket is up. Subscriptions and socket events go in;
//! what to send to the master and which topics changed come out. The glue (`provider`) carries
//! out the [`Reaction`]s, so every rule here is tested natively.

use super::log::{FollowedLog, LiveLog, LogChange};
use super::queue::Queue;
use super::topics::{LogStart, Registry, Topic};
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildId;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The state of the tab's socket, for a "connecting…" notice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    pub connected: bool,
    /// The master refused a request, or sent what this console cannot read (an older console
    /// after an upgrade); cleared by the next event that is understood.
    pub error: Option<String>,
}

/// What the glue must do after the hub changed.
#[derive(Debug, Default, PartialEq)]
pub struct Reaction {
    /// Requests for the master, in order (dropped while the socket is down: opening it
    /// subscribes every topic again anyway).
    pub send: Vec<ConsoleRequest>,
    /// Topics whose data changed: their subscribers render again.
    pub changed: Vec<Topic>,
    pub connection_changed: bool,
}

#[derive(Debug, Default)]
pub struct Hub {
    registry: Registry,
    queue: Rc<Queue>,
    logs: BTreeMap<BuildId, FollowedLog>,
    connection: Connection,
}

impl Hub {
    pub fn queue(&self) -> Rc<Queue> {
        self.queue.clone()
    }

    /// The log of `build`, if it is followed.
    pub fn log(&self, build: BuildId) -> Option<LiveLog> {
        self.logs.get(&build).map(|l| l.view.clone())
    }

    pub fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// A subscriber takes `topic`: the first one subscribes (a log at its last `TAIL_LINES`
    /// lines). Pages say where a log starts ([`Hub::follow_at`]); tests use the default.
    #[cfg(test)]
    pub fn follow(&mut self, topic: Topic) -> Reaction {
        self.follow_at(topic, LogStart::Tail(super::log::TAIL_LINES))
    }

    /// A subscriber takes `topic`; the first one subscribes, a log from `start` (the later ones
    /// share what it holds).
    pub fn follow_at(&mut self, topic: Topic, start: LogStart) -> Reaction {
        if !self.registry.acquire(topic) {
            return Reaction::default();
        }
        let start = match topic {
            Topic::Queue => LogStart::At(0),
            Topic::Log(build) => {
                self.logs.insert(build, FollowedLog::starting(start));
                self.logs.get_mut(&build).expect("just inserted").asked()
            }
        };
        Reaction {
            send: vec![topic.subscribe_at(start)],
            ..Reaction::default()
        }
    }

    /// Asks for the lines before the first one a followed log holds ("load earlier lines");
    /// nothing when there are none or a request is on its way.
    pub fn earlier(&mut self, build: BuildId) -> Reaction {
        let Some(request) = self
            .logs
            .get_mut(&build)
            .and_then(|l| l.request_earlier(build))
        else {
            return Reaction::default();
        };
        Reaction {
            send: vec![request],
            changed: vec![Topic::Log(build)],
            ..Reaction::default()
        }
    }

    /// A subscriber drops `topic`; the topic goes at the next [`Hub::sweep`] if nobody took it
    /// again.
    pub fn unfollow(&mut self, topic: Topic) {
        self.registry.release(topic);
    }

    /// Unsubscribes the topics nobody follows any more and drops what they held (a log's lines).
    pub fn sweep(&mut self) -> Reaction {
        let mut reaction = Reaction::default();
        for topic in self.registry.sweep() {
            match topic {
                Topic::Queue => self.queue = Rc::default(),
                Topic::Log(build) => {
                    self.logs.remove(&build);
                }
            }
            reaction.send.push(topic.unsubscribe());
        }
        reaction
    }

    /// The socket is open (again): subscribe to every topic, each log from the line it lacks.
    pub fn opened(&mut self) -> Reaction {
        self.connection.connected = true;
        Reaction {
            send: self.resubscriptions(),
            connection_changed: true,
            ..Reaction::default()
        }
    }

    /// The socket closed; it will be opened again.
    pub fn closed(&mut self) -> Reaction {
        let was = std::mem::replace(&mut self.connection.connected, false);
        Reaction {
            connection_changed: was,
            ..Reaction::default()
        }
    }

    /// A frame from the master that this console cannot decode.
    pub fn unreadable(&mut self, why: String) -> Reaction {
        self.set_error(Some(format!(
            "this console cannot read the master's messages ({why}); reload the page"
        )))
    }

    pub fn receive(&mut self, event: ConsoleEvent) -> Reaction {
        let topic = match (&event, Topic::of(&event)) {
            (ConsoleEvent::Resync, _) => {
                return Reaction {
                    send: self.resubscriptions(),
                    ..Reaction::default()
                }
            }
            (ConsoleEvent::Error { message }, _) => {
                return self.set_error(Some(format!("the master refused a request: {message}")))
            }
            (_, Some(topic)) => topic,
            (_, None) => return Reaction::default(),
        };
        let mut reaction = self.set_error(None);
        // Events of a topic already unsubscribed may still be on their way: ignored.
        if !self.registry.is_subscribed(topic) {
            return reaction;
        }
        let changed = match topic {
            Topic::Queue => Rc::make_mut(&mut self.queue).apply(event),
            Topic::Log(build) => match self.logs.entry(build).or_default().apply(event) {
                LogChange::Appended | LogChange::Ended | LogChange::Prepended(_) => true,
                LogChange::Unchanged => false,
                LogChange::AskFrom(from_seq) => {
                    reaction.send.push(topic.subscribe(from_seq));
                    false
                }
            },
        };
        if changed {
            reaction.changed.push(topic);
        }
        reaction
    }

    /// Subscribes every topic again: the queue (a fresh snapshot), and each log that has not
    /// ended from the line it lacks. After a reconnect or a `Resync`.
    fn resubscriptions(&mut self) -> Vec<ConsoleRequest> {
        let topics: Vec<Topic> = self.registry.topics().collect();
        let mut send = vec![];
        for topic in topics {
            match topic {
                Topic::Queue => send.push(topic.subscribe(0)),
                Topic::Log(build) => {
                    let log = self.logs.entry(build).or_default();
                    if !log.view.ended {
                        send.push(topic.subscribe_at(log.asked()));
                    }
                }
            }
        }
        send
    }

    fn set_error(&mut self, error: Option<String>) -> Reaction {
        let changed = self.connection.error != error;
        self.connection.error = error;
        Reaction {
            connection_changed: changed,
            ..Reaction::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::log::TAIL_LINES;
    use crate::live::queue::tests::{build, slave};
    use kiln_shared::BuildState;

    const B: BuildId = BuildId(7);
    const LOG: Topic = Topic::Log(B);

    fn lines(from: u64, to: u64) -> ConsoleEvent {
        ConsoleEvent::LogLines {
            build: B,
            first_seq: from,
            lines: (from..to).map(|i| format!("line {i}")).collect(),
        }
    }

    fn log_text(hub: &Hub) -> Vec<String> {
        hub.log(B).expect("followed").lines.0.borrow().clone()
    }

    fn tail(build: BuildId) -> ConsoleRequest {
        ConsoleRequest::SubscribeLogTail {
            build,
            lines: TAIL_LINES,
        }
    }

    fn sub_log(from_seq: u64) -> ConsoleRequest {
        ConsoleRequest::SubscribeLog { build: B, from_seq }
    }

    #[test]
    fn two_pages_on_the_queue_share_one_subscription() {
        let mut hub = Hub::default();
        assert_eq!(
            hub.follow(Topic::Queue).send,
            [ConsoleRequest::SubscribeQueue]
        );
        assert!(hub.follow(Topic::Queue).send.is_empty());
        hub.unfollow(Topic::Queue);
        assert!(hub.sweep().send.is_empty(), "one page still follows it");
    }

    #[test]
    fn the_last_subscriber_going_unsubscribes_and_frees_the_log() {
        let mut hub = Hub::default();
        assert_eq!(hub.follow(LOG).send, [tail(B)]);
        hub.receive(lines(0, 3));
        hub.unfollow(LOG);
        assert!(hub.log(B).is_some(), "kept until the sweep");
        assert_eq!(
            hub.sweep().send,
            [ConsoleRequest::UnsubscribeLog { build: B }]
        );
        assert_eq!(hub.log(B), None, "the buffer is dropped");
        assert!(hub.sweep().send.is_empty(), "unsubscribed once");
        // Coming back to the build page opens the log at its tail again.
        assert_eq!(hub.follow(LOG).send, [tail(B)]);
        assert_eq!(log_text(&hub), Vec::<String>::new());
    }

    #[test]
    fn the_queue_unsubscribes_when_no_page_shows_it() {
        let mut hub = Hub::default();
        hub.follow(Topic::Queue);
        hub.receive(ConsoleEvent::Build(build(1, BuildState::Queued)));
        hub.unfollow(Topic::Queue);
        assert_eq!(hub.sweep().send, [ConsoleRequest::UnsubscribeQueue]);
        assert!(hub.queue().builds.is_empty());
    }

    #[test]
    fn a_reconnect_resubscribes_each_log_from_the_line_it_lacks() {
        let mut hub = Hub::default();
        hub.follow(Topic::Queue);
        hub.follow(LOG);
        hub.follow(Topic::Log(BuildId(8)));
        hub.opened();
        hub.receive(lines(0, 5));
        assert!(hub.closed().connection_changed);
        assert!(!hub.connection().connected);
        let again = hub.opened();
        assert!(hub.connection().connected);
        assert_eq!(
            again.send,
            [ConsoleRequest::SubscribeQueue, sub_log(5), tail(BuildId(8)),]
        );
        // The master resends from its chunk boundary: the overlap is trimmed.
        let r = hub.receive(lines(3, 8));
        assert_eq!(r.changed, [LOG]);
        let want: Vec<String> = (0..8).map(|i| format!("line {i}")).collect();
        assert_eq!(log_text(&hub), want);
        // A full duplicate changes nothing and renders nothing.
        let r = hub.receive(lines(0, 8));
        assert!(r.changed.is_empty());
        assert_eq!(log_text(&hub), want);
    }

    #[test]
    fn a_resync_resubscribes_every_topic_and_the_snapshot_replaces_the_queue() {
        let mut hub = Hub::default();
        hub.follow(Topic::Queue);
        hub.follow(LOG);
        hub.opened();
        hub.receive(ConsoleEvent::Build(build(1, BuildState::Running)));
        hub.receive(ConsoleEvent::Slave(slave(3, true)));
        hub.receive(lines(0, 2));
        let r = hub.receive(ConsoleEvent::Resync);
        assert_eq!(r.send, [ConsoleRequest::SubscribeQueue, sub_log(2)]);
        // A live chunk that overtook the resent ones is a gap already asked about.
        let r = hub.receive(lines(4, 5));
        assert!(r.send.is_empty() && r.changed.is_empty());
        // The snapshot and the resent lines.
        hub.receive(ConsoleEvent::Slave(slave(3, false)));
        hub.receive(ConsoleEvent::Build(build(1, BuildState::Failed)));
        hub.receive(lines(2, 5));
        let q = hub.queue();
        assert_eq!(q.builds[&BuildId(1)].state, BuildState::Failed);
        assert!(!q.slaves[&kiln_shared::SlaveId(3)].online);
        assert_eq!(hub.log(B).unwrap().next_seq(), 5);
    }

    #[test]
    fn a_gap_asks_for_the_log_again_from_the_missing_line() {
        let mut hub = Hub::default();
        hub.follow(LOG);
        hub.opened();
        hub.receive(lines(0, 3));
        let r = hub.receive(lines(6, 9));
        assert_eq!(r.send, [sub_log(3)]);
        assert!(
            r.changed.is_empty(),
            "the chunk beyond the gap is not shown"
        );
        assert_eq!(hub.log(B).unwrap().next_seq(), 3);
    }

    #[test]
    fn an_ended_log_is_not_asked_for_again() {
        let mut hub = Hub::default();
        hub.follow(LOG);
        hub.opened();
        hub.receive(lines(0, 3));
        assert_eq!(
            hub.receive(ConsoleEvent::LogEnd { build: B }).changed,
            [LOG]
        );
        assert!(hub.log(B).unwrap().ended);
        hub.closed();
        assert!(hub.opened().send.is_empty());
    }

    #[test]
    fn events_of_unfollowed_topics_are_ignored() {
        let mut hub = Hub::default();
        let r = hub.receive(lines(0, 3));
        assert!(r.changed.is_empty());
        assert_eq!(hub.log(B), None);
        let r = hub.receive(ConsoleEvent::Build(build(1, BuildState::Queued)));
        assert!(r.changed.is_empty());
        assert!(hub.queue().builds.is_empty());
    }

    #[test]
    fn each_change_names_its_topic() {
        let mut hub = Hub::default();
        hub.follow(Topic::Queue);
        hub.follow(LOG);
        assert_eq!(
            hub.receive(ConsoleEvent::Build(build(1, BuildState::Queued)))
                .changed,
            [Topic::Queue]
        );
        assert_eq!(hub.receive(lines(0, 1)).changed, [LOG]);
    }

    #[test]
    fn errors_show_until_the_master_is_understood_again() {
        let mut hub = Hub::default();
        hub.follow(Topic::Queue);
        let r = hub.receive(ConsoleEvent::Error {
            message: "corrupt frame".into(),
        });
        assert!(r.connection_changed);
        let shown = hub.connection().error.unwrap();
        assert!(shown.contains("corrupt frame"), "{shown}");
        hub.unreadable("unsupported protocol version 3".into());
        assert!(hub.connection().error.unwrap().contains("reload"));
        let r = hub.receive(ConsoleEvent::Slave(slave(1, true)));
        assert!(r.connection_changed);
        assert_eq!(hub.connection().error, None);
    }

    #[test]
    fn a_huge_log_opens_at_its_tail_and_loads_earlier_lines_on_demand() {
        let mut hub = Hub::default();
        assert_eq!(hub.follow(LOG).send, [tail(B)]);
        hub.opened();
        assert!(hub.earlier(B).send.is_empty(), "nothing held yet");
        // The master answers the tail of a 1,000,000-line log in chunks, then live lines.
        hub.receive(lines(998_000, 999_000));
        hub.receive(lines(999_000, 1_000_000));
        assert_eq!(hub.receive(lines(1_000_000, 1_000_001)).changed, [LOG]);
        let log = hub.log(B).unwrap();
        assert_eq!((log.start, log.next_seq()), (998_000, 1_000_001));
        let r = hub.earlier(B);
        assert_eq!(
            r.send,
            [ConsoleRequest::EarlierLog {
                build: B,
                before_seq: 998_000,
                lines: crate::live::log::EARLIER_LINES
            }]
        );
        assert_eq!(r.changed, [LOG], "the page shows it is loading");
        assert!(hub.log(B).unwrap().loading_earlier);
        let r = hub.receive(ConsoleEvent::EarlierLines {
            build: B,
            first_seq: 996_000,
            before_seq: 998_000,
            lines: (996_000..998_000).map(|i| format!("line {i}")).collect(),
        });
        assert_eq!(r.changed, [LOG]);
        let log = hub.log(B).unwrap();
        assert_eq!((log.start, log.next_seq()), (996_000, 1_000_001));
        assert_eq!(log_text(&hub)[0], "line 996000");
        assert_eq!(log_text(&hub)[2_000], "line 998000");
        // A reconnect resubscribes from the line it lacks, not from the tail.
        hub.closed();
        assert_eq!(hub.opened().send, [sub_log(1_000_001)]);
    }

    #[test]
    fn a_log_can_be_opened_at_a_line() {
        let mut hub = Hub::default();
        assert_eq!(hub.follow_at(LOG, LogStart::At(40)).send, [sub_log(40)]);
        hub.receive(lines(40, 45));
        assert_eq!(hub.log(B).unwrap().start, 40);
        // A second page on the same log shares it: nothing is sent.
        assert!(hub.follow(LOG).send.is_empty());
    }

    #[test]
    fn a_subscription_made_while_disconnected_is_sent_when_the_socket_opens() {
        let mut hub = Hub::default();
        // The request in this reaction is dropped by the glue (the socket is not open yet)...
        hub.follow(LOG);
        // ...and sent when it opens.
        assert_eq!(hub.opened().send, [tail(B)]);
    }
}
