//! What each build held by this slave still owes the master, read from the build's log file and
//! kept until acknowledged.
//!
//! The runner appends to `builds/{id}/log`; the connection drains new complete lines into `Log`
//! frames. The acknowledged point (line number and byte offset) is persisted (`daemon.json`, and
//! in the daemon the in-place `acked`, see `store.rs`), so a restarted daemon resumes streaming
//! from the first line the master has not stored. After a reconnect the connection rewinds
//! `sent` to `acked` and sends again; the master skips what it already has.
//!
//! In the daemon ([`Outbox::for_daemon`]) each held build's log is watched (inotify,
//! `events.rs`): a write wakes the connection (`changed`) at once, so a line reaches the master
//! milliseconds after the build wrote it; and acks are written to `acked` by a thread of their
//! own, so a slow disk never holds up the connection. A cancel request wakes the build's
//! watcher through [`Outbox::cancel_watch`].

use crate::events::{self, Events, Watch};
use crate::store::{BuildDir, DaemonRecord};
use kiln_shared::frames::{Outcome, SlaveFrame};
use kiln_shared::BuildId;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

pub struct Slot {
    dir: BuildDir,
    record: DaemonRecord,
    /// Lines before `sent` (ending at byte `sent_offset`) went out on this connection.
    sent: u64,
    sent_offset: u64,
    /// (line number after a sent chunk, byte offset after it), for turning acks into offsets.
    chunks: VecDeque<(u64, u64)>,
    commit: Option<String>,
    started_sent: bool,
    finished_sent: bool,
    progress: Option<(String, Option<u8>)>,
    cancel_requested: bool,
    /// Tells the build's watcher about `cancel_requested` (see [`Outbox::cancel_watch`]).
    cancel_tx: watch::Sender<bool>,
    /// Wakes `changed` when the log file is written (none without inotify).
    _log_watch: Option<Watch>,
    /// Bumped by every change of `record` that is written; `written` is the version on disk, and
    /// is held while writing, so writes never overlap and an older one never replaces a newer.
    version: u64,
    written: Arc<Mutex<u64>>,
    /// An ack is not on disk yet (the ack writer's job, see [`Outbox::for_daemon`]).
    ack_dirty: bool,
    /// Bumped whenever `sent` moves other than by a drain (a rewind, an ack past it), so a read
    /// made without the lock is not applied to a position that changed meanwhile.
    epoch: u64,
}

#[derive(Default)]
struct Inner {
    slots: BTreeMap<BuildId, Slot>,
    /// Which build's log a drain pass reads first (they take turns).
    turn: usize,
}

#[derive(Clone, Default)]
pub struct Outbox {
    inner: Arc<Mutex<Inner>>,
    pub changed: Arc<Notify>,
    /// The daemon's inotify instance: each held build's log wakes `changed` when written.
    events: Option<Arc<Events>>,
    /// Builds whose ack is to be written by the ack writer (none: acks are written at once).
    acks: Option<std::sync::mpsc::Sender<BuildId>>,
}

/// Writes the record now (a change the daemon must not lose: a cancel, the outcome, an upload).
fn persist(s: &mut Slot) {
    s.version += 1;
    write_record(s.dir.clone(), s.record.clone(), s.version, &s.written);
}

/// Writes `record` as version `version` unless a newer one is on disk already.
fn write_record(dir: BuildDir, record: DaemonRecord, version: u64, written: &Mutex<u64>) {
    let mut on_disk = written.lock().expect("record lock poisoned");
    if *on_disk >= version {
        return;
    }
    if let Err(e) = dir.write_record(&record) {
        tracing::error!(build = %dir.id, "cannot record build state: {e}");
    }
    *on_disk = version;
}

