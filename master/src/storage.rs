//! Files on disk: build logs and artifacts, under `master.storage_dir`.
//!
//! Layout: `builds/{id}/log` (one line per log line, `\n`-terminated) and
//! `builds/{id}/artifacts/{name}` (with `[storage] kind = "filesystem"`; the bytes of artifacts are
//! read and written by [`crate::objects`], which may keep them in an object store instead). The database holds only the index (line count, artifact
//! names/sizes/hashes). A log file is the truth for "which lines do we have": its line count is the
//! next sequence number expected, so a master restarted mid-build resumes exactly where the file
//! ends and stores every line once.
//!
//! Next to each log, `builds/{id}/log.idx` is a sparse index of line offsets (`log_index`), so a
//! line, or the last N lines, is found without reading the log: consoles read any log in bounded
//! chunks ([`LogReader`]), and learn that a log grew from [`Storage::follow_logs`]. When the build
//! ends, `builds/{id}/log.ended` seals its log ([`Storage::seal_log`]): the master's reason is
//! its last line, whichever master a slave's late lines reach.

mod file_lock;
mod log_index;

pub use log_index::{LogReader, ReadFrom};

use kiln_shared::BuildId;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

pub struct Storage {
    root: PathBuf,
    open_logs: Mutex<HashMap<BuildId, Arc<tokio::sync::Mutex<LogFile>>>>,
    /// The id of every build whose log grew, as it grows (small items: a console that falls
    /// behind reads on from its own position in the file, so nothing is lost with them).
    grew: broadcast::Sender<BuildId>,
    /// The id of every build whose log this master appended to (for the other masters).
    appended: broadcast::Sender<BuildId>,
    /// Bytes of artifact uploads in flight, per build and per project (see [`Reservation`]).
    uploading: Mutex<HashMap<Holder, u64>>,
}

struct LogFile {
    file: tokio::fs::File,
    /// The sparse index (`log.idx`), appended after the lines it points into.
    index: tokio::fs::File,
    index_len: u64,
    next_seq: u64,
    bytes: u64,
    /// When the database's index row was last brought up to date.
    indexed_at: Option<std::time::Instant>,
    /// The build ended: the log takes no more lines ([`Storage::seal_log`]).
    sealed: bool,
}

/// How often, at most, a running build's `log_lines` row follows its log file.
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Result of appending a chunk of log lines.
#[derive(Debug)]
pub struct Appended {
    /// The next sequence number the master expects.
    pub next_seq: u64,
    /// Size of the stored log.
    pub bytes: u64,
    /// New lines were written and the index row was last updated over `INDEX_EVERY` ago (the
    /// caller updates it now).
    pub index_due: bool,
    /// How many new lines were written (lines already stored are skipped).
    pub written: u64,
    /// Some new lines were not written because the log would have grown past the byte limit
    /// given; the log holds the whole lines before them.
    pub limited: bool,
    /// Nothing was written: the build's end sealed the log ([`Storage::seal_log`]).
    pub sealed: bool,
}

impl Appended {
    /// Nothing written yet to `log` as it stands.
    fn at(log: &LogFile) -> Appended {
        Appended {
            next_seq: log.next_seq,
            bytes: log.bytes,
            index_due: false,
            written: 0,
            limited: false,
            sealed: log.sealed,
        }
    }
}

/// A log sealed at its build's end ([`Storage::seal_log`]).
#[derive(Debug)]
pub struct Seal {
    /// The log's final size.
    pub lines: u64,
    pub bytes: u64,
    /// What this end wrote into the marker (to lift its own seal only).
    pub token: String,
}

/// A limit an artifact upload would go over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Build,
    Project,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Holder {
    Build(BuildId),
    Project(i64),
}

/// The bytes one artifact upload in flight holds against its build's and its project's limits,
/// so that uploads running side by side cannot together go over them; released when dropped.
pub struct Reservation<'a> {
    storage: &'a Storage,
    build: BuildId,
    project: i64,
    held: u64,
}

