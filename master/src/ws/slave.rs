//! `/ws/slave`: one session per connected slave (protocol described in `kiln_shared::frames`).
//!
//! The upgrade is refused with a plain HTTP error (401 bad token, 426 protocol mismatch) so that
//! even a slave of another version can print why. A slave an admin disabled is admitted like any
//! other: it stays connected and idle (the dispatcher gives it nothing new) until it is enabled
//! again. After the upgrade, a frame that cannot be decoded closes that connection only; the
//! master carries on.

use crate::auth;
use crate::db::{builds, slaves};
use crate::hub::Resync;
use crate::lifecycle::EndedBy;
use crate::state::AppState;
use crate::ws::holdings::Holdings;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec::{self, CodecError, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use kiln_shared::frames::{Cadence, ConsoleEvent, Directive, MasterFrame, Outcome, SlaveFrame};
use kiln_shared::{BuildId, BuildState, SlaveId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const PROTOCOL_HEADER: &str = "x-kiln-protocol";

/// A slave that speaks this often about builds that are not its own is disconnected.
const FOREIGN_LIMIT: u32 = 10;

/// Why a slave session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("undecodable frame: {0}")]
    Codec(#[from] CodecError),
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    #[error("no hello within 10 s")]
    NoHello,
    #[error("refused its hello: {0}")]
    BadHello(String),
    #[error("silent for {0} s")]
    Silent(u32),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{FOREIGN_LIMIT} frames about builds that are not its own; disconnected")]
    Abuse,
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn upgrade(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let slave = match auth::slave_from_headers(&st, &headers).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if !slave.enabled {
        tracing::info!(slave = %slave.name, "a disabled slave connects: it stays idle until enabled");
    }
    let theirs = headers
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok());
    if theirs != Some(PROTOCOL_VERSION) {
        let said = theirs.map_or("no".to_string(), |v| v.to_string());
        return (
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "slave '{}' speaks protocol version {said}, this master speaks {PROTOCOL_VERSION}: install a matching kiln-slave",
                slave.name
            ),
        )
            .into_response();
    }
    let id = SlaveId(slave.id);
    let name = slave.name.clone();
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            let _running = st.hub.session_guard();
            let _counted = st.metrics.websocket(crate::metrics::WsKind::Slave);
            if let Err(e) = session(st.clone(), id, name.clone(), socket).await {
                tracing::warn!(slave = %name, "slave session closed: {e}");
            }
        })
}

fn binary(frame: &MasterFrame) -> Message {
    // Master frames are small and well-formed; failure here is a bug worth a loud log.
    match codec::encode(frame) {
        Ok(b) => Message::Binary(b.into()),
        Err(e) => {
            tracing::error!("cannot encode {frame:?}: {e}");
            Message::Close(None)
        }
    }
}

/// Tells the slave why its hello is refused (as far as the socket still carries it); the
/// session ends with that reason.
async fn refuse(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    why: String,
) -> ProtocolError {
    let _ = sink
        .send(binary(&MasterFrame::Refused {
            reason: why.clone(),
        }))
        .await;
    ProtocolError::BadHello(why)
}