impl Outbox {
    /// The daemon's outbox: its builds' logs wake `changed` when written (`events`; `None`:
    /// nothing watched, the connection then reads the logs on its slow safety-net tick).
    ///
    /// Acks are then written to `acked` by a thread of their own: a write can stall for
    /// a long time on a busy disk, and must not hold up the connection (which would hold up
    /// every log line). An ack not yet on disk only means lines sent again after a restart,
    /// which the master skips.
    pub fn for_daemon(events: Option<Arc<Events>>) -> Outbox {
        let plain = Outbox {
            events,
            ..Outbox::default()
        };
        let (tx, rx) = std::sync::mpsc::channel::<BuildId>();
        let writer = plain.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-acks".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut builds = std::collections::BTreeSet::from([first]);
                    builds.extend(rx.try_iter());
                    for b in builds {
                        writer.write_ack(b);
                    }
                }
            });
        match spawned {
            Ok(_) => Outbox {
                acks: Some(tx),
                ..plain
            },
            Err(e) => {
                tracing::warn!("no thread for writing acks ({e}): written as they come");
                plain
            }
        }
    }

    /// Writes the build's latest ack to its `acked` file if it is not on disk yet (in place:
    /// one file per build, not one per ack). `daemon.json` gets it with the next change that
    /// must not be lost; on reading, the further of the two counts.
    fn write_ack(&self, build: BuildId) {
        let due = self.slot(build, |s| {
            if !s.ack_dirty {
                return None;
            }
            s.ack_dirty = false;
            Some((
                s.dir.clone(),
                s.record.acked,
                s.record.acked_offset,
                s.written.clone(),
            ))
        });
        if let Some(Some((dir, acked, offset, written))) = due {
            // Not once the build is dropped (its directory removed).
            let on_disk = written.lock().expect("record lock poisoned");
            if *on_disk == u64::MAX {
                return;
            }
            if let Err(e) = dir.write_ack(acked, offset) {
                tracing::warn!(%build, "cannot record the master's ack: {e}");
            }
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("outbox poisoned"))
    }

    fn slot<R>(&self, build: BuildId, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        self.with(|i| i.slots.get_mut(&build).map(f))
    }

    /// Takes a build on (new, or adopted with its record); false if already held.
    pub fn add(&self, dir: BuildDir, record: DaemonRecord, commit: Option<String>) -> bool {
        let log_watch = self.events.as_ref().and_then(|e| {
            e.watch(&dir.path, "log", events::WRITTEN, self.changed.clone())
                .map_err(|err| {
                    tracing::warn!(build = %dir.id, "cannot watch the build's log ({err}): it is read every {:?}", events::FALLBACK_POLL)
                })
                .ok()
        });
        let added = self.with(|i| {
            if i.slots.contains_key(&dir.id) {
                return false;
            }
            let cancel_requested = record.cancel_reason.is_some() || record.forgotten;
            i.slots.insert(
                dir.id,
                Slot {
                    sent: record.acked,
                    sent_offset: record.acked_offset,
                    dir,
                    record,
                    chunks: VecDeque::new(),
                    commit,
                    started_sent: false,
                    finished_sent: false,
                    progress: None,
                    cancel_requested,
                    cancel_tx: watch::Sender::new(cancel_requested),
                    _log_watch: log_watch,
                    version: 0,
                    written: Arc::default(),
                    ack_dirty: false,
                    epoch: 0,
                },
            );
            true
        });
        self.changed.notify_one();
        added
    }

    pub fn count(&self) -> usize {
        self.with(|i| i.slots.len())
    }

    /// Whether a build's start or end waits to be sent: those go at once, not after the pause
    /// that gathers a fast log's lines into fewer frames. An end counts only when what is left
    /// of the build's log fits one pass: a long tail goes at the usual pace.
    pub fn urgent(&self) -> bool {
        let (starting, ending) = self.with(|i| {
            let held = i.slots.values().filter(|s| !s.record.forgotten);
            let starting = held.clone().any(|s| s.commit.is_some() && !s.started_sent);
            let ending: Vec<(std::path::PathBuf, u64)> = held
                .filter(|s| s.record.outcome.is_some() && !s.finished_sent)
                .map(|s| (s.dir.log(), s.sent_offset))
                .collect();
            (starting, ending)
        });
        starting
            || ending
                .iter()
                .any(|(log, sent)| match std::fs::metadata(log) {
                    Ok(m) => m.len().saturating_sub(*sent) <= PASS_BUILD_BYTES as u64,
                    Err(e) => e.kind() == std::io::ErrorKind::NotFound,
                })
    }

    pub fn holds(&self, build: BuildId) -> bool {
        self.with(|i| i.slots.contains_key(&build))
    }

    /// Reports what the build is doing now; superseded by the next report if not sent yet.
    pub fn progress(&self, build: BuildId, phase: &str, percent: Option<u8>) {
        self.slot(build, |s| s.progress = Some((phase.to_string(), percent)));
        self.changed.notify_one();
    }

    pub fn started(&self, build: BuildId, commit: String) {
        self.slot(build, |s| {
            if s.commit.is_none() {
                s.commit = Some(commit);
            }
        });
        self.changed.notify_one();
    }

    pub fn has_commit(&self, build: BuildId) -> bool {
        self.slot(build, |s| s.commit.is_some()).unwrap_or(false)
    }

    /// Records the outcome (persisted; sent once the whole log is out).
    pub fn finished(&self, build: BuildId, outcome: Outcome) {
        self.slot(build, |s| {
            s.record.outcome = Some(outcome);
            persist(s);
        });
        self.changed.notify_one();
    }

    /// The master asked to stop the build (and report it cancelled).
    pub fn cancel(&self, build: BuildId, reason: String) {
        self.slot(build, |s| {
            if s.record.cancel_reason.is_none() && s.record.outcome.is_none() {
                s.record.cancel_reason = Some(reason);
                s.cancel_requested = true;
                s.cancel_tx.send_replace(true);
                persist(s);
            }
        });
    }

    /// The master is done with the build: stop it and report nothing more.
    pub fn forget(&self, build: BuildId, reason: String) {
        let ended = self.slot(build, |s| {
            s.record.forgotten = true;
            s.record.cancel_reason.get_or_insert(reason);
            s.cancel_requested = true;
            s.cancel_tx.send_replace(true);
            persist(s);
            s.record.outcome.is_some()
        });
        // An ended build has no watcher left to drop it.
        if ended == Some(true) {
            self.remove(build);
        }
    }

    pub fn is_forgotten(&self, build: BuildId) -> bool {
        self.slot(build, |s| s.record.forgotten).unwrap_or(true)
    }

    pub fn cancel_requested(&self, build: BuildId) -> bool {
        self.slot(build, |s| s.cancel_requested).unwrap_or(false)
    }

    /// Follows the build's cancel request (`true` once asked to stop); `None` if not held. The
    /// sender goes with the build, so a receiver's wait ends then too.
    pub fn cancel_watch(&self, build: BuildId) -> Option<watch::Receiver<bool>> {
        self.slot(build, |s| s.cancel_tx.subscribe())
    }

    pub fn cancel_reason(&self, build: BuildId) -> Option<String> {
        self.slot(build, |s| s.record.cancel_reason.clone())
            .flatten()
    }

    pub fn uploaded(&self, build: BuildId) -> Vec<String> {
        self.slot(build, |s| s.record.uploaded.clone())
            .unwrap_or_default()
    }

    /// The sha256 recorded for each artifact uploaded.
    pub fn uploaded_sha256(&self, build: BuildId) -> std::collections::BTreeMap<String, String> {
        self.slot(build, |s| s.record.uploaded_sha256.clone())
            .unwrap_or_default()
    }

    pub fn mark_uploaded(&self, build: BuildId, name: &str, sha256: &str) {
        self.slot(build, |s| {
            s.record.uploaded.push(name.to_string());
            s.record
                .uploaded_sha256
                .insert(name.to_string(), sha256.to_string());
            persist(s);
        });
    }

    /// Drops a build and its directory (after the master acknowledged it, or forgot it).
    pub fn remove(&self, build: BuildId) {
        if let Some(s) = self.with(|i| i.slots.remove(&build)) {
            // Not while the ack writer writes, nor ever after.
            let mut on_disk = s.written.lock().expect("record lock poisoned");
            *on_disk = u64::MAX;
            if let Err(e) = s.dir.remove() {
                tracing::warn!(%build, "cleaning {}: {e}", s.dir.path.display());
            }
        }
        self.changed.notify_one();
    }

    pub fn ack_log(&self, build: BuildId, next_seq: u64) {
        enum Next {
            Done,
            /// The line's offset must be found in the file, from the last ack (without the lock).
            Scan(BuildDir, u64, u64),
        }
        let deferred = self.acks.is_some();
        let apply = |s: &mut Slot, off: u64| {
            s.record.acked = next_seq;
            s.record.acked_offset = off;
            if s.sent < next_seq {
                s.sent = next_seq;
                s.sent_offset = off;
                s.epoch += 1;
            }
            if deferred {
                s.ack_dirty = true;
            } else {
                persist(s);
            }
        };
        let next = self.slot(build, |s| {
            if next_seq <= s.record.acked {
                return Next::Done;
            }
            while s.chunks.front().is_some_and(|(seq, _)| *seq < next_seq) {
                s.chunks.pop_front();
            }
            let offset = match s.chunks.front() {
                Some(&(seq, off)) if seq == next_seq => Some(off),
                _ if next_seq == s.sent => Some(s.sent_offset),
                _ => None,
            };
            match offset {
                Some(off) => {
                    apply(s, off);
                    Next::Done
                }
                None => Next::Scan(s.dir.clone(), s.record.acked, s.record.acked_offset),
            }
        });
        if let Some(Next::Scan(dir, acked, acked_offset)) = next {
            if let Some(off) = offset_of_line(&dir, acked, acked_offset, next_seq) {
                self.slot(build, |s| {
                    // Unless another ack moved it meanwhile.
                    if s.record.acked == acked && next_seq > acked {
                        apply(s, off);
                    }
                });
            }
        }
        if let Some(writer) = &self.acks {
            let _ = writer.send(build);
        }
    }

    pub fn ack_finished(&self, build: BuildId) {
        let ended = self
            .slot(build, |s| s.record.outcome.is_some())
            .unwrap_or(false);
        if ended {
            self.remove(build);
        }
    }

    /// A new connection: everything unacknowledged must be sent again.
    pub fn rewind(&self) {
        self.with(|i| {
            for s in i.slots.values_mut() {
                s.sent = s.record.acked;
                s.sent_offset = s.record.acked_offset;
                s.chunks.clear();
                s.started_sent = false;
                s.finished_sent = false;
                s.epoch += 1;
            }
        });
    }

    /// The builds this slave holds (restated in every hello and heartbeat).
    pub fn held(&self) -> Vec<BuildId> {
        self.with(|i| {
            i.slots
                .iter()
                .filter(|(_, s)| !s.record.forgotten)
                .map(|(b, _)| *b)
                .collect()
        })
    }

    /// Frames not sent yet on this connection, reading new complete log lines from the files.
    ///
    /// The lock is held only to take a snapshot (and the `Started`/`Progress` frames, which so
    /// never wait for a log) and to record what was read; the files are read without it, and at
    /// most [`PASS_BUILD_BYTES`] per build and [`PASS_BYTES`] in all per pass (at least a chunk
    /// each), the builds taking turns to go first. A log with more to read wakes the next pass at
    /// once (`changed`). So a fast log can neither hold up another build's frames, nor a result,
    /// nor grow the daemon's memory.
    pub fn drain(&self, chunk_bytes: usize) -> Vec<SlaveFrame> {
        struct Read {
            build: BuildId,
            dir: BuildDir,
            seq: u64,
            offset: u64,
            epoch: u64,
            /// The outcome was known before the read began: every line of the log is written.
            ended: bool,
        }
        let chunk_bytes = chunk_bytes.max(1);
        let (mut out, mut reads) = self.with(|i| {
            let mut out = vec![];
            let mut reads = vec![];
            for (&build, s) in i.slots.iter_mut().filter(|(_, s)| !s.record.forgotten) {
                if let (Some(commit), false) = (&s.commit, s.started_sent) {
                    out.push(SlaveFrame::Started {
                        build,
                        commit: commit.clone(),
                    });
                    s.started_sent = true;
                }
                if let Some((phase, percent)) = s.progress.take() {
                    out.push(SlaveFrame::Progress {
                        build,
                        phase,
                        percent,
                    });
                }
                if !s.finished_sent {
                    reads.push(Read {
                        build,
                        dir: s.dir.clone(),
                        seq: s.sent,
                        offset: s.sent_offset,
                        epoch: s.epoch,
                        ended: s.record.outcome.is_some(),
                    });
                }
            }
            i.turn = i.turn.wrapping_add(1);
            if !reads.is_empty() {
                let first = i.turn % reads.len();
                reads.rotate_left(first);
            }
            (out, reads)
        });
        // The reads, without the lock.
        let mut left = PASS_BYTES.max(chunk_bytes);
        let mut more = false;
        let mut results = vec![];
        for r in &mut reads {
            let mut budget = PASS_BUILD_BYTES.max(chunk_bytes).min(left);
            let mut chunks = vec![];
            let mut at_end = false;
            while budget > 0 {
                match read_lines(&r.dir, r.offset, chunk_bytes.min(budget)) {
                    Ok((lines, used, eof)) if !lines.is_empty() => {
                        r.offset += used;
                        budget = budget.saturating_sub(used as usize);
                        left = left.saturating_sub(used as usize);
                        chunks.push((lines, r.offset));
                        if eof {
                            at_end = true;
                            break;
                        }
                    }
                    Ok((_, _, eof)) => {
                        at_end = eof;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(build = %r.build, "reading the build log: {e}");
                        break;
                    }
                }
            }
            more |= !at_end && budget == 0;
            results.push((chunks, at_end));
        }
        // What was read counts only if nothing moved the build meanwhile (a rewind, an ack).
        self.with(|i| {
            for (r, (chunks, at_end)) in reads.iter().zip(results) {
                let Some(s) = i.slots.get_mut(&r.build) else {
                    continue;
                };
                if s.record.forgotten || s.epoch != r.epoch || s.sent != r.seq {
                    more = true;
                    continue;
                }
                for (lines, end) in chunks {
                    let first = s.sent;
                    s.sent += lines.len() as u64;
                    s.sent_offset = end;
                    s.chunks.push_back((s.sent, s.sent_offset));
                    out.push(SlaveFrame::Log {
                        build: r.build,
                        first_seq: first,
                        lines,
                    });
                }
                if let (Some(outcome), false, true, true) =
                    (&s.record.outcome, s.finished_sent, at_end, r.ended)
                {
                    out.push(SlaveFrame::Finished {
                        build: r.build,
                        outcome: outcome.clone(),
                        log_lines: s.sent,
                    });
                    s.finished_sent = true;
                }
            }
        });
        if more {
            self.changed.notify_one();
        }
        out
    }
}

