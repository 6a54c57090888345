//! The tab's one WebSocket to `/ws/console`: opens it, opens it again with backoff when it drops,
//! sends requests and hands on what arrives, decoded with the shared codec. It knows nothing of
//! topics: the hub decides what to send, this only carries it. Dropping the [`Socket`] closes the
//! connection at once and cancels any pending reconnect.

use gloo_timers::callback::Timeout;
use kiln_shared::codec;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::js_sys::{ArrayBuffer, Uint8Array};
use web_sys::{BinaryType, MessageEvent, WebSocket};

/// The first wait before reconnecting; doubled after each failed attempt up to the maximum.
const FIRST_DELAY_MS: u32 = 250;
const MAX_DELAY_MS: u32 = 5_000;

/// What the socket reports to its owner.
pub enum SocketEvent {
    Opened,
    /// The connection closed (or could not be opened); a reconnect is scheduled. `refused`: it
    /// never opened (the master down, or refusing the upgrade: a session that ended gets 401,
    /// which a browser does not show; the owner asks the REST API why).
    Closed {
        refused: bool,
    },
    Event(Box<ConsoleEvent>),
    /// A frame that does not decode (another protocol version, a corrupt frame).
    Unreadable(String),
}

type Report = Rc<dyn Fn(SocketEvent)>;

pub struct Socket(Rc<RefCell<State>>);

struct State {
    /// Asked at every attempt (the page's origin).
    url: fn() -> String,
    report: Report,
    link: Option<Link>,
    retry: Option<Timeout>,
    delay_ms: u32,
}

/// One WebSocket and its handlers, which live exactly as long as it.
struct Link {
    ws: WebSocket,
    /// Whether this socket ever opened.
    opened: Rc<Cell<bool>>,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Detach first: a socket being closed must not report into freed handlers.
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

impl Socket {
    /// A socket that is not connected yet; `report` hears everything that happens to it.
    pub fn new(url: fn() -> String, report: impl Fn(SocketEvent) + 'static) -> Socket {
        Socket(Rc::new(RefCell::new(State {
            url,
            report: Rc::new(report),
            link: None,
            retry: None,
            delay_ms: FIRST_DELAY_MS,
        })))
    }

    /// Connects unless connected, connecting, or waiting to reconnect.
    pub fn ensure_connected(&self) {
        let idle = {
            let state = self.0.borrow();
            state.link.is_none() && state.retry.is_none()
        };
        if idle {
            connect(&self.0);
        }
    }

    /// Sends `request` if the socket is open; `false` if it was not sent (the hub subscribes
    /// everything again when the socket opens, so nothing is lost).
    pub fn send(&self, request: &ConsoleRequest) -> bool {
        let state = self.0.borrow();
        let Some(link) = state.link.as_ref() else {
            return false;
        };
        if link.ws.ready_state() != WebSocket::OPEN {
            return false;
        }
        match codec::encode(request) {
            Ok(bytes) => link.ws.send_with_u8_array(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

impl Socket {
    /// Closes the connection and stops reconnecting (signed out: the master would refuse it);
    /// the next [`Socket::ensure_connected`] starts afresh.
    pub fn stop(&self) {
        let mut state = self.0.borrow_mut();
        state.retry = None;
        state.link = None;
        state.delay_ms = FIRST_DELAY_MS;
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let mut state = self.0.borrow_mut();
        state.retry = None;
        state.link = None;
    }
}

fn connect(state: &Rc<RefCell<State>>) {
    let weak = Rc::downgrade(state);
    let mut s = state.borrow_mut();
    s.retry = None;
    s.link = None;
    let ws = match WebSocket::new(&(s.url)()) {
        Ok(ws) => ws,
        Err(_) => {
            // A malformed URL: nothing will change by itself, but try again later as for a drop.
            drop(s);
            closed(&weak);
            return;
        }
    };
    ws.set_binary_type(BinaryType::Arraybuffer);
    let opened = Rc::new(Cell::new(false));
    let on_open = {
        let (report, opened) = (s.report.clone(), opened.clone());
        Closure::<dyn FnMut()>::new(move || {
            opened.set(true);
            report(SocketEvent::Opened)
        })
    };
    let on_message = {
        let (report, weak) = (s.report.clone(), weak.clone());
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let Ok(buf) = e.data().dyn_into::<ArrayBuffer>() else {
                return; // text frames are not part of the protocol
            };
            match codec::decode::<ConsoleEvent>(&Uint8Array::new(&buf).to_vec()) {
                Ok(event) => {
                    // The master answered: the connection works, so the next drop retries soon
                    // (not after an `Error`, which the master sends just before closing).
                    let works = !matches!(event, ConsoleEvent::Error { .. });
                    if let (true, Some(state)) = (works, weak.upgrade()) {
                        state.borrow_mut().delay_ms = FIRST_DELAY_MS;
                    }
                    report(SocketEvent::Event(Box::new(event)));
                }
                Err(e) => report(SocketEvent::Unreadable(e.to_string())),
            }
        })
    };
    let on_close = Closure::<dyn FnMut()>::new(move || closed(&weak));
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    s.link = Some(Link {
        ws,
        opened,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    });
}

/// The connection is gone: report it and schedule the next attempt, backing off.
fn closed(weak: &Weak<RefCell<State>>) {
    let Some(state) = weak.upgrade() else { return };
    let (report, refused) = {
        let mut s = state.borrow_mut();
        let refused = !s.link.as_ref().is_some_and(|l| l.opened.get());
        let delay = s.delay_ms;
        s.delay_ms = (delay * 2).min(MAX_DELAY_MS);
        let again = weak.clone();
        s.retry = Some(Timeout::new(delay, move || {
            if let Some(state) = again.upgrade() {
                connect(&state);
            }
        }));
        (s.report.clone(), refused)
    };
    report(SocketEvent::Closed { refused });
}
