//! In-memory view of what is connected right now: slave sessions and their outgoing channels, the
//! dispatcher's wake-up, and the event feed for consoles. The database stays the truth for builds.

use kiln_shared::frames::{ConsoleEvent, MasterFrame};
use kiln_shared::SlaveId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::{broadcast, mpsc, Notify};

#[derive(Clone)]
pub struct ConnectedSlave {
    pub conn: u64,
    pub name: String,
    pub arch: String,
    pub emulates: Vec<String>,
    pub tags: Vec<String>,
    pub capacity: u32,
    /// Takes no new builds.
    pub draining: bool,
    tx: mpsc::UnboundedSender<MasterFrame>,
}

/// What a slave said about itself in its hello.
pub struct SlaveInfo {
    pub name: String,
    pub arch: String,
    pub emulates: Vec<String>,
    pub tags: Vec<String>,
    pub capacity: u32,
}

pub struct Hub {
    slaves: Mutex<HashMap<SlaveId, ConnectedSlave>>,
    next_conn: AtomicU64,
    /// Poked whenever a build is queued or a slave frees capacity.
    pub wake_dispatch: Notify,
    pub events: broadcast::Sender<ConsoleEvent>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            slaves: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            wake_dispatch: Notify::new(),
            events: broadcast::channel(4096).0,
        }
    }
}

impl Hub {
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
            capacity,
        } = info;
        let s = ConnectedSlave {
            conn,
            name,
            arch,
            emulates,
            tags,
            capacity,
            draining: false,
            tx,
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

    pub fn send(&self, id: SlaveId, frame: MasterFrame) -> bool {
        let m = self.slaves.lock().expect("hub poisoned");
        m.get(&id).is_some_and(|s| s.tx.send(frame).is_ok())
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

    pub fn publish(&self, ev: ConsoleEvent) {
        // No subscriber is fine.
        let _ = self.events.send(ev);
    }
}