/// The most one drain pass reads of one build's log, and of all logs.
pub const PASS_BUILD_BYTES: usize = 512 * 1024;
pub const PASS_BYTES: usize = 2 * 1024 * 1024;

/// Complete lines from `offset`, about `max_bytes` of them (at least one if there is one).
/// Returns the lines, the bytes they used, and whether the file holds nothing complete after them.
fn read_lines(
    dir: &BuildDir,
    offset: u64,
    max_bytes: usize,
) -> std::io::Result<(Vec<String>, u64, bool)> {
    let mut f = match std::fs::File::open(dir.log()) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], 0, true)),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; max_bytes.max(crate::process::MAX_LINE + 1)];
    let mut filled = 0;
    while filled < buf.len() {
        let n = f.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let data = &buf[..filled];
    let mut lines = vec![];
    let mut used = 0usize;
    let mut pos = 0usize;
    while let Some(nl) = data[pos..].iter().position(|&b| b == b'\n') {
        let end = pos + nl;
        if !lines.is_empty() && end + 1 > max_bytes {
            break;
        }
        lines.push(String::from_utf8_lossy(&data[pos..end]).into_owned());
        pos = end + 1;
        used = pos;
    }
    let eof = filled < buf.len() && !data[used..].contains(&b'\n');
    Ok((lines, used as u64, eof))
}

