//! The slave's one WebSocket to the master: hello (with the builds it holds), the master's
//! cadence, heartbeats, jobs in, log/results out; on a lost connection it reconnects with
//! backoff while its builds carry on, then resends whatever the master has not acknowledged.
//!
//! On start it re-adopts the builds a previous daemon left running (`supervisor::adopt_all`).
//! SIGTERM exits at once, leaving builds running for the next daemon to adopt — unless the slave
//! runs with `--drain` (or the master sent `Drain`): then it takes no new builds, lets the held
//! ones finish and be reported, and exits.

use crate::outbox::Outbox;
use crate::settings::Settings;
use crate::supervisor::{self, Env};
use anyhow::{Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec::{self, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use kiln_shared::frames::{Directive, Hello, MasterFrame, SlaveFrame};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// Retrying will not help (bad token, protocol mismatch, refused).
    #[error("{0}")]
    Fatal(String),
    #[error("{0}")]
    Transient(String),
    /// Drained: every held build is reported.
    #[error("drained")]
    Drained,
}

fn transient(e: impl std::fmt::Display) -> SessionError {
    SessionError::Transient(e.to_string())
}

/// Only one daemon per work dir: an exclusive lock held for the process's life.
fn lock_work_dir(settings: &Settings) -> Result<std::fs::File> {
    let path = settings.work_dir.join("slave.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another kiln-slave is running with work dir {}",
            settings.work_dir.display()
        );
    }
    Ok(f)
}

/// The shortest time between two drain passes (see `session`).
const COALESCE: Duration = Duration::from_millis(3);

/// At most 5 s between attempts, and never more than a quarter of the master's lost time-out.
fn max_reconnect_delay(env: &Env) -> Duration {
    let five = Duration::from_secs(5);
    match env.lost_timeout_secs.load(Ordering::SeqCst) {
        0 => five,
        t => five.min(Duration::from_millis(u64::from(t) * 250)),
    }
}

/// Runs the slave until a fatal error, or until drained.
pub async fn run(settings: Settings, drain_on_term: bool) -> Result<()> {
    std::fs::create_dir_all(settings.work_dir.join("builds"))
        .with_context(|| format!("cannot create work dir {}", settings.work_dir.display()))?;
    let _lock = lock_work_dir(&settings)?;
    let mirror = settings.mirror.clone().or_else(crate::machine::apt_mirror);
    let security_mirror = settings
        .security_mirror
        .clone()
        .or_else(crate::machine::apt_security_mirror);
    let tls = crate::tls::client_config(&settings.trust)?;
    let events = crate::events::Events::start()
        .map_err(|e| {
            tracing::warn!(
                "no inotify ({e}): build logs and states are read every {:?}",
                crate::events::FALLBACK_POLL
            )
        })
        .ok();
    let apt_cache = if settings.apt_cache_bytes > 0 {
        let dir = settings.work_dir.join("apt-cache");
        match crate::apt_cache::AptCache::start(dir, settings.apt_cache_bytes).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("no package cache for builds: {e}");
                None
            }
        }
    } else {
        None
    };
    let env = Arc::new(Env {
        apt_cache,
        rootfs_cache: crate::rootfs_cache::RootfsCache::new(
            &settings.work_dir,
            settings.rootfs_cache_bytes,
        ),
        mirror,
        security_mirror,
        apt_options: crate::machine::apt_options(),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .use_preconfigured_tls((*tls).clone())
            .build()?,
        outbox: Outbox::for_daemon(events.clone()),
        events,
        exe: std::env::current_exe().context("cannot find this program's path")?,
        draining: AtomicBool::new(false),
        lost_timeout_secs: Default::default(),
        tls,
        token: std::sync::Mutex::new(settings.token.clone()),
        cgroups: crate::cgroup::own_dir(),
        git_cache: crate::git_cache::GitCache::new(&settings.work_dir, settings.git_cache_bytes),
        settings,
    });
    tracing::info!(
        sandbox = ?env.settings.sandbox,
        cgroup = ?env.cgroups,
        "builds run in sandboxes"
    );
    tracing::info!(
        name = %env.settings.name, arch = %env.settings.arch, mirror = ?env.mirror,
        "kiln-slave starting"
    );
    supervisor::adopt_all(&env);
    {
        let env = env.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                if drain_on_term && !env.draining.load(Ordering::SeqCst) {
                    tracing::info!(
                        "draining: no new builds; exiting once {} held build(s) are reported",
                        env.outbox.count()
                    );
                    env.draining.store(true, Ordering::SeqCst);
                    env.outbox.changed.notify_one();
                } else {
                    tracing::info!(
                        "exiting; {} running build(s) carry on and will be re-adopted",
                        env.outbox.count()
                    );
                    std::process::exit(0);
                }
            }
        });
    }
    let mut delay = Duration::from_millis(250);
    loop {
        let began = Instant::now();
        match session(&env).await {
            Ok(()) => tracing::info!("connection to the master closed; reconnecting"),
            Err(SessionError::Drained) => {
                tracing::info!("drained; exiting");
                return Ok(());
            }
            Err(SessionError::Fatal(m)) => anyhow::bail!("the master refused this slave: {m}"),
            Err(SessionError::Transient(m)) => tracing::warn!("connection to the master: {m}"),
        }
        if began.elapsed() > Duration::from_secs(30) {
            delay = Duration::from_millis(250);
        }
        // A little jitter so a fleet does not reconnect in lockstep.
        let jitter = Duration::from_millis(u64::from(std::process::id() % 200));
        tokio::time::sleep(delay + jitter).await;
        delay = (delay * 2).min(max_reconnect_delay(&env));
    }
}

