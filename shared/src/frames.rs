//! Frames: the binary messages on the master's WebSockets, encoded by [`crate::codec`].
//!
//! ## `/ws/slave`
//! The slave authenticates the upgrade request with `Authorization: Bearer <token>` and states its
//! protocol version in the `x-kiln-protocol` header; a mismatch is refused with HTTP 426 and a text
//! that names both versions. After the upgrade:
//!
//! 1. slave → [`SlaveFrame::Hello`] (who it is, what it can do, and the builds it holds);
//! 2. master → [`MasterFrame::Welcome`] (the cadence the fleet runs at) or [`MasterFrame::Refused`];
//! 3. master → [`MasterFrame::Reconcile`] for the builds the slave said it holds, then any time:
//!    [`MasterFrame::Assign`], [`MasterFrame::Cancel`], acknowledgements;
//! 4. slave → heartbeats (which also restate the held builds: the exchange is level-triggered, so
//!    a lost message is healed by the next heartbeat), `Started`, `Log`, `Progress`, `Finished`.
//!
//! Log lines carry sequence numbers. The master writes a line only if its number is the next one it
//! expects and answers with [`MasterFrame::LogAck`]; the slave keeps every line until acknowledged
//! and resends from the acknowledged point after a reconnect. So the stored log holds each line
//! once, in order, whichever side restarts.

use crate::{BuildId, SlaveId};
use serde::{Deserialize, Serialize};

/// Slave → master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlaveFrame {
    Hello(Hello),
    /// Sent every `Cadence::heartbeat_secs`; restates the builds the slave holds.
    Heartbeat {
        builds: Vec<BuildId>,
    },
    /// The branch is fetched; the backend starts now.
    Started {
        build: BuildId,
        commit: String,
    },
    /// Lines `first_seq, first_seq + 1, ...` of the build's log.
    Log {
        build: BuildId,
        first_seq: u64,
        lines: Vec<String>,
    },
    Progress {
        build: BuildId,
        phase: String,
        percent: Option<u8>,
    },
    /// The build ended. `log_lines` is how many lines its log has in all.
    Finished {
        build: BuildId,
        outcome: Outcome,
        log_lines: u64,
    },
    /// The slave takes no new builds; it exits once the ones it holds are reported.
    Draining,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub name: String,
    /// Debian architecture name of the machine (amd64, arm64, armhf, ...).
    pub arch: String,
    pub tags: Vec<String>,
    /// Backends this slave can run (script, mmdebstrap, live-build, ...); a project that names
    /// its `backend` is only dispatched to slaves listing it.
    pub backends: Vec<String>,
    /// How many builds it runs at once.
    pub capacity: u32,
    /// The slave's own version, for the slaves page.
    pub version: String,
    /// Builds the slave holds right now (after a reconnect or a restart).
    pub builds: Vec<BuildId>,
    /// Foreign architectures it can run through emulation (qemu-user binfmt).
    pub emulates: Vec<String>,
    /// Its tools and what its machine offers them (shown in `GET /api/slaves`).
    pub capabilities: crate::api::Capabilities,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    /// Always with a reason a person can act on.
    Failed {
        reason: String,
    },
    Cancelled {
        reason: String,
    },
}

/// Master → slave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterFrame {
    Welcome {
        slave: SlaveId,
        cadence: Cadence,
    },
    /// The master will not talk to this slave; the connection closes after this frame.
    Refused {
        reason: String,
    },
    Assign(Job),
    Cancel {
        build: BuildId,
        reason: String,
    },
    /// The master has stored every line before `next_seq`.
    LogAck {
        build: BuildId,
        next_seq: u64,
    },
    /// The master recorded the result; the slave may forget the build.
    FinishedAck {
        build: BuildId,
    },
    /// What should be true for each build the slave reported holding.
    Reconcile {
        builds: Vec<(BuildId, Directive)>,
    },
    /// Take no new builds, finish the held ones, then exit (the API's "drain").
    Drain,
    /// The slave's token was rotated: use this one from now on (and keep it where the old one
    /// was kept); the old one stops working after the master's grace period.
    TokenRotated {
        token: String,
    },
}

