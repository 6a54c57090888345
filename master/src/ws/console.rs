//! `/ws/console`: live data for the web console. The upgrade rides the session cookie (its
//! `Origin` must be allowed) or an API token as the bearer. Requests and events are
//! `kiln_shared::frames` `ConsoleRequest` / `ConsoleEvent`, bincode-encoded by the shared codec.
//! Each event it sends and each request it answers is checked against the person's access
//! ([`crate::auth::live`], kept per socket until access may have changed): builds of projects
//! hidden from them are not sent, and when their session ends the socket closes with an `Error`
//! event.

use crate::auth::live::{About, LiveAccess, Verdict};
use crate::auth::principal::{self, Principal, Via};
use crate::db::{builds, slaves};
use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::{LogReader, ReadFrom};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildId;
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

pub async fn upgrade(
    State(st): State<Arc<AppState>>,
    who: Result<Principal, ApiError>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let who = match who {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // Another site's page could open a socket with the browser's cookie: only allowed origins.
    if matches!(who.via, Via::Session { .. }) && !principal::origin_allowed(&st, &headers) {
        return ApiError::Forbidden(
            "the WebSocket's Origin is not allowed (see master.public_url and auth.allowed_origins)"
                .into(),
        )
        .into_response();
    }
    ws.max_message_size(codec::MAX_FRAME_BYTES)
        .on_upgrade(move |s| session(st, who, s))
}

const SIGNED_OUT: &str = "your session has ended (or your token was revoked); sign in again";

/// Whether `ev` may go to `who` now; `None` when they are signed out. `by_person`: checked for
/// a request the person sent (counts as use of the session).
async fn may_send(
    st: &AppState,
    access: &mut LiveAccess,
    who: &Principal,
    ev: &ConsoleEvent,
    by_person: bool,
) -> Option<bool> {
    let about = match ev {
        ConsoleEvent::Build(b) => About::Project(&b.project),
        ConsoleEvent::LogLines { build, .. }
        | ConsoleEvent::LogEnd { build }
        | ConsoleEvent::Progress { build, .. }
        | ConsoleEvent::EarlierLines { build, .. } => About::Build(*build),
        ConsoleEvent::Slave(_) | ConsoleEvent::Error { .. } | ConsoleEvent::Resync => About::Farm,
    };
    match access.check(st, who, about, by_person).await {
        Ok(Verdict::Visible) => Some(true),
        Ok(Verdict::Hidden) => Some(false),
        Ok(Verdict::SignedOut) => None,
        Err(e) => {
            tracing::warn!("checking a console's access: {e}");
            Some(false)
        }
    }
}

fn frame(ev: &ConsoleEvent) -> Option<Message> {
    codec::encode(ev).ok().map(|b| Message::Binary(b.into()))
}

/// Largest `LogLines` event: lines, and bytes of text (a single longer line travels alone, cut at
/// `LINE_CAP`). Both far below the frame limit, so no event is ever too big to send.
const CHUNK_LINES: usize = 5_000;
const CHUNK_BYTES: usize = 1024 * 1024;
/// Most lines one `EarlierLog` request is answered with.
const EARLIER_MAX_LINES: u32 = 10_000;

/// One log this console follows. Everything it is sent comes from the log file, read from the
/// subscription's start in bounded chunks, as fast as the socket takes them: the stored lines,
/// then each new line as the log grows (the file is written before anyone is told it grew), so
/// the lines arrive in order, without gaps or duplicates, and memory stays bounded whatever the
/// log's size or the console's speed.
struct Follow {
    reader: Option<LogReader>,
    /// The file may hold lines not sent yet.
    dirty: bool,
    /// The build ended: once the file is read to its end, `LogEnd`.
    ended: bool,
}

impl Follow {
    fn new(st: &AppState, build: BuildId, from: ReadFrom) -> Follow {
        Follow {
            reader: Some(st.storage.log_reader(build, from)),
            dirty: true,
            ended: false,
        }
    }
}

async fn session(st: Arc<AppState>, who: Principal, socket: WebSocket) {
    let _counted = st.metrics.websocket(crate::metrics::WsKind::Console);
    let (mut sink, mut stream) = socket.split();
    let mut events = st.hub.events.subscribe();
    let mut grew = st.storage.follow_logs();
    let mut queue = false;
    let mut logs: BTreeMap<BuildId, Follow> = BTreeMap::new();
    // Round-robin over the logs with lines to send.
    let mut turn = BuildId(i64::MIN);
    let mut access = LiveAccess::default();
    loop {
        let pending = logs.values().any(|f| f.dirty);
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
                if may_send(&st, &mut access, &who, &ConsoleEvent::Resync, true).await.is_none() {
                    let _ = send_checked(&st, &mut access, &who, &mut sink, &ConsoleEvent::Error { message: SIGNED_OUT.into() }).await;
                    return;
                }
                let replies = match req {
                    ConsoleRequest::SubscribeQueue => { queue = true; snapshot(&st, &who).await }
                    ConsoleRequest::UnsubscribeQueue => { queue = false; vec![] }
                    ConsoleRequest::SubscribeLog { build, from_seq } => {
                        subscribe(&st, &mut logs, build, ReadFrom::Seq(from_seq)).await;
                        vec![]
                    }
                    ConsoleRequest::SubscribeLogTail { build, lines } => {
                        subscribe(&st, &mut logs, build, ReadFrom::Tail(u64::from(lines))).await;
                        vec![]
                    }
                    ConsoleRequest::UnsubscribeLog { build } => { logs.remove(&build); vec![] }
                    ConsoleRequest::EarlierLog { build, before_seq, lines } => {
                        vec![earlier(&st, build, before_seq, lines).await]
                    }
                };
                for r in replies {
                    if !send_checked(&st, &mut access, &who, &mut sink, &r).await { return; }
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
                    // Log lines come from the file (above); the end is sent once the file is read
                    // to it.
                    ConsoleEvent::LogLines { .. } | ConsoleEvent::EarlierLines { .. } => false,
                    ConsoleEvent::LogEnd { build } => {
                        if let Some(f) = logs.get_mut(build) {
                            f.ended = true;
                            f.dirty = true;
                        }
                        false
                    }
                    ConsoleEvent::Progress { .. } => queue,
                    ConsoleEvent::Error { .. } | ConsoleEvent::Resync => true,
                };
                if wanted && !send_checked(&st, &mut access, &who, &mut sink, &ev).await {
                    return;
                }
            }
            g = grew.recv() => match g {
                Ok(build) => {
                    if let Some(f) = logs.get_mut(&build) { f.dirty = true; }
                }
                // Missed some: any followed log may have grown.
                Err(RecvError::Lagged(_)) => logs.values_mut().for_each(|f| f.dirty = true),
                Err(RecvError::Closed) => {}
            },
            () = std::future::ready(()), if pending => {
                let next = logs
                    .range((Excluded(turn), Unbounded))
                    .chain(logs.iter())
                    .find(|(_, f)| f.dirty)
                    .map(|(b, _)| *b);
                let Some(build) = next else { continue };
                turn = build;
                let f = logs.get_mut(&build).expect("found above");
                let Some(ev) = next_event(build, f).await else { continue };
                if !send_checked(&st, &mut access, &who, &mut sink, &ev).await { return; }
            }
        }
    }
}