/// Byte offset where line `target` starts, counting from a known (line, offset).
fn offset_of_line(dir: &BuildDir, from_line: u64, from_offset: u64, target: u64) -> Option<u64> {
    let mut f = std::fs::File::open(dir.log()).ok()?;
    f.seek(SeekFrom::Start(from_offset)).ok()?;
    let mut line = from_line;
    let mut off = from_offset;
    let mut buf = vec![0u8; 1 << 16];
    while line < target {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        for &b in &buf[..n] {
            off += 1;
            if b == b'\n' {
                line += 1;
                if line == target {
                    return Some(off);
                }
            }
        }
    }
    Some(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(name: &str) -> (Outbox, BuildDir, crate::process::Log) {
        let root = std::env::temp_dir().join(format!("kiln-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = BuildDir::new(&root, BuildId(1));
        std::fs::create_dir_all(&dir.path).unwrap();
        let log = crate::process::Log::open(&dir.log()).unwrap();
        let o = Outbox::default();
        assert!(o.add(dir.clone(), DaemonRecord::default(), None));
        (o, dir, log)
    }

    fn logs(frames: &[SlaveFrame]) -> Vec<(u64, Vec<String>)> {
        frames
            .iter()
            .filter_map(|f| match f {
                SlaveFrame::Log {
                    first_seq, lines, ..
                } => Some((*first_seq, lines.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn resends_from_ack_after_rewind_and_after_a_restart() {
        let (o, dir, log) = setup("rewind");
        for n in 0..5 {
            log.line(&format!("l{n}"));
        }
        let f = logs(&o.drain(1 << 20));
        assert_eq!(f, vec![(0, (0..5).map(|n| format!("l{n}")).collect())]);
        assert!(
            o.drain(1 << 20).is_empty(),
            "nothing twice on one connection"
        );
        o.ack_log(BuildId(1), 3);
        o.rewind();
        assert_eq!(
            logs(&o.drain(1 << 20)),
            vec![(3, vec!["l3".into(), "l4".into()])]
        );
        // A new daemon adopting the build resumes from the persisted ack.
        let o2 = Outbox::default();
        o2.add(dir.clone(), dir.read_record().unwrap(), None);
        assert_eq!(
            logs(&o2.drain(1 << 20)),
            vec![(3, vec!["l3".into(), "l4".into()])]
        );
    }

    #[tokio::test]
    async fn a_line_written_wakes_the_drain_and_a_cancel_wakes_the_watcher() {
        use futures_util::FutureExt;
        let root = std::env::temp_dir().join(format!("kiln-outbox-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = BuildDir::new(&root, BuildId(1));
        std::fs::create_dir_all(&dir.path).unwrap();
        let o = Outbox::for_daemon(Some(Events::start().unwrap()));
        assert!(o.add(dir.clone(), DaemonRecord::default(), None));
        let mut cancel = o.cancel_watch(BuildId(1)).unwrap();
        assert!(!*cancel.borrow_and_update());
        let _ = o.changed.notified().now_or_never();
        // The runner writes through its own descriptor, as a build does.
        let log = crate::process::Log::open(&dir.log()).unwrap();
        log.line("hello");
        tokio::time::timeout(std::time::Duration::from_secs(5), o.changed.notified())
            .await
            .expect("the write wakes the drain");
        assert_eq!(logs(&o.drain(1024)), vec![(0, vec!["hello".to_string()])]);
        o.cancel(BuildId(1), "asked".into());
        tokio::time::timeout(std::time::Duration::from_secs(5), cancel.changed())
            .await
            .expect("the cancel wakes the watcher")
            .unwrap();
        assert!(*cancel.borrow());
        // Once the build is dropped, its watcher's wait ends too.
        o.remove(BuildId(1));
        assert!(cancel.changed().await.is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_daemons_acks_are_written_by_a_thread_of_their_own_never_over_newer_state() {
        let root = std::env::temp_dir().join(format!("kiln-outbox-acks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = BuildDir::new(&root, BuildId(1));
        std::fs::create_dir_all(&dir.path).unwrap();
        let log = crate::process::Log::open(&dir.log()).unwrap();
        for n in 0..5 {
            log.line(&format!("l{n}"));
        }
        let o = Outbox::for_daemon(None);
        assert!(o.add(dir.clone(), DaemonRecord::default(), None));
        assert_eq!(logs(&o.drain(1 << 20)).len(), 1);
        o.ack_log(BuildId(1), 3);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dir.read_record().unwrap().acked != 3 {
            assert!(std::time::Instant::now() < deadline, "the ack is written");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            !dir.path.join("daemon.json").exists(),
            "an ack alone goes to `acked`, in place, not into a new daemon.json"
        );
        // What must not be lost is written at once, with the latest ack.
        o.ack_log(BuildId(1), 5);
        o.finished(BuildId(1), Outcome::Succeeded);
        let r = dir.read_record().unwrap();
        assert_eq!((r.acked, r.outcome), (5, Some(Outcome::Succeeded)));
        o.ack_finished(BuildId(1));
        o.ack_log(BuildId(1), 6);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !dir.path.exists(),
            "nothing is written after the build is dropped"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn finished_follows_the_whole_log_and_waits_for_ack() {
        let (o, dir, log) = setup("finish");
        o.started(BuildId(1), "abc".into());
        log.line("x");
        o.finished(BuildId(1), Outcome::Succeeded);
        let f = o.drain(1024);
        assert!(matches!(f[0], SlaveFrame::Started { .. }));
        assert!(matches!(f[1], SlaveFrame::Log { .. }));
        assert!(matches!(f[2], SlaveFrame::Finished { log_lines: 1, .. }));
        assert_eq!(o.count(), 1);
        o.ack_finished(BuildId(1));
        assert_eq!(o.count(), 0);
        assert!(
            !dir.path.exists(),
            "the build dir is cleaned once acknowledged"
        );
    }

    #[test]
    fn partial_lines_wait_and_chunks_respect_size() {
        let (o, dir, log) = setup("chunks");
        for _ in 0..100 {
            log.line(&"x".repeat(99));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.log())
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"partial"))
            .unwrap();
        let f = logs(&o.drain(1000));
        assert_eq!(f.len(), 10);
        assert_eq!(f.iter().map(|(_, l)| l.len()).sum::<usize>(), 100);
        // Acking in the middle of a chunk still finds the right offset.
        o.ack_log(BuildId(1), 55);
        o.rewind();
        let f = logs(&o.drain(1 << 20));
        assert_eq!(f[0].0, 55);
        assert_eq!(f[0].1.len(), 45);
    }

    #[test]
    fn a_fast_log_is_read_a_bounded_amount_per_pass_and_holds_up_no_other_frame() {
        use futures_util::FutureExt;
        let (o, dir, log) = setup("bounded");
        // 8 MiB of log, all written before the build ended.
        let line = "y".repeat(1023);
        for _ in 0..8192 {
            log.line(&line);
        }
        o.finished(BuildId(1), Outcome::Succeeded);
        let other = BuildDir::new(dir.path.parent().unwrap(), BuildId(2));
        std::fs::create_dir_all(&other.path).unwrap();
        o.add(other, DaemonRecord::default(), None);
        o.started(BuildId(2), "abc".into());
        let _ = o.changed.notified().now_or_never();
        let mut lines = vec![];
        let mut passes = 0;
        loop {
            let frames = o.drain(64 * 1024);
            passes += 1;
            if passes == 1 {
                assert!(
                    matches!(
                        frames[0],
                        SlaveFrame::Started {
                            build: BuildId(2),
                            ..
                        }
                    ),
                    "the other build's start comes first, whatever the log"
                );
            }
            let bytes: usize = logs(&frames)
                .iter()
                .flat_map(|(_, l)| l)
                .map(|l| l.len() + 1)
                .sum();
            assert!(bytes <= PASS_BUILD_BYTES, "{bytes} bytes in one pass");
            for (first, l) in logs(&frames) {
                assert_eq!(first, lines.len() as u64, "in order, no gap");
                lines.extend(l);
            }
            if let Some(SlaveFrame::Finished { log_lines, .. }) = frames
                .iter()
                .find(|f| matches!(f, SlaveFrame::Finished { .. }))
            {
                assert_eq!(*log_lines, 8192);
                break;
            }
            // More to read: the next pass is woken at once, without waiting for a tick.
            assert!(
                o.changed.notified().now_or_never().is_some(),
                "pass {passes}"
            );
            assert!(passes < 100);
        }
        assert_eq!(lines.len(), 8192);
        assert!(
            passes >= 8 * 1024 * 1024 / PASS_BUILD_BYTES,
            "{passes} passes"
        );
    }
}
