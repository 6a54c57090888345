//! Fan-out between the masters serving one farm from one database: what one master publishes
//! for consoles, a log it appended to, a build it queued (other dispatchers should look) and a
//! frame for a slave whose session another master holds travel through PostgreSQL's
//! `LISTEN/NOTIFY` on the channel `kiln_fanout`.
//!
//! Each notification carries the sender's instance (its own are ignored) and one [`Peer`]
//! message, bincode-encoded by the shared codec and base64'd (a payload is text, under 8,000
//! bytes: a larger event goes as `Resync`, which makes consoles ask again). Messages are sent in
//! batches, one statement per batch, in the order they were made. A master alone on its database
//! pays one small statement per batch and hears nothing. The same connection hears the access
//! changes of [`crate::db::access`].

use crate::db::access;
use crate::db::notifications::{self, Heard};
use crate::hub::Peer;
use crate::state::AppState;
use base64::Engine;
use kiln_shared::codec;
use kiln_shared::frames::{ConsoleEvent, MasterFrame};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

const CHANNEL: &str = "kiln_fanout";
/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;
/// Most messages sent in one statement.
const BATCH: usize = 256;

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    peer: Peer,
}

/// Starts the sender and the listener; returns their tasks.
pub fn spawn(st: Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
    let (tx, rx) = mpsc::unbounded_channel();
    st.hub.set_peers(tx.clone());
    vec![
        tokio::spawn(send_loop(st.clone(), rx)),
        tokio::spawn(forward_logs(st.clone(), tx)),
        tokio::spawn(listen_loop(st)),
    ]
}

/// Logs this master appended to, as `LogGrew` messages.
async fn forward_logs(st: Arc<AppState>, tx: mpsc::UnboundedSender<Peer>) {
    let mut appended = st.storage.appended_here();
    loop {
        match appended.recv().await {
            Ok(id) => {
                if tx.send(Peer::LogGrew(id)).is_err() {
                    return;
                }
            }
            // Missed some: the other masters' consoles read on from where they are at the next
            // one; nothing is lost, since the lines are in the shared storage.
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

fn encode(from: &str, peer: Peer) -> Option<String> {
    let b64 = |p: &Envelope| {
        codec::encode(p)
            .ok()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    };
    let e = Envelope {
        from: from.to_string(),
        peer,
    };
    match b64(&e) {
        Some(t) if t.len() <= MAX_PAYLOAD => Some(t),
        _ => match e.peer {
            Peer::Event(_) => b64(&Envelope {
                from: e.from,
                peer: Peer::Event(ConsoleEvent::Resync),
            }),
            other => {
                tracing::warn!("a message for the other masters is too large: {other:?}");
                None
            }
        },
    }
}

async fn send_loop(st: Arc<AppState>, mut rx: mpsc::UnboundedReceiver<Peer>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // What the waking message's sender says next (a build's end is its row, the end of its
        // log and a wake, said one after the other) goes in the same statement: one yield
        // costs microseconds, a statement a round trip.
        tokio::task::yield_now().await;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // A log that grew several times in one batch is told once (after the other messages
        // before it, so an event is never overtaken by an older growth).
        let mut grew = HashSet::new();
        let mut payloads = Vec::with_capacity(batch.len());
        for p in batch.drain(..).rev() {
            if let Peer::LogGrew(id) = p {
                if !grew.insert(id) {
                    continue;
                }
            }
            payloads.extend(encode(&st.hub.instance, p));
        }
        payloads.reverse();
        let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::TEXT[]) AS p")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&st.db)
            .await;
        if let Err(e) = sent {
            tracing::warn!(
                "telling the other masters ({} message(s) dropped): {e}",
                payloads.len()
            );
        }
    }
}

/// Listens for the other masters' messages and for access changes, on one connection.
async fn listen_loop(st: Arc<AppState>) {
    let channels = [CHANNEL, access::CHANNEL];
    notifications::listen(st.db.clone(), &channels, |h| match h {
        Heard::Notification { channel, payload } if channel == CHANNEL => heard(&st, payload),
        Heard::Notification { .. } => access::changed(),
        // What was said meanwhile is lost: access is read again, consoles ask again and the
        // dispatcher looks.
        Heard::Gap => {
            access::changed();
            st.hub.forget_holdings();
            caught_up(&st);
        }
    })
    .await
}

fn caught_up(st: &AppState) {
    st.hub.publish_here(ConsoleEvent::Resync);
    st.hub.wake_dispatch.notify_one();
}

fn heard(st: &AppState, payload: &str) {
    let Some(e) = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
        .and_then(|b| codec::decode::<Envelope>(&b).ok())
    else {
        tracing::warn!(
            "an unreadable message from another master ({} bytes)",
            payload.len()
        );
        return;
    };
    if e.from == st.hub.instance {
        return;
    }
    match e.peer {
        Peer::Event(ev) => {
            // A build another master ended: this master's session of its slave asks again. An
            // event too large to carry came as `Resync`: every session asks again.
            match &ev {
                ConsoleEvent::Build(b) => {
                    if let (false, Some(slave)) = (b.state.is_active(), &b.slave) {
                        st.hub.ended_on_named(slave);
                    }
                }
                ConsoleEvent::Resync => st.hub.forget_holdings(),
                _ => {}
            }
            st.hub.publish_here(ev)
        }
        Peer::LogGrew(id) => st.storage.log_grew_elsewhere(id),
        Peer::Wake => st.hub.wake_dispatch.notify_one(),
        Peer::ToSlave(id, frame) => {
            let drain = matches!(frame, MasterFrame::Drain);
            // Told before the slave hears it: what the slave says next about the build is checked
            // against the database again.
            if matches!(frame, MasterFrame::Cancel { .. }) {
                st.hub.ended_on(id);
            }
            if st.hub.send(id, frame) && drain {
                st.hub.set_draining(id);
            }
        }
    }
}
