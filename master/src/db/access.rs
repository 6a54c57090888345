//! The access epoch: a process-wide counter that moves whenever who may see what may have
//! changed (a session ended, a token revoked, a team membership, a project's visibility or
//! team, a user's admin flag). Long-lived connections keep their access verdicts only while
//! the epoch stands still ([`crate::auth::live`]), so they need no database query per event
//! and still notice a change at once.
//!
//! Two sources move it: the write functions of this crate (at once, in this process), and the
//! `kiln_access` notifications the database's triggers send on commit (migration
//! `0015_access_notify.sql`), which also carry changes made by another process (the
//! `kiln-master` commands, another master, an admin's `psql`).

use std::sync::atomic::{AtomicU64, Ordering};

static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The channel the triggers notify. The master's one listening connection
/// ([`super::notifications`], started by [`crate::fanout`]) moves the epoch on every
/// notification and on every gap in listening.
pub const CHANNEL: &str = "kiln_access";

/// The current epoch: a verdict read after this call holds while `current()` returns it.
pub fn current() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Access may have changed: every cached verdict is read again.
pub fn changed() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}
