//! The Yew side of the live layer: [`LiveProvider`] holds the tab's one connection at the app
//! root and shares it through Yew's context; pages call the hooks (`use_queue`, `use_log`,
//! `use_connection`), which follow a topic for as long as the component lives and render it
//! again when the topic's data changes. Dropping a subscription (the component goes, or follows
//! another build) unsubscribes the topic shortly after if it was its last (see [`LINGER_MS`]).

use super::hub::{Connection, Hub, Reaction};
use super::log::LiveLog;
use super::queue::Queue;
use super::socket::{Socket, SocketEvent};
use super::topics::{LogStart, Topic};
use gloo_timers::callback::Timeout;
use kiln_shared::BuildId;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use yew::prelude::*;

/// How long a topic nobody follows stays subscribed before it is unsubscribed and its data
/// dropped. A page change drops the old page's subscriptions and takes the new page's, but Yew
/// yields to the browser in the middle of a long render (every ~16 ms), so other tasks can run
/// in between: the queue, followed by both pages, must not be unsubscribed and subscribed again
/// (a fresh snapshot each time) just because of that.
const LINGER_MS: u32 = 1_000;

/// The tab's live connection: cheap to clone, equal only to itself.
#[derive(Clone)]
pub struct Live(Rc<Shared>);

impl PartialEq for Live {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

struct Shared {
    hub: RefCell<Hub>,
    socket: Socket,
    listeners: RefCell<Vec<Listener>>,
    next_listener: Cell<u64>,
    /// The pending sweep of abandoned topics, pushed back by every release.
    sweep: RefCell<Option<Timeout>>,
}

/// What a listener wants to hear about.
#[derive(Clone, Copy, PartialEq)]
enum Interest {
    Topic(Topic),
    Connection,
}

struct Listener {
    id: u64,
    interest: Interest,
    on_change: Callback<()>,
}

/// Keeps a topic followed (or the connection watched) until dropped.
pub struct Subscription {
    live: Live,
    id: u64,
    interest: Interest,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let shared = &self.live.0;
        shared.listeners.borrow_mut().retain(|l| l.id != self.id);
        if let Interest::Topic(topic) = self.interest {
            shared.hub.borrow_mut().unfollow(topic);
            self.live.schedule_sweep();
        }
    }
}

impl Live {
    /// The connection; the socket opens when the first topic is followed (not on the login page).
    fn new() -> Live {
        Live(Rc::new_cyclic(|weak: &Weak<Shared>| {
            let weak = weak.clone();
            Shared {
                hub: RefCell::default(),
                socket: Socket::new(console_url, move |event| {
                    if let Some(shared) = weak.upgrade() {
                        Live(shared).on_socket(event);
                    }
                }),
                listeners: RefCell::default(),
                next_listener: Cell::new(0),
                sweep: RefCell::default(),
            }
        }))
    }

    pub fn queue(&self) -> Rc<Queue> {
        self.0.hub.borrow().queue()
    }

    pub fn log(&self, build: BuildId) -> Option<LiveLog> {
        self.0.hub.borrow().log(build)
    }

    pub fn connection(&self) -> Connection {
        self.0.hub.borrow().connection()
    }

    /// Follows `topic` until the returned handle is dropped (a log from `start`, if this is its
    /// first subscriber); `on_change` runs whenever the topic's data changed.
    pub fn follow(&self, topic: Topic, start: LogStart, on_change: Callback<()>) -> Subscription {
        let reaction = self.0.hub.borrow_mut().follow_at(topic, start);
        let subscription = self.listen(Interest::Topic(topic), on_change);
        self.0.socket.ensure_connected();
        self.carry_out(reaction);
        subscription
    }

    /// Asks for the lines before the first one held of a followed log.
    pub fn earlier(&self, build: BuildId) {
        let reaction = self.0.hub.borrow_mut().earlier(build);
        self.carry_out(reaction);
    }

    /// Closes the connection and stops reconnecting (signed out); the next subscription opens
    /// it again, and every topic still followed is subscribed again then.
    pub fn suspend(&self) {
        self.0.socket.stop();
        let reaction = self.0.hub.borrow_mut().closed();
        self.carry_out(reaction);
    }

    /// Calls `on_change` whenever the connection comes, goes or reports an error.
    pub fn watch_connection(&self, on_change: Callback<()>) -> Subscription {
        self.listen(Interest::Connection, on_change)
    }

    fn listen(&self, interest: Interest, on_change: Callback<()>) -> Subscription {
        let id = self.0.next_listener.get();
        self.0.next_listener.set(id + 1);
        self.0.listeners.borrow_mut().push(Listener {
            id,
            interest,
            on_change,
        });
        Subscription {
            live: self.clone(),
            id,
            interest,
        }
    }