/// Sends `ev` if `who` may see it now; false when the socket must close (gone, or signed out:
/// then an `Error` event says so first).
async fn send_checked(
    st: &AppState,
    access: &mut LiveAccess,
    who: &Principal,
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    ev: &ConsoleEvent,
) -> bool {
    // A slave's builds: only those of projects the person may see.
    let filtered;
    let ev = match ev {
        ConsoleEvent::Slave(s) if !s.builds.is_empty() && !who.user.admin => {
            let mut one = [s.clone()];
            if crate::auth::access::hide_builds(st, who, &mut one)
                .await
                .is_err()
            {
                return true;
            }
            let [s] = one;
            filtered = ConsoleEvent::Slave(s);
            &filtered
        }
        other => other,
    };
    match may_send(st, access, who, ev, false).await {
        Some(true) => match frame(ev) {
            Some(m) => sink.send(m).await.is_ok(),
            None => true,
        },
        Some(false) => true,
        None => {
            if let Some(m) = frame(&ConsoleEvent::Error {
                message: SIGNED_OUT.into(),
            }) {
                let _ = sink.send(m).await;
            }
            false
        }
    }
}

/// Follows `build`'s log from `from` (again, if it was followed: from the new start).
async fn subscribe(
    st: &AppState,
    logs: &mut BTreeMap<BuildId, Follow>,
    build: BuildId,
    from: ReadFrom,
) {
    let mut f = Follow::new(st, build, from);
    // Ended before now (its `LogEnd` was published before this console listened): the stored
    // log is all there is. Ending later is heard from the event feed.
    if let Ok(Some(b)) = builds::get(&st.db, build).await {
        f.ended = b.state().is_terminal();
    }
    logs.insert(build, f);
}