async fn session(
    st: Arc<AppState>,
    id: SlaveId,
    name: String,
    socket: WebSocket,
) -> Result<(), ProtocolError> {
    let (mut sink, mut stream) = socket.split();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .map_err(|_| ProtocolError::NoHello)?;
    let hello = match first {
        Some(Ok(Message::Binary(b))) => match codec::decode::<SlaveFrame>(&b) {
            Ok(SlaveFrame::Hello(h)) => h,
            Ok(_) => return Err(ProtocolError::Unexpected("frame before hello")),
            Err(e) => {
                let _ = sink
                    .send(binary(&MasterFrame::Refused {
                        reason: format!("cannot read your hello: {e}"),
                    }))
                    .await;
                return Err(e.into());
            }
        },
        _ => return Err(ProtocolError::Unexpected("message before hello")),
    };
    if let Err(why) = check_hello(&hello) {
        return Err(refuse(&mut sink, why).await);
    }
    let tags = match slaves::admit(&st.db, id, &name, &hello).await? {
        slaves::Admitted::Yes { tags, unapproved } => {
            if !unapproved.is_empty() {
                tracing::warn!(slave = %name, ?unapproved, "ignoring tags no admin approved for this slave");
            }
            tags
        }
        slaves::Admitted::Refused(why) => return Err(refuse(&mut sink, why).await),
    };
    st.hub.heard(id, st.clock.now());
    // The session is in the hub before the database says the slave is online: whoever sees it
    // online (an admin rotating its token, say) reaches it. What is sent to it waits in the
    // channel until after the `Welcome`.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = st.hub.register(
        id,
        crate::hub::SlaveInfo {
            name: name.clone(),
            arch: hello.arch.clone(),
            emulates: hello.emulates.clone(),
            tags: tags.clone(),
            backends: hello.backends.clone(),
            capacity: hello.capacity,
        },
        tx,
    );
    let cfg = &st.cfg.master;
    let cadence = Cadence {
        heartbeat_secs: cfg.heartbeat_secs,
        lost_timeout_secs: cfg.lost_timeout_secs,
        log_chunk_bytes: cfg.log_chunk_bytes,
    };
    let welcomed = async {
        let Some(before) = slaves::came_online(&st.db, id, &hello, &tags, &st.hub.instance).await?
        else {
            return Err(refuse(&mut sink, format!("slave '{name}' was revoked")).await);
        };
        sink.send(binary(&MasterFrame::Welcome { slave: id, cadence }))
            .await
            .map_err(|_| ProtocolError::Unexpected("close during handshake"))?;
        Ok::<_, ProtocolError>(before)
    }
    .await;
    let before = welcomed.inspect_err(|_| {
        st.hub.unregister(id, conn);
    })?;
    tracing::info!(slave = %name, arch = %hello.arch, held = hello.builds.len(), "slave connected");

    // Builds the database gives to this slave but the slave no longer holds (its daemon restarted
    // without them). One it never started had its job still on the way when the daemon ended
    // (the slave keeps every job it took in its work dir, and adopts them all): it is queued
    // again, unless a dispatcher claimed it since this session registered and its job went out
    // here (the hub decides which came first). One it had started is lost now rather than after
    // the timeout.
    let result = async {
        // A failure here ends the session like any other (unregistered, the slave offline).
        let checked = reconnect_check(&st, id, conn, &name, &hello.builds).await;
        st.hub.checked(id, conn);
        checked?;
        // Its master may have died, and one that dies between ending a build and telling the
        // others (`fanout.rs`) leaves every console missing that end for good. The slaves it
        // held come to the others, after it is gone: every master's consoles ask again, at a
        // bounded pace (`Hub::came_from`).
        match before.map(|m| st.hub.came_from(&m)) {
            Some(Resync::Now) => st.hub.publish(ConsoleEvent::Resync),
            Some(Resync::After(wait)) => {
                let st = st.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    st.hub.planned_resync_sent();
                    st.hub.publish(ConsoleEvent::Resync);
                });
            }
            Some(Resync::No) | None => {}
        }
        if let Some(r) = reconcile(&st, id, &hello.builds).await? {
            sink.send(binary(&r)).await.ok();
        }
        st.slave_changed(id).await;
        st.hub.wake();
        // The session's read time-out counts only what the slave sends: frames the master sends
        // it (an `Assign`, say) prove nothing about whether it is still there.
        let silent = Duration::from_secs(u64::from(cfg.lost_timeout_secs));
        let mut deadline = tokio::time::Instant::now() + silent;
        let mut foreign = 0u32;
        let mut holdings = Holdings::default();
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(frame) => {
                        if sink.send(binary(&frame)).await.is_err() {
                            return Ok(());
                        }
                    }
                    // Replaced by a newer session of the same slave, or closed by the master.
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ProtocolError::Silent(cfg.lost_timeout_secs));
                }
                inp = stream.next() => {
                    deadline = tokio::time::Instant::now() + silent;
                    st.hub.heard(id, st.clock.now());
                    match inp {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Text(_))) => {
                            let _ = sink.send(Message::Close(Some(CloseFrame {
                                code: 1003, reason: "binary frames only".into() }))).await;
                            return Err(ProtocolError::Unexpected("text message"));
                        }
                        Some(Ok(Message::Binary(b))) => {
                            let frame = match codec::decode::<SlaveFrame>(&b) {
                                Ok(f) => f,
                                Err(e) => {
                                    let _ = sink.send(Message::Close(Some(CloseFrame {
                                        code: 1007, reason: format!("{e}").chars().take(120).collect::<String>().into() }))).await;
                                    return Err(e.into());
                                }
                            };
                            let holds = match about(&frame) {
                                None => false,
                                Some(build) => match standing(&st, id, build, &mut holdings).await? {
                                    Standing::Foreign => {
                                        foreign += 1;
                                        tracing::warn!(slave = %name, %build, foreign, "ignored a frame about a build never assigned to this slave");
                                        if foreign >= FOREIGN_LIMIT {
                                            return Err(ProtocolError::Abuse);
                                        }
                                        continue;
                                    }
                                    Standing::Ended => false,
                                    Standing::Holds => true,
                                },
                            };
                            for reply in handle(&st, id, &name, frame, holds).await? {
                                if sink.send(binary(&reply)).await.is_err() {
                                    return Ok(());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    .await;
    let replaced = !st.hub.unregister(id, conn) && st.hub.connected().iter().any(|(s, _)| *s == id);
    if !replaced {
        let last_heard = st.hub.last_heard(id);
        if let Err(e) = slaves::went_offline(&st.db, id, last_heard, &st.hub.instance).await {
            tracing::warn!("marking slave offline: {e}");
        }
        st.slave_changed(id).await;
        tell_if_still_away(st.clone(), id, name.clone(), last_heard);
        tracing::info!(slave = %name, "slave disconnected");
    }
    result
}

/// A slave that stays away for `master.lost_timeout_secs` (as long as its builds are given)
/// is reported to `slave_offline` subscribers; a daemon restart or a short network blip is
/// not.
fn tell_if_still_away(
    st: Arc<AppState>,
    id: SlaveId,
    name: String,
    last_heard: Option<chrono::DateTime<chrono::Utc>>,
) {
    tokio::spawn(async move {
        let grace = std::time::Duration::from_secs(st.cfg.master.lost_timeout_secs.into());
        tokio::time::sleep(grace).await;
        // Back here, or with another master serving the farm.
        if st.hub.connected().iter().any(|(s, _)| *s == id)
            || slaves::is_online(&st.db, id).await.unwrap_or(false)
        {
            return;
        }
        let since = last_heard.unwrap_or_else(chrono::Utc::now);
        match crate::notify::queue_slave_offline(&st.db, &name, since).await {
            Ok(0) => {}
            Ok(_) => st.notify.wake(),
            Err(e) => tracing::warn!(slave = %name, "queueing slave_offline messages: {e}"),
        }
    });
}

/// What should be true for each build the slave says it holds.
async fn reconcile(
    st: &AppState,
    slave: SlaveId,
    held: &[BuildId],
) -> Result<Option<MasterFrame>, ProtocolError> {
    if held.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(held.len());
    for &h in held {
        let directive = match builds::get(&st.db, h).await? {
            None => Directive::Forget {
                reason: "the master does not know this build".into(),
            },
            Some(b) if b.state().is_active() && b.slave_id == Some(slave.0) => Directive::Keep {
                next_seq: st.storage.next_seq(h).await?,
            },
            // Never a word about another slave's build, not even its state.
            Some(b) if b.slave_id != Some(slave.0) => Directive::Forget {
                reason: format!("build {h} is not this slave's"),
            },
            Some(b) if b.state().is_active() => Directive::Forget {
                reason: format!("build {h} now runs on another slave"),
            },
            Some(b) => Directive::Forget {
                reason: format!(
                    "build {h} is {}: {}",
                    b.state(),
                    b.reason.unwrap_or_default()
                ),
            },
        };
        out.push((h, directive));
    }
    Ok(Some(MasterFrame::Reconcile { builds: out }))
}

/// Answers one frame; `holds`: the slave holds the build the frame is about (dispatched to it or
/// running on it), read once by the caller.
async fn handle(
    st: &AppState,
    slave: SlaveId,
    name: &str,
    frame: SlaveFrame,
    holds: bool,
) -> Result<Vec<MasterFrame>, ProtocolError> {
    match frame {
        SlaveFrame::Hello(_) => Err(ProtocolError::Unexpected("second hello")),
        SlaveFrame::Draining => {
            tracing::info!(slave = %name, "slave is draining: no new builds for it");
            st.hub.set_draining(slave);
            st.slave_changed(slave).await;
            Ok(vec![])
        }
        // When it was heard is in the hub at once; the database gets it in batches
        // (`liveness::record_last_seen`): 1,000 slaves are not 200 UPDATEs a second.
        SlaveFrame::Heartbeat { builds: held } => {
            never_received(st, slave, name, &held).await?;
            Ok(reconcile(st, slave, &held).await?.into_iter().collect())
        }
        // The hub heard it (the database gets it with the next batch, as for a heartbeat).
        SlaveFrame::Started { build, commit } => {
            if kiln_shared::branch_url::validate_commit(&commit).is_err() || commit.len() < 40 {
                tracing::warn!(slave = %name, %build, "ignored a start with a malformed commit id");
                return Ok(vec![MasterFrame::Cancel {
                    build,
                    reason: "the commit id reported is not a full hex commit id".into(),
                }]);
            }
            let t = st.start_build(build, slave, &commit).await?;
            Ok(match t {
                // A resend after a reconnect: already running here.
                builds::Transition::Done { .. }
                | builds::Transition::Refused {
                    current: BuildState::Running,
                } => vec![],
                _ => vec![MasterFrame::Cancel {
                    build,
                    reason: "the master no longer expects this build".into(),
                }],
            })
        }
        SlaveFrame::Log {
            build,
            first_seq,
            lines,
        } => {
            if !holds {
                return Ok(vec![MasterFrame::Cancel {
                    build,
                    reason: "the master no longer expects this build".into(),
                }]);
            }
            // The log limit is enforced here, where a log enters the master (the slave and the
            // branch are untrusted), keeping room for the master's note that says so.
            let limit = st.cfg.master.limits.log_bytes;
            let over = log_limit_reason(limit);
            let room = limit.saturating_sub(crate::storage::note_bytes(&over));
            let mut a = st.storage.append_log(build, first_seq, &lines, room).await;
            if a.as_ref().is_ok_and(|a| a.sealed) {
                // The build's end sealed its log, unless that end never committed (its
                // transaction failed, or its master died first): then the log goes on.
                // The row stays locked until the lines are in: no end can seal it meanwhile.
                let mut tx = st.db.begin().await?;
                if !builds::held_by_locked(&mut *tx, build, Some(slave.0)).await? {
                    return Ok(vec![MasterFrame::Cancel {
                        build,
                        reason: "the build has ended; its log takes no more lines".into(),
                    }]);
                }
                st.storage.unseal_log(build, None).await?;
                a = st.storage.append_log(build, first_seq, &lines, room).await;
                tx.commit().await?;
            }
            let a = match a {
                Ok(a) => a,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    disk_full(st, build).await?;
                    return Ok(vec![]);
                }
                Err(e) => return Err(e.into()),
            };
            // The index row follows the file at most twice a second (and at the end). Consoles
            // follow the file itself (`Storage::follow_logs`).
            if a.written > 0 && a.index_due {
                builds::set_running_log_lines(&st.db, build, a.next_seq, a.bytes).await?;
            }
            if a.limited {
                log_limit_reached(st, build, &over).await?;
            }
            Ok(vec![MasterFrame::LogAck {
                build,
                next_seq: a.next_seq,
            }])
        }
        SlaveFrame::Progress {
            build,
            phase,
            percent,
        } => {
            if !holds {
                tracing::warn!(slave = %name, %build, "ignored progress about a build it does not hold");
                return Ok(vec![]);
            }
            tracing::debug!(%build, %phase, ?percent, "progress");
            st.hub.publish(kiln_shared::frames::ConsoleEvent::Progress {
                build,
                phase,
                percent,
            });
            Ok(vec![])
        }
        SlaveFrame::Finished {
            build,
            outcome,
            log_lines,
        } => {
            if !holds {
                // Already recorded (a resend after a reconnect) or not this slave's: nothing to
                // change; the acknowledgement lets the slave drop it.
                return Ok(vec![MasterFrame::FinishedAck { build }]);
            }
            let (stored, _) = st.storage.log_size(build).await?;
            let (to, reason) = match &outcome {
                Outcome::Succeeded if stored < log_lines => (
                    BuildState::Failed,
                    Some(format!(
                        "the slave reported success but the master holds {stored} of {log_lines} log lines"
                    )),
                ),
                Outcome::Succeeded => (BuildState::Succeeded, None),
                Outcome::Failed { reason } => (BuildState::Failed, Some(reason.clone())),
                Outcome::Cancelled { reason } => (BuildState::Cancelled, Some(reason.clone())),
            };
            st.end_build(build, to, reason.as_deref(), EndedBy::Slave(slave))
                .await?;
            Ok(vec![MasterFrame::FinishedAck { build }])
        }
    }
}

/// What a slave says about itself is checked where it enters: names and words of the right shape,
/// a capacity of 1 to 64 (stored without wrapping).
fn check_hello(h: &kiln_shared::frames::Hello) -> Result<(), String> {
    let word = |what: &str, v: &str| {
        if kiln_shared::api::is_word(v) {
            Ok(())
        } else {
            Err(format!("{what} '{}' is not a valid name", v.escape_debug()))
        }
    };
    if !(1..=64).contains(&h.capacity) {
        return Err(format!("capacity {} is not between 1 and 64", h.capacity));
    }
    word("architecture", &h.arch)?;
    for a in &h.emulates {
        word("emulated architecture", a)?;
    }
    for b in &h.backends {
        word("backend", b)?;
    }
    for t in &h.tags {
        kiln_shared::api::validate_name("tag", t)?;
    }
    if h.tags.len() > 64 || h.backends.len() > 64 || h.emulates.len() > 64 || h.builds.len() > 4096
    {
        return Err("too many tags, backends, architectures or builds".into());
    }
    let c = &h.capabilities;
    if c.tools.len() > 64 || c.binfmt.len() > 64 {
        return Err("too many tools or binfmt architectures".into());
    }
    for a in &c.binfmt {
        word("binfmt architecture", a)?;
    }
    for (tool, version) in &c.tools {
        if tool.is_empty()
            || tool.len() > 32
            || !tool
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c))
        {
            return Err(format!(
                "tool '{}' is not a valid name",
                tool.escape_debug()
            ));
        }
        if version.is_empty()
            || version.len() > 64
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.:~_".contains(c))
        {
            return Err(format!(
                "the version of {tool} '{}' is not a version",
                version.escape_debug()
            ));
        }
    }
    Ok(())
}