    fn on_socket(&self, event: SocketEvent) {
        let reaction = {
            let mut hub = self.0.hub.borrow_mut();
            match event {
                SocketEvent::Opened => hub.opened(),
                SocketEvent::Closed { refused } => {
                    if refused {
                        crate::session::check();
                    }
                    hub.closed()
                }
                SocketEvent::Event(event) => {
                    // The master refused something, perhaps because the session ended.
                    if matches!(*event, kiln_shared::frames::ConsoleEvent::Error { .. }) {
                        crate::session::check();
                    }
                    hub.receive(*event)
                }
                SocketEvent::Unreadable(why) => hub.unreadable(why),
            }
        };
        self.carry_out(reaction);
    }

    /// Sends the reaction's requests, then tells the listeners concerned. No borrow is held
    /// while listeners run: they may render, follow and drop subscriptions.
    fn carry_out(&self, reaction: Reaction) {
        for request in &reaction.send {
            self.0.socket.send(request);
        }
        let concerned: Vec<Callback<()>> = self
            .0
            .listeners
            .borrow()
            .iter()
            .filter(|l| match l.interest {
                Interest::Topic(topic) => reaction.changed.contains(&topic),
                Interest::Connection => reaction.connection_changed,
            })
            .map(|l| l.on_change.clone())
            .collect();
        for on_change in concerned {
            on_change.emit(());
        }
    }

    /// Unsubscribes abandoned topics [`LINGER_MS`] after the last release, so a page change
    /// that drops and takes the same topic sends nothing.
    fn schedule_sweep(&self) {
        let weak = Rc::downgrade(&self.0);
        let timer = Timeout::new(LINGER_MS, move || {
            if let Some(shared) = weak.upgrade() {
                let live = Live(shared);
                let reaction = live.0.hub.borrow_mut().sweep();
                live.carry_out(reaction);
            }
        });
        // Replacing the pending timer cancels it.
        *self.0.sweep.borrow_mut() = Some(timer);
    }
}

/// `ws(s)://<this host>/ws/console`: the session cookie rides along (same origin).
fn console_url() -> String {
    let location = web_sys::window().expect("window").location();
    let scheme = if location.protocol().unwrap_or_default() == "https:" {
        "wss"
    } else {
        "ws"
    };
    let host = location.host().unwrap_or_default();
    format!("{scheme}://{host}/ws/console")
}

#[derive(Properties, PartialEq)]
pub struct ProviderProps {
    pub children: Html,
}

/// Holds the tab's one live connection; put once at the app root.
#[function_component(LiveProvider)]
pub fn live_provider(props: &ProviderProps) -> Html {
    let live = use_memo((), |_| Live::new());
    html! {
        <ContextProvider<Live> context={(*live).clone()}>
            { props.children.clone() }
        </ContextProvider<Live>>
    }
}

#[hook]
pub fn use_live() -> Live {
    use_context::<Live>().expect("pages are rendered inside <LiveProvider> (app.rs)")
}

/// Follows `topic` while the component lives (or until `topic` changes) and renders the
/// component again when the topic's data changes.
#[hook]
fn use_topic(live: &Live, topic: Topic, start: LogStart) {
    let update = use_force_update();
    use_effect_with((live.clone(), topic), move |(live, topic)| {
        let on_change = {
            let update = update.clone();
            Callback::from(move |()| update.force_update())
        };
        let subscription = live.follow(*topic, start, on_change);
        // The first render ran before the topic existed (a log's buffer is made by `follow`).
        update.force_update();
        move || drop(subscription)
    });
}

/// The live queue (builds, slaves, progress), for any page that shows it.
#[hook]
pub fn use_queue() -> Rc<Queue> {
    let live = use_live();
    use_topic(&live, Topic::Queue, LogStart::At(0));
    live.queue()
}

/// A followed log as a page uses it.
pub struct LogHandle {
    pub log: LiveLog,
    /// Asks for the lines before the first one held ("load earlier lines").
    pub load_earlier: Callback<()>,
}

/// The live log of `build`, opened at `start` (its tail, or a linked line): the lines from
/// there, then new ones as they come, and its end; earlier lines on demand.
#[hook]
pub fn use_log(build: BuildId, start: LogStart) -> LogHandle {
    let live = use_live();
    use_topic(&live, Topic::Log(build), start);
    let load_earlier = {
        let live = live.clone();
        Callback::from(move |()| live.earlier(build))
    };
    LogHandle {
        log: live.log(build).unwrap_or_default(),
        load_earlier,
    }
}

/// Whether the live connection is up, and the last error, for a "connecting…" notice.
#[hook]
pub fn use_connection() -> Connection {
    let live = use_live();
    let update = use_force_update();
    use_effect_with(live.clone(), move |live| {
        let subscription = live.watch_connection(Callback::from(move |()| update.force_update()));
        move || drop(subscription)
    });
    live.connection()
}