/// The next event of a followed log: its next chunk of stored lines; at the end of the file,
/// `LogEnd` if the build ended (then the file is closed), else nothing until it grows.
async fn next_event(build: BuildId, f: &mut Follow) -> Option<ConsoleEvent> {
    let Some(mut reader) = f.reader.take() else {
        f.dirty = false;
        return None;
    };
    let (reader, chunk) = match tokio::task::spawn_blocking(move || {
        let c = reader.next_chunk(CHUNK_LINES, CHUNK_BYTES);
        (reader, c)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%build, "reading the log for a console: {e}");
            f.dirty = false;
            return None;
        }
    };
    match chunk {
        Ok(Some((first_seq, lines))) => {
            f.reader = Some(reader);
            Some(ConsoleEvent::LogLines {
                build,
                first_seq,
                lines,
            })
        }
        Ok(None) if f.ended => {
            f.dirty = false;
            Some(ConsoleEvent::LogEnd { build })
        }
        Ok(None) => {
            f.reader = Some(reader);
            f.dirty = false;
            None
        }
        Err(e) => {
            tracing::warn!(%build, "reading the log for a console: {e}");
            f.reader = Some(reader);
            f.dirty = false;
            None
        }
    }
}

/// The answer to `EarlierLog`: up to `lines` lines just before `before_seq`.
async fn earlier(st: &AppState, build: BuildId, before_seq: u64, lines: u32) -> ConsoleEvent {
    let max = u64::from(lines.min(EARLIER_MAX_LINES));
    let (first_seq, lines) = st
        .storage
        .lines_before(build, before_seq, max, CHUNK_BYTES)
        .await
        .unwrap_or_else(|e| {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%build, "reading earlier log lines for a console: {e}");
            }
            (before_seq, vec![])
        });
    ConsoleEvent::EarlierLines {
        build,
        first_seq,
        before_seq,
        lines,
    }
}

/// A queue snapshot holds the newest builds, those not ended, and those ended this recently
/// ([`builds::list_for_console`]), at most [`SNAPSHOT_CAP`] of them.
const SNAPSHOT_NEWEST: i64 = 100;
const SNAPSHOT_RECENT_SECS: f64 = 3600.0;
const SNAPSHOT_CAP: i64 = 2000;

async fn snapshot(st: &AppState, who: &Principal) -> Vec<ConsoleEvent> {
    let mut out = vec![];
    if let Ok(rows) = slaves::list(&st.db).await {
        out.extend(
            rows.into_iter()
                .map(|s| ConsoleEvent::Slave(st.slave_api(s))),
        );
    }
    let visible = match crate::auth::access::visible_projects(st, who).await {
        Ok(v) => v,
        Err(_) => return out,
    };
    let rows = builds::list_for_console(
        &st.db,
        visible.as_deref(),
        SNAPSHOT_NEWEST,
        SNAPSHOT_RECENT_SECS,
        SNAPSHOT_CAP,
    );
    if let Ok(rows) = rows.await {
        out.extend(rows.into_iter().map(|b| ConsoleEvent::Build(b.into_api())));
    }
    out
}