impl Reservation<'_> {
    /// Holds `total` bytes for this upload (what it declared or has received so far) if, with
    /// every other upload of the same build and project in flight, the build keeps within
    /// `build_room` and the project within `project_room` (what their stored artifacts leave).
    pub fn hold(&mut self, total: u64, build_room: u64, project_room: u64) -> Result<(), Over> {
        if total <= self.held {
            return Ok(());
        }
        let mut table = self
            .storage
            .uploading
            .lock()
            .expect("upload table poisoned");
        let more = total - self.held;
        let b = table.get(&Holder::Build(self.build)).copied().unwrap_or(0);
        let p = table
            .get(&Holder::Project(self.project))
            .copied()
            .unwrap_or(0);
        if b.saturating_add(more) > build_room {
            return Err(Over::Build);
        }
        if p.saturating_add(more) > project_room {
            return Err(Over::Project);
        }
        *table.entry(Holder::Build(self.build)).or_default() += more;
        *table.entry(Holder::Project(self.project)).or_default() += more;
        self.held = total;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut table = self
            .storage
            .uploading
            .lock()
            .expect("upload table poisoned");
        for h in [Holder::Build(self.build), Holder::Project(self.project)] {
            if let Some(v) = table.get_mut(&h) {
                *v = v.saturating_sub(self.held);
                if *v == 0 {
                    table.remove(&h);
                }
            }
        }
    }
}

/// What the master's note `note` takes in a log (its line and newline).
pub fn note_bytes(note: &str) -> u64 {
    (NOTE_PREFIX.len() + note.len() + 1) as u64
}

const NOTE_PREFIX: &str = "[kiln-master] ";