/// The build a frame speaks about, if any.
fn about(frame: &SlaveFrame) -> Option<BuildId> {
    match frame {
        SlaveFrame::Started { build, .. }
        | SlaveFrame::Log { build, .. }
        | SlaveFrame::Progress { build, .. }
        | SlaveFrame::Finished { build, .. } => Some(*build),
        SlaveFrame::Hello(_) | SlaveFrame::Heartbeat { .. } | SlaveFrame::Draining => None,
    }
}

/// Jobs sent to the slave longer than `master.lost_timeout_secs` ago that it still does not list
/// among what it holds never reached it (an `Assign` that went out on a session already dead,
/// say through another master that still held one): they go back to the queue as the same
/// builds, rather than staying `dispatched` for as long as the slave is heard from. A job on its
/// way is listed long before that; if it still arrives, the slave's `Started` is refused.
async fn never_received(
    st: &AppState,
    slave: SlaveId,
    name: &str,
    held: &[BuildId],
) -> Result<(), ProtocolError> {
    let grace = st.cfg.master.lost_timeout_secs;
    for b in builds::dispatched_before(&st.db, slave, grace).await? {
        if held.contains(&b) {
            continue;
        }
        let reason = format!(
            "slave '{name}' never received its job (not among what it holds {grace} s after it was sent)"
        );
        st.requeue_unreached(b, slave, &reason).await?;
    }
    Ok(())
}

