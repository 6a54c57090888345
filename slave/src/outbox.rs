//! What each build held by this slave still owes the master, read from the build's log file and
//! kept until acknowledged.
//!
//! The runner appends to `builds/{id}/log`; the connection drains new complete lines into `Log`
//! frames. The acknowledged point (line number and byte offset) is persisted in `daemon.json`, so
//! a restarted daemon resumes streaming from the first line the master has not stored. After a
//! reconnect the connection rewinds `sent` to `acked` and sends again; the master skips what it
//! already has.

use crate::store::{BuildDir, DaemonRecord};
use kiln_shared::frames::{Outcome, SlaveFrame};
use kiln_shared::BuildId;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

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
}

#[derive(Default)]
struct Inner {
    slots: BTreeMap<BuildId, Slot>,
}

#[derive(Clone, Default)]
pub struct Outbox {
    inner: Arc<Mutex<Inner>>,
    pub changed: Arc<Notify>,
}

fn persist(s: &Slot) {
    if let Err(e) = s.dir.write_record(&s.record) {
        tracing::error!(build = %s.dir.id, "cannot record build state: {e}");
    }
}

impl Outbox {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("outbox poisoned"))
    }

    fn slot<R>(&self, build: BuildId, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        self.with(|i| i.slots.get_mut(&build).map(f))
    }

    /// Takes a build on (new, or adopted with its record); false if already held.
    pub fn add(&self, dir: BuildDir, record: DaemonRecord, commit: Option<String>) -> bool {
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

    pub fn cancel_reason(&self, build: BuildId) -> Option<String> {
        self.slot(build, |s| s.record.cancel_reason.clone())
            .flatten()
    }

    pub fn uploaded(&self, build: BuildId) -> Vec<String> {
        self.slot(build, |s| s.record.uploaded.clone())
            .unwrap_or_default()
    }

    pub fn mark_uploaded(&self, build: BuildId, name: &str) {
        self.slot(build, |s| {
            s.record.uploaded.push(name.to_string());
            persist(s);
        });
    }

    /// Drops a build and its directory (after the master acknowledged it, or forgot it).
    pub fn remove(&self, build: BuildId) {
        if let Some(s) = self.with(|i| i.slots.remove(&build)) {
            if let Err(e) = s.dir.remove() {
                tracing::warn!(%build, "cleaning {}: {e}", s.dir.path.display());
            }
        }
        self.changed.notify_one();
    }

    pub fn ack_log(&self, build: BuildId, next_seq: u64) {
        self.slot(build, |s| {
            if next_seq <= s.record.acked {
                return;
            }
            while s.chunks.front().is_some_and(|(seq, _)| *seq < next_seq) {
                s.chunks.pop_front();
            }
            let offset = match s.chunks.front() {
                Some(&(seq, off)) if seq == next_seq => Some(off),
                _ if next_seq == s.sent => Some(s.sent_offset),
                _ => offset_of_line(&s.dir, s.record.acked, s.record.acked_offset, next_seq),
            };
            if let Some(off) = offset {
                s.record.acked = next_seq;
                s.record.acked_offset = off;
                if s.sent < next_seq {
                    s.sent = next_seq;
                    s.sent_offset = off;
                }
                persist(s);
            }
        });
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
    pub fn drain(&self, chunk_bytes: usize) -> Vec<SlaveFrame> {
        self.with(|i| {
            let mut out = vec![];
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
                let at_end = loop {
                    match read_lines(&s.dir, s.sent_offset, chunk_bytes) {
                        Ok((lines, used, eof)) if !lines.is_empty() => {
                            let first = s.sent;
                            s.sent += lines.len() as u64;
                            s.sent_offset += used;
                            s.chunks.push_back((s.sent, s.sent_offset));
                            out.push(SlaveFrame::Log {
                                build,
                                first_seq: first,
                                lines,
                            });
                            if eof {
                                break true;
                            }
                        }
                        Ok((_, _, eof)) => break eof,
                        Err(e) => {
                            tracing::warn!(%build, "reading the build log: {e}");
                            break false;
                        }
                    }
                };
                if let (Some(outcome), false, true) = (&s.record.outcome, s.finished_sent, at_end) {
                    out.push(SlaveFrame::Finished {
                        build,
                        outcome: outcome.clone(),
                        log_lines: s.sent,
                    });
                    s.finished_sent = true;
                }
            }
            out
        })
    }
}

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
}