impl Storage {
    pub fn new(root: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("builds"))?;
        for d in [root.clone(), root.join("builds")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Storage {
            root,
            open_logs: Mutex::new(HashMap::new()),
            grew: broadcast::channel(1024).0,
            appended: broadcast::channel(1024).0,
            uploading: Mutex::new(HashMap::new()),
        })
    }

    /// Tells, for every log that grows from now on, its build's id (a receiver that lags must
    /// assume every log it follows grew).
    pub fn follow_logs(&self) -> broadcast::Receiver<BuildId> {
        self.grew.subscribe()
    }

    /// Tells the id of every build whose log this master appends to (what another master
    /// appends is not told here).
    pub fn appended_here(&self) -> broadcast::Receiver<BuildId> {
        self.appended.subscribe()
    }

    /// Another master appended to the log of `id` (the storage is shared): consoles here
    /// following it read on.
    pub fn log_grew_elsewhere(&self, id: BuildId) {
        let _ = self.grew.send(id);
    }

    /// A reader of the stored log of `id` from `from`, following it as it grows; opens the
    /// file on its first read (there may be no log yet).
    pub fn log_reader(&self, id: BuildId, from: ReadFrom) -> LogReader {
        LogReader::new(self.log_path(id), from)
    }

    /// Up to `max_lines` stored lines just before line `before` (the nearest ones, within about
    /// `max_bytes` of text), as `(first_seq, lines)`; read without reading the whole log.
    pub async fn lines_before(
        &self,
        id: BuildId,
        before: u64,
        max_lines: u64,
        max_bytes: usize,
    ) -> io::Result<(u64, Vec<String>)> {
        let path = self.log_path(id);
        tokio::task::spawn_blocking(move || {
            log_index::lines_before(&path, before, max_lines, max_bytes)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// An empty reservation for an artifact upload of `build` (of project `project`).
    pub fn reserve_upload(&self, build: BuildId, project: i64) -> Reservation<'_> {
        Reservation {
            storage: self,
            build,
            project,
            held: 0,
        }
    }

    /// Scratch space for the master's own short-lived work (a branch fetched to read its
    /// history), under the data dir.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn build_dir(&self, id: BuildId) -> PathBuf {
        build_dir_in(&self.root, id)
    }

    pub fn log_path(&self, id: BuildId) -> PathBuf {
        self.build_dir(id).join("log")
    }

    async fn open_log(&self, id: BuildId) -> io::Result<Arc<tokio::sync::Mutex<LogFile>>> {
        if let Some(f) = self.open_logs.lock().expect("log table poisoned").get(&id) {
            return Ok(f.clone());
        }
        let path = self.log_path(id);
        private_dir(path.parent().unwrap_or(Path::new("."))).await?;
        let p = path.clone();
        let (next_seq, bytes) = tokio::task::spawn_blocking(move || log_index::recover(&p))
            .await
            .map_err(io::Error::other)??;
        let file = tokio::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let index = tokio::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .append(true)
            .open(log_index::index_path(&path))
            .await?;
        let index_len = index.metadata().await?.len();
        let entry = Arc::new(tokio::sync::Mutex::new(LogFile {
            file,
            index,
            index_len,
            next_seq,
            bytes,
            indexed_at: None,
            sealed: false,
        }));
        let mut table = self.open_logs.lock().expect("log table poisoned");
        Ok(table.entry(id).or_insert(entry).clone())
    }

    /// Appends the lines numbered `first_seq..` that are not stored yet, as long as the log
    /// stays within `max_bytes` (whole lines: the first line that would not fit and every one
    /// after it are dropped, and `limited` says so). A chunk that starts past the end (a gap)
    /// writes nothing; the returned `next_seq` tells the slave where to resend from.
    pub async fn append_log(
        &self,
        id: BuildId,
        first_seq: u64,
        lines: &[String],
        max_bytes: u64,
    ) -> io::Result<Appended> {
        let log = self.open_log(id).await?;
        let mut log = log.lock().await;
        let _locked = file_lock::Flock::exclusive_async(log.file.as_raw_fd()).await?;
        self.catch_up(id, &mut log).await?;
        let mut out = Appended::at(&log);
        if log.sealed || first_seq > log.next_seq {
            return Ok(out);
        }
        self.write_lines(id, &mut log, first_seq, lines, max_bytes, &mut out)
            .await?;
        drop(log);
        if out.written > 0 {
            let _ = self.grew.send(id);
            let _ = self.appended.send(id);
        }
        Ok(out)
    }

    /// Under the log's file lock: what other masters did to it (the storage is shared) is read
    /// again: lines they appended, and whether they sealed it.
    async fn catch_up(&self, id: BuildId, log: &mut LogFile) -> io::Result<()> {
        if log.file.metadata().await?.len() != log.bytes {
            let path = self.log_path(id);
            let (next_seq, bytes) =
                tokio::task::spawn_blocking(move || log_index::recover_locked(&path))
                    .await
                    .map_err(io::Error::other)??;
            log.next_seq = next_seq;
            log.bytes = bytes;
            log.index_len = log.index.metadata().await?.len();
        }
        if !log.sealed {
            log.sealed = tokio::fs::try_exists(self.seal_path(id)).await?;
        }
        Ok(())
    }

    /// Writes the lines numbered `first_seq..` not stored yet (`first_seq` is at most the next
    /// one), within `max_bytes`, into `out`. The caller holds the log's lock and file lock.
    async fn write_lines(
        &self,
        id: BuildId,
        log: &mut LogFile,
        first_seq: u64,
        lines: &[String],
        max_bytes: u64,
        out: &mut Appended,
    ) -> io::Result<()> {
        let next = log.next_seq;
        let skip = (next - first_seq) as usize;
        let mut buf = String::new();
        let mut starts = vec![];
        for l in lines.iter().skip(skip) {
            if log.bytes + (buf.len() + l.len() + 1) as u64 > max_bytes {
                out.limited = true;
                break;
            }
            starts.push(log.bytes + buf.len() as u64);
            // One line per line: a line break inside would shift every number after it. A `\r`
            // inside a line stays (progress bars; the console overwrites as a terminal does).
            buf.extend(l.chars().map(|c| if c == '\n' { ' ' } else { c }));
            buf.push('\n');
        }
        if starts.is_empty() {
            return Ok(());
        }
        let count = starts.len() as u64;
        let written = async {
            log.file.write_all(buf.as_bytes()).await?;
            log.file.flush().await
        }
        .await;
        if let Err(e) = written {
            // A write that failed part-way (a full disk) must not leave half a line behind: the
            // next write would tear it. Cut back to the last whole line, then report.
            let _ = log.file.set_len(log.bytes).await;
            return Err(e);
        }
        let records = log_index::records_for(next, starts.into_iter());
        if !records.is_empty() {
            let indexed = async {
                log.index.write_all(&records).await?;
                log.index.flush().await
            }
            .await;
            match indexed {
                Ok(()) => log.index_len += records.len() as u64,
                Err(e) => {
                    // Only slower reads later: a missing record means a longer scan.
                    tracing::warn!(build = %id, "cannot extend the log's index: {e}");
                    let len = log.index_len;
                    let _ = log.index.set_len(len).await;
                }
            }
        }
        out.written = count;
        log.next_seq = next + out.written;
        log.bytes += buf.len() as u64;
        let now = std::time::Instant::now();
        out.index_due = log
            .indexed_at
            .is_none_or(|t| now.duration_since(t) >= INDEX_EVERY);
        if out.index_due {
            log.indexed_at = Some(now);
        }
        out.next_seq = log.next_seq;
        out.bytes = log.bytes;
        Ok(())
    }

    /// The build ends: its log takes its last line, the master's `note` if any (never refused
    /// for the log limit: callers that enforce the limit keep room for it, [`note_bytes`]), and
    /// then no more, on any master (a marker file next to it holds this end's token). Returns
    /// the log's final size and the token. A slave's lines that arrive after this are refused,
    /// so an ended build's log ends with the master's reason and its index row matches the file.
    pub async fn seal_log(&self, id: BuildId, note: Option<&str>) -> io::Result<Seal> {
        let log = self.open_log(id).await?;
        let mut log = log.lock().await;
        let _locked = file_lock::Flock::exclusive_async(log.file.as_raw_fd()).await?;
        self.catch_up(id, &mut log).await?;
        if let Some(note) = note {
            let (next, mut out) = (log.next_seq, Appended::at(&log));
            let line = [format!("{NOTE_PREFIX}{note}")];
            self.write_lines(id, &mut log, next, &line, u64::MAX, &mut out)
                .await?;
        }
        // This end's own token, over any seal an earlier end left that never committed.
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let token = hex::encode(bytes);
        let mut marker = tokio::fs::OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(true)
            .write(true)
            .open(self.seal_path(id))
            .await?;
        marker.write_all(token.as_bytes()).await?;
        // On disk before the file lock goes: whoever reads the marker next finds the token.
        marker.flush().await?;
        log.sealed = true;
        let seal = Seal {
            lines: log.next_seq,
            bytes: log.bytes,
            token,
        };
        drop(log);
        if note.is_some() {
            let _ = self.grew.send(id);
            let _ = self.appended.send(id);
        }
        Ok(seal)
    }

    /// Undoes [`Storage::seal_log`] when the build's end was not recorded after all: with
    /// `token`, the seal of that end only (its transaction failed; another end may have sealed
    /// the log since); without, any seal (the caller holds the build's row and found it still
    /// running: an end that never committed, its master having died first).
    pub async fn unseal_log(&self, id: BuildId, token: Option<&str>) -> io::Result<()> {
        let log = self.open_log(id).await?;
        let mut log = log.lock().await;
        let _locked = file_lock::Flock::exclusive_async(log.file.as_raw_fd()).await?;
        let path = self.seal_path(id);
        if let Some(token) = token {
            match tokio::fs::read_to_string(&path).await {
                Ok(t) if t == token => {}
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                // Another end's seal, or none.
                _ => return Ok(()),
            }
        }
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        log.sealed = false;
        Ok(())
    }

    fn seal_path(&self, id: BuildId) -> PathBuf {
        self.build_dir(id).join("log.ended")
    }

    pub async fn next_seq(&self, id: BuildId) -> io::Result<u64> {
        Ok(self.log_size(id).await?.0)
    }

    /// (lines, bytes) of the stored log.
    pub async fn log_size(&self, id: BuildId) -> io::Result<(u64, u64)> {
        let log = self.open_log(id).await?;
        let l = log.lock().await;
        Ok((l.next_seq, l.bytes))
    }

    /// (lines, bytes) of a log open for writing now, without opening it.
    pub async fn open_log_size(&self, id: BuildId) -> Option<(u64, u64)> {
        let log = self
            .open_logs
            .lock()
            .expect("log table poisoned")
            .get(&id)
            .cloned()?;
        let l = log.lock().await;
        Some((l.next_seq, l.bytes))
    }

    /// Bytes free for the master's storage (what a full disk is reported with).
    pub fn free_bytes(&self) -> Option<u64> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a struct of the right type to fill.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// Forgets the open file handle of a finished build.
    pub fn close_log(&self, id: BuildId) {
        self.open_logs
            .lock()
            .expect("log table poisoned")
            .remove(&id);
    }
}