/// The reconnect check of session `conn`: builds the database gives to the slave that its hello
/// does not list. Stops as soon as a newer session of the slave replaced this one (whose own
/// check sees everything claimed before it).
async fn reconnect_check(
    st: &AppState,
    id: SlaveId,
    conn: u64,
    name: &str,
    holds: &[BuildId],
) -> Result<(), ProtocolError> {
    for (b, state) in builds::active_for_slave(&st.db, id).await? {
        if holds.contains(&b) {
            continue;
        }
        let done = if state == BuildState::Dispatched {
            if !st.hub.withdraw_unreached(id, conn, b) {
                continue;
            }
            let reason = format!("slave '{name}' restarted before its job reached it");
            st.requeue_unreached(b, id, &reason).await.map(|_| ())
        } else {
            if !st.hub.is_current(id, conn) {
                break;
            }
            let reason =
                format!("slave '{name}' reconnected without this build (its daemon restarted)");
            st.lose_build(b, &reason).await.map(|_| ())
        };
        if let Err(e) = done {
            tracing::warn!("build {b} no longer held by slave '{name}': {e:#}");
        }
    }
    Ok(())
}

/// Where a slave stands with a build it speaks about.
enum Standing {
    /// Never given to it (or unknown): not its business.
    Foreign,
    /// Given to it, ended since: a resend after a reconnect, not abuse.
    Ended,
    /// Dispatched to it or running on it now.
    Holds,
}

