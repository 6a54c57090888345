//! `/ws/console`: live data for the web console. The browser cannot set headers on a WebSocket,
//! so the admin token comes as `?token=`. Requests and events are `kiln_shared::frames`
//! `ConsoleRequest` / `ConsoleEvent`, bincode-encoded by the shared codec.

use crate::auth;
use crate::db::{builds, slaves};
use crate::state::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildId;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio::sync::broadcast::error::RecvError;

#[derive(serde::Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

pub async fn upgrade(
    State(st): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if !q
        .token
        .as_deref()
        .is_some_and(|t| auth::is_admin_token(&st, t))
    {
        return (StatusCode::UNAUTHORIZED, "pass the admin token as ?token=").into_response();
    }
    ws.max_message_size(codec::MAX_FRAME_BYTES)
        .on_upgrade(move |s| session(st, s))
}

fn frame(ev: &ConsoleEvent) -> Option<Message> {
    codec::encode(ev).ok().map(|b| Message::Binary(b.into()))
}

async fn session(st: Arc<AppState>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let mut events = st.hub.events.subscribe();
    let mut queue = false;
    let mut logs: HashSet<BuildId> = HashSet::new();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(Ok(Message::Binary(b))) = msg else {
                    if matches!(msg, Some(Ok(Message::Ping(_) | Message::Pong(_)))) { continue; }
                    return;
                };
                let req = match codec::decode::<ConsoleRequest>(&b) {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some(m) = frame(&ConsoleEvent::Error { message: e.to_string() }) {
                            let _ = sink.send(m).await;
                        }
                        return;
                    }
                };
                let replies = match req {
                    ConsoleRequest::SubscribeQueue => { queue = true; snapshot(&st).await }
                    ConsoleRequest::UnsubscribeQueue => { queue = false; vec![] }
                    ConsoleRequest::SubscribeLog { build, from_seq } => {
                        logs.insert(build);
                        backlog(&st, build, from_seq).await
                    }
                    ConsoleRequest::UnsubscribeLog { build } => { logs.remove(&build); vec![] }
                };
                for r in replies {
                    if let Some(m) = frame(&r) {
                        if sink.send(m).await.is_err() { return; }
                    }
                }
            }
            ev = events.recv() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    // Events were dropped for this console: it subscribes again to what it
                    // follows (a fresh snapshot, each log from the line it lacks).
                    Err(RecvError::Lagged(_)) => ConsoleEvent::Resync,
                    Err(RecvError::Closed) => return,
                };
                let wanted = match &ev {
                    ConsoleEvent::Build(_) | ConsoleEvent::Slave(_) => queue,
                    ConsoleEvent::LogLines { build, .. } | ConsoleEvent::LogEnd { build } => logs.contains(build),
                    ConsoleEvent::Progress { .. } => queue,
                    ConsoleEvent::Error { .. } | ConsoleEvent::Resync => true,
                };
                if wanted {
                    if let Some(m) = frame(&ev) {
                        if sink.send(m).await.is_err() { return; }
                    }
                }
            }
        }
    }
}

async fn snapshot(st: &AppState) -> Vec<ConsoleEvent> {
    let mut out = vec![];
    if let Ok(rows) = slaves::list(&st.db).await {
        out.extend(
            rows.into_iter()
                .map(|s| ConsoleEvent::Slave(st.slave_api(s))),
        );
    }
    if let Ok(rows) = builds::list(&st.db, None, None, 100).await {
        out.extend(rows.into_iter().map(|b| ConsoleEvent::Build(b.into_api())));
    }
    out
}

/// Stored lines from `from_seq`, in frames of at most 1000 lines; then `LogEnd` if the build ended.
async fn backlog(st: &AppState, build: BuildId, from_seq: u64) -> Vec<ConsoleEvent> {
    let mut out = vec![];
    if let Ok(f) = tokio::fs::File::open(st.storage.log_path(build)).await {
        let mut lines = tokio::io::BufReader::new(f).lines();
        let (mut seq, mut chunk, mut first) = (0u64, vec![], from_seq);
        while let Ok(Some(l)) = lines.next_line().await {
            if seq >= from_seq {
                chunk.push(l);
                if chunk.len() == 1000 {
                    out.push(ConsoleEvent::LogLines {
                        build,
                        first_seq: first,
                        lines: std::mem::take(&mut chunk),
                    });
                    first = seq + 1;
                }
            }
            seq += 1;
        }
        if !chunk.is_empty() {
            out.push(ConsoleEvent::LogLines {
                build,
                first_seq: first,
                lines: chunk,
            });
        }
    }
    if let Ok(Some(b)) = builds::get(&st.db, build).await {
        if b.state().is_terminal() {
            out.push(ConsoleEvent::LogEnd { build });
        }
    }
    out
}
