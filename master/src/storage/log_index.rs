//! Finding a line in a log file without reading the file: the sparse index `builds/{id}/log.idx`,
//! and [`LogReader`], which reads a log in bounded chunks of whole lines from any line (or from
//! the last N lines) while it is still being written.
//!
//! The index holds one 16-byte record per [`STRIDE`] lines: the line number (a multiple of
//! `STRIDE`, little-endian u64) and the byte offset where that line starts (u64). A record is
//! written only after the lines before it are in the log, so every record on disk is true; a
//! record missing (a crash, a failed write) only means a longer scan. Reading a line's position
//! costs a binary search over the records plus a scan of at most `STRIDE` lines, whatever the
//! log's size; a master opening a log again (after a restart) scans only what follows the last
//! record.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Lines between two index records.
pub const STRIDE: u64 = 4096;
const RECORD: u64 = 16;
/// Block size of scans.
const BLOCK: usize = 64 * 1024;

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// At this line (at the end, if the log has fewer lines).
    Seq(u64),
    /// At the last `n` lines stored when the reader opens the file.
    Tail(u64),
}

pub fn index_path(log: &Path) -> PathBuf {
    log.with_extension("idx")
}

/// The index records among lines `first_line, first_line + 1, ...` starting at the given
/// (absolute) offsets.
pub fn records_for(first_line: u64, line_starts: impl Iterator<Item = u64>) -> Vec<u8> {
    let mut out = vec![];
    for (i, off) in line_starts.enumerate() {
        let line = first_line + i as u64;
        if line > 0 && line.is_multiple_of(STRIDE) {
            out.extend_from_slice(&line.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
    }
    out
}

fn record(idx: &File, i: u64) -> io::Result<(u64, u64)> {
    let mut b = [0u8; RECORD as usize];
    idx.read_exact_at(&mut b, i * RECORD)?;
    let (l, o) = b.split_at(8);
    Ok((
        u64::from_le_bytes(l.try_into().expect("8 bytes")),
        u64::from_le_bytes(o.try_into().expect("8 bytes")),
    ))
}

/// Whether `(line, offset)` can be a line start of `log` whose length is `len`: a multiple of the
/// stride, inside the file, right after a newline.
fn plausible(log: &File, len: u64, line: u64, offset: u64) -> bool {
    if line == 0 || !line.is_multiple_of(STRIDE) || offset == 0 || offset >= len || offset < line {
        return false;
    }
    let mut b = [0u8; 1];
    log.read_exact_at(&mut b, offset - 1).is_ok() && b[0] == b'\n'
}

/// The last index record at or before line `target` (by binary search) that checks out against
/// the log, else `(0, 0)`; and how many records to keep when cutting a damaged index back (up
/// to and including the one chosen).
fn locate_in(idx: Option<&File>, log: &File, len: u64, target: u64) -> io::Result<(u64, u64, u64)> {
    let Some(idx) = idx else {
        return Ok((0, 0, 0));
    };
    let n = idx.metadata()?.len() / RECORD;
    // Records are written in line order: find the last one with line <= target.
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if record(idx, mid)?.0 <= target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    // Step back over records that do not check out (a log cut back, a damaged index).
    let mut i = lo;
    let mut tries = 0;
    while i > 0 && tries < 64 {
        let (line, offset) = record(idx, i - 1)?;
        if plausible(log, len, line, offset) {
            return Ok((line, offset, i));
        }
        i -= 1;
        tries += 1;
    }
    Ok((0, 0, 0))
}

fn open_index(log_path: &Path) -> io::Result<Option<File>> {
    match File::open(index_path(log_path)) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads from `offset` counting whole lines, at most `max` of them, never past `end`; calls
/// `on_line(n, start)` after the n-th newline with the offset where the next line starts.
/// Returns (lines passed, offset right after the last of them).
fn scan(
    log: &File,
    mut offset: u64,
    end: u64,
    max: u64,
    mut on_line: impl FnMut(u64, u64),
) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; BLOCK];
    let (mut lines, mut last) = (0u64, offset);
    while lines < max && offset < end {
        let want = ((end - offset) as usize).min(BLOCK);
        let n = log.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                lines += 1;
                last = offset + i as u64 + 1;
                on_line(lines, last);
                if lines == max {
                    return Ok((lines, last));
                }
            }
        }
        offset += n as u64;
    }
    Ok((lines, last))
}

