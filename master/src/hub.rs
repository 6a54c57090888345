//! In-memory view of what is connected right now: slave sessions and their outgoing channels, the
//! dispatcher's wake-up, and the event feed for consoles. The database stays the truth for builds.

use chrono::{DateTime, Utc};
use kiln_shared::frames::{ConsoleEvent, MasterFrame};
use kiln_shared::{BuildId, SlaveId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::sync::{broadcast, mpsc, Notify};

/// What this master tells the other masters serving the same farm.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Peer {
    /// For their consoles.
    Event(ConsoleEvent),
    /// A build's log grew (their consoles following it read on from the shared storage).
    LogGrew(BuildId),
    /// Their dispatchers should run a round.
    Wake,
    /// For a slave whose session one of them holds.
    ToSlave(SlaveId, MasterFrame),
}

#[derive(Clone)]
pub struct ConnectedSlave {
    pub conn: u64,
    pub name: String,
    pub arch: String,
    pub emulates: Vec<String>,
    pub tags: Vec<String>,
    pub backends: Vec<String>,
    pub capacity: u32,
    /// Takes no new builds.
    pub draining: bool,
    tx: mpsc::UnboundedSender<MasterFrame>,
    /// Until the session's reconnect check is done ([`Hub::withdraw_unreached`]).
    checking: Option<Checking>,
}

/// At most one resync per this long for slaves arriving from other masters.
pub const RESYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`Hub::came_from`] asks of the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Resync {
    Now,
    /// Publish it after this long, then call [`Hub::planned_resync_sent`].
    After(std::time::Duration),
    /// One was sent just now or is planned.
    No,
}

#[derive(Default)]
struct ResyncPace {
    last: Option<std::time::Instant>,
    planned: bool,
}

/// What a new session's reconnect check and the dispatchers decide together, under the hub's
/// lock: a build the check queues again never also reaches the slave, and a build that reached
/// it is never queued again.
#[derive(Clone, Default)]
struct Checking {
    /// Builds whose `Assign` went to this session.
    sent: std::collections::HashSet<BuildId>,
    /// Builds the check queues again: their `Assign` must not go out on this session.
    withdrawn: std::collections::HashSet<BuildId>,
}

/// What a slave said about itself in its hello.
pub struct SlaveInfo {
    pub name: String,
    pub arch: String,
    pub emulates: Vec<String>,
    pub tags: Vec<String>,
    pub backends: Vec<String>,
    pub capacity: u32,
}

pub struct Hub {
    /// This master process, among the masters serving one farm (random at start).
    pub instance: String,
    /// Where what other masters must hear goes ([`crate::fanout`]); unset: this master is
    /// alone (tests of the hub itself).
    peers: OnceLock<mpsc::UnboundedSender<Peer>>,
    slaves: Mutex<HashMap<SlaveId, ConnectedSlave>>,
    /// When each slave's last frame arrived (the master's clock), kept after it disconnects:
    /// liveness counts a slave's silence only from what this master could hear.
    heard: Mutex<HashMap<SlaveId, DateTime<Utc>>>,
    next_conn: AtomicU64,
    /// Slave sessions still running (until their last database write), for a clean shutdown.
    live_sessions: AtomicUsize,
    sessions_ended: Notify,
    /// Poked whenever a build is queued or a slave frees capacity.
    pub wake_dispatch: Notify,
    pub events: broadcast::Sender<ConsoleEvent>,
    /// Per slave: how often one of its builds ended or was taken from it, as far as this master
    /// knows (`ws::holdings`).
    ends: Mutex<HashMap<SlaveId, u64>>,
    /// Moves every slave's holdings version: this master may have missed what others said.
    ends_epoch: AtomicU64,
    /// The pace of the resyncs slaves arriving from other masters cause ([`Hub::came_from`]).
    resyncs: Mutex<ResyncPace>,
}

impl Default for Hub {
    fn default() -> Self {
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        Hub {
            instance: hex::encode(id),
            peers: OnceLock::new(),
            slaves: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            live_sessions: AtomicUsize::new(0),
            sessions_ended: Notify::new(),
            next_conn: AtomicU64::new(1),
            wake_dispatch: Notify::new(),
            events: broadcast::channel(4096).0,
            ends: Mutex::new(HashMap::new()),
            ends_epoch: AtomicU64::new(0),
            resyncs: Mutex::new(ResyncPace::default()),
        }
    }
}