async fn session(env: &Arc<Env>) -> Result<(), SessionError> {
    let s = &env.settings;
    let mut req = s
        .ws_url()
        .into_client_request()
        .map_err(|e| SessionError::Fatal(format!("--master {}: {e}", s.master)))?;
    let h = req.headers_mut();
    h.insert(
        "authorization",
        format!("Bearer {}", env.token()).parse().map_err(|_| {
            SessionError::Fatal("--token contains characters not allowed in a header".into())
        })?,
    );
    h.insert("x-kiln-protocol", PROTOCOL_VERSION.into());
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let connector = tokio_tungstenite::Connector::Rustls(env.tls.clone());
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector))
            .await
            .map_err(|e| match e {
                e if crate::tls::certificate_error(&e).is_some() => {
                    SessionError::Fatal(crate::tls::refusal(
                        &host,
                        &crate::tls::certificate_error(&e).unwrap_or_default(),
                        &s.trust,
                    ))
                }
                tungstenite::Error::Http(resp) => {
                    let status = resp.status();
                    let body = resp
                        .body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    // The master's errors are JSON with the message in `error`.
                    let why = serde_json::from_str::<kiln_shared::api::ErrorBody>(&body)
                        .map(|e| e.error)
                        .unwrap_or(body);
                    let msg = format!("HTTP {status}: {why}");
                    if matches!(status.as_u16(), 401 | 403 | 426) {
                        SessionError::Fatal(msg)
                    } else {
                        SessionError::Transient(msg)
                    }
                }
                other => transient(other),
            })?;
    let (mut sink, mut stream) = ws.split();
    let send = |f: &SlaveFrame| -> Result<Message, SessionError> {
        codec::encode(f)
            .map(|b| Message::Binary(b.into()))
            .map_err(transient)
    };

    env.outbox.rewind();
    let work_dir = s.work_dir.clone();
    let capabilities =
        match tokio::task::spawn_blocking(move || crate::capabilities::probe(&work_dir)).await {
            Ok(c) => c,
            Err(e) => {
                // A bug, not the machine: say so rather than offer nothing without a word.
                tracing::error!(
                    "probing this machine failed ({e}); no backend is offered until the next \
                     connection (run kiln-slave doctor)"
                );
                Default::default()
            }
        };
    let backends = crate::capabilities::ready_backends(&capabilities, s.sandbox);
    tracing::info!(
        ?backends,
        "offering the backends this slave has everything for \
         (kiln-slave doctor says what the others lack)"
    );
    let hello = SlaveFrame::Hello(Hello {
        name: s.name.clone(),
        arch: s.arch.clone(),
        tags: s.tags.clone(),
        backends,
        capacity: s.capacity,
        version: env!("CARGO_PKG_VERSION").into(),
        builds: env.outbox.held(),
        emulates: crate::machine::emulated_arches(),
        capabilities,
    });
    sink.send(send(&hello)?).await.map_err(transient)?;
    let cadence = match tokio::time::timeout(Duration::from_secs(15), stream.next()).await {
        Err(_) => return Err(transient("no welcome from the master within 15 s")),
        Ok(Some(Ok(Message::Binary(b)))) => match codec::decode::<MasterFrame>(&b) {
            Ok(MasterFrame::Welcome { cadence, slave }) => {
                tracing::info!(slave_id = %slave, ?cadence, "connected to the master");
                env.lost_timeout_secs
                    .store(cadence.lost_timeout_secs, Ordering::SeqCst);
                cadence
            }
            Ok(MasterFrame::Refused { reason }) => return Err(SessionError::Fatal(reason)),
            Ok(other) => return Err(transient(format!("expected welcome, got {other:?}"))),
            Err(e) => {
                return Err(SessionError::Fatal(format!(
                    "cannot read the master's welcome: {e}"
                )))
            }
        },
        Ok(other) => return Err(transient(format!("expected welcome, got {other:?}"))),
    };
    let chunk = cadence.log_chunk_bytes as usize;
    let silent = Duration::from_secs(u64::from(cadence.lost_timeout_secs));
    let mut heartbeat =
        tokio::time::interval(Duration::from_secs(u64::from(cadence.heartbeat_secs)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // New log lines wake the drain (`changed`, from each log's inotify watch); this slow tick is
    // only a safety net (and the pace without inotify), and only while builds are held.
    let mut tail = tokio::time::interval(crate::events::FALLBACK_POLL);
    tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut draining_sent = false;
    let mut last_pass: Option<Instant> = None;
    loop {
        if env.draining.load(Ordering::SeqCst) {
            if !draining_sent {
                sink.send(send(&SlaveFrame::Draining)?)
                    .await
                    .map_err(transient)?;
                draining_sent = true;
            }
            if env.outbox.count() == 0 {
                let _ = sink.send(Message::Close(None)).await;
                return Err(SessionError::Drained);
            }
        }
        // Passes at most every COALESCE: a build writing line after line has them sent in a
        // few frames rather than a frame per line, and a lone line goes at once. A build's start
        // or end does not wait (1.5 ms of each no-op build, on average).
        if let Some(t) = last_pass.filter(|_| !env.outbox.urgent()) {
            tokio::time::sleep_until((t + COALESCE).into()).await;
        }
        last_pass = Some(Instant::now());
        for f in env.outbox.drain(chunk) {
            sink.send(send(&f)?).await.map_err(transient)?;
        }
        let holding = env.outbox.count() > 0;
        tokio::select! {
            _ = env.outbox.changed.notified() => {}
            _ = tail.tick(), if holding => {}
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silent {
                    return Err(transient(format!("the master was silent for {} s", silent.as_secs())));
                }
                let hb = SlaveFrame::Heartbeat { builds: env.outbox.held() };
                sink.send(send(&hb)?).await.map_err(transient)?;
                sink.send(Message::Ping(Default::default())).await.map_err(transient)?;
            }
            msg = stream.next() => {
                last_heard = Instant::now();
                match msg {
                    None | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Err(e)) => return Err(transient(e)),
                    Some(Ok(Message::Binary(b))) => {
                        let frame = codec::decode::<MasterFrame>(&b).map_err(transient)?;
                        handle(env, frame)?;
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

fn handle(env: &Arc<Env>, frame: MasterFrame) -> Result<(), SessionError> {
    let o = &env.outbox;
    match frame {
        MasterFrame::Assign(job) => supervisor::start(env, job),
        MasterFrame::Cancel { build, reason } => {
            tracing::info!(%build, %reason, "cancel");
            o.cancel(build, reason);
        }
        MasterFrame::LogAck { build, next_seq } => o.ack_log(build, next_seq),
        MasterFrame::TokenRotated { token } => env.rotate_token(token),
        MasterFrame::FinishedAck { build } => o.ack_finished(build),
        MasterFrame::Reconcile { builds } => {
            for (build, d) in builds {
                match d {
                    Directive::Keep { next_seq } => o.ack_log(build, next_seq),
                    Directive::Forget { reason } => {
                        if o.holds(build) {
                            tracing::info!(%build, %reason, "the master forgot this build; stopping it");
                            o.forget(build, reason);
                        }
                    }
                }
            }
        }
        MasterFrame::Drain => {
            tracing::info!("the master asked this slave to drain");
            env.draining.store(true, Ordering::SeqCst);
        }
        MasterFrame::Refused { reason } => return Err(SessionError::Fatal(reason)),
        MasterFrame::Welcome { .. } => {}
    }
    Ok(())
}