/// Line number and byte offset of line `target` of the log (its end if shorter), and the total
/// line count when `target` is `u64::MAX`. Never reads more than `STRIDE` lines plus the index.
fn position(log_path: &Path, log: &File, target: u64) -> io::Result<(u64, u64)> {
    let len = log.metadata()?.len();
    let idx = open_index(log_path)?;
    let (line, offset, _) = locate_in(idx.as_ref(), log, len, target)?;
    let (passed, at) = scan(log, offset, len, target - line, |_, _| {})?;
    Ok((line + passed, at))
}

/// What the writer needs on opening a log: its whole lines and bytes. Cuts a partial last line
/// (a crash mid-write), drops index records the log does not bear out, and indexes what follows
/// the last good record (for a log written before the index existed: the whole file, once).
pub fn recover(log_path: &Path) -> io::Result<(u64, u64)> {
    recover_with(log_path, true)
}

/// [`recover`] by a writer that holds the log's lock already (on another descriptor).
pub fn recover_locked(log_path: &Path) -> io::Result<(u64, u64)> {
    recover_with(log_path, false)
}

fn recover_with(log_path: &Path, lock: bool) -> io::Result<(u64, u64)> {
    let log = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(log_path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    // Another master may be appending: a partial last line is a crash's only when it holds no
    // lock.
    let _locked = if lock {
        Some(super::file_lock::Flock::exclusive(
            std::os::fd::AsRawFd::as_raw_fd(&log),
        )?)
    } else {
        None
    };
    let len = log.metadata()?.len();
    // The end of the last whole line, read backwards block by block.
    let mut complete = 0;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK];
    while end > 0 {
        let start = end.saturating_sub(BLOCK as u64);
        let n = (end - start) as usize;
        log.read_exact_at(&mut buf[..n], start)?;
        if let Some(p) = buf[..n].iter().rposition(|&b| b == b'\n') {
            complete = start + p as u64 + 1;
            break;
        }
        end = start;
    }
    if complete != len {
        log.set_len(complete)?;
    }
    let idx_path = index_path(log_path);
    let idx = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&idx_path)?;
    std::fs::set_permissions(
        &idx_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let (line, offset, keep) = locate_in(Some(&idx), &log, complete, u64::MAX)?;
    idx.set_len(keep * RECORD)?;
    let mut records = vec![];
    let (passed, _) = scan(&log, offset, complete, u64::MAX, |n, start| {
        // `start` is where line `line + n` starts (the end of the file after the last line).
        let l = line + n;
        if l.is_multiple_of(STRIDE) && start < complete {
            records.extend_from_slice(&l.to_le_bytes());
            records.extend_from_slice(&start.to_le_bytes());
        }
    })?;
    idx.write_all_at(&records, keep * RECORD)?;
    Ok((line + passed, complete))
}

/// Reads a log in chunks of whole lines from a starting point, following it as it grows: at the
/// end of what is stored it returns `None` and picks up from there on the next call. Holds one
/// block and at most one chunk in memory. Blocking: call it on a blocking thread.
pub struct LogReader {
    path: PathBuf,
    start: ReadFrom,
    file: Option<BufReader<File>>,
    /// Sequence number of the next line returned.
    seq: u64,
    /// Byte offset of the file position.
    pos: u64,
    /// An incomplete last line read so far (its first `LINE_CAP` bytes) and its full length.
    partial: Vec<u8>,
    partial_len: u64,
    /// A whole line that did not fit the last chunk.
    carry: Option<String>,
}