impl Hub {
    /// A build of `slave` ended or was taken from it: its sessions ask the database again
    /// whether it holds a build (`ws::holdings`).
    pub fn ended_on(&self, slave: SlaveId) {
        *self
            .ends
            .lock()
            .expect("hub poisoned")
            .entry(slave)
            .or_default() += 1;
    }

    /// As [`Hub::ended_on`], by the slave's name (what another master's build event names), if
    /// that slave's session is here.
    pub fn ended_on_named(&self, name: &str) {
        let id = self
            .slaves
            .lock()
            .expect("hub poisoned")
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.ended_on(id);
        }
    }

    /// A slave came here from another master `instance` (which may have died between a commit
    /// and telling the others): when every console should ask again. Each such slave is
    /// followed by a resync, at most one per [`RESYNC_EVERY`]: a thousand slaves arriving
    /// together cost one now and one after the interval, however many masters they came from.
    pub fn came_from(&self, instance: &str) -> Resync {
        if instance == self.instance {
            return Resync::No;
        }
        let mut p = self.resyncs.lock().expect("hub poisoned");
        if p.planned {
            // The planned one comes after this arrival.
            return Resync::No;
        }
        let now = std::time::Instant::now();
        match p.last.map(|t| now.duration_since(t)) {
            Some(since) if since < RESYNC_EVERY => {
                p.planned = true;
                Resync::After(RESYNC_EVERY - since)
            }
            _ => {
                p.last = Some(now);
                Resync::Now
            }
        }
    }

    /// The resync [`Hub::came_from`] planned is being sent now.
    pub fn planned_resync_sent(&self) {
        let mut p = self.resyncs.lock().expect("hub poisoned");
        p.planned = false;
        p.last = Some(std::time::Instant::now());
    }

    /// Every session asks again (what other masters said may have been missed).
    pub fn forget_holdings(&self) {
        self.ends_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Changes whenever what `slave` holds may have shrunk.
    pub fn holdings_version(&self, slave: SlaveId) -> u64 {
        let ends = self
            .ends
            .lock()
            .expect("hub poisoned")
            .get(&slave)
            .copied()
            .unwrap_or(0);
        // The epoch in the high bits: both only grow.
        (self.ends_epoch.load(Ordering::SeqCst) << 40).wrapping_add(ends)
    }

    /// Registers a session, replacing (and so closing) an older session of the same slave.
    pub fn register(
        &self,
        id: SlaveId,
        info: SlaveInfo,
        tx: mpsc::UnboundedSender<MasterFrame>,
    ) -> u64 {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let SlaveInfo {
            name,
            arch,
            emulates,
            tags,
            backends,
            capacity,
        } = info;
        let s = ConnectedSlave {
            conn,
            name,
            arch,
            emulates,
            tags,
            backends,
            capacity,
            draining: false,
            tx,
            checking: Some(Checking::default()),
        };
        self.slaves.lock().expect("hub poisoned").insert(id, s);
        conn
    }

    /// Removes the session if it is still the current one; true if it was.
    pub fn unregister(&self, id: SlaveId, conn: u64) -> bool {
        let mut m = self.slaves.lock().expect("hub poisoned");
        if m.get(&id).is_some_and(|s| s.conn == conn) {
            m.remove(&id);
            true
        } else {
            false
        }
    }

    /// Closes the slave's session (its sender goes; the session loop ends).
    pub fn disconnect(&self, id: SlaveId) -> bool {
        self.slaves
            .lock()
            .expect("hub poisoned")
            .remove(&id)
            .is_some()
    }

    /// Closes every slave session (the master is stopping).
    pub fn close_all(&self) {
        self.slaves.lock().expect("hub poisoned").clear();
    }

    /// Counts a slave session as running until the guard drops.
    pub fn session_guard(&self) -> SessionGuard<'_> {
        self.live_sessions.fetch_add(1, Ordering::SeqCst);
        SessionGuard(self)
    }

    /// Waits until every slave session has ended.
    pub async fn sessions_closed(&self) {
        loop {
            let ended = self.sessions_ended.notified();
            if self.live_sessions.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }

    /// A frame from the slave arrived at `at`.
    pub fn heard(&self, id: SlaveId, at: DateTime<Utc>) {
        self.heard.lock().expect("hub poisoned").insert(id, at);
    }

    /// When this master last heard from each slave it heard from since it started.
    pub fn all_heard(&self) -> Vec<(SlaveId, DateTime<Utc>)> {
        let m = self.heard.lock().expect("hub poisoned");
        m.iter().map(|(id, at)| (*id, *at)).collect()
    }

    /// When this master last heard from the slave (`None`: not since it started).
    pub fn last_heard(&self, id: SlaveId) -> Option<DateTime<Utc>> {
        self.heard.lock().expect("hub poisoned").get(&id).copied()
    }

    /// Sends `frame` to the slave if its session is on this master; false otherwise (also for
    /// the `Assign` of a build its reconnect check withdrew).
    pub fn send(&self, id: SlaveId, frame: MasterFrame) -> bool {
        let mut m = self.slaves.lock().expect("hub poisoned");
        let Some(s) = m.get_mut(&id) else {
            return false;
        };
        if let (Some(c), MasterFrame::Assign(job)) = (&mut s.checking, &frame) {
            if c.withdrawn.remove(&job.build) {
                return false;
            }
            c.sent.insert(job.build);
        }
        s.tx.send(frame).is_ok()
    }

    /// The reconnect check of session `conn` found `build` given to its slave, never started,
    /// and not among what the slave holds. True: the check may queue it again, and its
    /// `Assign` (claimed before the check read it) will not go out on this session. False: that
    /// `Assign` already went out on this session, so the slave gets the job and keeps it; or
    /// a newer session replaced this one (it may have sent the job there, and its own check
    /// decides).
    pub fn withdraw_unreached(&self, id: SlaveId, conn: u64, build: BuildId) -> bool {
        let mut m = self.slaves.lock().expect("hub poisoned");
        match m.get_mut(&id) {
            Some(s) if s.conn == conn => match &mut s.checking {
                Some(c) if c.sent.contains(&build) => false,
                Some(c) => {
                    c.withdrawn.insert(build);
                    true
                }
                None => true,
            },
            // Replaced: the newer session may have been sent the job, and its own check decides.
            Some(_) => false,
            // Closed, and no newer session yet: whichever comes checks again.
            None => true,
        }
    }

    /// Whether `conn` is still the slave's session here.
    pub fn is_current(&self, id: SlaveId, conn: u64) -> bool {
        let m = self.slaves.lock().expect("hub poisoned");
        m.get(&id).is_some_and(|s| s.conn == conn)
    }

    /// The reconnect check of session `conn` is done: sends are no longer recorded.
    pub fn checked(&self, id: SlaveId, conn: u64) {
        let mut m = self.slaves.lock().expect("hub poisoned");
        if let Some(s) = m.get_mut(&id).filter(|s| s.conn == conn) {
            s.checking = None;
        }
    }

    /// Sends `frame` to the slave wherever its session is: here, or through the other masters
    /// (the one holding it delivers it). False only when it is not here and this master is
    /// alone.
    pub fn send_anywhere(&self, id: SlaveId, frame: MasterFrame) -> bool {
        if self.send(id, frame.clone()) {
            return true;
        }
        self.to_peers(Peer::ToSlave(id, frame))
    }

    /// Wakes the dispatcher, here and on the other masters (a build was queued or a slot
    /// freed).
    pub fn wake(&self) {
        self.wake_dispatch.notify_one();
        self.to_peers(Peer::Wake);
    }

    /// Connects the hub to the other masters: what it publishes goes to `tx` as well.
    pub fn set_peers(&self, tx: mpsc::UnboundedSender<Peer>) {
        let _ = self.peers.set(tx);
    }

    fn to_peers(&self, p: Peer) -> bool {
        self.peers.get().is_some_and(|tx| tx.send(p).is_ok())
    }

    /// An event another master published: to this master's consoles only.
    pub fn publish_here(&self, ev: ConsoleEvent) {
        let _ = self.events.send(ev);
    }

    pub fn set_draining(&self, id: SlaveId) {
        if let Some(s) = self.slaves.lock().expect("hub poisoned").get_mut(&id) {
            s.draining = true;
        }
    }

    pub fn is_draining(&self, id: SlaveId) -> bool {
        let m = self.slaves.lock().expect("hub poisoned");
        m.get(&id).is_some_and(|s| s.draining)
    }

    pub fn connected(&self) -> Vec<(SlaveId, ConnectedSlave)> {
        let m = self.slaves.lock().expect("hub poisoned");
        let mut v: Vec<_> = m.iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Tells every console, on this master and the others.
    pub fn publish(&self, ev: ConsoleEvent) {
        if self.peers.get().is_some() {
            self.to_peers(Peer::Event(ev.clone()));
        }
        // No subscriber is fine.
        let _ = self.events.send(ev);
    }
}

/// See [`Hub::session_guard`].
pub struct SessionGuard<'a>(&'a Hub);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.0.live_sessions.fetch_sub(1, Ordering::SeqCst);
        self.0.sessions_ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::frames::Job;

    fn assign(build: i64) -> MasterFrame {
        MasterFrame::Assign(Job {
            build: BuildId(build),
            project: "p".into(),
            branch_url: "https://example.invalid/p.git".into(),
            branch: "main".into(),
            commit: None,
            release: None,
            path: None,
            allow_file_urls: false,
            upload_path: format!("/api/slave/builds/{build}/artifacts"),
            upload_token: "t".into(),
        })
    }

    fn session(hub: &Hub, id: SlaveId) -> (u64, mpsc::UnboundedReceiver<MasterFrame>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let info = SlaveInfo {
            name: "s1".into(),
            arch: "arm64".into(),
            emulates: vec![],
            tags: vec![],
            backends: vec![],
            capacity: 1,
        };
        (hub.register(id, info, tx), rx)
    }

    fn sent(rx: &mut mpsc::UnboundedReceiver<MasterFrame>) -> Vec<BuildId> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|f| match f {
                MasterFrame::Assign(j) => Some(j.build),
                _ => None,
            })
            .collect()
    }

    /// Every slave from another master is followed by a resync, at most one per interval: the
    /// first at once, those within the interval by one planned at its end.
    #[test]
    fn slaves_from_other_masters_cause_resyncs_at_a_bounded_pace() {
        let hub = Hub::default();
        let me = hub.instance.clone();
        assert_eq!(hub.came_from(&me), Resync::No, "not from another master");
        assert_eq!(hub.came_from("m2"), Resync::Now);
        let Resync::After(wait) = hub.came_from("m3") else {
            panic!("a second arrival within the interval plans one")
        };
        assert!(wait <= RESYNC_EVERY);
        assert_eq!(hub.came_from("m2"), Resync::No, "the planned one covers it");
        hub.planned_resync_sent();
        assert!(matches!(hub.came_from("m2"), Resync::After(_)));
    }

    /// A reconnect check and a dispatcher racing for one build: whichever the hub sees first
    /// wins, and the build is never both queued again and sent to the slave.
    #[test]
    fn a_build_is_either_withdrawn_by_the_reconnect_check_or_sent_never_both() {
        let hub = Hub::default();
        let s = SlaveId(1);
        let (conn, mut rx) = session(&hub, s);
        // Sent on this session before the check came to it: the slave keeps it.
        assert!(hub.send(s, assign(1)));
        assert!(!hub.withdraw_unreached(s, conn, BuildId(1)));
        // Withdrawn first: its job does not go out on this session (once).
        assert!(hub.withdraw_unreached(s, conn, BuildId(2)));
        assert!(!hub.send(s, assign(2)));
        assert!(hub.send(s, assign(2)), "a later claim of it goes out");
        // A stale check (its session replaced) withdraws nothing: the new session may have been
        // sent the job, and its own check decides.
        let (conn2, mut rx2) = session(&hub, s);
        assert!(!hub.is_current(s, conn) && hub.is_current(s, conn2));
        assert!(!hub.withdraw_unreached(s, conn, BuildId(3)));
        assert!(hub.send(s, assign(3)));
        // Once checked, sends are no longer recorded or refused.
        hub.checked(s, conn2);
        assert!(hub.withdraw_unreached(s, conn2, BuildId(3)));
        assert!(hub.send(s, assign(4)));
        assert_eq!(sent(&mut rx), vec![BuildId(1), BuildId(2)]);
        assert_eq!(sent(&mut rx2), vec![BuildId(3), BuildId(4)]);
    }
}
