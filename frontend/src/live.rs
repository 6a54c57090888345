//! The console's one WebSocket: plain Rust over gloo-net. It connects to `/ws/console`, sends
//! `ConsoleRequest`s, decodes `ConsoleEvent`s with the shared codec and hands them to a callback;
//! on a lost connection it reconnects with backoff and subscribes again (a log from the line
//! after the last one it delivered, so nothing is missed and nothing repeats). Pages never parse
//! bytes.

use futures_util::{SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use kiln_shared::codec;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildId;
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen_futures::spawn_local;

#[derive(Clone, Copy, PartialEq)]
pub enum Want {
    Queue,
    Log(BuildId),
}

/// Keeps a subscription alive until dropped.
pub struct Live {
    stopped: Rc<Cell<bool>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stopped.set(true);
    }
}

fn ws_url() -> String {
    let loc = web_sys::window().expect("window").location();
    let proto = if loc.protocol().unwrap_or_default() == "https:" {
        "wss"
    } else {
        "ws"
    };
    let host = loc.host().unwrap_or_default();
    format!(
        "{proto}://{host}/ws/console?token={}",
        crate::api::token().unwrap_or_default()
    )
}

/// Subscribes and calls `on_event` for every event; `on_state(true/false)` on (dis)connect.
pub fn subscribe(
    want: Want,
    on_event: impl Fn(ConsoleEvent) + 'static,
    on_state: impl Fn(bool) + 'static,
) -> Live {
    let stopped = Rc::new(Cell::new(false));
    let stop = stopped.clone();
    spawn_local(async move {
        let mut next_seq: u64 = 0;
        let mut delay = 250u32;
        while !stop.get() {
            if let Ok(ws) = WebSocket::open(&ws_url()) {
                let (mut tx, mut rx) = ws.split();
                let req = match want {
                    Want::Queue => ConsoleRequest::SubscribeQueue,
                    Want::Log(build) => ConsoleRequest::SubscribeLog {
                        build,
                        from_seq: next_seq,
                    },
                };
                if let Ok(bytes) = codec::encode(&req) {
                    if tx.send(Message::Bytes(bytes)).await.is_ok() {
                        on_state(true);
                        delay = 250;
                        while let Some(msg) = rx.next().await {
                            if stop.get() {
                                return;
                            }
                            let Ok(Message::Bytes(b)) = msg else { break };
                            match codec::decode::<ConsoleEvent>(&b) {
                                Ok(ev) => {
                                    if let ConsoleEvent::LogLines {
                                        first_seq,
                                        ref lines,
                                        ..
                                    } = ev
                                    {
                                        // Drop what was already delivered (a resubscription overlaps).
                                        if first_seq + lines.len() as u64 <= next_seq {
                                            continue;
                                        }
                                        next_seq = first_seq + lines.len() as u64;
                                    }
                                    on_event(ev)
                                }
                                Err(e) => on_event(ConsoleEvent::Error {
                                    message: e.to_string(),
                                }),
                            }
                        }
                    }
                }
            }
            if stop.get() {
                return;
            }
            on_state(false);
            gloo_timers::future::TimeoutFuture::new(delay).await;
            delay = (delay * 2).min(5000);
        }
    });
    Live { stopped }
}