/// One read of the build decides both whether a frame is foreign and whether the slave holds it;
/// "holds" is remembered for the session's next frames while nothing of the slave ended
/// (`holdings.rs`).
async fn standing(
    st: &AppState,
    slave: SlaveId,
    build: BuildId,
    holdings: &mut Holdings,
) -> Result<Standing, ProtocolError> {
    let version = st.hub.holdings_version(slave);
    if holdings.knows(build, version, Instant::now()) {
        return Ok(Standing::Holds);
    }
    let standing = match builds::holder(&st.db, build).await? {
        Some((s, state)) if s == Some(slave.0) && state.is_active() => Standing::Holds,
        Some((s, _)) if s == Some(slave.0) => Standing::Ended,
        _ => Standing::Foreign,
    };
    match standing {
        Standing::Holds => holdings.remember(build, version, Instant::now()),
        _ => holdings.forget(build),
    }
    Ok(standing)
}

/// The master's disk filled while storing a build's log: the lines stored so far stay (whole),
/// and the build fails saying so; its slave is told to stop. Other builds' logs are untouched.
async fn disk_full(st: &AppState, build: BuildId) -> Result<(), ProtocolError> {
    let free = st
        .storage
        .free_bytes()
        .map_or_else(|| "unknown".to_string(), |b| b.to_string());
    tracing::error!(%build, free_bytes = %free, "the master's storage is full; failing the build");
    let reason = format!(
        "disk full: the master could not store more of the log ({free} bytes free); the log so far is kept"
    );
    st.end_build(
        build,
        BuildState::Failed,
        Some(&reason),
        EndedBy::Master {
            stop_on_slave: true,
        },
    )
    .await?;
    Ok(())
}

/// The reason a build fails with when its log reaches `master.limits.log_bytes`.
fn log_limit_reason(limit: u64) -> String {
    format!(
        "log limit of {} exceeded",
        kiln_shared::config::human_bytes(limit)
    )
}

/// A build's log reached the limit: the lines stored so far stay (whole), later ones are dropped
/// (the build is over, so its frames are answered with `Cancel`), and the build fails with the
/// reason; its slave is told to stop it.
async fn log_limit_reached(
    st: &AppState,
    build: BuildId,
    reason: &str,
) -> Result<(), ProtocolError> {
    tracing::warn!(%build, "{reason}; failing the build and stopping it on its slave");
    st.end_build(
        build,
        BuildState::Failed,
        Some(reason),
        EndedBy::Master {
            stop_on_slave: true,
        },
    )
    .await?;
    Ok(())
}