fn build_dir_in(root: &Path, id: BuildId) -> PathBuf {
    root.join("builds").join(id.0.to_string())
}

/// The file of artifact `name` of build `id` under the storage dir `root` (`kind =
/// "filesystem"`; the caller has validated `name` with `validate_artifact_name`).
pub fn artifact_file(root: &Path, id: BuildId, name: &str) -> PathBuf {
    build_dir_in(root, id).join("artifacts").join(name)
}

/// Creates a directory (and its parents) readable by the master only: logs and images are
/// served through the API, never straight from the disk to other local users.
pub async fn private_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
}

/// A new file readable by the master only.
pub async fn private_file(path: &Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(r: std::ops::Range<u64>) -> Vec<String> {
        r.map(|i| format!("line {i}")).collect()
    }

    #[tokio::test]
    async fn duplicates_and_gaps_are_handled() {
        let dir = std::env::temp_dir().join(format!("kiln-storage-{}", std::process::id()));
        let s = Storage::new(dir.clone()).unwrap();
        let id = BuildId(1);
        let max = u64::MAX;
        assert_eq!(
            s.append_log(id, 0, &lines(0..3), max)
                .await
                .unwrap()
                .next_seq,
            3
        );
        // resend overlapping 1..5: only 3 and 4 are new
        let a = s.append_log(id, 1, &lines(1..5), max).await.unwrap();
        assert_eq!((a.next_seq, a.written), (5, 2));
        // a gap writes nothing
        assert_eq!(
            s.append_log(id, 9, &lines(9..10), max)
                .await
                .unwrap()
                .next_seq,
            5
        );
        s.close_log(id);
        // partial last line (crash mid-write) is cut on reopen
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.log_path(id))
            .unwrap();
        std::io::Write::write_all(&mut f, b"partial").unwrap();
        assert_eq!(s.next_seq(id).await.unwrap(), 5);
        let text = std::fs::read_to_string(s.log_path(id)).unwrap();
        assert_eq!(text, lines(0..5).join("\n") + "\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_byte_limit_keeps_whole_lines_and_the_index_follows_the_log() {
        let dir = std::env::temp_dir().join(format!("kiln-storage-limit-{}", std::process::id()));
        let s = Storage::new(dir.clone()).unwrap();
        let id = BuildId(2);
        let mut grew = s.follow_logs();
        // "line N\n" is 7 to 12 bytes: 10 lines of 7 bytes fit in 75, the 11th does not.
        let a = s.append_log(id, 0, &lines(0..20), 75).await.unwrap();
        assert_eq!(
            (a.written, a.next_seq, a.bytes, a.limited),
            (10, 10, 70, true)
        );
        assert_eq!(grew.try_recv().unwrap(), id);
        let a = s.append_log(id, 10, &lines(10..11), 75).await.unwrap();
        assert_eq!((a.written, a.limited), (0, true), "still over");
        assert!(grew.try_recv().is_err(), "nothing written, nothing told");
        let end = s
            .seal_log(id, Some("log limit of 75 bytes exceeded"))
            .await
            .unwrap();
        let text = std::fs::read_to_string(s.log_path(id)).unwrap();
        assert!(text.ends_with("line 9\n[kiln-master] log limit of 75 bytes exceeded\n"));
        assert_eq!(
            text.len() as u64,
            70 + note_bytes("log limit of 75 bytes exceeded")
        );
        assert_eq!((end.lines, end.bytes), (11, text.len() as u64));
        // Sealed: a slave's late lines are refused, here and by another master on the same
        // storage.
        let late = s
            .append_log(id, 11, &lines(11..12), u64::MAX)
            .await
            .unwrap();
        assert_eq!((late.sealed, late.written, late.next_seq), (true, 0, 11));
        let other = Storage::new(dir.clone()).unwrap();
        let late = other.append_log(id, 11, &lines(11..12), u64::MAX).await;
        assert!(late.unwrap().sealed);
        assert_eq!(std::fs::read_to_string(s.log_path(id)).unwrap(), text);
        // An end that failed lifts only its own seal: not one a later end made.
        let later = s.seal_log(id, None).await.unwrap();
        s.unseal_log(id, Some(&end.token)).await.unwrap();
        assert!(
            s.append_log(id, 11, &lines(11..12), u64::MAX)
                .await
                .unwrap()
                .sealed
        );
        s.unseal_log(id, Some(&later.token)).await.unwrap();
        assert!(!s.seal_path(id).exists());
        // One that never committed is lifted by whoever finds the build still running.
        s.seal_log(id, None).await.unwrap();
        s.unseal_log(id, None).await.unwrap();
        // Enough lines for index records; a reopened log finds the same end.
        let many: Vec<String> = (11..20_000).map(|i| format!("l{i}")).collect();
        s.append_log(id, 11, &many, u64::MAX).await.unwrap();
        let (lines_now, bytes_now) = s.log_size(id).await.unwrap();
        s.close_log(id);
        assert_eq!(s.log_size(id).await.unwrap(), (lines_now, bytes_now));
        let idx = std::fs::metadata(s.log_path(id).with_extension("idx")).unwrap();
        assert_eq!(idx.len(), 4 * 16, "a record every 4096 lines");
        let mut r = s.log_reader(id, ReadFrom::Tail(2));
        let (first, got) = r.next_chunk(10, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (first, got),
            (19_998, vec!["l19998".to_string(), "l19999".to_string()])
        );
        let (first, got) = s.lines_before(id, 8193, 2, 1 << 20).await.unwrap();
        assert_eq!(
            (first, got),
            (8191, vec!["l8191".to_string(), "l8192".to_string()])
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn uploads_in_flight_count_against_the_same_limits() {
        let dir = std::env::temp_dir().join(format!("kiln-storage-res-{}", std::process::id()));
        let s = Storage::new(dir.clone()).unwrap();
        let mut a = s.reserve_upload(BuildId(1), 7);
        let mut b = s.reserve_upload(BuildId(2), 7);
        assert_eq!(a.hold(60, 100, 100), Ok(()));
        assert_eq!(a.hold(50, 100, 100), Ok(()), "holding less is a no-op");
        assert_eq!(b.hold(50, 100, 100), Err(Over::Project), "60 + 50 > 100");
        assert_eq!(a.hold(101, 100, 1000), Err(Over::Build));
        drop(a);
        assert_eq!(b.hold(100, 100, 100), Ok(()), "released on drop");
        drop(b);
        assert!(s.uploading.lock().unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