/// Timings and sizes the master imposes on its fleet, sent in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cadence {
    pub heartbeat_secs: u32,
    /// A slave silent for this long is lost; its builds are marked lost.
    pub lost_timeout_secs: u32,
    /// Upper bound of one `Log` frame's text.
    pub log_chunk_bytes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Directive {
    /// Carry on; resend log lines from `next_seq`.
    Keep { next_seq: u64 },
    /// The master has finished with this build (recorded, or given up on): stop it, drop it,
    /// report nothing.
    Forget { reason: String },
}

/// Everything a slave needs to run one build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub build: BuildId,
    pub project: String,
    pub branch_url: String,
    pub branch: String,
    /// Build exactly this commit instead of the branch head.
    pub commit: Option<String>,
    pub release: Option<String>,
    /// The directory of the branch to build in (checked again on the slave); `None`: the top.
    pub path: Option<String>,
    /// Whether the master accepts `file:` URLs; the slave refuses them otherwise.
    pub allow_file_urls: bool,
    /// Path (on the master's HTTP API) where artifacts are PUT, e.g. `/api/slave/builds/7/artifacts`.
    pub upload_path: String,
    /// The bearer token for this build's uploads (signed by the master, naming the build and
    /// this slave, expiring a little after the build's time-out); nothing else is accepted there.
    pub upload_token: String,
}

/// Console (browser) → master on `/ws/console`. One socket per browser tab carries any number of
/// subscriptions (topics): the queue, and the logs of the builds on screen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleRequest {
    /// Snapshot of the queue and slaves, then changes as they happen.
    SubscribeQueue,
    UnsubscribeQueue,
    /// Log lines of one build from `from_seq` on, then live lines until it ends. The stored
    /// lines come in bounded chunks (see [`ConsoleEvent::LogLines`]).
    SubscribeLog {
        build: BuildId,
        from_seq: u64,
    },
    UnsubscribeLog {
        build: BuildId,
    },
    /// Like `SubscribeLog`, starting at the last `lines` lines stored now (the whole log when it
    /// has fewer): a huge log opens at its end at once. The first `LogLines` says where it starts.
    SubscribeLogTail {
        build: BuildId,
        lines: u32,
    },
    /// A one-off read of up to `lines` lines just before line `before_seq` (the master serves at
    /// most 10,000 lines and about 1 MiB of text at a time, the lines nearest `before_seq`),
    /// answered with one [`ConsoleEvent::EarlierLines`]; changes no subscription.
    EarlierLog {
        build: BuildId,
        before_seq: u64,
        lines: u32,
    },
}

/// Master → console.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ConsoleEvent {
    /// A build was created or changed; replaces what the console had for that id.
    Build(crate::api::Build),
    /// A slave was added or changed.
    Slave(crate::api::Slave),
    /// Lines `first_seq, first_seq + 1, ...` of a followed log, in order and without gaps after
    /// the subscription's start. At most 5,000 lines and about 1 MiB of text per event (a line
    /// over 1 MiB is cut for the console; the raw log keeps it whole), so every event stays far
    /// below the frame limit however big the log is.
    LogLines {
        build: BuildId,
        first_seq: u64,
        lines: Vec<String>,
    },
    /// The log is complete; no more lines will come.
    LogEnd { build: BuildId },
    /// The request could not be read; the master closes the socket after this.
    Error { message: String },
    /// This console fell behind the master's event feed and missed events: it should subscribe
    /// again to every topic (the queue's snapshot, each log from the line after the last one it
    /// has); the subscriptions themselves stay in place.
    Resync,
    /// What a running build is doing now.
    Progress {
        build: BuildId,
        phase: String,
        percent: Option<u8>,
    },
    /// The answer to `EarlierLog`: lines `first_seq..before_seq` (empty when there are none).
    EarlierLines {
        build: BuildId,
        first_seq: u64,
        before_seq: u64,
        lines: Vec<String>,
    },
}