/// A line longer than this is cut for the console (the raw log keeps it whole).
pub const LINE_CAP: usize = 1024 * 1024;

impl LogReader {
    pub fn new(path: PathBuf, start: ReadFrom) -> LogReader {
        LogReader {
            path,
            start,
            file: None,
            seq: 0,
            pos: 0,
            partial: vec![],
            partial_len: 0,
            carry: None,
        }
    }

    /// The sequence number of the next line this reader returns (once the file exists).
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Opens the file at the starting point; `false` while there is no log yet.
    fn open(&mut self) -> io::Result<bool> {
        if self.file.is_some() {
            return Ok(true);
        }
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let target = match self.start {
            ReadFrom::Seq(s) => s,
            ReadFrom::Tail(n) => position(&self.path, &f, u64::MAX)?.0.saturating_sub(n),
        };
        let (seq, pos) = position(&self.path, &f, target)?;
        f.seek(SeekFrom::Start(pos))?;
        self.seq = seq;
        self.pos = pos;
        self.file = Some(BufReader::with_capacity(BLOCK, f));
        Ok(true)
    }

    /// The next whole lines: at most `max_lines`, and no more than `max_bytes` of text unless a
    /// single line is longer (lines over [`LINE_CAP`] are cut, saying so). `None` when
    /// everything stored so far was returned.
    pub fn next_chunk(
        &mut self,
        max_lines: usize,
        max_bytes: usize,
    ) -> io::Result<Option<(u64, Vec<String>)>> {
        if !self.open()? {
            return Ok(None);
        }
        let first = self.seq;
        let mut lines: Vec<String> = vec![];
        let mut bytes = 0usize;
        if let Some(l) = self.carry.take() {
            bytes += l.len();
            lines.push(l);
        }
        while lines.len() < max_lines {
            let Some(line) = self.read_line()? else { break };
            if !lines.is_empty() && bytes + line.len() > max_bytes {
                self.carry = Some(line);
                break;
            }
            bytes += line.len();
            lines.push(line);
        }
        if lines.is_empty() {
            return Ok(None);
        }
        self.seq += lines.len() as u64;
        Ok(Some((first, lines)))
    }

    /// One whole line from the file, or `None` at its current end (a partial line stays for the
    /// next call).
    fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            let file = self.file.as_mut().expect("opened");
            let buf = file.fill_buf()?;
            if buf.is_empty() {
                // The end of what is stored. A log cut back under the reader (a write that
                // failed part-way is undone) puts it at the new end.
                let len = file.get_ref().metadata()?.len();
                if len < self.pos {
                    self.refind_end()?;
                }
                return Ok(None);
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let room = LINE_CAP.saturating_sub(self.partial.len());
            self.partial.extend_from_slice(&buf[..take.min(room)]);
            self.partial_len += take as u64;
            let used = take + usize::from(done);
            file.consume(used);
            self.pos += used as u64;
            if done {
                let mut line = String::from_utf8_lossy(&self.partial).into_owned();
                if self.partial_len > LINE_CAP as u64 {
                    line.push_str(&format!(
                        " … [line of {} bytes cut for the console; the raw log has it whole]",
                        self.partial_len
                    ));
                }
                self.partial.clear();
                self.partial_len = 0;
                return Ok(Some(line));
            }
        }
    }

    fn refind_end(&mut self) -> io::Result<()> {
        let mut f = File::open(&self.path)?;
        let (seq, pos) = position(&self.path, &f, u64::MAX)?;
        f.seek(SeekFrom::Start(pos))?;
        self.seq = seq.min(self.seq);
        self.pos = pos;
        self.partial.clear();
        self.partial_len = 0;
        self.carry = None;
        self.file = Some(BufReader::with_capacity(BLOCK, f));
        Ok(())
    }
}

/// Up to `max_lines` lines just before line `before` (fewer when they would take more than
/// `max_bytes`: the lines nearest `before` are kept), as `(first_seq, lines)`.
pub fn lines_before(
    path: &Path,
    before: u64,
    max_lines: u64,
    max_bytes: usize,
) -> io::Result<(u64, Vec<String>)> {
    let from = before.saturating_sub(max_lines);
    let mut r = LogReader::new(path.to_path_buf(), ReadFrom::Seq(from));
    let mut kept: std::collections::VecDeque<String> = Default::default();
    let mut bytes = 0usize;
    let mut first = from;
    while let Some((seq, lines)) = r.next_chunk(STRIDE as usize, max_bytes)? {
        for (i, l) in lines.into_iter().enumerate() {
            if seq + i as u64 >= before {
                break;
            }
            if kept.is_empty() {
                first = seq + i as u64;
            }
            bytes += l.len();
            kept.push_back(l);
            while bytes > max_bytes && kept.len() > 1 {
                bytes -= kept.pop_front().map_or(0, |l| l.len());
                first += 1;
            }
        }
        if r.next_seq() >= before {
            break;
        }
    }
    if kept.is_empty() {
        first = before.min(r.next_seq());
    }
    Ok((first, kept.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A private temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("kiln-log-index-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn log_of(dir: &Path, lines: u64) -> PathBuf {
        let p = dir.join("log");
        let mut f = std::io::BufWriter::new(File::create(&p).unwrap());
        for i in 0..lines {
            // Lines of varying length, so offsets are not a multiple of anything.
            writeln!(f, "line {i} {}", "x".repeat((i % 7) as usize)).unwrap();
        }
        f.flush().unwrap();
        p
    }

    fn want(i: u64) -> String {
        format!("line {i} {}", "x".repeat((i % 7) as usize))
    }

    fn all(r: &mut LogReader, max_lines: usize, max_bytes: usize) -> Vec<(u64, Vec<String>)> {
        let mut out = vec![];
        while let Some(c) = r.next_chunk(max_lines, max_bytes).unwrap() {
            out.push(c);
        }
        out
    }

    #[test]
    fn recovery_indexes_a_log_and_readers_find_any_line() {
        let dir = tempdir();
        let p = log_of(dir.path(), 3 * STRIDE + 100);
        // A partial last line is cut.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"partial")
            .unwrap();
        let (lines, bytes) = recover(&p).unwrap();
        assert_eq!(lines, 3 * STRIDE + 100);
        assert_eq!(bytes, std::fs::metadata(&p).unwrap().len());
        assert_eq!(
            std::fs::metadata(index_path(&p)).unwrap().len(),
            3 * RECORD,
            "one record per stride"
        );
        // Recovering again changes nothing.
        assert_eq!(recover(&p).unwrap(), (lines, bytes));
        assert_eq!(std::fs::metadata(index_path(&p)).unwrap().len(), 3 * RECORD);
        for from in [
            0,
            1,
            STRIDE - 1,
            STRIDE,
            STRIDE + 1,
            2 * STRIDE + 77,
            lines - 1,
        ] {
            let mut r = LogReader::new(p.clone(), ReadFrom::Seq(from));
            let (first, got) = r.next_chunk(3, 1 << 20).unwrap().unwrap();
            assert_eq!(first, from);
            assert_eq!(got[0], want(from), "from {from}");
        }
        let mut r = LogReader::new(p.clone(), ReadFrom::Seq(lines + 5));
        assert_eq!(r.next_chunk(3, 1 << 20).unwrap(), None);
        assert_eq!(r.next_seq(), lines, "past the end: at the end");
        let mut r = LogReader::new(p.clone(), ReadFrom::Tail(10));
        let chunks = all(&mut r, 4, 1 << 20);
        assert_eq!(chunks[0].0, lines - 10);
        let got: Vec<String> = chunks.into_iter().flat_map(|c| c.1).collect();
        assert_eq!(got, (lines - 10..lines).map(want).collect::<Vec<_>>());
    }

    #[test]
    fn a_damaged_index_is_cut_back_and_still_finds_lines() {
        let dir = tempdir();
        let p = log_of(dir.path(), 2 * STRIDE + 5);
        recover(&p).unwrap();
        // A torn record and a record beyond the log (the log was cut back).
        let mut idx = std::fs::OpenOptions::new()
            .append(true)
            .open(index_path(&p))
            .unwrap();
        idx.write_all(&(3 * STRIDE).to_le_bytes()).unwrap();
        idx.write_all(&(1u64 << 40).to_le_bytes()).unwrap();
        idx.write_all(&[1, 2, 3]).unwrap();
        let mut r = LogReader::new(p.clone(), ReadFrom::Seq(2 * STRIDE + 1));
        let (first, got) = r.next_chunk(1, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (first, got[0].clone()),
            (2 * STRIDE + 1, want(2 * STRIDE + 1))
        );
        assert_eq!(recover(&p).unwrap().0, 2 * STRIDE + 5);
        assert_eq!(std::fs::metadata(index_path(&p)).unwrap().len(), 2 * RECORD);
    }

    #[test]
    fn chunks_are_bounded_contiguous_and_follow_a_growing_log() {
        let dir = tempdir();
        let p = log_of(dir.path(), 1000);
        let mut r = LogReader::new(p.clone(), ReadFrom::Seq(0));
        let chunks = all(&mut r, 64, 500);
        let mut next = 0;
        for (first, lines) in &chunks {
            assert_eq!(*first, next, "contiguous");
            assert!(lines.len() <= 64);
            assert!(lines.iter().map(String::len).sum::<usize>() <= 500);
            next += lines.len() as u64;
        }
        assert_eq!(next, 1000);
        // A partial line is held back until it is whole.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"line 1000 half").unwrap();
        assert_eq!(r.next_chunk(64, 500).unwrap(), None);
        f.write_all(b" and the rest\nline 1001\n").unwrap();
        let (first, lines) = r.next_chunk(64, 500).unwrap().unwrap();
        assert_eq!(first, 1000);
        assert_eq!(lines, ["line 1000 half and the rest", "line 1001"]);
    }

    #[test]
    fn a_huge_line_is_cut_for_the_console() {
        let dir = tempdir();
        let p = dir.path().join("log");
        let mut data = vec![b'a'; LINE_CAP + 10];
        data.extend_from_slice(b"\nnext\n");
        std::fs::write(&p, &data).unwrap();
        let mut r = LogReader::new(p, ReadFrom::Seq(0));
        let (_, lines) = r.next_chunk(10, 1024).unwrap().unwrap();
        assert_eq!(lines.len(), 1, "a line over the byte budget travels alone");
        assert!(lines[0].starts_with("aaaa") && lines[0].contains("cut for the console"));
        assert!(lines[0].len() < LINE_CAP + 200);
        let (first, lines) = r.next_chunk(10, 1024).unwrap().unwrap();
        assert_eq!((first, lines), (1, vec!["next".to_string()]));
    }

    #[test]
    fn earlier_lines_end_right_before_the_line_asked_and_keep_the_nearest() {
        let dir = tempdir();
        let p = log_of(dir.path(), STRIDE + 50);
        recover(&p).unwrap();
        let (first, lines) = lines_before(&p, STRIDE + 10, 20, 1 << 20).unwrap();
        assert_eq!(first, STRIDE - 10);
        assert_eq!(
            lines,
            (STRIDE - 10..STRIDE + 10).map(want).collect::<Vec<_>>()
        );
        let (first, lines) = lines_before(&p, 5, 20, 1 << 20).unwrap();
        assert_eq!((first, lines.len()), (0, 5));
        // A byte budget keeps the lines nearest `before`.
        let (first, lines) = lines_before(&p, 100, 50, 40).unwrap();
        assert_eq!(first + lines.len() as u64, 100);
        assert!(lines.len() < 50 && !lines.is_empty());
        let (first, lines) = lines_before(&p, 0, 20, 1 << 20).unwrap();
        assert_eq!((first, lines.len()), (0, 0));
    }
}
